import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { WebSocketServer } from 'ws';
import { AuthCredentials, Client, CommyError, VariableMetadata, VariableType, type FileChangeEvent, type VirtualVariableFile } from '../src/index.js';
import { selfSignedTls } from '../src/server/index.js';
import { startChild } from './helpers/child.js';
import { OPS_KEY, VIEWER_KEY, startClientServer } from './helpers/client-server.js';
import { TEST_TENANTS } from './helpers/server.js';

async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

async function register(vf: VirtualVariableFile, name: string, type: number = VariableType.U64, size = 8): Promise<void> {
  await vf.registerVariable(new VariableMetadata(name, -1, size, type as never));
}

test('initialize: connected, authenticated, monitoring; close() is final', async (t) => {
  const s = await startClientServer(t);
  const client = await Client.initialize(s.url, 'acme', AuthCredentials.apiKey(OPS_KEY));
  assert.equal(client.state, 'open');
  assert.equal(client.tryGetFileChange(), null);
  assert.equal(await client.waitForFileChange({ timeoutMs: 20 }), null, 'null on timeout');
  const vf = await client.getVirtualServiceFile('acme', 'life');
  await client.close();
  await client.close(); // idempotent
  assert.equal(client.state, 'closed');
  assert.equal(vf.closed, true, 'close() closes the client\'s service files');
  await assert.rejects(client.getVirtualServiceFile('acme', 'life'), { code: 'NOT_CONNECTED' });
  await assert.rejects(client.readVariable('acme', 'life', 'x'), { code: 'NOT_CONNECTED' });
  await assert.rejects(client.writeVariable('acme', 'life', 'x', new Uint8Array(1)), { code: 'NOT_CONNECTED' });
  await assert.rejects(client.waitForFileChange(), { code: 'NOT_CONNECTED' });
  await assert.rejects(client.authenticate('acme', AuthCredentials.apiKey(OPS_KEY)), { code: 'NOT_CONNECTED' });
  await assert.rejects(client.connect(), { code: 'NOT_CONNECTED' });
  assert.throws(() => client.tryGetFileChange(), { code: 'NOT_CONNECTED' });
  assert.throws(() => vf.get('x'), { code: 'NOT_CONNECTED' });
});

test('bad input fails with a code: URL, options, credentials, names, unreachable server', async (t) => {
  const s = await startClientServer(t);
  assert.throws(() => new Client('http://127.0.0.1:1'), { code: 'TYPE_MISMATCH' });
  assert.throws(() => new Client('not a url'), { code: 'TYPE_MISMATCH' });
  assert.throws(() => new Client(s.url, { mode: 'lcoal' as never }), { code: 'TYPE_MISMATCH' });
  assert.throws(() => new Client(s.url, { requestTimeoutMs: 0 }), { code: 'TYPE_MISMATCH' });
  assert.throws(() => AuthCredentials.apiKey(''), { code: 'AUTH_FAILED' });
  await assert.rejects(Client.initialize(s.url, 'acme', AuthCredentials.apiKey('ops:wrong')), { code: 'AUTH_FAILED' });
  await assert.rejects(Client.initialize(s.url, 'nope', AuthCredentials.apiKey(OPS_KEY)), { code: 'AUTH_FAILED' });
  await assert.rejects(Client.initialize(s.url, '../etc', AuthCredentials.apiKey(OPS_KEY)), { code: 'INVALID_NAME' });
  await assert.rejects(Client.initialize('ws://127.0.0.1:1', 'acme', AuthCredentials.apiKey(OPS_KEY)), { code: 'NOT_CONNECTED' });
  const client = await s.connect();
  await assert.rejects(client.getVirtualServiceFile('acme', 'a/b'), { code: 'INVALID_NAME' });
  await assert.rejects(client.readVariable('acme', 'missing', 'x'), (err: CommyError) => err.code === 'SERVICE_NOT_FOUND' || err.code === 'VARIABLE_NOT_FOUND');
});

test('credentials never show their secret', () => {
  const creds = AuthCredentials.apiKey('ops:top-secret');
  assert.equal(creds.method, 'apiKey');
  assert.doesNotMatch(JSON.stringify(creds), /top-secret/);
  assert.doesNotMatch(inspect(creds), /top-secret/);
  assert.equal(AuthCredentials.jwt('a.b.c').method, 'jwt');
});

test("mode 'auto' maps the server's file on this machine; 'remote' syncs over the WebSocket; each sees the other's writes", async (t) => {
  const s = await startClientServer(t);
  const local = await s.connect({ mode: 'auto' });
  const remote = await s.connect({ mode: 'remote' });
  const lf = await local.getVirtualServiceFile('acme', 'hybrid');
  assert.equal(lf.mode, 'local');
  assert.match(lf.filePath!, /hybrid\.mem$/);
  assert.equal(lf.serviceId, 'acme/hybrid');
  await register(lf, 'a');
  await register(lf, 'label', VariableType.String, 24);
  const rf = await remote.getVirtualServiceFile('acme', 'hybrid');
  assert.equal(rf.mode, 'remote');
  assert.equal(rf.serviceId, lf.serviceId, 'the same service id in both modes');
  await register(rf, 'b'); // registered remotely, visible locally
  assert.deepEqual(lf.variables().map((v) => v.name), ['a', 'label', 'b']);

  for (let i = 1n; i <= 200n; i++) lf.set('a', i); // a local write: no system call, the server's watcher sees it
  lf.set('label', 'from local');
  await until(() => rf.get('a') === 200n && rf.get('label') === 'from local', 'the remote client to see the local writes');

  for (let i = 1n; i <= 200n; i++) rf.set('b', i * 3n);
  await rf.flush(); // acknowledged = applied to the file the local client maps
  assert.equal(lf.get('b'), 600n);
  await rf.writeVariable('label', new TextEncoder().encode('from remote'));
  assert.equal(lf.get('label'), 'from remote');
  await until(() => rf.get('a') === 200n && rf.get('b') === 600n, 'the remote client to settle');
});

test("mode 'local' is local or fails; a read-only key maps read-only in 'auto' and 'local', and is remote in 'remote'", async (t) => {
  const s = await startClientServer(t);
  const local = await s.connect({ mode: 'local' });
  const vf = await local.getVirtualServiceFile('acme', 'ro');
  assert.equal(vf.mode, 'local');
  const viewerAuto = await s.connect({ mode: 'auto' }, VIEWER_KEY);
  const va = await viewerAuto.getVirtualServiceFile('acme', 'ro');
  assert.equal(va.mode, 'local');
  assert.equal(va.filePath, vf.filePath);
  const viewerLocal = await s.connect({ mode: 'local' }, VIEWER_KEY);
  assert.equal((await viewerLocal.getVirtualServiceFile('acme', 'ro')).mode, 'local');
  const viewerRemote = await s.connect({ mode: 'remote' }, VIEWER_KEY);
  assert.equal((await viewerRemote.getVirtualServiceFile('acme', 'ro')).mode, 'remote');
  // Creating a service needs the admin right, whatever the mode.
  await assert.rejects(viewerAuto.getVirtualServiceFile('acme', 'brand-new'), { code: 'PERMISSION_DENIED' });
});

test("'auto' tells onFallback why a service went remote (here a key with hybrid: false); 'local' fails with that reason", async (t) => {
  const far = { id: 'far', secret: 'away', read: ['*'], write: ['*'], admin: ['*'], hybrid: false };
  const s = await startClientServer(t, { config: { tenants: { ...TEST_TENANTS, acme: { keys: [...TEST_TENANTS.acme.keys, far] } }, audit: { enabled: false } } });
  const fallbacks: [CommyError, { tenant: string; service: string }][] = [];
  const auto = await s.connect({ mode: 'auto', onFallback: (reason, service) => fallbacks.push([reason, service]) }, 'far:away');
  const vf = await auto.getVirtualServiceFile('acme', 'far-off');
  assert.equal(vf.mode, 'remote');
  assert.equal(fallbacks.length, 1);
  const [reason, service] = fallbacks[0]!;
  assert.ok(reason instanceof CommyError);
  assert.equal(reason.code, 'HYBRID_ACCESS_DENIED');
  assert.deepEqual(service, { tenant: 'acme', service: 'far-off' });

  const strict = await s.connect({ mode: 'local' }, 'far:away');
  await assert.rejects(strict.getVirtualServiceFile('acme', 'far-off'), (e: unknown) => e instanceof CommyError && e.code === 'HYBRID_ACCESS_DENIED');
  const mapped = await s.connect({ mode: 'auto', onFallback: () => assert.fail('a key that may map does not fall back') });
  assert.equal((await mapped.getVirtualServiceFile('acme', 'far-off')).mode, 'local');

  // A callback that throws is reported through onError; the file still opens, remotely.
  const errors: CommyError[] = [];
  const careless = await s.connect({ mode: 'auto', onError: (e) => errors.push(e), onFallback: () => { throw new Error('oops'); } }, 'far:away');
  assert.equal((await careless.getVirtualServiceFile('acme', 'far-off')).mode, 'remote');
  assert.ok(errors.some((e) => e.code === 'INTERNAL_ERROR' && /oops/.test(e.message)), 'the throw went to onError');
  assert.throws(() => new Client(s.url, { onFallback: 'log' as never }), { code: 'TYPE_MISMATCH' });
});

test('another process: a remote child and a local parent, then a local child and a remote parent', { timeout: 120_000 }, async (t) => {
  const s = await startClientServer(t);
  for (const [parentMode, childMode] of [['auto', 'remote'], ['remote', 'auto']] as const) {
    const service = `proc-${childMode}`;
    const parent = await s.connect({ mode: parentMode });
    const vf = await parent.getVirtualServiceFile('acme', service);
    await register(vf, 'up');
    await register(vf, 'down');
    const child = startChild('remote-client', [s.url, childMode, service], t);
    const ready = await child.next<{ mode: string }>('ready', 60_000);
    assert.equal(ready.mode, childMode === 'auto' ? 'local' : 'remote');
    assert.equal(vf.mode, parentMode === 'auto' ? 'local' : 'remote');
    for (let i = 1; i <= 50; i++) {
      vf.set('down', BigInt(i));
      if (i % 10 === 0) await vf.flush();
    }
    child.send({ type: 'wait', name: 'down', value: '50' });
    await child.next('seen', 60_000);
    child.send({ type: 'set', name: 'up', value: '12345' });
    await child.next('set-done', 60_000);
    await until(() => vf.get('up') === 12345n, `the ${parentMode} parent to see the ${childMode} child's write`);
    child.send({ type: 'quit' });
    assert.equal((await child.exited).code, 0);
  }
});

test('waitForFileChange / tryGetFileChange aggregate every service of the client, local and remote', async (t) => {
  const s = await startClientServer(t);
  const watcher = await s.connect({ mode: 'auto' });
  const writer = await s.connect({ mode: 'remote' });
  const wl = await watcher.getVirtualServiceFile('acme', 'agg-local');
  await register(wl, 'x');
  const watcherRemote = await s.connect({ mode: 'remote' });
  const wr = await watcherRemote.getVirtualServiceFile('acme', 'agg-remote');
  await register(wr, 'y');
  await watcherRemote.stopFileMonitoring();
  await assert.rejects(watcherRemote.waitForFileChange(), { code: 'NOT_CONNECTED' }, 'no waiting while monitoring is stopped');
  await watcherRemote.startFileMonitoring();
  while (watcher.tryGetFileChange() !== null); // drop the registrations' events
  while (watcherRemote.tryGetFileChange() !== null);

  const xl = await writer.getVirtualServiceFile('acme', 'agg-local');
  const yr = await writer.getVirtualServiceFile('acme', 'agg-remote');
  xl.set('x', 1n);
  yr.set('y', 2n);
  const got: FileChangeEvent[] = [];
  for (const [client, name] of [[watcher, 'x'], [watcherRemote, 'y']] as const) {
    let ev: FileChangeEvent | null;
    do {
      ev = await client.waitForFileChange({ timeoutMs: 5000 });
      assert.ok(ev !== null, `an event for ${name}`);
    } while (!ev.changedVariables.includes(name));
    got.push(ev);
  }
  assert.match(got[0]!.filePath, /agg-local\.mem$/, 'a local service reports its file');
  assert.equal(got[1]!.filePath, '', 'a remote one has none');
  assert.equal(got[0]!.serviceId, 'acme/agg-local');
  assert.ok(got[1]!.version >= 2n);

  // Without waiting: the event is queued and polled.
  yr.set('y', 3n);
  await until(() => wr.get('y') === 3n, 'the remote watcher to get y = 3');
  let polled: FileChangeEvent | null = null;
  for (let e = watcherRemote.tryGetFileChange(); e !== null; e = watcherRemote.tryGetFileChange()) polled = e;
  assert.deepEqual(polled?.changedVariables, ['y']);

  const controller = new AbortController();
  const waiting = watcherRemote.waitForFileChange({ signal: controller.signal });
  const stop = new Error('stop');
  controller.abort(stop);
  await assert.rejects(waiting, (err: unknown) => err instanceof CommyError && err.code === 'ABORTED' && err.cause === stop);
  assert.equal(await watcherRemote.waitForFileChange({ timeoutMs: 10 }), null);
});

test('the old API: readVariable / writeVariable over the wire', async (t) => {
  const s = await startClientServer(t);
  const client = await s.connect({ maxFrameBytes: 4096 });
  const vf = await client.getVirtualServiceFile('acme', 'old');
  await register(vf, 'blob', VariableType.Bytes, 3000);
  await client.writeVariable('acme', 'old', 'blob', new Uint8Array([1, 2, 3]));
  const read = await client.readVariable('acme', 'old', 'blob');
  assert.equal(Object.getPrototypeOf(read), Uint8Array.prototype, 'a plain Uint8Array');
  assert.deepEqual([...read.subarray(0, 4)], [1, 2, 3, 0]);
  await until(() => (vf.get('blob') as Uint8Array)[2] === 3, 'the service file to show the write');
  await assert.rejects(client.readVariable('acme', 'old', 'nope'), { code: 'VARIABLE_NOT_FOUND' });
  await assert.rejects(client.writeVariable('acme', 'old', 'blob', new Uint8Array(3001)), { code: 'VALUE_TOO_LARGE' });
  await assert.rejects(client.writeVariable('acme', 'old', 'blob', new Uint8Array(5000)), { code: 'MESSAGE_TOO_LARGE' }, 'refused before sending');
  assert.equal(client.state, 'open', 'and the connection goes on');
  const viewer = await s.connect({}, VIEWER_KEY);
  await assert.rejects(viewer.writeVariable('acme', 'old', 'blob', new Uint8Array(1)), { code: 'PERMISSION_DENIED' });
  assert.deepEqual([...(await viewer.readVariable('acme', 'old', 'blob')).subarray(0, 3)], [1, 2, 3]);
});

test('one connection, several tenants', async (t) => {
  const s = await startClientServer(t);
  const client = await s.connect();
  await client.authenticate('beta', AuthCredentials.apiKey('ops:beta-secret'));
  const a = await client.getVirtualServiceFile('acme', 'same-name');
  const b = await client.getVirtualServiceFile('beta', 'same-name');
  assert.notEqual(a.serviceId, b.serviceId);
  await register(a, 'v');
  await register(b, 'v');
  a.set('v', 1n);
  b.set('v', 2n);
  await Promise.all([a.flush(), b.flush()]);
  assert.equal((await client.readVariable('acme', 'same-name', 'v'))[0], 1);
  assert.equal((await client.readVariable('beta', 'same-name', 'v'))[0], 2);
});

test('connection loss with reconnect: false: pending requests reject NOT_CONNECTED, state is closed, remote files stop', async (t) => {
  const s = await startClientServer(t);
  const errors: CommyError[] = [];
  const client = await s.connect({ onError: (e) => errors.push(e), reconnect: false });
  const vf = await client.getVirtualServiceFile('acme', 'lost');
  await register(vf, 'x');
  while (client.tryGetFileChange() !== null); // the registration's event
  const waiting = assert.rejects(client.waitForFileChange(), { code: 'NOT_CONNECTED' });
  await s.server.close();
  await waiting;
  await until(() => client.state === 'closed', 'state closed');
  assert.throws(() => vf.get('x'), { code: 'NOT_CONNECTED' });
  await assert.rejects(client.readVariable('acme', 'lost', 'x'), { code: 'NOT_CONNECTED' });
  assert.ok(errors.some((e) => e.code === 'NOT_CONNECTED'), 'the loss is reported once through onError');
  await client.close();
});

test('a server that never answers: requests fail with TIMEOUT', async (t) => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => wss.once('listening', resolve));
  t.after(() => new Promise<void>((resolve) => wss.close(() => resolve())));
  const port = (wss.address() as { port: number }).port;
  const client = new Client(`ws://127.0.0.1:${port}`, { requestTimeoutMs: 100 });
  t.after(() => client.close());
  await client.connect();
  assert.equal(client.state, 'open');
  const started = performance.now();
  await assert.rejects(client.authenticate('acme', AuthCredentials.apiKey(OPS_KEY)), { code: 'TIMEOUT' });
  assert.ok(performance.now() - started >= 90);
  for (const ws of wss.clients) ws.terminate();
});

test('TLS: wss:// with the server\'s CA; refused without it', async (t) => {
  const tls = await selfSignedTls();
  const s = await startClientServer(t, { tls });
  assert.match(s.url, /^wss:\/\//);
  const client = await s.connect({ tls: { ca: tls.cert } });
  const vf = await client.getVirtualServiceFile('acme', 'secure');
  await register(vf, 'x');
  vf.set('x', 42n);
  await vf.flush();
  assert.equal((await client.readVariable('acme', 'secure', 'x'))[0], 42);
  await assert.rejects(Client.initialize(s.url, 'acme', AuthCredentials.apiKey(OPS_KEY)), { code: 'NOT_CONNECTED' });
});
