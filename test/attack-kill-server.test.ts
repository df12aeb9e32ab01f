import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { AuthCredentials, Client as RealClient, isCommyError, VariableMetadata, VariableType, VirtualVariableFile, type Client } from '../src/index.js';
import type { Child } from './helpers/child.js';
import { reconnectingClient, serverIn, until } from './helpers/server-process.js';
import { tempDir } from './helpers/temp.js';
import { guard } from './helpers/guard.js';
import { ScriptedServer, send } from './helpers/scripted-server.js';

/**
 * Attack: kill -9 (or SIGSTOP) the server child in the middle of a client.query() stream and in the middle of
 * a resume (a client that was offline during many writes, reconnecting while the server dies again). The loop
 * must end with a CommyError (or complete whole), nothing may hang or reject unhandled, and after a restart
 * the client converges on the file's values.
 */

const COUNT = 300;
const SIZE = 64 * 1024; // 19 MB of values: dozens of query pages, a snapshot in many chunks

async function bigService(c: Client, service: string): Promise<void> {
  const vf = await c.getVirtualServiceFile('acme', service);
  for (let i = 0; i < COUNT; i++) await vf.registerVariable(new VariableMetadata(`v${i}`, -1, SIZE, VariableType.Bytes));
  await vf.close();
}

/** Runs a query loop, calling `onPage` after each page; settles with how it ended. */
async function queryLoop(c: Client, onPage: (pages: number) => void): Promise<{ pages: number; variables: number; code?: string; err?: unknown }> {
  let pages = 0;
  let variables = 0;
  try {
    for await (const page of c.query({ tenant: 'acme', values: true })) {
      pages++;
      for (const s of page.services) variables += s.variables.length;
      onPage(pages);
    }
    return { pages, variables };
  } catch (err) {
    return { pages, variables, code: isCommyError(err) ? err.code : undefined, err };
  }
}

test('kill -9 mid-query: the for-await loop ends with NOT_CONNECTED; after the restart the client queries again', { timeout: 180_000 }, async (t) => {
  const g = guard(t);
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const c = await reconnectingClient(t, first.url);
  await bigService(c, 'big');
  const r = await queryLoop(c, (pages) => {
    if (pages === 1) first.child.kill('SIGKILL');
  });
  t.diagnostic(`${r.pages} pages, ${r.variables} variables, then ${r.code ?? 'the end'}`);
  if (r.code === undefined) assert.equal(r.variables, COUNT, 'a loop that ends without an error has every variable');
  else assert.equal(r.code, 'NOT_CONNECTED', String(r.err));
  // While reconnecting: a query is refused at once, never left waiting.
  await until(() => c.state === 'reconnecting', "state 'reconnecting'");
  const offline = await queryLoop(c, () => {});
  assert.equal(offline.code, 'NOT_CONNECTED');
  const second = await serverIn(t, dataDir, new URL(first.url).port);
  await until(() => c.state === 'open', "state 'open'");
  const again = await queryLoop(c, () => {});
  assert.equal(again.code, undefined, String(again.err));
  assert.equal(again.variables, COUNT);
  second.child.send({ type: 'quit' });
  await g.check();
});

test('SIGSTOP mid-query: the loop ends with TIMEOUT after requestTimeoutMs, and the client goes on once the server does', { timeout: 180_000 }, async (t) => {
  const g = guard(t);
  const dataDir = tempDir(t);
  const { child, url } = await serverIn(t, dataDir);
  t.after(() => child.kill('SIGCONT'));
  const c = await reconnectingClient(t, url, { requestTimeoutMs: 2_000 });
  await bigService(c, 'frozen');
  const r = await queryLoop(c, (pages) => {
    if (pages === 1) child.kill('SIGSTOP');
  });
  t.diagnostic(`${r.pages} pages, ${r.variables} variables, then ${r.code ?? 'the end'}`);
  if (r.code === undefined) assert.equal(r.variables, COUNT);
  else assert.equal(r.code, 'TIMEOUT', String(r.err));
  child.kill('SIGCONT');
  // The stream the client gave up may still be arriving: the connection must carry on regardless.
  const vf = await c.getVirtualServiceFile('acme', 'after');
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  vf.set('x', 5n);
  await vf.flush();
  const again = await queryLoop(c, () => {});
  assert.equal(again.code, undefined, String(again.err));
  assert.equal(again.variables, COUNT + 1);
  await g.check();
});

test('kill -9 mid-resume, repeatedly: a client offline during many writes converges on the file once a server stays up; its offline write lands once', { timeout: 300_000 }, async (t) => {
  const g = guard(t);
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const port = new URL(first.url).port;
  const errors: string[] = [];
  const c = await reconnectingClient(t, first.url, { onError: (e) => errors.push(e.code) });
  const vf = await c.getVirtualServiceFile('acme', 'resume');
  for (let i = 0; i < COUNT; i++) await vf.registerVariable(new VariableMetadata(`v${i}`, -1, SIZE, VariableType.Bytes));
  await vf.registerVariable(new VariableMetadata('mine', -1, 8, VariableType.U64));
  await vf.registerVariable(new VariableMetadata('count', -1, 8, VariableType.U64));

  let server: { child: Child; url: string } = first;
  const path = join(dataDir, 'tenants', 'acme', 'resume.mem');
  const flushes: Promise<string>[] = [];
  let hits = 0;
  for (let round = 1; round <= 6; round++) {
    server.child.kill('SIGKILL');
    await server.child.exited;
    await until(() => c.state === 'reconnecting', "state 'reconnecting'");
    // Offline: a local process rewrites every value (the resume must carry them all), the client writes too.
    const local = await VirtualVariableFile.open(path);
    for (let i = 0; i < COUNT; i++) local.set(`v${i}`, new Uint8Array(SIZE).fill(round));
    local.set('count', BigInt(round));
    await local.close();
    vf.set('mine', BigInt(round));
    flushes.push(vf.flush().then(() => 'ok', (err: unknown) => (isCommyError(err) ? err.code : String(err))));

    server = await serverIn(t, dataDir, port);
    if (round === 6) break;
    // Kill it again while the client is resubscribing: as soon as the server holds its subscription (the
    // resumed snapshot is being streamed) and the client has not finished.
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
      server.child.send({ type: 'stats' });
      const stats = await server.child.next<{ subscriptions: number }>('stats');
      if (stats.subscriptions > 0 && c.state === 'reconnecting') hits++;
      if (stats.subscriptions > 0 || c.state === 'open') break;
    }
  }
  t.diagnostic(`${hits} of 5 kills landed while the client was still resuming`);
  await until(() => c.state === 'open', "state 'open' after the last restart (the client never reconnects: a resume interrupted mid-chunks left the reconnection attempt waiting forever)", 60_000);
  const outcomes = await Promise.all(flushes);
  for (const o of outcomes) assert.ok(o === 'ok' || o === 'NOT_CONNECTED' || o === 'TIMEOUT', `a flush settles with success or a CommyError: ${o}`);
  await vf.flush();

  // The client converges on the file: every value of the last round, and its own last write.
  await until(() => vf.get('count') === 6n, 'count = 6', 60_000);
  const local = await VirtualVariableFile.open(path);
  t.after(() => local.close());
  for (let i = 0; i < COUNT; i++) {
    const mine = vf.get(`v${i}`) as Uint8Array;
    assert.ok(mine.every((b) => b === 6), `v${i} holds the last round's bytes`);
    assert.equal(vf.handle(`v${i}`).version(), local.handle(`v${i}`).version(), `v${i}'s version is the file's`);
  }
  assert.equal(local.get('mine'), 6n, 'the offline write reached the file');
  assert.equal(vf.get('mine'), 6n);
  assert.deepEqual(vf.bytes(), vf.shadowBytes(), 'nothing left pending');
  server.child.send({ type: 'quit' });
  await g.check();
});

// ---- the same, reproduced deterministically against a scripted server ------------------------------------


test('the connection lost while a resumed snapshot is still arriving in chunks (during a reconnection attempt): that attempt fails and the client tries again', { timeout: 90_000 }, async (t) => {
  const g = guard(t);
  const server = new ScriptedServer();
  const url = await server.start();
  t.after(() => server.close());
  const initializing = RealClient.initialize(url, 'acme', AuthCredentials.apiKey('ops:s3cret'), {
    mode: 'remote',
    onError: () => {},
    reconnect: { initialDelayMs: 5, maxDelayMs: 20 },
  });
  const ws1 = (await server.accept()).ws;
  const client = await initializing;
  t.after(() => client.close());
  const opening = client.getVirtualServiceFile('acme', 'svc');
  const sub1 = await server.next('Subscription');
  const x = (v: number): [number, string, number, number, number, number] => [0, 'x', 0, 8, VariableType.U64, v];
  send(ws1, 'Snapshot', sub1.msg.id, { sid: 1, serviceId: 'acme/svc', version: 10, fileId: 'f', variables: [x(10)], data: new Uint8Array(8), readOnly: false });
  const vf = await opening;
  ws1.terminate(); // lost: the client reconnects

  const ws2 = (await server.accept()).ws;
  const sub2 = await server.next('Subscription');
  // The resume starts (a snapshot announced in chunks) and the server dies before the last chunk.
  send(ws2, 'Snapshot', sub2.msg.id, { sid: 2, serviceId: 'acme/svc', version: 12, fileId: 'f', variables: [x(11)], data: new Uint8Array(0), readOnly: false, resumed: true, more: true });
  send(ws2, 'SnapshotChunk', 0, { sid: 2, more: true, defs: [] });
  await new Promise((resolve) => setTimeout(resolve, 100));
  ws2.terminate();

  // The client must try again (its backoff is at most 20 ms here).
  const ws3 = (await server.accept()).ws; // fails after 20 s: the client would stay 'reconnecting' forever
  const sub3 = await server.next('Subscription');
  send(ws3, 'Snapshot', sub3.msg.id, { sid: 3, serviceId: 'acme/svc', version: 12, fileId: 'f', variables: [x(11)], data: new Uint8Array(8), readOnly: false });
  await until(() => client.state === 'open', "state 'open'");
  assert.equal(vf.get('x'), 0n);
  await g.check();
});
