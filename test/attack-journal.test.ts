import assert from 'node:assert/strict';
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { AuthCredentials, Client, isCommyError, VariableMetadata, VariableType } from '../src/internal.js';
import { reconnectingClient, serverIn } from './helpers/server-process.js';
import { tempDir } from './helpers/temp.js';

/**
 * Attacks on the operation journal (src/server/op-journal.ts): `<dataDir>/oplog/<tenant>.ops`, a ring in a
 * file that any process of the server's user can write while the server runs. docs/security.md: a local
 * process may scribble over any file it can open; the server must neither hang nor crash, and no other tenant
 * (nor the tenant's own later writes) may suffer.
 */

const TAIL = 16;
const HEAD = 24;

function readWord(path: string, at: number): { pos: number; seq: number } {
  const fd = openSync(path, 'r');
  const b = Buffer.alloc(8);
  readSync(fd, b, 0, 8, at);
  closeSync(fd);
  return { pos: b.readUInt32LE(0), seq: b.readUInt32LE(4) };
}

function writeWord(path: string, at: number, pos: number, seq: number): void {
  const fd = openSync(path, 'r+');
  const b = Buffer.alloc(8);
  b.writeUInt32LE(pos >>> 0, 0);
  b.writeUInt32LE(seq >>> 0, 4);
  writeSync(fd, b, 0, 8, at);
  closeSync(fd);
}

function capacityOf(path: string): number {
  const fd = openSync(path, 'r');
  const b = Buffer.alloc(4);
  readSync(fd, b, 0, 4, 8);
  closeSync(fd);
  return b.readUInt32LE(0);
}

async function outcome(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'ok',
    (err: unknown) => (isCommyError(err) ? err.code : String(err)),
  );
}

/**
 * A server in a child process (a hang must not hang the test), a tenant whose journal exists (one mutate with
 * an operation id made it), the journal's header scribbled as `scribble` says; then more writes to the same
 * variable, and a write by another tenant, must all be answered.
 */
async function scribbledHeader(t: Parameters<typeof tempDir>[0], scribble: (path: string, capacity: number) => void): Promise<void> {
  const dataDir = tempDir(t);
  const server = await serverIn(t, dataDir);
  const acme = await reconnectingClient(t, server.url, { requestTimeoutMs: 20_000 });
  const vf = await acme.getVirtualServiceFile('acme', 'j');
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  for (let i = 1n; i <= 5n; i++) await vf.mutate('x', i);
  const path = join(dataDir, 'oplog', 'acme.ops');
  scribble(path, capacityOf(path));

  assert.equal(await outcome(vf.mutate('x', 6n)), 'ok', 'a write after the scribble is answered');
  assert.equal(await outcome(vf.mutate('x', 7n)), 'ok', 'and the next one: the variable was not left locked');
  const beta = await Client.initialize(server.url, 'beta', AuthCredentials.apiKey('ops:beta-secret'), { mode: 'remote', requestTimeoutMs: 20_000 });
  t.after(() => beta.close());
  const bvf = await beta.getVirtualServiceFile('beta', 'other');
  await bvf.registerVariable(new VariableMetadata('y', -1, 8, VariableType.U64));
  assert.equal(await outcome(bvf.mutate('y', 1n)), 'ok', 'another tenant is served');
  assert.equal(vf.get('x'), 7n);
  server.child.send({ type: 'quit' });
  assert.deepEqual(await server.child.exited, { code: 0, signal: null }, 'the server stops cleanly');
}

test('a journal whose tail names a sequence number past its head (scribbled while the server runs): the next write neither spins nor hangs', { timeout: 120_000 }, async (t) => {
  await scribbledHeader(t, (path) => {
    const head = readWord(path, HEAD);
    // The tail at the head, one sequence number ahead: a ring that is "not empty" and whose oldest record is the
    // zeros past the head. Making room dropped that zero-length "record" 2^32 - 1 times, one by one.
    writeWord(path, TAIL, head.pos, head.seq + 1);
  });
});

test('a journal whose head and tail point at the ring\'s last bytes (scribbled while the server runs): no exception under the write\'s locks', { timeout: 120_000 }, async (t) => {
  await scribbledHeader(t, (path, capacity) => {
    const head = readWord(path, HEAD);
    // Reading the "oldest record" 4 bytes before the end read past the mapping: a RangeError thrown under the
    // write's writer locks, which stayed held (by the server's own live pid) for every later writer.
    writeWord(path, HEAD, capacity - 8, head.seq);
    writeWord(path, TAIL, capacity - 4, head.seq + 7);
  });
});

test('a journal whose head points past its end (scribbled while the server runs): the write goes on', { timeout: 120_000 }, async (t) => {
  await scribbledHeader(t, (path, capacity) => {
    const head = readWord(path, HEAD);
    writeWord(path, HEAD, capacity - 16, head.seq);
    writeWord(path, TAIL, 0xfffffff0, head.seq + 3);
  });
});


/**
 * Random scribbles over a live journal's header and first records, between appends, in a worker terminated
 * after 60 s (an append that spins must fail the test, not hang the run). Returns the opIds a reopen reads back.
 */
async function scribbleFuzz(path: string): Promise<number[]> {
  const journal = new URL('../src/server/op-journal.js', import.meta.url).href;
  const source = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { openSync, writeSync, closeSync } = require('node:fs');
    (async () => {
      const { OpJournal, OpRecord, identityDigest, whatDigest } = await import(${JSON.stringify(journal)});
      const path = workerData;
      const j = OpJournal.open(path, 64 * 1024);
      const fd = openSync(path, 'r+');
      let seed = 12345;
      const random = (n) => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed % n; };
      const b = Buffer.alloc(8);
      for (let n = 1; n <= 3000; n++) {
        const rec = new OpRecord(j, identityDigest('id-' + (n % 5)), n, whatDigest('w' + n), 's');
        rec.intent(Array.from({ length: 1 + (n % 9) }, (_, i) => ({ index: i, skipped: false, before: n })));
        rec.wrote(0, n + 1);
        rec.done();
        if (n % 7 === 0) {
          // A word of the header (tail, head) or of the records, set to something small, huge or random.
          const at = random(3) === 0 ? 16 + 8 * random(2) : 64 + random(4096);
          const kind = random(3);
          b.writeUInt32LE(kind === 0 ? random(64) : kind === 1 ? 0xffffffff - random(64) : random(0x100000000), 0);
          b.writeUInt32LE(random(4) === 0 ? random(0x100000000) : random(8), 4);
          writeSync(fd, b, 0, 8, at);
        }
      }
      closeSync(fd);
      await j.close();
      const again = OpJournal.open(path, 64 * 1024);
      const ids = again.read().map((e) => e.opId);
      await again.close();
      parentPort.postMessage({ ids });
    })().catch((err) => parentPort.postMessage({ error: String(err && err.stack || err) }));
  `;
  const worker = new Worker(source, { eval: true, workerData: path });
  try {
    const m = await new Promise<{ ids?: number[]; error?: string }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the journal fuzz did not finish within 60 s (an append spins)')), 60_000);
      worker.once('message', (msg: { ids?: number[]; error?: string }) => {
        clearTimeout(timer);
        resolve(msg);
      });
      worker.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    if (m.error !== undefined) assert.fail(m.error);
    return m.ids!;
  } finally {
    await worker.terminate();
  }
}

test('random scribbles over a live journal\'s header and records between appends: append never throws nor spins, and a reopen reads a clean run', async (t) => {
  const ids = await scribbleFuzz(join(tempDir(t), 'acme.ops'));
  ids.forEach((id, i) => i > 0 && assert.equal(id, ids[i - 1]! + 1, 'contiguous'));
});
