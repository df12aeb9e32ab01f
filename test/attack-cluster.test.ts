import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { AuthCredentials, Client, VariableMetadata, VariableType, isCommyError, type VirtualVariableFile } from '../src/index.js';
import { ServiceFile } from '../src/local/service-file.js';
import { Server } from '../src/server/index.js';
import { casIncrements } from './helpers/cas.js';
import { startChild } from './helpers/child.js';
import { openedWhenThere } from './helpers/cluster.js';
import { CutProxy } from './helpers/cut-proxy.js';
import { guard } from './helpers/guard.js';
import { RawClient } from './helpers/raw-client.js';
import { startRedis, type RedisOptions, type RedisProc } from './helpers/redis.js';
import { OPS, until } from './helpers/server-process.js';
import { TEST_TENANTS } from './helpers/server.js';

/**
 * Attack on cluster mode (docs/cluster.md) as a careless user, a local process and anyone who can write to the
 * shared Redis would. Nodes run in this process (fast to start, their logs readable), each on its own data
 * directory, on a real redis-server of the test's own; local writers run in processes of their own.
 */

type Hooks = { after(fn: () => void | Promise<void>): void };
interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}
interface TestNode {
  server: Server;
  url: string;
  dataDir: string;
  /** What the node logged (pino lines). */
  lines: LogLine[];
}

/** Runs the closers given to it after the test, last first (nodes before their Redis, directories last). */
function closers(t: Hooks): (fn: () => unknown) => void {
  const fns: (() => unknown)[] = [];
  t.after(async () => {
    for (const fn of fns.reverse()) await fn();
  });
  return (fn) => void fns.push(fn);
}

function dir(defer: (fn: () => unknown) => void, prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  defer(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

async function redis(defer: (fn: () => unknown) => void, options?: RedisOptions): Promise<RedisProc> {
  const r = await startRedis(options);
  defer(() => r.stop());
  return r;
}

async function node(
  defer: (fn: () => unknown) => void,
  redisUrl: string,
  nodeId: string,
  options: { dataDir?: string; streamLength?: number } = {},
): Promise<TestNode> {
  const dataDir = options.dataDir ?? dir(defer, `commy-attack-${nodeId}-`);
  const lines: LogLine[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) });
  const cluster = { redis: redisUrl, nodeId, ...(options.streamLength !== undefined ? { streamLength: options.streamLength } : {}) };
  const server = await Server.start({ host: '127.0.0.1', port: 0, dataDir, logger, config: { tenants: TEST_TENANTS, audit: { enabled: false }, cluster } });
  defer(() => server.close());
  return { server, url: server.url, dataDir, lines };
}

async function client(defer: (fn: () => unknown) => void, url: string, credentials = OPS, requestTimeoutMs?: number): Promise<Client> {
  const c = await Client.initialize(url, 'acme', credentials, { mode: 'remote', onError: () => {}, ...(requestTimeoutMs !== undefined ? { requestTimeoutMs } : {}) });
  defer(() => c.close());
  return c;
}

/** The service once the node has it (created elsewhere, it comes through the catalog). */
const opened = (c: Client, service: string): Promise<VirtualVariableFile> => openedWhenThere(c, service);

const VIEWER = AuthCredentials.apiKey('viewer:view');
const u64 = (name: string): VariableMetadata => new VariableMetadata(name, -1, 8, VariableType.U64);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A client of the shared Redis that writes into the cluster's keys by hand (another app, or a bug of ours). */
function rogue(defer: (fn: () => unknown) => void, url: string): Redis {
  const r = new Redis(url);
  defer(() => r.disconnect());
  return r;
}

/**
 * A process of its own that maps the service file at `path` and adds 1 to its u64 `counter` under the variable's
 * writer lock (update()), as fast as it can, from now until the returned stop(), which resolves with its count.
 */
async function localIncrements(t: Hooks, path: string): Promise<() => Promise<number>> {
  const local = startChild('attack-local-incr', [path, 'update'], t);
  await local.next('ready');
  local.send({ type: 'go' });
  return async () => {
    local.send({ type: 'stop' });
    const { increments } = await local.next<{ increments: number }>('done');
    await local.exited;
    return increments;
  };
}

/** Lua: XADD ARGV[1] entries into KEYS[1] at once, each writing the u64 `v` (with its shape) to its number, as a node would. */
const FLOOD = `for i = 1, tonumber(ARGV[1]) do
  redis.call('XADD', KEYS[1], '*', 'k', 'w', 'n', 'elsewhere', 't', 'x' .. i, 'mv', '1:8', 'wv', struct.pack('<I8', i))
end`;

test("a local process's read-modify-writes on a cluster node are not undone by their own echo from the stream", { timeout: 60_000 }, async (t) => {
  const defer = closers(t);
  const r = await redis(defer);
  const a = await node(defer, r.url, 'a');
  const b = await node(defer, r.url, 'b');
  const vf = await (await client(defer, a.url)).getVirtualServiceFile('acme', 'echo');
  await vf.registerVariable(u64('counter'));
  // Another process maps node a's file and adds 1 under the variable's writer lock, as fast as it can; nobody
  // else writes. Each of its writes goes to the stream and comes back to node a.
  const stop = await localIncrements(t, join(a.dataDir, 'tenants', 'acme', 'echo.mem'));
  await sleep(1500);
  const increments = await stop();
  const all = BigInt(increments);
  await until(() => vf.get('counter') === all, 'node a to apply everything', 15_000).catch(() => assert.equal(vf.get('counter'), all, `node a's counter holds all ${increments} increments`));
  const far = await opened(await client(defer, b.url, VIEWER), 'echo');
  await until(() => far.get('counter') === all, 'node b to apply everything', 15_000).catch(() => assert.equal(far.get('counter'), all, `node b ends on ${increments}`));
});

test('a compare-and-set on a node never undoes what a local process of the same node wrote meanwhile', { timeout: 60_000 }, async (t) => {
  const defer = closers(t);
  const r = await redis(defer);
  const a = await node(defer, r.url, 'a');
  const vf = await (await client(defer, a.url)).getVirtualServiceFile('acme', 'cas-local');
  await vf.registerVariable(u64('counter'));
  const stop = await localIncrements(t, join(a.dataDir, 'tenants', 'acme', 'cas-local.mem'));
  const REMOTE = 30;
  await casIncrements(vf, REMOTE, () => sleep(1)); // each: read the version, then the value; CONFLICT: again
  const increments = await stop();
  const want = BigInt(increments + REMOTE);
  await until(() => vf.get('counter') === want, 'node a to apply everything', 15_000).catch(() => assert.equal(vf.get('counter'), want, `every increment of both sides: ${increments} local + ${REMOTE} remote`));
});

test('a flood of entries for many services at once is applied a slice per event-loop turn, whatever the number of services', { timeout: 60_000 }, async (t) => {
  const defer = closers(t);
  const r = await redis(defer);
  const b = await node(defer, r.url, 'b');
  const other = rogue(defer, r.url);
  const SERVICES = 20;
  const PER = 1000;
  const names = Array.from({ length: SERVICES }, (_, i) => `flood${i}`);
  for (const s of names) await other.xadd('commy:catalog', '*', 't', 'acme', 's', s);
  const paths = names.map((s) => join(b.dataDir, 'tenants', 'acme', `${s}.mem`));
  await until(() => paths.every((p) => existsSync(p)), 'node b to create the services of the catalog');
  const files = paths.map((p) => ServiceFile.open(p, { readOnly: true }));
  defer(() => files.forEach((f) => f.close()));
  // A client of node b subscribed to all of them that never reads a byte.
  const mute = await RawClient.connect(b.url.replace('http', 'ws'));
  defer(() => mute.ws.terminate());
  await mute.auth('acme', 'ops:s3cret');
  for (const s of names) assert.equal((await mute.request('Subscription', { tenant: 'acme', service: s })).type, 'Snapshot');
  (mute.ws as unknown as { _socket: { pause(): void } })._socket.pause();
  // How many writes node b applies in one turn of its event loop (it runs in this process): the files' versions, a turn apart.
  const total = (): bigint => files.reduce((sum, f) => sum + f.version, 0n);
  let most = 0n;
  let sampling = true;
  const sample = (before: bigint): void => {
    if (!sampling) return;
    const now = total();
    if (now - before > most) most = now - before;
    setImmediate(() => sample(now));
  };
  sample(total());
  // Another node's 20,000 writes land at once (one script: node b's next read finds them all).
  await other.eval(`${names.map((_, i) => FLOOD.replace('KEYS[1]', `KEYS[${i + 1}]`)).join('\n')}\nreturn 1`, SERVICES, ...names.map((s) => `commy:{acme/${s}}:log`), PER);
  const v = (f: ServiceFile): bigint => {
    const e = f.find('v');
    return e === undefined ? 0n : f.readBytes(e).reduce((n, byte, i) => n + (BigInt(byte) << BigInt(8 * i)), 0n);
  };
  await until(() => files.every((f) => v(f) === BigInt(PER)), `node b to apply all ${SERVICES * PER} writes`, 45_000);
  sampling = false;
  t.diagnostic(`at most ${most} writes applied in one event-loop turn`);
  assert.ok(most <= 4096n, `node b applied ${most} writes in one turn of its event loop (no other connection was served meanwhile)`);
});

test('positions.json that cannot be saved never ends the node; one that cannot be read is refused at start', { timeout: 60_000 }, async (t) => {
  const g = guard(t);
  const defer = closers(t);
  const r = await redis(defer);
  const a = await node(defer, r.url, 'a');
  const vf = await (await client(defer, a.url)).getVirtualServiceFile('acme', 'pos');
  await vf.registerVariable(u64('n'));
  // Someone puts a directory where the node saves its positions (as a full disk would fail the save).
  const positions = join(a.dataDir, 'cluster', 'positions.json');
  mkdirSync(`${positions}.tmp`);
  for (let i = 1n; i <= 5n; i++) await vf.mutate('n', i);
  await sleep(200); // past the save delay
  await until(() => a.lines.some((l) => l.level >= 50 && /positions/.test(l.msg)), 'an error line saying the positions are not saved');
  rmSync(`${positions}.tmp`, { recursive: true });
  await vf.mutate('n', 6n);
  const saved = (): boolean => existsSync(positions) && readFileSync(positions, 'utf8').includes('"acme/pos"');
  await until(saved, 'the positions saved again once the way is clear');
  // A data directory whose positions.json is a directory: refused at start, saying so (not a crash at the first save).
  const broken = dir(defer, 'commy-attack-broken-');
  mkdirSync(join(broken, 'cluster', 'positions.json'), { recursive: true });
  await assert.rejects(node(defer, r.url, 'z', { dataDir: broken }), (err: Error) => /positions/.test(err.message));
  await g.check();
});

test("hand-made catalog entries: a tenant not configured here, names that would leave the data directory, garbage: no file made, later entries still served", { timeout: 60_000 }, async (t) => {
  const defer = closers(t);
  const r = await redis(defer);
  const a = await node(defer, r.url, 'a');
  const other = rogue(defer, r.url);
  await other.xadd('commy:catalog', '*', 't', 'ghost', 's', 'svc');
  await other.xadd('commy:catalog', '*', 't', '..', 's', '..');
  await other.xadd('commy:catalog', '*', 't', 'acme', 's', '../../escape');
  await other.xadd('commy:catalog', '*', 'what', 'ever');
  await other.xadd('commy:catalog', '*', 't', 'acme', 's', 'real');
  await opened(await client(defer, a.url, VIEWER), 'real');
  assert.ok(!existsSync(join(a.dataDir, 'tenants', 'ghost')), 'no directory of a tenant this node does not serve');
  assert.ok(!existsSync(join(a.dataDir, 'escape.mem')) && !existsSync(join(a.dataDir, '..', 'escape.mem')), 'nothing outside the tenants directory');
  assert.ok(a.lines.some((l) => l.level >= 40 && /not configured/.test(l.msg) && l.service === 'ghost/svc'), 'the skipped tenant is logged');
});

test('a write racing the removal of its variable (its node had not applied the removal yet) does not bring the variable back', { timeout: 60_000 }, async (t) => {
  const defer = closers(t);
  const r = await redis(defer);
  const a = await node(defer, r.url, 'a');
  const b = await node(defer, r.url, 'b');
  const admin = await (await client(defer, a.url)).getVirtualServiceFile('acme', 'race');
  await admin.registerVariable(u64('v'));
  await admin.registerVariable(u64('marker'));
  const writer = await opened(await client(defer, b.url), 'race');
  await until(() => writer.variables().length === 2, 'both variables on node b');
  // A local process on node b holds v's writer lock: node b's apply of the removal waits behind it, so its file
  // still has v when its client writes v.
  const holder = startChild('lock-holder', [join(b.dataDir, 'tenants', 'acme', 'race.mem'), 'v'], t);
  await holder.next('locked');
  await admin.removeVariable('v'); // done on node a: the removal is in the stream
  writer.set('v', 7n);
  const flushed = writer.flush().then(
    () => 'answered',
    (err: unknown) => (isCommyError(err) ? err.code : String(err)),
  );
  await sleep(300); // the write is appended (after the removal) and waits for node b's apply
  holder.kill('SIGKILL'); // its lock is recovered: node b applies the removal, then the write
  t.diagnostic(`the racing write: ${await flushed}`);
  writer.set('marker', 1n);
  await writer.flush();
  const far = await opened(await client(defer, a.url, VIEWER), 'race');
  await until(() => far.get('marker') === 1n, 'node a to apply everything up to the marker');
  assert.deepEqual(far.variables().map((m) => m.name), ['marker'], 'node a: v stays removed');
  await until(() => writer.variables().every((m) => m.name !== 'v'), 'node b: v removed for its client');
  const again = await opened(await client(defer, b.url, VIEWER), 'race');
  assert.deepEqual(again.variables().map((m) => m.name), ['marker'], 'node b: v stays removed');
});

test('a node cut off from Redis while the stream is trimmed past it catches up from the snapshot when it is back', { timeout: 60_000 }, async (t) => {
  const defer = closers(t);
  const r = await redis(defer);
  const proxy = await CutProxy.start(r.port);
  defer(() => proxy.close());
  const a = await node(defer, r.url, 'a', { streamLength: 100 });
  const b = await node(defer, proxy.url.replace('ws:', 'redis:'), 'b', { streamLength: 100 });
  const vf = await (await client(defer, a.url)).getVirtualServiceFile('acme', 'trim');
  const names = Array.from({ length: 10 }, (_, i) => `v${i}`);
  for (const n of names) await vf.registerVariable(u64(n));
  const far = await opened(await client(defer, b.url, VIEWER), 'trim');
  await until(() => far.variables().length === names.length, 'the variables on node b');
  proxy.offline = true; // node b loses Redis (a partition): node a goes on
  proxy.cut(true);
  for (const [i, n] of names.entries()) await vf.mutate(n, 1000n + BigInt(i));
  for (let i = 1n; i <= 400n; i++) await vf.mutate('v0', i); // the stream keeps ~100 entries: the ones above are trimmed
  proxy.offline = false;
  const want = names.map((n, i) => `${n}=${i === 0 ? 400 : 1000 + i}`).join(' ');
  const have = (): string => names.map((n) => `${n}=${String(far.get(n))}`).join(' ');
  await until(() => have() === want, 'node b to catch up', 30_000).catch(() => assert.equal(have(), want, 'node b ends on the values of node a'));
  // A node that joins now (it reads from the start, whose entries are gone) starts from the snapshot too.
  const c = await node(defer, r.url, 'c', { streamLength: 100 });
  const late = await opened(await client(defer, c.url, VIEWER), 'trim');
  const seen = (): string => names.map((n) => `${n}=${String(late.variables().some((m) => m.name === n) ? late.get(n) : 'missing')}`).join(' ');
  await until(() => seen() === want, 'node c to catch up', 30_000).catch(() => assert.equal(seen(), want, 'node c ends on the values of node a'));
});

test('Redis restarted empty: said in the log, services announced again, a write whose entry was lost is answered after a resend', { timeout: 60_000 }, async (t) => {
  const defer = closers(t);
  const r = await redis(defer, { appendonly: false }); // a restart loses everything
  const a = await node(defer, r.url, 'a');
  const b = await node(defer, r.url, 'b');
  const writer = await (await client(defer, b.url, OPS, 20_000)).getVirtualServiceFile('acme', 'kept');
  await writer.registerVariable(u64('v'));
  await writer.registerVariable(u64('x'));
  await writer.mutate('x', 1n);
  // Node b stops reading the service: a local process holds v's lock and 4,200 entries writing v wait behind it
  // (more than the node keeps unapplied), so the next write's entry is appended but not read.
  const holder = startChild('lock-holder', [join(b.dataDir, 'tenants', 'acme', 'kept.mem'), 'v'], t);
  await holder.next('locked');
  await rogue(defer, r.url).eval(`${FLOOD}\nreturn 1`, 1, 'commy:{acme/kept}:log', 4200);
  await sleep(1500);
  const written = writer.mutate('x', 2n).then(
    (version) => `version ${version}`,
    (err: unknown) => (isCommyError(err) ? err.code : String(err)),
  );
  await sleep(300);
  await r.restart(); // empty: the entry of that write is gone, and so is its operation id
  holder.kill('SIGKILL');
  assert.match(await written, /^version/, 'the write is answered (resent by the client after UNAVAILABLE, appended anew)');
  assert.equal(writer.get('x'), 2n);
  await until(() => [...a.lines, ...b.lines].some((l) => l.level >= 50 && /lost/.test(l.msg)), 'a node to log that Redis lost the cluster\'s data');
  // A node that joins now learns the services (announced again) and what was written since.
  const c = await node(defer, r.url, 'c');
  const late = await opened(await client(defer, c.url, VIEWER), 'kept');
  await until(() => late.variables().some((m) => m.name === 'x') && late.get('x') === 2n, 'node c to have kept/x = 2');
});

test('a local process that holds a lock past the wait (stopped, not dead): the entries it held up are not lost on that node', { timeout: 90_000 }, async (t) => {
  const defer = closers(t);
  const r = await redis(defer);
  const a = await node(defer, r.url, 'a');
  const b = await node(defer, r.url, 'b');
  const writer = await (await client(defer, a.url)).getVirtualServiceFile('acme', 'held');
  await writer.registerVariable(u64('v'));
  const far = await opened(await client(defer, b.url, VIEWER), 'held');
  await until(() => far.variables().length === 1, 'v on node b');
  const holder = startChild('lock-holder', [join(b.dataDir, 'tenants', 'acme', 'held.mem'), 'v'], t);
  const { pid } = await holder.next<{ pid: number }>('locked');
  process.kill(pid, 'SIGSTOP'); // alive, holding v's lock: node b's apply waits for it, then gives up on the entry
  await writer.mutate('v', 42n);
  await sleep(11_000); // past the node's wait for a lock (10 s): the entry was skipped there
  process.kill(pid, 'SIGCONT');
  holder.kill('SIGKILL'); // the lock is recovered from the dead holder
  await until(() => far.get('v') === 42n, "node b to load the service's snapshot and hold the last value", 30_000);
});
