import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { VariableMetadata, VariableType, VirtualVariableFile, type Client, type FileChangeEvent } from '../src/index.js';
import { ChangeWatcher } from '../src/local/change-watcher.js';
import { OWN_PID } from '../src/local/process-lock.js';
import { ServiceFile, type DirEntry } from '../src/local/service-file.js';
import type { VariableValue } from '../src/core/variable-type.js';
import type { ServiceRegistry } from '../src/server/service-registry.js';
import { startChild } from './helpers/child.js';
import { VIEWER_KEY, startClientServer } from './helpers/client-server.js';
import { TEST_TENANTS } from './helpers/server.js';
import { tempDir } from './helpers/temp.js';

const PD = { code: 'PERMISSION_DENIED' };

function u64(name: string): VariableMetadata {
  return new VariableMetadata(name, -1, 8, VariableType.U64);
}

/** A typed write the way the API makes it: the value checked (encoded) first. */
function put(file: ServiceFile, entry: DirEntry, value: VariableValue): void {
  file.write(entry, entry.codec.check(value));
}

/** A service file with `x` (U64 = 7) and `label` (String 16 = 'hello'), and the same file mapped read-only. */
function writableAndReadOnly(t: Parameters<typeof tempDir>[0], readOnlyLock = {}): { path: string; w: ServiceFile; r: ServiceFile } {
  const path = join(tempDir(t), 'ro.mem');
  const w = ServiceFile.open(path, { create: true });
  t.after(() => w.close());
  put(w, w.register(u64('x')), 7n);
  put(w, w.register(new VariableMetadata('label', -1, 16, VariableType.String)), 'hello');
  const r = ServiceFile.open(path, { readOnly: true, lock: readOnlyLock });
  t.after(() => r.close());
  return { path, w, r };
}

test('a read-only ServiceFile reads; every mutator throws PERMISSION_DENIED and changes nothing', async (t) => {
  const { path, w, r } = writableAndReadOnly(t);
  assert.equal(r.readOnly, true);
  assert.equal(w.readOnly, false);
  const x = r.entry('x');
  assert.equal(r.readValue(x), 7n);
  assert.equal(r.readValue(r.entry('label')), 'hello');
  assert.deepEqual([...r.readBytes(x)], [7, 0, 0, 0, 0, 0, 0, 0]);

  const version = w.version;
  const data = w.dataBytes().slice();
  assert.equal(r.register(u64('x')).index, x.index, 'the same layout again is a no-op, even read-only');
  assert.throws(() => r.register(new VariableMetadata('x', -1, 4, VariableType.U32)), { code: 'TYPE_MISMATCH' });
  assert.throws(() => r.register(u64('fresh')), PD);
  assert.throws(() => put(r, x, 8n), PD);
  assert.throws(() => r.writeBytes(x, new Uint8Array(8)), PD);
  assert.throws(() => r.writeBytes(x, new Uint8Array(99)), PD, 'refused before the value is even looked at');
  assert.throws(() => r.touch(x), PD);
  assert.throws(() => r.update<bigint>(x, (v) => v + 1n), PD);
  assert.throws(() => r.lock(x), PD);
  assert.throws(() => r.unlock(x), PD);
  assert.throws(() => new ChangeWatcher(r, 'ro').add(() => {}), PD, 'no watcher thread on a read-only mapping');
  r.msync(false); // allowed: it writes nothing

  const copy = r.dataBytes();
  copy.fill(0xff); // a copy: this must neither crash nor reach the file
  assert.notEqual(r.dataBytes()[0], 0xff);
  assert.deepEqual(w.dataBytes(), data, 'the file is untouched');
  assert.equal(w.version, version);
  assert.equal(Atomics.load(w.i32, x.lockIdx), 0);
  assert.equal(Atomics.load(w.i32, x.seqIdx) & 1, 0);
  assert.equal(w.list().length, 2, 'nothing was registered');

  // It still sees everything the writers do, new variables included.
  put(w, w.entry('x'), 8n);
  put(w, w.register(u64('later')), 9n);
  assert.equal(r.readValue(x), 8n);
  assert.equal(r.readValue(r.entry('later')), 9n);
  assert.equal(r.list().length, 3);

  // A read-only open never creates a file.
  const missing = join(path, '..', 'missing.mem');
  assert.throws(() => ServiceFile.open(missing, { readOnly: true, create: true }), { code: 'FILE_NOT_FOUND' });
  assert.equal(existsSync(missing), false);
  r.close();
  assert.throws(() => r.readValue(x), { code: 'NOT_CONNECTED' });
});

test('a stale odd seqlock held by a live writer: the read-only reader gets TIMEOUT, and never takes the lock', async (t) => {
  const { path, r } = writableAndReadOnly(t, { staleMs: 20, timeoutMs: 300 });
  // A second writable mapping in this process takes x's lock and starts a write it never finishes.
  const holder = ServiceFile.open(path, { lock: { staleMs: 20, timeoutMs: 300 } });
  t.after(() => holder.close());
  const hx = holder.entry('x');
  holder.lock(hx);
  Atomics.add(holder.i32, hx.seqIdx, 1);
  const seq = Atomics.load(holder.i32, hx.seqIdx);

  const x = r.entry('x');
  assert.throws(() => r.readValue(x), { code: 'TIMEOUT' });
  assert.throws(() => r.readBytes(x), { code: 'TIMEOUT' });
  assert.equal(Atomics.load(holder.i32, hx.lockIdx), OWN_PID, 'the lock is still the holder\'s');
  assert.equal(Atomics.load(holder.i32, hx.seqIdx), seq, 'the seqlock is untouched');
  assert.equal(r.readValue(r.entry('label')), 'hello', 'other variables are not blocked');

  Atomics.add(holder.i32, hx.seqIdx, 1); // the write completes
  holder.unlock(hx);
  assert.equal(r.readValue(x), 7n);
});

test('a writer killed mid-write: the read-only reader gets TIMEOUT (it may not break the lock); a writable mapping recovers it', { timeout: 120_000 }, async (t) => {
  const { path, w, r } = writableAndReadOnly(t, { staleMs: 20, timeoutMs: 500 });
  const holder = startChild('lock-holder', [path, 'x'], t);
  const { pid } = await holder.next<{ pid: number }>('locked');
  holder.kill('SIGKILL');
  await holder.exited;

  const x = r.entry('x');
  assert.throws(() => r.readValue(x), (err: Error & { code?: string }) => err.code === 'TIMEOUT' && /no longer running/.test(err.message));
  assert.equal(Atomics.load(w.i32, x.lockIdx), pid, 'the dead writer\'s lock is left for a writable mapping to recover');
  assert.equal(Atomics.load(w.i32, x.seqIdx) & 1, 1);
  assert.equal(r.isTorn(x), false);

  const value = w.readValue(w.entry('x')) as bigint; // the writable mapping breaks the dead lock
  assert.equal(w.isTorn(w.entry('x')), true);
  assert.equal(r.readValue(x), value, 'after recovery the read-only reader reads again');
  assert.equal(r.isTorn(x), true, 'and sees the TORN flag');
});

test('embedded read-only open: typed writes, raw writes and change events are refused; reads work', async (t) => {
  const { path } = writableAndReadOnly(t);
  const vf = await VirtualVariableFile.open(path, { readOnly: true });
  t.after(() => vf.close());
  assert.equal(vf.mode, 'local');
  assert.equal(vf.get('x'), 7n);
  assert.throws(() => vf.set('x', 1n), PD);
  assert.throws(() => vf.set('x', 'not a number'), PD, 'PERMISSION_DENIED comes before the value check');
  assert.throws(() => vf.handle('x').set(1n), PD);
  assert.throws(() => vf.handle<bigint>('x').update((v) => v + 1n), PD);
  await assert.rejects(vf.writeVariable('x', new Uint8Array(8)), PD);
  await assert.rejects(vf.registerVariable(u64('fresh')), PD);
  assert.equal((await vf.registerVariable(u64('x'))).name, 'x');
  assert.throws(() => vf.changes(), PD);

  await vf.flush(); // nothing to publish: fine
  const raw = vf.bytes();
  raw.fill(0xff);
  assert.equal(vf.get('x'), 7n, 'bytes() is a copy');
  await assert.rejects(vf.flush(), PD, 'raw writes cannot be published');
  await vf.flush(); // refused once: the copy is forgotten
  assert.deepEqual(vf.bytes(), vf.shadowBytes());
  assert.equal(vf.get('x'), 7n);
});

/** Waits (loosely bounded) for the next change event of `client` that names `name`. */
async function eventFor(client: Client, name: string, timeoutMs = 30_000): Promise<FileChangeEvent> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ev = await client.waitForFileChange({ timeoutMs: 1000 });
    if (ev !== null && ev.changedVariables.includes(name)) return ev;
    if (Date.now() > deadline) assert.fail(`no change event for ${name} within ${timeoutMs} ms`);
  }
}

test('a read-only key in auto mode maps the server\'s file read-only: local, writes refused, every change seen', { timeout: 120_000 }, async (t) => {
  const s = await startClientServer(t);
  const ops = await s.connect({ mode: 'remote' });
  const vo = await ops.getVirtualServiceFile('acme', 'dash');
  await vo.registerVariable(u64('x'));
  await vo.registerVariable(new VariableMetadata('label', -1, 16, VariableType.String));
  vo.set('x', 5n);
  vo.set('label', 'start');
  await vo.flush();

  const errors: Error[] = [];
  const viewer = await s.connect({ mode: 'auto', onError: (e) => errors.push(e) }, VIEWER_KEY);
  const vf = await viewer.getVirtualServiceFile('acme', 'dash');
  assert.equal(vf.mode, 'local');
  assert.equal(vf.serviceId, 'acme/dash');
  assert.equal(typeof vf.filePath, 'string');
  assert.equal(vf.get('x'), 5n);
  assert.equal(vf.get('label'), 'start');

  // Writes of every kind: PERMISSION_DENIED at once, no effect.
  assert.throws(() => vf.set('x', 6n), PD);
  assert.throws(() => vf.handle('x').set(6n), PD);
  await assert.rejects(vf.writeVariable('x', new Uint8Array(8).fill(1)), PD);
  await assert.rejects(vf.registerVariable(u64('intruder')), PD);
  assert.equal((await vf.registerVariable(u64('x'))).name, 'x', 'the same layout again is a no-op');
  const raw = vf.bytes();
  raw.fill(0xff);
  assert.equal(vf.get('x'), 5n, 'bytes() is a copy: writing into it changes nothing');
  await assert.rejects(vf.flush(), PD);
  await assert.rejects(viewer.writeVariable('acme', 'dash', 'x', new Uint8Array(8)), PD);
  assert.equal(vo.get('x'), 5n);
  assert.deepEqual([...(await ops.readVariable('acme', 'dash', 'x'))], [5, 0, 0, 0, 0, 0, 0, 0], 'the server\'s file is untouched');
  assert.deepEqual(vf.variables().map((v) => v.name), ['x', 'label']);

  // A change by a remote client.
  vo.set('x', 6n);
  await vo.flush();
  const ev = await eventFor(viewer, 'x');
  assert.deepEqual(ev.changedVariables, ['x']);
  const xMeta = vf.variables().find((v) => v.name === 'x')!;
  assert.deepEqual(ev.byteRanges, [[xMeta.offset, xMeta.end]]);
  assert.equal(ev.filePath, vf.filePath);
  assert.equal(ev.serviceId, 'acme/dash');
  assert.equal(vf.get('x'), 6n);
  assert.ok(ev.version <= vf.version);

  // A change by a local client in another process (it maps the same file, writable).
  const writer = startChild('remote-client', [s.url, 'auto', 'dash'], t);
  assert.equal((await writer.next<{ mode: string }>('ready', 60_000)).mode, 'local');
  writer.send({ type: 'set', name: 'x', value: '42' });
  await writer.next('set-done');
  const ev2 = await eventFor(viewer, 'x');
  assert.deepEqual(ev2.changedVariables, ['x']);
  assert.equal(vf.get('x'), 42n);

  // A variable registered later by the ops client shows up, with its range.
  await vo.registerVariable(new VariableMetadata('later', -1, 4, VariableType.U32));
  vo.set('later', 9);
  await vo.flush();
  const ev3 = await eventFor(viewer, 'later');
  const later = vf.variables().find((v) => v.name === 'later');
  assert.ok(later !== undefined, 'the new variable is in the directory');
  assert.ok(ev3.byteRanges.some(([a, b]) => a === later.offset && b === later.end));
  assert.equal(vf.get('later'), 9);

  // vf.changes() works too, from the same notices.
  const changes = vf.changes();
  vo.set('label', 'seen');
  await vo.flush();
  for (;;) {
    const next = await changes.next();
    assert.equal(next.done, false);
    if (next.value.changedVariables.includes('label')) break;
  }
  await changes.return!();
  assert.equal(vf.get('label'), 'seen');

  // close(): unsubscribed at the server, unmapped here.
  const registry = (s.server as unknown as { registry: ServiceRegistry }).registry;
  const host = registry.get('acme', 'dash', false);
  const before = host.subscriberCount;
  await vf.close();
  assert.equal(host.subscriberCount, before - 1, 'vf.close() sends Unsubscribe');
  assert.throws(() => vf.get('x'), { code: 'NOT_CONNECTED' });
  writer.send({ type: 'quit' });
  assert.deepEqual(await writer.exited, { code: 0, signal: null });
  assert.deepEqual(errors, []);
});

test('a read-only key in another process maps read-only: its writes fail cleanly, raw writes change nothing, it sees changes', { timeout: 120_000 }, async (t) => {
  const s = await startClientServer(t);
  const ops = await s.connect({ mode: 'auto' });
  const vo = await ops.getVirtualServiceFile('acme', 'remote-viewer');
  assert.equal(vo.mode, 'local');
  await vo.registerVariable(u64('x'));
  vo.set('x', 3n);

  const viewer = startChild('remote-client', [s.url, 'auto', 'remote-viewer', 'acme', VIEWER_KEY], t);
  assert.equal((await viewer.next<{ mode: string }>('ready', 60_000)).mode, 'local');
  viewer.send({ type: 'set', name: 'x', value: '4' });
  assert.equal((await viewer.next<{ code: string }>('set-failed')).code, 'PERMISSION_DENIED');
  viewer.send({ type: 'raw', name: 'x' });
  assert.equal((await viewer.next<{ value: string }>('raw-done')).value, '3', 'a raw write into the copy changes nothing');
  assert.equal(vo.get('x'), 3n);

  vo.set('x', 77n); // a local write in this process: the server's watcher tells the viewer
  viewer.send({ type: 'wait', name: 'x', value: '77' });
  await viewer.next('seen');
  viewer.send({ type: 'quit' });
  assert.deepEqual(await viewer.exited, { code: 0, signal: null }, 'the viewer process ends normally: no crash');
});

test('a key with admin but no write maps read-only, and registers new variables through the server', async (t) => {
  const tenants = { acme: { keys: [...TEST_TENANTS.acme.keys, { id: 'curator', secret: 'cur', read: ['*'], write: [], admin: ['*'] }] } };
  const s = await startClientServer(t, { config: { tenants, audit: { enabled: false } } });
  const curator = await s.connect({ mode: 'auto' }, 'curator:cur');
  const vf = await curator.getVirtualServiceFile('acme', 'curated'); // admin: may create it
  assert.equal(vf.mode, 'local');
  const meta = await vf.registerVariable(u64('fresh'));
  assert.equal(meta.name, 'fresh');
  assert.deepEqual(vf.variables().map((v) => v.name), ['fresh']);
  assert.equal(vf.get('fresh'), 0n);
  assert.throws(() => vf.set('fresh', 1n), PD, 'still no write right');
  await assert.rejects(vf.registerVariable(new VariableMetadata('fresh', -1, 4, VariableType.U32)), { code: 'TYPE_MISMATCH' });
  const ev = await eventFor(curator, 'fresh');
  assert.deepEqual(ev.changedVariables, ['fresh'], 'a registration is reported as a change, as in the other modes');
});
