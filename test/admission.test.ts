import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as tcpConnect } from 'node:net';
import { WebSocket } from 'ws';
import { Admission, sourceOf, type Refusal, type Ticket } from '../src/server/admission.js';
import type { Limits } from '../src/server/limits.js';
import type { Server } from '../src/server/index.js';
import { selfSignedTls } from '../src/server/index.js';
import { RawClient } from './helpers/raw-client.js';
import { startServer } from './helpers/server.js';

// Every address in 127.0.0.0/8 is loopback: the server listens on 127.0.0.1 and clients bind these as their source.
const A = '127.0.0.1';
const B = '127.0.0.2';
const C = '127.0.0.3';

type Caps = Pick<Limits, 'maxConnections' | 'maxConnectionsPerIp' | 'maxUnauthenticatedConnections' | 'maxUnauthenticatedPerIp'>;
const ROOMY: Caps = { maxConnections: 100, maxConnectionsPerIp: 100, maxUnauthenticatedConnections: 100, maxUnauthenticatedPerIp: 100 };

function ticket(admitted: Ticket | Refusal): Ticket {
  assert.ok(!('limit' in admitted), `refused: ${JSON.stringify(admitted)}`);
  return admitted;
}

function refusedBy(admitted: Ticket | Refusal): string {
  assert.ok('limit' in admitted, 'admitted, expected a refusal');
  return admitted.limit;
}

// ---- Admission, alone ----

test('sourceOf: IPv4 as is, IPv4-mapped unwrapped, IPv6 by /64', () => {
  assert.equal(sourceOf('203.0.113.9'), '203.0.113.9');
  assert.equal(sourceOf('::ffff:203.0.113.9'), '203.0.113.9');
  assert.equal(sourceOf('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  assert.equal(sourceOf('2001:0db8:0001:0002:ffff:1:2:3'), '2001:db8:1:2::/64');
  assert.equal(sourceOf('2001:db8::1'), '2001:db8:0:0::/64');
  assert.equal(sourceOf('::1'), '0:0:0:0::/64');
  assert.equal(sourceOf('fe80::1%eth0'), 'fe80:0:0:0::/64');
  assert.equal(sourceOf('64:ff9b::192.0.2.1'), '64:ff9b:0:0::/64');
});

test('per-address caps refuse; authenticating moves a connection out of the unauthenticated pool', () => {
  const admission = new Admission({ ...ROOMY, maxUnauthenticatedPerIp: 2, maxConnectionsPerIp: 3 });
  const [t1, t2] = [ticket(admission.admit(A)), ticket(admission.admit(A))];
  assert.equal(refusedBy(admission.admit(A)), 'maxUnauthenticatedPerIp');
  assert.equal(refusedBy(admission.admit(`::ffff:${A}`)), 'maxUnauthenticatedPerIp', 'the same address, IPv4-mapped');
  ticket(admission.admit(B));
  t1.authenticated();
  t1.authenticated(); // idempotent
  const t3 = ticket(admission.admit(A));
  assert.deepEqual(admission.countsOf(A), { all: 3, unauthenticated: 2 });
  assert.equal(refusedBy(admission.admit(A)), 'maxConnectionsPerIp');
  assert.deepEqual(admission.counts, { connections: 4, unauthenticated: 3, sources: 2 });
  for (const t of [t1, t2, t3]) {
    t.release();
    t.release(); // idempotent: a socket's close and its WebSocket's close both release
  }
  t1.authenticated(); // after release: no effect
  assert.deepEqual(admission.counts, { connections: 1, unauthenticated: 1, sources: 1 });
});

test('a full unauthenticated pool: a lighter source evicts the heaviest source\'s oldest; the heaviest is refused', () => {
  const admission = new Admission({ ...ROOMY, maxUnauthenticatedConnections: 3 });
  const evicted: string[] = [];
  const admit = (address: string, name: string) => {
    const t = ticket(admission.admit(address));
    t.onEvict = () => evicted.push(name);
    return t;
  };
  admit(A, 'a1');
  admit(A, 'a2');
  admit(B, 'b1');
  assert.equal(refusedBy(admission.admit(A)), 'maxUnauthenticatedConnections', 'the flooder itself');
  admit(B, 'b2'); // B holds fewer than A
  assert.deepEqual(evicted, ['a1']);
  admit(C, 'c1'); // now B is the heaviest
  assert.deepEqual(evicted, ['a1', 'b1']);
  assert.deepEqual(admission.counts, { connections: 3, unauthenticated: 3, sources: 3 });
  // One each: a newcomer from a fourth address evicts the oldest of them.
  admit('127.0.0.4', 'd1');
  assert.deepEqual(evicted, ['a1', 'b1', 'a2']);
  assert.equal(refusedBy(admission.admit('127.0.0.4')), 'maxUnauthenticatedConnections');
});

test('maxConnections: room is made from unauthenticated connections only', () => {
  const admission = new Admission({ ...ROOMY, maxConnections: 2 });
  const a = ticket(admission.admit(A));
  a.authenticated();
  ticket(admission.admit(B)).onEvict = () => {};
  ticket(admission.admit(C)).authenticated(); // evicted B's unauthenticated one to get in
  assert.deepEqual(admission.countsOf(B), { all: 0, unauthenticated: 0 });
  assert.equal(refusedBy(admission.admit('127.0.0.4')), 'maxConnections', 'everyone left is authenticated');
});

// ---- over real sockets ----

/** An upgrade the server refuses: its status and the limit it names. */
function refusal(url: string, localAddress: string): Promise<{ status: number; limit: string | string[] | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { localAddress });
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, limit: res.headers['x-commy-refused'], body });
        req.destroy();
      });
    });
    ws.on('open', () => {
      ws.close();
      reject(new Error(`admitted from ${localAddress}; expected a refusal`));
    });
    ws.on('error', reject);
  });
}

async function open(t: { after(fn: () => void): void }, server: Server, localAddress: string): Promise<RawClient> {
  const c = await RawClient.connect(server.url, { localAddress });
  t.after(() => c.close());
  return c;
}

async function authenticate(c: RawClient): Promise<void> {
  assert.equal((await c.auth('acme', 'ops:s3cret')).type, 'Authenticated');
}

/** Counts settle once the server has seen every close: wait (bounded) for the expected ones. */
async function countsBecome(server: Server, expected: { connections: number; unauthenticated: number }): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const { connections, unauthenticated } = server.admissionCounts;
    if (connections === expected.connections && unauthenticated === expected.unauthenticated) return;
    assert.ok(Date.now() < deadline, `counts stuck at ${JSON.stringify(server.admissionCounts)}, expected ${JSON.stringify(expected)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('an unauthenticated flood fills its own pool only: its next connection is refused, a legitimate client still gets in', async (t) => {
  const server = await startServer(t, { limits: { maxUnauthenticatedConnections: 4, maxUnauthenticatedPerIp: 10, maxConnections: 50 } });
  const flood: RawClient[] = [];
  for (let i = 0; i < 4; i++) flood.push(await open(t, server, A));
  assert.deepEqual(server.admissionCounts, { connections: 4, unauthenticated: 4, sources: 1 });

  const refused = await refusal(server.url, A);
  assert.equal(refused.status, 503);
  assert.equal(refused.limit, 'maxUnauthenticatedConnections');
  assert.match(refused.body, /unauthenticated/);

  const legit = await open(t, server, B);
  await authenticate(legit);
  assert.equal((await flood[0]!.closed).code, 4003, 'the flood\'s oldest connection made room');
  await countsBecome(server, { connections: 4, unauthenticated: 3 });
  // Authenticated connections do not count against the unauthenticated pool: another legitimate one fits.
  await authenticate(await open(t, server, C));
});

test('per-address caps: unauthenticated ones, then all; another address is not affected', async (t) => {
  const server = await startServer(t, { limits: { maxUnauthenticatedPerIp: 2, maxConnectionsPerIp: 3 } });
  const a = [await open(t, server, A), await open(t, server, A)];
  const refused = await refusal(server.url, A);
  assert.deepEqual([refused.status, refused.limit], [503, 'maxUnauthenticatedPerIp']);
  await authenticate(await open(t, server, B));

  await authenticate(a[0]!);
  await open(t, server, A); // a[0] left the unauthenticated pool: room for one more
  assert.deepEqual(server.admissionCounts, { connections: 4, unauthenticated: 2, sources: 2 });
  const full = await refusal(server.url, A);
  assert.deepEqual([full.status, full.limit], [503, 'maxConnectionsPerIp']);
  await authenticate(await open(t, server, B));
});

test('maxConnections: refused once every connection is authenticated', async (t) => {
  const server = await startServer(t, { limits: { maxConnections: 2 } });
  await authenticate(await open(t, server, A));
  await authenticate(await open(t, server, B));
  const refused = await refusal(server.url, C);
  assert.deepEqual([refused.status, refused.limit], [503, 'maxConnections']);
});

test('counts return to zero whatever ends a connection: close, eviction, refusal, aborted or bad handshakes', async (t) => {
  const server = await startServer(t, { limits: { maxUnauthenticatedConnections: 3, maxUnauthenticatedPerIp: 10 } });
  const port = server.port;
  const upgrade = (key: string | undefined) =>
    'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n' +
    (key !== undefined ? `Sec-WebSocket-Key: ${key}\r\n` : '') +
    '\r\n';
  const rawSocket = (write: string, localAddress: string, destroy: boolean) =>
    new Promise<void>((resolve) => {
      const s = tcpConnect({ host: A, port, localAddress }, () => {
        s.write(write);
        if (destroy) s.destroy();
      });
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      s.resume();
      if (!destroy) s.setTimeout(30_000, () => s.destroy());
    });

  const a1 = await open(t, server, A);
  const a2 = await open(t, server, A);
  await authenticate(a2);
  const b = await open(t, server, B);
  const c = await open(t, server, C);
  await refusal(server.url, A); // pool full, A is the heaviest
  const d = await open(t, server, '127.0.0.4'); // evicts a1
  await a1.closed;
  c.ws.terminate(); // gone without a close handshake
  b.close();
  d.close();
  await Promise.all([b.closed, c.closed, d.closed]);
  await countsBecome(server, { connections: 1, unauthenticated: 0 });
  // Handshakes that never complete: cut right after the request, and refused by ws (no key: 400).
  await Promise.all([
    rawSocket(upgrade('dGhlIHNhbXBsZSBub25jZQ=='), '127.0.0.5', true),
    rawSocket(upgrade('dGhlIHNhbXBsZSBub25jZQ=='), '127.0.0.6', true),
    rawSocket(upgrade(undefined), '127.0.0.7', false),
  ]);
  a2.close();
  await a2.closed;
  await countsBecome(server, { connections: 0, unauthenticated: 0 });
  assert.equal(server.admissionCounts.sources, 0);
});

test('the address comes from the socket: a forwarding header changes nothing', async (t) => {
  const server = await startServer(t, { limits: { maxUnauthenticatedPerIp: 1 } });
  const c = await RawClient.connect(server.url, { localAddress: A, headers: { 'x-forwarded-for': '198.51.100.7', 'x-real-ip': '198.51.100.7' } });
  t.after(() => c.close());
  const refused = await new Promise<number>((resolve, reject) => {
    const ws = new WebSocket(server.url, { localAddress: A, headers: { 'x-forwarded-for': '198.51.100.8' } });
    ws.on('unexpected-response', (req, res) => {
      resolve(res.statusCode ?? 0);
      req.destroy();
    });
    ws.on('open', () => reject(new Error('admitted')));
    ws.on('error', reject);
  });
  assert.equal(refused, 503);
});

test('sockets that never send a request count as unauthenticated connections: a silent flood from many addresses cannot lock a client out', async (t) => {
  // The process holds at most maxConnections + maxUnauthenticatedConnections = 70 sockets: 72 silent ones would fill it.
  const server = await startServer(t, { limits: { maxConnections: 40, maxUnauthenticatedConnections: 30, maxUnauthenticatedPerIp: 10 } });
  const port = server.port;
  const silent: import('node:net').Socket[] = [];
  t.after(() => silent.forEach((s) => s.destroy()));
  const openSilent = (localAddress: string) =>
    new Promise<void>((resolve) => {
      const s = tcpConnect({ host: A, port, localAddress }, () => resolve());
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      silent.push(s);
    });
  // 6 addresses × 12 sockets, none sending a byte: per address only 10 are held, and 30 in all.
  for (let ip = 10; ip < 16; ip++) for (let i = 0; i < 12; i++) await openSilent(`127.0.7.${ip}`);
  await new Promise((r) => setTimeout(r, 200));
  const counts = server.admissionCounts;
  assert.ok(counts.unauthenticated <= 30, JSON.stringify(counts));
  // A client from a quiet address still connects and authenticates (it takes a flooder's oldest place).
  const c = await RawClient.connect(server.url, { localAddress: '127.0.8.1' });
  t.after(() => c.close());
  assert.equal((await c.auth('acme', 'ops:s3cret')).type, 'Authenticated');
  silent.forEach((s) => s.destroy());
  c.close();
  const deadline = Date.now() + 30_000;
  while (server.admissionCounts.connections !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(server.admissionCounts, { connections: 0, unauthenticated: 0, sources: 0 });
});

test('over TLS too, a closed connection gives its admission back (authenticated or not, closed by either side)', async (t) => {
  const tls = await selfSignedTls();
  const server = await startServer(t, { tls });
  assert.match(server.url, /^wss:\/\//);
  const open = (): Promise<RawClient> => RawClient.connect(server.url, { ca: tls.cert });
  const authed = await Promise.all([open(), open(), open()]);
  for (const c of authed) await authenticate(c);
  const idle = await Promise.all([open(), open()]);
  await countsBecome(server, { connections: 5, unauthenticated: 2 });
  authed[0]!.close();
  authed[1]!.ws.terminate();
  idle[0]!.close();
  await countsBecome(server, { connections: 2, unauthenticated: 1 });
  for (const c of [authed[2]!, idle[1]!]) c.ws.terminate();
  await countsBecome(server, { connections: 0, unauthenticated: 0 });
  assert.equal(server.connectionCount, 0);
});
