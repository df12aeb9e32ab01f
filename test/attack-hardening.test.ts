import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect as tcpConnect, type Socket } from 'node:net';
import { test } from 'node:test';
import { SignJWT } from 'jose';
import { encodeFrame } from '../src/protocol/frame-codec.js';
import type { MessageBodies, MessageTypeName } from '../src/protocol/messages.js';
import { Server, loadConfig } from '../src/server/index.js';
import { FRAME_HEADROOM } from '../src/server/limits.js';
import type { Message } from '../src/protocol/messages.js';
import { RawClient } from './helpers/raw-client.js';
import { until } from './helpers/server-process.js';
import { startServer, TEST_TENANTS } from './helpers/server.js';
import { tempDir } from './helpers/temp.js';

/**
 * Findings of an attack round, each fixed and held here: a peer that starts closing and stops reading, limits
 * that contradict each other, a subscriber's memory of its own writes, and operation ids shared across kinds of
 * credential. Real servers on 127.0.0.1, real sockets.
 */

// ---- a WebSocket client on a bare TCP socket ----

/**
 * A WebSocket client that does only what it is told: it sends frames (masked, as a client must) and reads
 * nothing after the handshake, so it can send a close frame and never read the answer.
 */
class BareClient {
  private nextId = 1;

  private constructor(private readonly socket: Socket) {}

  /** Upgrades; resolves with the client once the server answered 101 (then stops reading), or with the refusal's status. */
  static async open(server: Server, t: { after(fn: () => void): void }): Promise<BareClient | { status: number }> {
    const socket = tcpConnect({ host: '127.0.0.1', port: server.port });
    socket.on('error', () => {}); // a reset is how a cut-off peer ends: seen through 'close'
    t.after(() => socket.destroy());
    const head = await new Promise<string>((resolve, reject) => {
      let text = '';
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString('latin1');
        if (text.includes('\r\n\r\n')) resolve(text);
      });
      socket.once('close', () => reject(new Error(`closed during the handshake: ${JSON.stringify(text)}`)));
      socket.write(
        `GET / HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    socket.removeAllListeners('data');
    socket.removeAllListeners('close');
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
    if (status !== 101) {
      socket.destroy();
      return { status };
    }
    socket.pause(); // never reads again: whatever the server sends stays in the socket buffers
    return new BareClient(socket);
  }

  request<K extends MessageTypeName>(type: K, body: MessageBodies[K]): void {
    this.socket.write(wsFrame(0x2, encodeFrame(type, this.nextId++, body)));
  }

  /** The start of the close handshake (code 1000); the server's answer is never read. */
  sendClose(): void {
    this.socket.write(wsFrame(0x8, Uint8Array.of(0x03, 0xe8)));
  }

  /** The end of our side of the TCP connection (a FIN), without any close frame; nothing is read either. */
  endTcp(): void {
    this.socket.end();
  }
}

/** A client-to-server WebSocket frame (FIN set, masked). */
function wsFrame(opcode: number, payload: Uint8Array): Buffer {
  const n = payload.length;
  const header = n < 126 ? Buffer.from([0x80 | opcode, 0x80 | n]) : Buffer.alloc(n < 65536 ? 4 : 10);
  if (n >= 126) {
    header[0] = 0x80 | opcode;
    header[1] = 0x80 | (n < 65536 ? 126 : 127);
    if (n < 65536) header.writeUInt16BE(n, 2);
    else header.writeBigUInt64BE(BigInt(n), 2);
  }
  const mask = randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < n; i++) body[i]! ^= mask[i & 3]!;
  return Buffer.concat([header, mask, body]);
}

function opened(c: BareClient | { status: number }): BareClient {
  assert.ok(c instanceof BareClient, `refused: ${JSON.stringify(c)}`);
  return c;
}

/** Connects from the same address until the server admits one (a refusal is a 503), or fails after `withinMs`. */
async function admittedWithin(server: Server, t: { after(fn: () => void): void }, withinMs: number): Promise<BareClient> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const c = await BareClient.open(server, t);
    if (c instanceof BareClient) return c;
    assert.equal(c.status, 503);
    assert.ok(Date.now() < deadline, `still refused after ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A client that authenticated and subscribed (to a service it created), and now reads nothing. */
async function subscribedNonReader(server: Server, t: { after(fn: () => void): void }, service: string): Promise<BareClient> {
  const before = server.subscriptionCount;
  const c = opened(await BareClient.open(server, t));
  c.request('Authenticate', { tenant: 'acme', method: 'apiKey', credential: 'ops:s3cret', protocol: 2 });
  c.request('Subscription', { tenant: 'acme', service, create: true });
  await until(() => server.subscriptionCount === before + 1, 'the subscription');
  return c;
}

// ---- 1. a close handshake that the peer never finishes ----

test('a client that sends a close frame and stops reading: its session ends at once; its socket, and its place in the limits, within closeGraceMs', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t, { limits: { closeGraceMs: 600_000 } }); // long: what is let go at once shows alone
  const c = await subscribedNonReader(server, t, 'closing');
  assert.equal(server.connectionCount, 1);
  c.sendClose();
  await until(() => server.subscriptionCount === 0 && server.connectionCount === 0, 'the session to end as the close handshake begins');
  // The socket itself is still there (the peer has not answered): it keeps its place until it is gone, so an
  // address never holds more sockets than its cap.
  assert.equal(server.admissionCounts.connections, 1);
  // close() cuts off a socket that is closing too (it is not left to its grace).
  await server.close();
  assert.equal(server.admissionCounts.connections, 0);
});

test('a client that sends a close frame and stops reading frees its place well before ws\'s 30 s close timeout (default closeGraceMs)', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t, { limits: { maxConnectionsPerIp: 1 } });
  const c = await subscribedNonReader(server, t, 'closing-cap');
  assert.deepEqual(await BareClient.open(server, t), { status: 503 }, 'one connection per address');
  c.sendClose();
  await admittedWithin(server, t, 20_000); // the first one was cut off: the cap is one
});

test('a client that never reads the server\'s own close (authentication timeout) frees its place well before 30 s', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t, { limits: { maxConnectionsPerIp: 1, authTimeoutMs: 500 } });
  opened(await BareClient.open(server, t)); // never authenticates, never reads: the server closes it (4002)
  await admittedWithin(server, t, 20_000);
});

test('a client that ends its side of the TCP connection (no close frame) with output owed to it that it never reads: cut off within closeGraceMs', { timeout: 180_000 }, async (t) => {
  const server = await startServer(t);
  // A writer that keeps the non-reader owed far more than its socket buffers and output budget hold.
  const writer = await RawClient.connect(server.url);
  t.after(() => writer.close());
  assert.equal((await writer.auth('acme', 'ops:s3cret')).type, 'Authenticated');
  const snapshot = await writer.request('Subscription', { tenant: 'acme', service: 'flood', create: true });
  assert.equal(snapshot.type, 'Snapshot');
  const sid = snapshot.type === 'Snapshot' ? snapshot.body.sid : 0;
  const indexes: number[] = [];
  for (let i = 0; i < 8; i++) {
    const reg = await writer.request('RegisterVariable', { sid, name: `v${i}`, offset: -1, size: 65_536, typeId: 0 });
    assert.equal(reg.type, 'VariableRegistered');
    if (reg.type === 'VariableRegistered') indexes.push(reg.body.def[0]);
  }
  const c = await subscribedNonReader(server, t, 'flood');
  for (let round = 0; round < 64; round++) {
    const value = new Uint8Array(65_536).fill(round);
    const ack = await writer.request('ReportVariableChanges', { sid, changes: indexes.map((index) => [index, value] as [number, Uint8Array]) });
    assert.equal(ack.type, 'VariableChangesAcknowledged');
  }
  assert.equal(server.admissionCounts.connections, 2);
  c.endTcp();
  await until(() => server.subscriptionCount === 1, 'the non-reader\'s session to end with its side of the connection');
  await until(() => server.admissionCounts.connections === 1, 'the non-reader to be cut off', 20_000);
});

// ---- 2. a frame limit too small for the largest variable ----

test('limits in which the largest variable cannot fit a frame are refused at start (CONFIG_INVALID, naming limits.maxFrameBytes)', async (t) => {
  const refused = { code: 'CONFIG_INVALID', field: 'limits.maxFrameBytes' };
  const dataDir = tempDir(t, 'commy-limits-');
  const config = { tenants: TEST_TENANTS, audit: { enabled: false } };
  await assert.rejects(Server.start({ host: '127.0.0.1', port: 0, dataDir, config, limits: { maxFrameBytes: 4096 } }), refused); // 64 KiB variables
  await assert.rejects(Server.start({ host: '127.0.0.1', port: 0, dataDir, config, limits: { maxVariableBytes: 1024 * 1024 } }), refused); // 1 MiB frames
  assert.throws(() => loadConfig({ limits: { maxFrameBytes: 65_536 } }), refused, 'a config file alone is judged too');
  assert.throws(() => loadConfig({ limits: { maxVariableBytes: 60_000, maxFrameBytes: 60_000 + FRAME_HEADROOM - 1 } }), refused);
  // Judged once the options' limits are applied over the file's: together they agree.
  const server = await Server.start({ host: '127.0.0.1', port: 0, dataDir, config: { ...config, limits: { maxFrameBytes: 4096 } }, limits: { maxVariableBytes: 1024 } });
  assert.deepEqual([server.config.limits.maxFrameBytes, server.config.limits.maxVariableBytes], [4096, 1024]);
  await server.close();
});

test('at the tightest frame limit allowed, the largest variable with the longest names goes through every message that carries a value', { timeout: 120_000 }, async (t) => {
  const maxVariableBytes = 8192;
  const maxFrameBytes = maxVariableBytes + FRAME_HEADROOM;
  const [tenant, service, name] = ['t', 's', 'v'].map((c) => c.repeat(64)) as [string, string, string];
  const server = await startServer(t, {
    config: { tenants: { [tenant]: { keys: [{ id: 'ops', secret: 's3cret', read: ['*'], write: ['*'], admin: ['*'] }] } }, audit: { enabled: false } },
    limits: { maxFrameBytes, maxVariableBytes },
  });
  const received: number[] = [];
  const client = async (): Promise<RawClient> => {
    const c = await RawClient.connect(server.url);
    t.after(() => c.close());
    c.ws.on('message', (data: Buffer) => received.push(data.length));
    const auth = await c.request('Authenticate', { tenant, method: 'apiKey', credential: 'ops:s3cret', protocol: 2, clientKey: 'k'.repeat(64) });
    assert.equal(auth.type, 'Authenticated');
    return c;
  };
  const ok = <T extends Message['type']>(m: Message, type: T): Extract<Message, { type: T }> => {
    assert.equal(m.type, type, JSON.stringify(m.type === 'Error' ? m.body : m.type));
    return m as Extract<Message, { type: T }>;
  };
  const value = (fill: number): Uint8Array => new Uint8Array(maxVariableBytes).fill(fill);
  const opId = Number.MAX_SAFE_INTEGER; // the longest encoding of every number the request carries
  const a = await client();
  const { sid } = ok(await a.request('Subscription', { tenant, service, create: true }), 'Snapshot').body;
  const index = ok(await a.request('RegisterVariable', { sid, name, offset: -1, size: maxVariableBytes, typeId: 0 }), 'VariableRegistered').body.def[0];
  const b = await client();
  const sb = ok(await b.request('Subscription', { tenant, service }), 'Snapshot').body.sid;
  ok(await a.request('WriteVariable', { tenant, service, name, value: value(1), opId }), 'VariableChangesAcknowledged');
  ok(await a.request('ReportVariableChanges', { sid, changes: [[index, value(2)]], opId: opId - 1 }), 'VariableChangesAcknowledged');
  const { version } = ok(await a.request('Mutate', { sid, index, value: value(3), opId: opId - 2 }), 'MutationResponse').body;
  ok(await a.request('Mutate', { sid, index, value: value(4), opId: opId - 3, expectedVersion: version }), 'MutationResponse');
  await b.push((m) => m.type === 'SyncBatch' && m.body.sid === sb && m.body.updates.some(([i, , bytes]) => i === index && bytes[0] === 4));
  assert.equal(ok(await a.request('ReadVariable', { tenant, service, name }), 'VariableValue').body.value[0], 4);
  const pages = [ok(await a.request('Query', { tenant, values: true }), 'QueryResponse')];
  while (pages.at(-1)!.body.more) pages.push(ok(await a.push((m) => m.id === a.lastRequestId), 'QueryResponse'));
  const queried = pages.flatMap((p) => p.body.services.flatMap((q) => q.values ?? []));
  assert.deepEqual(queried.map(([i, , bytes]) => [i, bytes.length, bytes[0]]), [[index, maxVariableBytes, 4]]);
  // A new subscriber's snapshot: more than half a frame, so it comes in chunks.
  const c = await client();
  const snap = ok(await c.request('Subscription', { tenant, service }), 'Snapshot');
  assert.equal(snap.body.more, true);
  const chunk = await c.push((m) => m.type === 'SnapshotChunk' && m.body.data !== undefined);
  assert.equal(chunk.type === 'SnapshotChunk' && chunk.body.data![0], 4);
  assert.ok(received.length > 0 && received.every((n) => n <= maxFrameBytes), `frames received: ${received.join(', ')}`);
});

// ---- 3. a subscriber's marks of its own writes ----

/** An authenticated raw client of tenant acme (key ops), closed after the test. */
async function opsClient(server: Server, t: { after(fn: () => void): void }): Promise<RawClient> {
  const c = await RawClient.connect(server.url);
  t.after(() => c.close());
  assert.equal((await c.auth('acme', 'ops:s3cret')).type, 'Authenticated');
  return c;
}

function sidOf(m: Message): number {
  assert.equal(m.type, 'Snapshot', JSON.stringify(m.type === 'Error' ? m.body : m.type));
  return m.type === 'Snapshot' ? m.body.sid : 0;
}

const u64 = (n: number): Uint8Array => new Uint8Array(new BigUint64Array([BigInt(n)]).buffer);

test('a filtered subscriber that writes variables outside its filter keeps no mark of them; its own deliveries stay right', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const admin = await opsClient(server, t);
  const sid = sidOf(await admin.request('Subscription', { tenant: 'acme', service: 'marks', create: true }));
  const index = new Map<string, number>();
  for (const name of ['a.0', ...Array.from({ length: 200 }, (_, i) => `b.${i}`)]) {
    const reg = await admin.request('RegisterVariable', { sid, name, offset: -1, size: 8, typeId: 1 });
    assert.equal(reg.type, 'VariableRegistered');
    if (reg.type === 'VariableRegistered') index.set(name, reg.body.def[0]);
  }
  const outside = [...index].filter(([name]) => name.startsWith('b.')).map(([, i]) => i);
  const filtered = await opsClient(server, t);
  const fsid = sidOf(await filtered.request('Subscription', { tenant: 'acme', service: 'marks', variables: ['a.*'] }));
  // Writes by index to variables it never receives (it may write them: the key may), again and again.
  for (let round = 1; round <= 5; round++) {
    const ack = await filtered.request('ReportVariableChanges', { sid: fsid, changes: outside.map((i) => [i, u64(round)] as [number, Uint8Array]) });
    assert.equal(ack.type, 'VariableChangesAcknowledged');
  }
  assert.equal(server.subscriptionMarks.own, 0, 'no mark for a variable the subscriber is never sent');
  // A 'names' subscription (notify) never looks at marks either: its own writes leave none.
  const notify = await opsClient(server, t);
  const nsid = sidOf(await notify.request('Subscription', { tenant: 'acme', service: 'marks', notify: true }));
  assert.equal((await notify.request('ReportVariableChanges', { sid: nsid, changes: outside.map((i) => [i, u64(9)] as [number, Uint8Array]) })).type, 'VariableChangesAcknowledged');
  assert.equal(server.subscriptionMarks.own, 0, 'no mark for a subscription that is sent names');

  // Inside its filter: its own write is marked, not echoed, and the mark is cleared by the flush of that change.
  const a0 = index.get('a.0')!;
  assert.equal((await filtered.request('ReportVariableChanges', { sid: fsid, changes: [[a0, u64(7)]] })).type, 'VariableChangesAcknowledged');
  await until(() => server.subscriptionMarks.own === 0 && server.subscriptionMarks.dirty === 0, 'its own write\'s mark to be cleared by the flush');
  // Someone else's write reaches it, and nothing outside its filter ever did.
  assert.equal((await admin.request('WriteVariable', { tenant: 'acme', service: 'marks', name: 'a.0', value: u64(8) })).type, 'VariableChangesAcknowledged');
  const batch = await filtered.push((m) => m.type === 'SyncBatch' && m.body.sid === fsid);
  assert.ok(batch.type === 'SyncBatch');
  assert.deepEqual(batch.body.updates.map(([i, , bytes]) => [i, bytes[0]]), [[a0, 8]], 'the other writer\'s value, and not its own echo');
  const seen = filtered.pushes.flatMap((m) => (m.type === 'SyncBatch' ? m.body.updates.map(([i]) => i) : []));
  assert.deepEqual(seen, [], `updates outside the filter or echoes: ${JSON.stringify(seen)}`);
});

// ---- 4. operation ids: an API key and a token of the same name are different clients ----

test('a token whose sub is an API key\'s id never shares that key\'s operation ids: the same opId from both is applied twice, independently', { timeout: 120_000 }, async (t) => {
  const jwtSecret = 'a-jwt-secret-of-reasonable-length';
  const server = await startServer(t, {
    config: {
      tenants: { acme: { keys: [{ id: 'ops', secret: 's3cret', read: ['*'], write: ['*'], admin: ['*'] }], jwt: { secret: jwtSecret, issuer: 'issuer.test' } } },
      audit: { enabled: false },
    },
  });
  const token = await new SignJWT({ tenant: 'acme', sub: 'ops', read: ['*'], write: ['*'], admin: ['*'] })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer('issuer.test')
    .setExpirationTime('5m')
    .sign(new TextEncoder().encode(jwtSecret));
  const clientKey = 'shared-client-key-0001'; // the same on both: only the kind of credential tells them apart
  const connect = async (method: 'apiKey' | 'jwt', credential: string): Promise<RawClient> => {
    const c = await RawClient.connect(server.url);
    t.after(() => c.close());
    const auth = await c.request('Authenticate', { tenant: 'acme', method, credential, protocol: 2, clientKey });
    assert.ok(auth.type === 'Authenticated' && auth.body.keyId === 'ops', JSON.stringify(auth.body));
    return c;
  };
  const key = await connect('apiKey', 'ops:s3cret');
  const jwt = await connect('jwt', token);
  assert.equal((await key.request('GetServiceFilePath', { tenant: 'acme', service: 'ids', create: true })).type, 'ServiceFilePath');
  const sid = sidOf(await key.request('Subscription', { tenant: 'acme', service: 'ids' }));
  assert.equal((await key.request('RegisterVariable', { sid, name: 'x', offset: -1, size: 8, typeId: 1 })).type, 'VariableRegistered');
  const write = async (c: RawClient, opId: number, n: number): Promise<number> => {
    const ack = await c.request('WriteVariable', { tenant: 'acme', service: 'ids', name: 'x', value: u64(n), opId });
    assert.equal(ack.type, 'VariableChangesAcknowledged', JSON.stringify(ack.body));
    return ack.type === 'VariableChangesAcknowledged' ? ack.body.version : 0;
  };
  const read = async (): Promise<[number, number]> => {
    const m = await key.request('ReadVariable', { tenant: 'acme', service: 'ids', name: 'x' });
    assert.ok(m.type === 'VariableValue');
    const v = m.body.value;
    return [Number(new DataView(v.buffer, v.byteOffset, v.byteLength).getBigUint64(0, true)), m.body.version];
  };

  // The same write under the same opId: a replay would get the key's answer and write nothing.
  const byKey = await write(key, 1, 10);
  const byToken = await write(jwt, 1, 10);
  assert.ok(byToken > byKey, `the token's write was applied (version ${byToken} after the key's ${byKey}), not answered from the key's`);
  assert.deepEqual(await read(), [10, byToken]);
  // Another write under an opId the other one used: no collision (INVALID_MESSAGE), both applied in turn.
  const second = await write(key, 2, 20);
  const third = await write(jwt, 2, 30);
  assert.ok(third > second);
  assert.deepEqual(await read(), [30, third]);
  // Each one's retries still get its own first answer, applying nothing.
  assert.equal(await write(key, 1, 10), byKey);
  assert.equal(await write(jwt, 2, 30), third);
  assert.deepEqual(await read(), [30, third]);
});
