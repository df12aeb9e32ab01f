import assert from 'node:assert/strict';
import { closeSync, openSync, truncateSync, writeSync } from 'node:fs';
import { request } from 'node:http';
import { test } from 'node:test';
import { AuthCredentials, Client, VariableMetadata, VariableType, VirtualVariableFile } from '../src/index.js';
import { decodeFrame, encodeFrame } from '../src/protocol/frame-codec.js';
import type { Message } from '../src/protocol/messages.js';
import type { Server } from '../src/server/index.js';
import { startChild } from './helpers/child.js';
import { RawClient, errorCode } from './helpers/raw-client.js';
import { TEST_TENANTS, startServer } from './helpers/server.js';

/** Fault isolation: what one client or one local process does must not stall or starve the others. */

async function connect(t: { after(fn: () => void): void }, url: string, key: string, tenant = 'acme'): Promise<RawClient> {
  const c = await RawClient.connect(url);
  t.after(() => c.close());
  assert.equal((await c.auth(tenant, key)).type, 'Authenticated');
  return c;
}

function healthz(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    request(`http://127.0.0.1:${server.port}/healthz`, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    })
      .on('error', reject)
      .end();
  });
}

async function until(what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Subscribes (creating the service) and registers `vars` (name → size, Bytes); returns the sid. */
async function service(c: RawClient, name: string, vars: [string, number][]): Promise<number> {
  const snap = await c.request('Subscription', { tenant: 'acme', service: name, create: true });
  assert.equal(snap.type, 'Snapshot');
  const sid = (snap.body as { sid: number }).sid;
  for (const [v, size] of vars) {
    const r = await c.request('RegisterVariable', { sid, name: v, offset: -1, size, typeId: VariableType.Bytes });
    assert.equal(r.type, 'VariableRegistered', JSON.stringify(r.body));
  }
  return sid;
}

const FLOOD_WRITES = 5000;

/** A new connection that sends FLOOD_WRITES WriteVariable of 8 KiB (40 MB) to `service`/x at once, then waits 1 s. */
async function floodWrites(t: { after(fn: () => void): void }, server: Server, name: string): Promise<{ writer: RawClient; replies: () => number }> {
  const writer = await RawClient.connect(server.url);
  t.after(() => writer.close());
  let replies = 0;
  writer.ws.on('message', () => replies++);
  assert.equal((await writer.auth('acme', 'ops:s3cret')).type, 'Authenticated');
  const value = new Uint8Array(8192).fill(9);
  for (let id = 100; id < 100 + FLOOD_WRITES; id++) writer.ws.send(encodeFrame('WriteVariable', id, { tenant: 'acme', service: name, name: 'x', value }));
  await new Promise((r) => setTimeout(r, 1000));
  return { writer, replies: () => replies };
}

test('a client that never reads: its requests stop being served, it is cut off, and every other client goes on', async (t) => {
  const server = await startServer(t, { limits: { maxBufferedBytes: 256 * 1024, slowConsumerTimeoutMs: 1500 } });
  const owner = await connect(t, server.url, 'ops:s3cret');
  await service(owner, 'big', [['blob', 60 * 1024]]);
  const stalled = await connect(t, server.url, 'ops:s3cret');
  stalled.ws.pause(); // reads nothing from now on
  const frame = (id: number) => encodeFrame('ReadVariable', id, { tenant: 'acme', service: 'big', name: 'blob' });
  // 2,000 replies of 60 KiB would be 120 MB of output if the server queued them all.
  for (let id = 1000; id < 3000; id++) stalled.ws.send(frame(id));
  const other = await connect(t, server.url, 'ops:s3cret');
  const reply = await other.request('ReadVariable', { tenant: 'acme', service: 'big', name: 'blob' });
  assert.equal(reply.type, 'VariableValue');
  assert.equal(await healthz(server), 200);
  await until('the server to cut the stalled client off', () => server.connectionCount === 2);
  assert.equal((await other.request('ReadVariable', { tenant: 'acme', service: 'big', name: 'blob' })).type, 'VariableValue');
});

test('a client that sends garbage and never reads: its error replies count against the budget too', async (t) => {
  const server = await startServer(t, { limits: { maxBufferedBytes: 64 * 1024, slowConsumerTimeoutMs: 1500, rateLimit: { messagesPerSecond: 1e6, burst: 1e6 } } });
  const stalled = await connect(t, server.url, 'ops:s3cret');
  stalled.ws.pause();
  const garbage = Buffer.from([0xc1]); // never valid MessagePack: each one earns an INVALID_MESSAGE reply
  // 300,000 error replies are ~18 MB: more than loopback socket buffers can hide from the budget.
  for (let i = 0; i < 300_000; i++) stalled.ws.send(garbage);
  const other = await connect(t, server.url, 'ops:s3cret');
  assert.equal(await healthz(server), 200);
  await until('the server to cut the garbage sender off', () => server.connectionCount === 1);
  assert.equal((await other.request('Subscription', { tenant: 'acme', service: 'fine', create: true })).type, 'Snapshot');
});

test('a client that reads slowly: requests wait while its output is over budget, and every one is answered, in order', async (t) => {
  const server = await startServer(t, { limits: { maxBufferedBytes: 128 * 1024, slowConsumerTimeoutMs: 60_000 } });
  const owner = await connect(t, server.url, 'ops:s3cret');
  await service(owner, 'big', [['blob', 60 * 1024]]);
  const slow = await RawClient.connect(server.url);
  t.after(() => slow.close());
  const ids: number[] = [];
  slow.ws.on('message', (data: Buffer) => ids.push(decodeFrame(data, 1 << 24).id));
  slow.ws.send(encodeFrame('Authenticate', 1, { tenant: 'acme', method: 'apiKey', credential: 'ops:s3cret', protocol: 1 }));
  await until('authentication', () => ids.length === 1);
  slow.ws.pause();
  for (let id = 2; id < 402; id++) slow.ws.send(encodeFrame('ReadVariable', id, { tenant: 'acme', service: 'big', name: 'blob' }));
  await new Promise((r) => setTimeout(r, 500));
  slow.ws.resume();
  await until('400 replies', () => ids.length === 401);
  assert.deepEqual(ids.slice(1), Array.from({ length: 400 }, (_, i) => i + 2));
});

test('a snapshot larger than the frame limit arrives in chunks, each within the limit', async (t) => {
  const maxFrameBytes = 64 * 1024;
  const server = await startServer(t, { limits: { maxFrameBytes, maxVariableBytes: 16 * 1024 } });
  const owner = await connect(t, server.url, 'ops:s3cret');
  await service(owner, 'wide', []);
  // 2,000 definitions (~100 KiB of them) and 30 × 16 KiB of data: neither fits one frame.
  const where = await owner.request('GetServiceFilePath', { tenant: 'acme', service: 'wide' });
  const vf = await VirtualVariableFile.open((where.body as { filePath: string }).filePath);
  t.after(() => vf.close());
  for (let i = 0; i < 2000; i++) await vf.registerVariable(new VariableMetadata(`counter.number.${i}`, -1, 8, VariableType.U64));
  for (let i = 0; i < 30; i++) {
    await vf.registerVariable(new VariableMetadata(`blob${i}`, -1, 16 * 1024, VariableType.Bytes));
    vf.set(`blob${i}`, new Uint8Array(16 * 1024).fill(i + 1));
  }
  vf.set('counter.number.1999', 1999n);

  const raw = await RawClient.connect(server.url);
  t.after(() => raw.close());
  const frames: Buffer[] = [];
  raw.ws.on('message', (data: Buffer) => frames.push(data));
  assert.equal((await raw.auth('acme', 'ops:s3cret')).type, 'Authenticated');
  raw.ws.send(encodeFrame('Subscription', 77, { tenant: 'acme', service: 'wide' }));
  const last = (): Message | undefined => (frames.length > 1 ? decodeFrame(frames[frames.length - 1]!, 1 << 24) : undefined);
  await until('the last chunk', () => {
    const m = last();
    return m?.type === 'SnapshotChunk' && !m.body.more;
  });
  const messages = frames.slice(1).map((f) => decodeFrame(f, 1 << 24));
  assert.equal(messages[0]!.type, 'Snapshot');
  assert.ok(messages.length > 3, `${messages.length} frames`);
  for (const f of frames) assert.ok(f.length <= maxFrameBytes, `a ${f.length}-byte frame`);

  const client = await Client.initialize(server.url, 'acme', AuthCredentials.apiKey('ops:s3cret'), { mode: 'remote', maxFrameBytes });
  const remote = await client.getVirtualServiceFile('acme', 'wide');
  assert.equal(remote.variables().length, 2030);
  assert.equal(remote.get('counter.number.1999'), 1999n);
  for (let i = 0; i < 30; i++) assert.deepEqual(remote.get(`blob${i}`), new Uint8Array(16 * 1024).fill(i + 1));
  await client.close();
});

test('reports: at most maxChangesPerReport changes, an ack of a few bytes per change, and the client splits its flushes', async (t) => {
  const server = await startServer(t, { limits: { maxChangesPerReport: 50 } });
  const c = await connect(t, server.url, 'ops:s3cret');
  const sid = await service(c, 'many', [['x', 8]]);
  const tooMany = await c.request('ReportVariableChanges', { sid, changes: Array.from({ length: 51 }, () => [0, new Uint8Array(0)] as [number, Uint8Array]) });
  assert.equal(errorCode(tooMany), 'MESSAGE_TOO_LARGE');
  const frames: number[] = [];
  c.ws.on('message', (data: Buffer) => frames.push(data.length));
  const ok = await c.request('ReportVariableChanges', { sid, changes: Array.from({ length: 50 }, (_, i) => [0, new Uint8Array([i])] as [number, Uint8Array]) });
  assert.equal(ok.type, 'VariableChangesAcknowledged');
  const body = ok.body as { count: number; versions: number[]; changedVariables?: string[] };
  assert.equal(body.count, 50);
  assert.equal(body.versions.length, 50);
  assert.equal(body.changedVariables, undefined);
  assert.ok(Math.max(...frames) < 50 * 10 + 100, `ack of ${Math.max(...frames)} bytes`);

  const client = await Client.initialize(server.url, 'acme', AuthCredentials.apiKey('ops:s3cret'), { mode: 'remote' });
  const vf = await client.getVirtualServiceFile('acme', 'many');
  for (let i = 0; i < 120; i++) await vf.registerVariable(new VariableMetadata(`v${i}`, -1, 4, VariableType.U32));
  for (let i = 0; i < 120; i++) vf.set(`v${i}`, i + 1);
  await vf.flush();
  const check = await c.request('ReadVariable', { tenant: 'acme', service: 'many', name: 'v119' });
  assert.deepEqual([...(check.body as { value: Uint8Array }).value], [120, 0, 0, 0]);
  await client.close();
});

test('a lock held by a live local process never stalls the event loop: other requests and /healthz are served meanwhile', async (t) => {
  const server = await startServer(t);
  const a = await connect(t, server.url, 'ops:s3cret');
  await service(a, 'held', [['x', 8], ['free', 8]]);
  const path = ((await a.request('GetServiceFilePath', { tenant: 'acme', service: 'held' })).body as { filePath: string }).filePath;
  const holder = startChild('lock-holder', [path, 'x'], t);
  await holder.next('locked');
  let acked: Message | undefined;
  const write = a.request('WriteVariable', { tenant: 'acme', service: 'held', name: 'x', value: new Uint8Array([7]) }).then((m) => (acked = m));
  const b = await connect(t, server.url, 'ops:s3cret');
  // Another variable of the same service, another tenant, and health: all answered while `x` stays locked.
  assert.equal((await b.request('WriteVariable', { tenant: 'acme', service: 'held', name: 'free', value: new Uint8Array([1]) })).type, 'VariableChangesAcknowledged');
  const beta = await connect(t, server.url, 'beta-secret', 'beta');
  assert.equal((await beta.request('Subscription', { tenant: 'beta', service: 'other', create: true })).type, 'Snapshot');
  assert.equal(await healthz(server), 200);
  assert.equal(acked, undefined, 'the write waits for the lock');
  holder.kill('SIGKILL');
  await holder.exited;
  const done = await write;
  assert.equal(done.type, 'VariableChangesAcknowledged', JSON.stringify(done.body));
  const value = await b.request('ReadVariable', { tenant: 'acme', service: 'held', name: 'x' });
  assert.equal((value.body as { value: Uint8Array }).value[0], 7);
});

test('requests queued behind one waiting for a lock are bounded: the server stops reading that connection', async (t) => {
  const server = await startServer(t, { limits: { maxBufferedBytes: 256 * 1024 } });
  const a = await connect(t, server.url, 'ops:s3cret');
  await service(a, 'held', [['x', 8192]]);
  const path = ((await a.request('GetServiceFilePath', { tenant: 'acme', service: 'held' })).body as { filePath: string }).filePath;
  const holder = startChild('lock-holder', [path, 'x'], t);
  await holder.next('locked');
  const flood = await floodWrites(t, server, 'held');
  // 40 MB sent; the server holds at most its budget of them (and the kernel's socket buffers, a few MB), the
  // rest waits in the sender's own buffer.
  assert.ok(flood.writer.ws.bufferedAmount > 20 * 1024 * 1024, `the server kept reading: ${flood.writer.ws.bufferedAmount} bytes left to send`);
  assert.equal(await healthz(server), 200);
  holder.kill('SIGKILL');
  await until('every write to be answered', () => flood.replies() === FLOOD_WRITES + 1, 120_000);
});

test('a client sending faster than maxInputBytesPerSecond is read more slowly, not cut off; others go on', async (t) => {
  const server = await startServer(t, { limits: { maxInputBytesPerSecond: 2 * 1024 * 1024, maxFrameBytes: 64 * 1024, maxVariableBytes: 16 * 1024 } });
  const a = await connect(t, server.url, 'ops:s3cret');
  await service(a, 'fast', [['x', 8192]]);
  const { writer, replies } = await floodWrites(t, server, 'fast');
  // 40 MB offered in a moment; at 2 MiB/s the server has taken a few MB (plus what socket buffers hold).
  assert.ok(writer.ws.bufferedAmount > 20 * 1024 * 1024, `read too fast: ${writer.ws.bufferedAmount} bytes left to send`);
  assert.ok(replies() > 1, 'yet it is being served');
  assert.equal(writer.ws.readyState, writer.ws.OPEN);
  assert.equal((await a.request('ReadVariable', { tenant: 'acme', service: 'fast', name: 'x' })).type, 'VariableValue');
  assert.equal(await healthz(server), 200);
});

test('a 1 MiB frame of 262,000 tiny elements is refused without being decoded, before and after authentication', async (t) => {
  const server = await startServer(t);
  const frame = encodeFrame('ReportVariableChanges', 7, { sid: 1, changes: Array.from({ length: 262_000 }, () => [0, new Uint8Array(0)] as [number, Uint8Array]) });
  const anon = await RawClient.connect(server.url);
  t.after(() => anon.close());
  assert.equal(errorCode(await anon.sendRaw(frame, 7)), 'AUTH_FAILED');
  const c = await connect(t, server.url, 'ops:s3cret');
  assert.equal(errorCode(await c.sendRaw(frame, 7)), 'MESSAGE_TOO_LARGE');
});

test('a glob built to backtrack ("*" × 60 + "#") is matched in linear time: every tenant goes on', async (t) => {
  const server = await startServer(t);
  const attacker = await connect(t, server.url, 'view');
  const writer = await connect(t, server.url, 'ops:s3cret');
  const sid = await service(writer, 'dash', [['a'.repeat(60), 8]]);
  const sub = await attacker.request('Subscription', { tenant: 'acme', service: 'dash', variables: ['*'.repeat(60) + '#'] });
  assert.equal(sub.type, 'Snapshot');
  for (let i = 0; i < 20; i++) {
    const ack = await writer.request('ReportVariableChanges', { sid, changes: [[0, new Uint8Array([i])]] });
    assert.equal(ack.type, 'VariableChangesAcknowledged');
  }
  assert.equal(await healthz(server), 200);
  const beta = await connect(t, server.url, 'beta-secret', 'beta');
  assert.equal((await beta.request('Subscription', { tenant: 'beta', service: 'x', create: true })).type, 'Snapshot');
  const tooMany = await attacker.request('Subscription', { tenant: 'acme', service: 'dash', variables: Array.from({ length: 500 }, (_, i) => `v${i}*`) });
  assert.equal(errorCode(tooMany), 'INVALID_MESSAGE');
});

test('a key with "hybrid": false may not map files: HYBRID_ACCESS_DENIED, and the client falls back to remote', async (t) => {
  const tenants = {
    ...TEST_TENANTS,
    acme: { keys: [...TEST_TENANTS.acme.keys, { id: 'nomap', secret: 'nomap', read: ['*'], write: ['*'], admin: ['*'], hybrid: false }] },
  };
  const server = await startServer(t, { config: { tenants, audit: { enabled: false } } });
  const raw = await connect(t, server.url, 'nomap:nomap');
  assert.equal(errorCode(await raw.request('GetServiceFilePath', { tenant: 'acme', service: 's', create: true })), 'HYBRID_ACCESS_DENIED');
  const client = await Client.initialize(server.url, 'acme', AuthCredentials.apiKey('nomap:nomap'));
  const vf = await client.getVirtualServiceFile('acme', 's');
  assert.equal(vf.mode, 'remote');
  const local = await Client.initialize(server.url, 'acme', AuthCredentials.apiKey('ops:s3cret'));
  assert.equal((await local.getVirtualServiceFile('acme', 's')).mode, 'local');
  await Promise.all([client.close(), local.close()]);
});

test('a service file truncated by another process: that service reports INVALID_FILE, the server and every other service go on', async (t) => {
  const server = await startServer(t);
  const a = await connect(t, server.url, 'ops:s3cret');
  const victimSid = await service(a, 'victim', [['x', 8]]);
  await service(a, 'safe', [['y', 8]]);
  const errors: { code: string }[] = [];
  const client = await Client.initialize(server.url, 'acme', AuthCredentials.apiKey('ops:s3cret'), { mode: 'remote', onError: (e) => errors.push(e) });
  const remote = await client.getVirtualServiceFile('acme', 'victim');
  const path = ((await a.request('GetServiceFilePath', { tenant: 'acme', service: 'victim' })).body as { filePath: string }).filePath;
  truncateSync(path, 4096); // header only: the directory and the data are now past the end of the file
  const write = await a.request('ReportVariableChanges', { sid: victimSid, changes: [[0, new Uint8Array([1])]] });
  assert.equal(errorCode(write), 'INVALID_FILE', JSON.stringify(write.body));
  const read = await a.request('ReadVariable', { tenant: 'acme', service: 'victim', name: 'x' });
  assert.equal(errorCode(read), 'INVALID_FILE', JSON.stringify(read.body));
  assert.ok(!(read.body as { message: string }).message.includes(path));
  assert.equal(errorCode(await a.request('GetServiceFilePath', { tenant: 'acme', service: 'victim' })), 'INVALID_FILE');
  // The remote client's copy of the service ends, and says why.
  await until('the remote service to end', () => errors.some((e) => e.code === 'INVALID_FILE'));
  assert.throws(() => remote.get('x'), { code: 'INVALID_FILE' });
  await client.close();
  // Everything else is untouched.
  assert.equal(await healthz(server), 200);
  assert.equal((await a.request('WriteVariable', { tenant: 'acme', service: 'safe', name: 'y', value: new Uint8Array([2]) })).type, 'VariableChangesAcknowledged');
  const beta = await connect(t, server.url, 'beta-secret', 'beta');
  assert.equal((await beta.request('Subscription', { tenant: 'beta', service: 'fine', create: true })).type, 'Snapshot');
});

test('a directory count corrupted by a local process: the service ends for its subscribers with INVALID_FILE, nothing else is touched', async (t) => {
  const server = await startServer(t);
  const a = await connect(t, server.url, 'ops:s3cret');
  await service(a, 'victim', [['x', 8]]);
  const viewer = await connect(t, server.url, 'view');
  await viewer.request('Subscription', { tenant: 'acme', service: 'victim' });
  const path = ((await a.request('GetServiceFilePath', { tenant: 'acme', service: 'victim' })).body as { filePath: string }).filePath;
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.from([0xf0, 0xff, 0xff, 0xff]), 0, 4, 76); // varCount (u32 at 76) = 0xfffffff0
  closeSync(fd);
  await a.request('WriteVariable', { tenant: 'acme', service: 'victim', name: 'x', value: new Uint8Array([1]) });
  const pushed = await viewer.push((m) => m.type === 'Unsubscribed');
  assert.equal((pushed.body as { errorCode?: string }).errorCode, 'INVALID_FILE');
  assert.equal(errorCode(await a.request('Subscription', { tenant: 'acme', service: 'victim' })), 'INVALID_FILE');
  assert.equal(await healthz(server), 200);
  assert.equal((await a.request('Subscription', { tenant: 'acme', service: 'other', create: true })).type, 'Snapshot');
});
