import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync, statSync, existsSync } from 'node:fs';
import { request } from 'node:http';
import { encodeFrame } from '../src/protocol/frame-codec.js';
import { VariableType } from '../src/index.js';
import type { Message } from '../src/protocol/messages.js';
import { RawClient, errorCode } from './helpers/raw-client.js';
import { startServer } from './helpers/server.js';
import { tempDir } from './helpers/temp.js';
import { selfSignedTls } from '../src/server/index.js';

async function connect(t: Parameters<typeof startServer>[0], url: string, credential?: string, tenant = 'acme'): Promise<RawClient> {
  const c = await RawClient.connect(url);
  t.after(() => c.close());
  if (credential !== undefined) assert.equal((await c.auth(tenant, credential)).type, 'Authenticated');
  return c;
}

function body<T = Record<string, unknown>>(m: Message): T {
  return m.body as T;
}

test('nothing but authentication before it succeeds; then the key works for its tenant only', async (t) => {
  const server = await startServer(t);
  const c = await connect(t, server.url);
  const early = await c.request('GetServiceFilePath', { tenant: 'acme', service: 'a', create: true });
  assert.equal(errorCode(early), 'AUTH_FAILED');
  assert.equal(errorCode(await c.auth('acme', 'ops:wrong')), 'AUTH_FAILED');
  assert.equal(errorCode(await c.auth('beta', 'ops:s3cret')), 'AUTH_FAILED', 'a key of acme is not a key of beta');
  assert.equal(errorCode(await c.auth('nope', 'ops:s3cret')), 'AUTH_FAILED');
  const ok = await c.auth('acme', 'ops:s3cret');
  assert.equal(ok.type, 'Authenticated');
  assert.equal(body<{ keyId: string }>(ok).keyId, 'ops');
  const other = await c.request('GetServiceFilePath', { tenant: 'beta', service: 'a', create: true });
  assert.equal(errorCode(other), 'PERMISSION_DENIED', 'authenticated for acme, not beta');
  assert.equal((await c.request('GetServiceFilePath', { tenant: 'acme', service: 'a', create: true })).type, 'ServiceFilePath');
});

test('authentication deadline closes a silent connection', async (t) => {
  const server = await startServer(t, { limits: { authTimeoutMs: 200 } });
  const c = await connect(t, server.url);
  const closed = await c.closed;
  assert.equal(closed.code, 4002);
  assert.equal(errorCode(c.pushes[0]!), 'AUTH_FAILED');
});

test('ServiceFilePath: an absolute path under dataDir, the right size and file id; 0600', async (t) => {
  const server = await startServer(t);
  const c = await connect(t, server.url, 'ops:s3cret');
  const r = body<{ serviceId: string; filePath: string; fileSize: number; fileId: string; readOnly: boolean }>(
    await c.request('GetServiceFilePath', { tenant: 'acme', service: 'plant-1', create: true }),
  );
  assert.equal(r.serviceId, 'acme/plant-1');
  assert.ok(r.filePath.startsWith(server.config.dataDir.replace(/^\.\//, '')) || r.filePath.includes('plant-1.mem'));
  assert.equal(statSync(r.filePath).size, r.fileSize);
  assert.equal(statSync(r.filePath).mode & 0o777, 0o600);
  assert.match(r.fileId, /^[0-9a-f]{32}$/);
  assert.equal(r.readOnly, false);
  const missing = await c.request('GetServiceFilePath', { tenant: 'acme', service: 'nothing-here' });
  assert.equal(errorCode(missing), 'SERVICE_NOT_FOUND');
});

test('names with /, .., NUL or 65 characters are INVALID_NAME and never touch the disk', async (t) => {
  const server = await startServer(t);
  const c = await connect(t, server.url, 'ops:s3cret');
  for (const bad of ['../etc', 'a/b', '..', 'nul\0x', 'x'.repeat(65), '', '.hidden']) {
    for (const m of [
      await c.request('GetServiceFilePath', { tenant: 'acme', service: bad, create: true }),
      await c.request('Subscription', { tenant: 'acme', service: bad, create: true }),
      await c.request('ReadVariable', { tenant: 'acme', service: 's', name: bad }),
    ]) {
      const code = errorCode(m);
      assert.ok(code === 'INVALID_NAME' || (bad.length > 256 && code === 'INVALID_MESSAGE'), `${JSON.stringify(bad)} → ${code}`);
    }
  }
  assert.equal(existsSync(join(server.config.dataDir, 'etc.mem')), false);
  assert.equal(existsSync(join(server.config.dataDir, 'tenants', 'etc.mem')), false);
});

test('a missing permission refuses every message type, with no effect', async (t) => {
  const server = await startServer(t);
  const ops = await connect(t, server.url, 'ops:s3cret');
  const sub = body<{ sid: number }>(await ops.request('Subscription', { tenant: 'acme', service: 'plant', create: true }));
  const reg = await ops.request('RegisterVariable', { sid: sub.sid, name: 'temp', offset: -1, size: 8, typeId: VariableType.F64 });
  assert.equal(reg.type, 'VariableRegistered');
  await ops.request('WriteVariable', { tenant: 'acme', service: 'plant', name: 'temp', value: new Uint8Array(8).fill(1) });

  const viewer = await connect(t, server.url, 'view');
  const vsub = body<{ sid: number; readOnly: boolean }>(await viewer.request('Subscription', { tenant: 'acme', service: 'plant' }));
  assert.equal(vsub.readOnly, true);
  assert.equal(errorCode(await viewer.request('WriteVariable', { tenant: 'acme', service: 'plant', name: 'temp', value: new Uint8Array(8) })), 'PERMISSION_DENIED');
  assert.equal(errorCode(await viewer.request('ReportVariableChanges', { sid: vsub.sid, changes: [[0, new Uint8Array(8)]] })), 'PERMISSION_DENIED');
  assert.equal(errorCode(await viewer.request('RegisterVariable', { sid: vsub.sid, name: 'x', offset: -1, size: 8, typeId: 1 })), 'PERMISSION_DENIED');
  assert.equal(errorCode(await viewer.request('GetServiceFilePath', { tenant: 'acme', service: 'new-one', create: true })), 'PERMISSION_DENIED');
  const fp = body<{ readOnly: boolean }>(await viewer.request('GetServiceFilePath', { tenant: 'acme', service: 'plant' }));
  assert.equal(fp.readOnly, true);

  const editor = await connect(t, server.url, 'editor:edit');
  const esub = body<{ sid: number }>(await editor.request('Subscription', { tenant: 'acme', service: 'plant' }));
  assert.equal(errorCode(await editor.request('RegisterVariable', { sid: esub.sid, name: 'x', offset: -1, size: 8, typeId: 1 })), 'PERMISSION_DENIED');
  assert.equal(errorCode(await editor.request('Subscription', { tenant: 'acme', service: 'brand-new', create: true })), 'PERMISSION_DENIED');

  const dash = await connect(t, server.url, 'dash:dash');
  for (const m of [
    await dash.request('Subscription', { tenant: 'acme', service: 'plant' }),
    await dash.request('GetServiceFilePath', { tenant: 'acme', service: 'plant' }),
    await dash.request('ReadVariable', { tenant: 'acme', service: 'plant', name: 'temp' }),
    await dash.request('WriteVariable', { tenant: 'acme', service: 'plant', name: 'temp', value: new Uint8Array(8) }),
  ]) assert.equal(errorCode(m), 'PERMISSION_DENIED');
  assert.equal((await dash.request('Subscription', { tenant: 'acme', service: 'dash-1', create: true })).type, 'Snapshot');

  const value = body<{ value: Uint8Array }>(await ops.request('ReadVariable', { tenant: 'acme', service: 'plant', name: 'temp' }));
  assert.deepEqual([...value.value], [1, 1, 1, 1, 1, 1, 1, 1], 'nothing the refused messages carried was applied');
  const snap = body<{ variables: unknown[] }>(await ops.request('Subscription', { tenant: 'acme', service: 'plant' }));
  assert.equal(snap.variables.length, 1, 'no variable was registered by a refused message');
});

test('snapshot, ReportVariableChanges → acknowledgement, SyncBatch to every subscriber', async (t) => {
  const server = await startServer(t);
  const a = await connect(t, server.url, 'ops:s3cret');
  const b = await connect(t, server.url, 'ops:s3cret');
  const sa = body<{ sid: number }>(await a.request('Subscription', { tenant: 'acme', service: 'sync', create: true }));
  const reg = body<{ def: number[] }>(await a.request('RegisterVariable', { sid: sa.sid, name: 'n', offset: -1, size: 8, typeId: VariableType.U64 }));
  const index = reg.def[0]!;
  const sb = body<{ sid: number; variables: unknown[][]; data: Uint8Array; version: number }>(await b.request('Subscription', { tenant: 'acme', service: 'sync' }));
  assert.equal(sb.variables.length, 1);
  assert.equal(sb.variables[0]![1], 'n');
  const value = new Uint8Array(8);
  new DataView(value.buffer).setBigUint64(0, 77n, true);
  const ack = await a.request('ReportVariableChanges', { sid: sa.sid, changes: [[index, value]] });
  assert.equal(ack.type, 'VariableChangesAcknowledged');
  const acked = body<{ count: number; versions: number[]; version: number }>(ack);
  assert.equal(acked.count, 1);
  assert.deepEqual(acked.versions, [acked.version]);
  const batch = await b.push((m) => m.type === 'SyncBatch' && (m.body as { updates: unknown[] }).updates.length > 0);
  const upd = body<{ sid: number; updates: [number, number, Uint8Array][] }>(batch);
  assert.equal(upd.sid, sb.sid);
  assert.equal(upd.updates[0]![0], index);
  assert.equal(new DataView(upd.updates[0]![2].buffer, upd.updates[0]![2].byteOffset).getBigUint64(0, true), 77n);
  assert.equal(upd.updates[0]![1], body<{ version: number }>(ack).version);
  // The writer's own write is not echoed back to it; another client's write is.
  await b.request('ReadVariable', { tenant: 'acme', service: 'sync', name: 'n' }); // a round trip: the batch to b went out before it
  const ackVersion = body<{ version: number }>(ack).version;
  const echoed = a.pushes.some((m) => m.type === 'SyncBatch' && (m.body as { updates: [number, number, Uint8Array][] }).updates.some((u) => u[1] === ackVersion));
  assert.equal(echoed, false, 'no echo of its own write');
  const fromB = new Uint8Array(8).fill(2);
  await b.request('ReportVariableChanges', { sid: sb.sid, changes: [[index, fromB]] });
  const toA = await a.push((m) => m.type === 'SyncBatch' && (m.body as { updates: [number, number, Uint8Array][] }).updates.some((u) => u[1] > ackVersion));
  assert.deepEqual([...body<{ updates: [number, number, Uint8Array][] }>(toA).updates[0]![2]], [...fromB]);
  const two = await a.request('ReportVariableChanges', { sid: sa.sid, changes: [[index, value], [index, value]] });
  const twoBody = body<{ version: number; versions: number[] }>(two);
  assert.deepEqual(twoBody.versions, [twoBody.version, twoBody.version], 'a variable named twice takes its last value, one write, one version');
  const bad = await a.request('ReportVariableChanges', { sid: sa.sid, changes: [[index, new Uint8Array(9)]] });
  assert.equal(errorCode(bad), 'VALUE_TOO_LARGE');
  assert.equal(errorCode(await a.request('ReportVariableChanges', { sid: sa.sid, changes: [[99, new Uint8Array(1)]] })), 'VARIABLE_NOT_FOUND');
  assert.equal(errorCode(await a.request('ReportVariableChanges', { sid: 999, changes: [] })), 'SERVICE_NOT_FOUND');
});

test('a notify subscription: definitions without data, then VariablesUpdated names instead of SyncBatch values', async (t) => {
  const server = await startServer(t);
  const ops = await connect(t, server.url, 'ops:s3cret');
  const sa = body<{ sid: number }>(await ops.request('Subscription', { tenant: 'acme', service: 'names', create: true }));
  await ops.request('RegisterVariable', { sid: sa.sid, name: 'n', offset: -1, size: 8, typeId: VariableType.U64 });
  await ops.request('WriteVariable', { tenant: 'acme', service: 'names', name: 'n', value: new Uint8Array(8).fill(3) });

  const viewer = await connect(t, server.url, 'viewer:view'); // read is all a notify subscription needs
  const snap = body<{ sid: number; serviceId: string; variables: unknown[][]; data: Uint8Array; readOnly: boolean }>(
    await viewer.request('Subscription', { tenant: 'acme', service: 'names', notify: true }),
  );
  assert.equal(snap.serviceId, 'acme/names');
  assert.deepEqual(snap.variables.map((d) => d[1]), ['n']);
  assert.equal(snap.data.length, 0, 'the values are read from the mapping, not sent');
  assert.equal(snap.readOnly, true);

  for (let i = 1; i <= 5; i++) await ops.request('WriteVariable', { tenant: 'acme', service: 'names', name: 'n', value: new Uint8Array(8).fill(i) });
  await ops.request('RegisterVariable', { sid: sa.sid, name: 'later', offset: -1, size: 4, typeId: VariableType.U32 });
  const ack = body<{ version: number }>(await ops.request('WriteVariable', { tenant: 'acme', service: 'names', name: 'later', value: new Uint8Array(4) }));
  const seen = new Set<string>();
  let lastVersion = 0;
  while (!seen.has('later') || lastVersion < ack.version) {
    const m = await viewer.push((p) => p.type === 'VariablesUpdated' || p.type === 'SyncBatch');
    assert.equal(m.type, 'VariablesUpdated', 'a notify subscriber never gets values');
    const u = body<{ sid: number; serviceId: string; version: number; variables: string[] }>(m);
    assert.equal(u.sid, snap.sid);
    assert.equal(u.serviceId, 'acme/names');
    assert.ok(u.version >= lastVersion, 'versions never go back');
    lastVersion = u.version;
    for (const name of u.variables) seen.add(name);
  }
  assert.deepEqual([...seen].sort(), ['later', 'n']);
  assert.equal(body<{ sid: number }>(await viewer.request('Unsubscribe', { sid: snap.sid })).sid, snap.sid);
});

test('unknown, malformed, text and oversize frames get an error; the connection stays usable', async (t) => {
  // Small frames need small variables: every variable must fit a frame (the limits are refused otherwise).
  const server = await startServer(t, { limits: { maxFrameBytes: 4096, maxVariableBytes: 2048 } });
  const c = await connect(t, server.url, 'ops:s3cret');
  const { Packr } = await import('msgpackr');
  const packr = new Packr({ useRecords: false });
  assert.equal(errorCode(await c.sendRaw(packr.pack([120, 11, {}]), 11)), 'UNKNOWN_MESSAGE');
  assert.equal(errorCode(await c.sendRaw(packr.pack([2, 12, { tenant: 5 }]), 12)), 'INVALID_MESSAGE');
  assert.equal(errorCode(await c.sendRaw(encodeFrame('WriteVariable', 13, { tenant: 'acme', service: 's', name: 'x', value: new Uint8Array(5000) }), 13)), 'MESSAGE_TOO_LARGE');
  assert.equal(errorCode(await c.sendRaw(encodeFrame('SyncBatch', 14, { sid: 1, version: 1, updates: [] }), 14)), 'INVALID_MESSAGE');
  assert.equal(errorCode(await c.sendRaw(packr.pack([10, 15, {}]), 15)), 'INVALID_MESSAGE'); // a Query names its tenant
  c.ws.send('text frame');
  const textErr = await c.push((m) => m.type === 'Error');
  assert.equal(errorCode(textErr), 'INVALID_MESSAGE');
  assert.equal((await c.request('GetServiceFilePath', { tenant: 'acme', service: 'still-fine', create: true })).type, 'ServiceFilePath');
});

test('rate limit: past the burst, RATE_LIMITED; the connection and other clients go on', async (t) => {
  const server = await startServer(t, { limits: { rateLimit: { messagesPerSecond: 1, burst: 5 } } });
  const c = await connect(t, server.url, 'ops:s3cret');
  const other = await connect(t, server.url, 'ops:s3cret');
  const replies = await Promise.all(Array.from({ length: 10 }, () => c.request('GetServiceFilePath', { tenant: 'acme', service: 'r', create: true })));
  const codes = replies.map((m) => errorCode(m) ?? m.type);
  assert.ok(codes.includes('RATE_LIMITED'), codes.join());
  assert.ok(codes.includes('ServiceFilePath'));
  assert.equal((await other.request('GetServiceFilePath', { tenant: 'acme', service: 'r' })).type, 'ServiceFilePath');
});

test('connection limit: the one too many is refused, the others go on', async (t) => {
  const server = await startServer(t, { limits: { maxConnections: 2 } });
  await connect(t, server.url, 'ops:s3cret');
  const second = await connect(t, server.url, 'ops:s3cret');
  await assert.rejects(RawClient.connect(server.url), /503/);
  assert.equal((await second.request('GetServiceFilePath', { tenant: 'acme', service: 'c', create: true })).type, 'ServiceFilePath');
});

test('subscription limit per connection', async (t) => {
  const server = await startServer(t, { limits: { maxSubscriptionsPerConnection: 2 } });
  const c = await connect(t, server.url, 'ops:s3cret');
  await c.request('Subscription', { tenant: 'acme', service: 's1', create: true });
  await c.request('Subscription', { tenant: 'acme', service: 's2', create: true });
  assert.equal(errorCode(await c.request('Subscription', { tenant: 'acme', service: 's3', create: true })), 'RATE_LIMITED');
});

test('health endpoint on the same port', async (t) => {
  const server = await startServer(t);
  const status = await new Promise<number>((resolve, reject) => {
    request(`http://127.0.0.1:${server.port}/healthz`, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', reject).end();
  });
  assert.equal(status, 200);
});

test('TLS: a wss round trip with a self-signed certificate', async (t) => {
  const tls = await selfSignedTls();
  const server = await startServer(t, { tls });
  assert.match(server.url, /^wss:\/\//);
  const c = await RawClient.connect(server.url, { ca: tls.cert });
  t.after(() => c.close());
  assert.equal((await c.auth('acme', 'ops:s3cret')).type, 'Authenticated');
  await assert.rejects(RawClient.connect(server.url), 'an unknown certificate is refused by default');
});

test('audit log: one JSON line per GetServiceFilePath and per applied change', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'audit.log');
  const server = await startServer(t, { config: { tenants: (await import('./helpers/server.js')).TEST_TENANTS, audit: { enabled: true, file } } });
  const c = await connect(t, server.url, 'ops:s3cret');
  await c.request('GetServiceFilePath', { tenant: 'acme', service: 'audited', create: true });
  const s = body<{ sid: number }>(await c.request('Subscription', { tenant: 'acme', service: 'audited' }));
  await c.request('RegisterVariable', { sid: s.sid, name: 'v', offset: -1, size: 1, typeId: VariableType.U8 });
  await c.request('ReportVariableChanges', { sid: s.sid, changes: [[0, new Uint8Array([5])]] });
  await server.close();
  const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const path = lines.find((l) => l.event === 'GetServiceFilePath')!;
  assert.equal(path.keyId, 'ops');
  assert.equal(path.tenant, 'acme');
  assert.equal(path.service, 'audited');
  assert.match(String(path.clientId), /^c\d+-/);
  const change = lines.find((l) => l.event === 'VariablesChanged')!;
  assert.deepEqual(change.variables, ['v']);
});

test('a SyncBatch never exceeds the frame limit: large changes go out in several batches', async (t) => {
  const server = await startServer(t, { limits: { maxFrameBytes: 4096, maxVariableBytes: 2048 } });
  const a = await connect(t, server.url, 'ops:s3cret');
  const b = await connect(t, server.url, 'ops:s3cret');
  const sa = body<{ sid: number }>(await a.request('Subscription', { tenant: 'acme', service: 'big', create: true }));
  for (const name of ['p', 'q', 'r']) await a.request('RegisterVariable', { sid: sa.sid, name, offset: -1, size: 1500, typeId: VariableType.Bytes });
  const sb = body<{ sid: number }>(await b.request('Subscription', { tenant: 'acme', service: 'big' }));
  const frames: number[] = [];
  b.ws.on('message', (data: Buffer) => frames.push(data.length));
  // Three reports in one burst: their changes reach b's dirty set together and are flushed at once.
  await Promise.all([0, 1, 2].map((i) => a.request('ReportVariableChanges', { sid: sa.sid, changes: [[i, new Uint8Array(1500).fill(i + 1)]] })));
  const got = new Map<number, number>();
  while (got.size < 3) {
    const m = await b.push((x) => x.type === 'SyncBatch' && (x.body as { sid: number }).sid === sb.sid);
    for (const [index, , bytes] of body<{ updates: [number, number, Uint8Array][] }>(m).updates) got.set(index, bytes[0]!);
  }
  assert.deepEqual([...got.entries()].sort(), [[0, 1], [1, 2], [2, 3]]);
  assert.ok(frames.every((n) => n <= 4096), `frames: ${frames.join(', ')}`);
});
