import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, linkSync, mkdirSync, openSync, readFileSync, readSync, statSync, symlinkSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { AuthCredentials, Client, isCommyError, VariableMetadata, VariableType } from '../src/internal.js';
import { reconnectingClient, serverIn } from './helpers/server-process.js';
import { startTimeOf } from '../src/local/process-lock.js';
import { Server } from '../src/server/index.js';
import { OpJournal } from '../src/server/op-journal.js';
import { identityDigest, OpRecord, RecordState, whatDigest } from '../src/server/op-record.js';
import { RawClient } from './helpers/raw-client.js';
import { TEST_TENANTS } from './helpers/server.js';
import { tempDir } from './helpers/temp.js';
import type { Message } from '../src/protocol/messages.js';

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
  const record = new URL('../src/server/op-record.js', import.meta.url).href;
  const source = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { openSync, writeSync, closeSync } = require('node:fs');
    (async () => {
      const { OpJournal } = await import(${JSON.stringify(journal)});
      const { OpRecord, identityDigest, whatDigest } = await import(${JSON.stringify(record)});
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

// ---- operation ids across a restart, over the bare protocol -------------------------------------------------

const CLIENT_A = 'attack-client-key-aaaaaaaaaaaa';
const CLIENT_B = 'attack-client-key-bbbbbbbbbbbb';

function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

/** An authenticated raw connection (protocol 3, a clientKey) subscribed to `service` of `tenant`. */
async function rawSession(url: string, tenant: string, secret: string, clientKey: string, service: string): Promise<{ c: RawClient; sid: number }> {
  const c = await RawClient.connect(url);
  const auth = await c.request('Authenticate', { tenant, method: 'apiKey', credential: secret, protocol: 3, clientKey });
  assert.equal(auth.type, 'Authenticated', JSON.stringify(auth.body));
  const sub = await c.request('Subscription', { tenant, service, create: true });
  assert.equal(sub.type, 'Snapshot', JSON.stringify(sub.body));
  return { c, sid: (sub.body as { sid: number }).sid };
}

function reply(m: Message): string {
  return m.type === 'Error' ? m.body.errorCode : m.type;
}

async function valueOf(url: string, tenant: string, secret: string, service: string, name: string): Promise<bigint> {
  const c = await RawClient.connect(url);
  try {
    await c.request('Authenticate', { tenant, method: 'apiKey', credential: secret, protocol: 3 });
    const m = await c.request('ReadVariable', { tenant, service, name });
    assert.equal(m.type, 'VariableValue');
    return new DataView((m.body as { value: Uint8Array }).value.buffer, (m.body as { value: Uint8Array }).value.byteOffset).getBigUint64(0, true);
  } finally {
    c.close();
  }
}

test('after a kill -9 and a restart, a resent operation id is answered only for the same write: another value, another variable or another kind is INVALID_MESSAGE; another client or tenant with the same id is its own write', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const port = new URL(first.url).port;
  const a = await rawSession(first.url, 'acme', 'ops:s3cret', CLIENT_A, 'ids');
  for (const name of ['x', 'y']) assert.equal(reply(await a.c.request('RegisterVariable', { sid: a.sid, name, offset: -1, size: 8, typeId: VariableType.U64 })), 'VariableRegistered');
  const report = await a.c.request('ReportVariableChanges', { sid: a.sid, changes: [[0, u64(5)]], opId: 7 });
  assert.equal(reply(report), 'VariableChangesAcknowledged');
  const mutation = await a.c.request('Mutate', { sid: a.sid, index: 1, value: u64(50), opId: 8 });
  assert.equal(reply(mutation), 'MutationResponse');
  const written = await a.c.request('WriteVariable', { tenant: 'acme', service: 'ids', name: 'y', value: u64(60), opId: 9 });
  assert.equal(reply(written), 'VariableChangesAcknowledged');
  const b = await rawSession(first.url, 'beta', 'ops:beta-secret', CLIENT_A, 'ids');
  assert.equal(reply(await b.c.request('RegisterVariable', { sid: b.sid, name: 'x', offset: -1, size: 8, typeId: VariableType.U64 })), 'VariableRegistered');
  first.child.kill('SIGKILL');
  await first.child.exited;

  const second = await serverIn(t, dataDir, port);
  const again = await rawSession(second.url, 'acme', 'ops:s3cret', CLIENT_A, 'ids');
  // The true retries: the first answers.
  const retried = await again.c.request('ReportVariableChanges', { sid: again.sid, changes: [[0, u64(5)]], opId: 7 });
  assert.deepEqual((retried.body as { versions: number[] }).versions, (report.body as { versions: number[] }).versions, 'the same report: the first answer');
  const remutated = await again.c.request('Mutate', { sid: again.sid, index: 1, value: u64(50), opId: 8 });
  assert.equal((remutated.body as { version: number }).version, (mutation.body as { version: number }).version);
  // The same ids on other writes.
  assert.equal(reply(await again.c.request('ReportVariableChanges', { sid: again.sid, changes: [[0, u64(6)]], opId: 7 })), 'INVALID_MESSAGE', 'a report with another value');
  assert.equal(reply(await again.c.request('ReportVariableChanges', { sid: again.sid, changes: [[1, u64(5)]], opId: 7 })), 'INVALID_MESSAGE', 'a report of another variable');
  assert.equal(reply(await again.c.request('Mutate', { sid: again.sid, index: 0, value: u64(5), opId: 7 })), 'INVALID_MESSAGE', 'a Mutate under a report\'s id');
  assert.equal(reply(await again.c.request('Mutate', { sid: again.sid, index: 1, value: u64(51), opId: 8 })), 'INVALID_MESSAGE', 'a Mutate with another value');
  assert.equal(reply(await again.c.request('Mutate', { sid: again.sid, index: 1, value: u64(50), opId: 8, expectedVersion: 1 })), 'INVALID_MESSAGE', 'a Mutate with an expected version');
  assert.equal(reply(await again.c.request('WriteVariable', { tenant: 'acme', service: 'ids', name: 'y', value: u64(61), opId: 9 })), 'INVALID_MESSAGE', 'a WriteVariable with another value');
  assert.equal(await valueOf(second.url, 'acme', 'ops:s3cret', 'ids', 'x'), 5n, 'x was not written again');
  assert.equal(await valueOf(second.url, 'acme', 'ops:s3cret', 'ids', 'y'), 60n);

  // Another client of the same key, and the same clientKey in another tenant: their own writes, applied.
  const other = await rawSession(second.url, 'acme', 'ops:s3cret', CLIENT_B, 'ids');
  assert.equal(reply(await other.c.request('ReportVariableChanges', { sid: other.sid, changes: [[0, u64(70)]], opId: 7 })), 'VariableChangesAcknowledged');
  assert.equal(await valueOf(second.url, 'acme', 'ops:s3cret', 'ids', 'x'), 70n, 'another client\'s opId 7 is its own write');
  const viewerish = await rawSession(second.url, 'acme', 'editor:edit', CLIENT_A, 'ids');
  assert.equal(reply(await viewerish.c.request('ReportVariableChanges', { sid: viewerish.sid, changes: [[0, u64(80)]], opId: 7 })), 'VariableChangesAcknowledged', 'another key, the same clientKey');
  assert.equal(await valueOf(second.url, 'acme', 'ops:s3cret', 'ids', 'x'), 80n);
  const b2 = await rawSession(second.url, 'beta', 'ops:beta-secret', CLIENT_A, 'ids');
  assert.equal(reply(await b2.c.request('ReportVariableChanges', { sid: b2.sid, changes: [[0, u64(5)]], opId: 7 })), 'VariableChangesAcknowledged');
  assert.equal(await valueOf(second.url, 'beta', 'ops:beta-secret', 'ids', 'x'), 5n, 'the same clientKey in another tenant: applied');
  for (const s of [a, b, again, other, viewerish, b2]) s.c.close();
  second.child.send({ type: 'quit' });
});

test('a tenant\'s journal hard-linked as another tenant\'s (between runs): the other tenant\'s writes neither push out nor settle its records', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const start = () => Server.start({ host: '127.0.0.1', port: 0, dataDir, config: { tenants: TEST_TENANTS, audit: { enabled: false }, limits: { opJournalBytes: 64 * 1024 } } });
  const first = await start();
  const a = await rawSession(first.url, 'acme', 'ops:s3cret', CLIENT_A, 'linked');
  assert.equal(reply(await a.c.request('RegisterVariable', { sid: a.sid, name: 'x', offset: -1, size: 8, typeId: VariableType.U64 })), 'VariableRegistered');
  const report = await a.c.request('ReportVariableChanges', { sid: a.sid, changes: [[0, u64(5)]], opId: 7 });
  assert.equal(reply(report), 'VariableChangesAcknowledged');
  a.c.close();
  await first.close();
  linkSync(join(dataDir, 'oplog', 'acme.ops'), join(dataDir, 'oplog', 'beta.ops'));

  const second = await start();
  t.after(() => second.close());
  // Beta writes first, with ids: enough records to go round a 64 KiB ring three times.
  const b = await rawSession(second.url, 'beta', 'ops:beta-secret', CLIENT_B, 'busy');
  assert.equal(reply(await b.c.request('RegisterVariable', { sid: b.sid, name: 'y', offset: -1, size: 8, typeId: VariableType.U64 })), 'VariableRegistered');
  for (let opId = 1; opId <= 1300; opId++) assert.equal(reply(await b.c.request('ReportVariableChanges', { sid: b.sid, changes: [[0, u64(opId)]], opId })), 'VariableChangesAcknowledged');
  // Acme's client resends its report: the journal it left must still answer it (applied once).
  const again = await rawSession(second.url, 'acme', 'ops:s3cret', CLIENT_A, 'linked');
  const retried = await again.c.request('ReportVariableChanges', { sid: again.sid, changes: [[0, u64(5)]], opId: 7 });
  assert.deepEqual((retried.body as { versions: number[] }).versions, (report.body as { versions: number[] }).versions, 'answered from acme\'s journal, not applied again');
  b.c.close();
  again.c.close();
});

test('a journal another live server owns is neither resized nor reset by a server configured with another size', async (t) => {
  const path = join(tempDir(t), 'acme.ops');
  const j = OpJournal.open(path, 64 * 1024);
  const rec = new OpRecord(j, identityDigest('alice'), 1, whatDigest('w'), 'svc');
  rec.intent([{ index: 0, skipped: false, before: 1 }]);
  rec.done();
  await j.close();
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  t.after(() => child.kill('SIGKILL'));
  let start: number | undefined;
  for (let i = 0; i < 100 && start === undefined; i++) start = startTimeOf(child.pid!);
  const fd = openSync(path, 'r+');
  const b = Buffer.alloc(8);
  b.writeInt32LE(child.pid!, 0);
  b.writeUInt32LE(start ?? 0, 4);
  writeSync(fd, b, 0, 8, 32);
  closeSync(fd);
  assert.throws(() => OpJournal.open(path, 128 * 1024), { code: 'INVALID_FILE' });
  assert.equal(statSync(path).size, 64 + 64 * 1024, 'not resized under the server that owns it');
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  const mine = OpJournal.open(path, 64 * 1024);
  assert.deepEqual(mine.read().map((e) => e.opId), [1], 'its records are still there');
  await mine.close();
});

test('a journal path that is a symlink, a directory or a FIFO is refused, and a huge sparse file is cut to the ring\'s size without being read', async (t) => {
  const dir = tempDir(t);
  const target = join(dir, 'elsewhere');
  writeFileSync(target, 'not a journal');
  symlinkSync(target, join(dir, 'link.ops'));
  assert.throws(() => OpJournal.open(join(dir, 'link.ops'), 64 * 1024), { code: 'ELOOP' });
  assert.equal(readFileSync(target, 'utf8'), 'not a journal', 'the link\'s target is untouched');
  mkdirSync(join(dir, 'dir.ops'));
  assert.throws(() => OpJournal.open(join(dir, 'dir.ops'), 64 * 1024), { code: 'EISDIR' });
  execFileSync('mkfifo', [join(dir, 'fifo.ops')]);
  assert.throws(() => OpJournal.open(join(dir, 'fifo.ops'), 64 * 1024), { code: 'INVALID_FILE' });
  const huge = join(dir, 'huge.ops');
  writeFileSync(huge, '');
  truncateSync(huge, 64 * 1024 ** 3); // 64 GiB, sparse
  const j = OpJournal.open(huge, 64 * 1024);
  assert.deepEqual(j.read(), []);
  await j.close();
  assert.equal(statSync(huge).size, 64 + 64 * 1024);
});

test('a write that fails after it was applied (its sync failed) leaves its record done, and never marks another record void', async (t) => {
  const path = join(tempDir(t), 'acme.ops');
  const j = OpJournal.open(path, 64 * 1024);
  const rec = new OpRecord(j, identityDigest('alice'), 1, whatDigest('w'), 'svc');
  rec.intent([{ index: 0, skipped: false, before: 1 }]);
  rec.wrote(0, 2);
  rec.done();
  rec.void(); // the ledger's catch, when durable() rejects after the values were written
  assert.deepEqual(j.read().map((e) => [e.opId, e.state]), [[1, RecordState.Done]], 'written: still done (a retry after a restart is answered, not applied again)');
  // The same, late: the ring has gone round since, and another record sits where this one was.
  const late = new OpRecord(j, identityDigest('bob'), 2, whatDigest('w'), 'svc');
  late.intent([{ index: 0, skipped: false, before: 2 }]);
  for (let n = 3; n < 1000; n++) {
    const r = new OpRecord(j, identityDigest('carol'), n, whatDigest('w'), 'svc');
    r.intent([{ index: 0, skipped: false, before: n }]);
    r.wrote(0, n + 1);
    r.done();
  }
  late.void();
  const states = j.read().map((e) => e.state);
  assert.ok(states.length > 100 && states.every((s) => s === RecordState.Done), 'no other record was marked void');
  await j.close();
});
