import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AuthCredentials, Client, VariableMetadata, VariableType, type VirtualVariableFile } from '../src/index.js';
import type { Message, SnapshotBody } from '../src/protocol/messages.js';
import { Server } from '../src/server/index.js';
import { runCli, serveCli } from './helpers/cli.js';
import { RawClient } from './helpers/raw-client.js';
import { startRedis } from './helpers/redis.js';
import { OPS, until } from './helpers/server-process.js';
import { TEST_TENANTS } from './helpers/server.js';
import { tempDir } from './helpers/temp.js';

/**
 * The sync engine's promises across nodes (docs/cluster.md): operation ids answered on another node, a node that
 * joins after the stream was trimmed loads a snapshot, and the CLI's flags. Nodes in this process (the
 * three-process tests are cluster.test.ts and cluster-failures.test.ts).
 */

type Hooks = Parameters<typeof tempDir>[0] & { after(fn: () => void | Promise<void>): void };

async function node(t: Hooks, redis: string, nodeId: string, streamLength?: number): Promise<Server> {
  const server = await Server.start({
    host: '127.0.0.1',
    port: 0,
    dataDir: tempDir(t, `commy-node-${nodeId}-`),
    config: { tenants: TEST_TENANTS, audit: { enabled: false }, logLevel: 'silent', cluster: { redis, nodeId, ...(streamLength !== undefined ? { streamLength } : {}) } },
  });
  t.after(() => server.close());
  return server;
}

async function file(t: Hooks, server: Server, service: string): Promise<VirtualVariableFile> {
  const c = await Client.initialize(server.url, 'acme', OPS, { mode: 'remote', onError: () => {} });
  t.after(() => c.close());
  return c.getVirtualServiceFile('acme', service);
}

function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

function code(m: Message): string {
  return m.type === 'Error' ? m.body.errorCode : m.type;
}

/** A raw connection under `clientKey`, subscribed to `service`: its sid and the index of `name` in that node's file. */
async function rawOn(t: Hooks, server: Server, clientKey: string, service: string, name: string): Promise<{ c: RawClient; sid: number; index: number }> {
  const c = await RawClient.connect(server.url);
  t.after(() => c.close());
  const auth = await c.request('Authenticate', { tenant: 'acme', method: 'apiKey', credential: 'ops:s3cret', protocol: 3, clientKey });
  assert.equal(auth.type, 'Authenticated');
  const sub = await c.request('Subscription', { tenant: 'acme', service });
  assert.equal(sub.type, 'Snapshot', JSON.stringify(sub.body));
  const body = sub.body as SnapshotBody;
  const def = body.variables.find((d) => d[1] === name);
  assert.ok(def !== undefined, `${name} in the snapshot`);
  return { c, sid: body.sid, index: def[0] };
}

test('an operation id resent to another node is answered there, not applied again; reused for another write, refused', { timeout: 120_000 }, async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const a = await node(t, redis.url, 'a');
  const b = await node(t, redis.url, 'b');
  const onA = await file(t, a, 'ids');
  await onA.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  const onB = await file(t, b, 'ids');
  await until(() => onB.variables().length === 1, 'n on node b');
  const first = await rawOn(t, a, 'failover-client-0001', 'ids', 'n');
  const applied = await first.c.request('Mutate', { sid: first.sid, index: first.index, value: u64(1), opId: 77 });
  assert.equal(code(applied), 'MutationResponse');
  // Someone else writes after it; then the first client "fails over" to node b and resends its write.
  await onB.mutate('n', 2n);
  await until(() => onA.get('n') === 2n, 'the later write on node a');
  const again = await rawOn(t, b, 'failover-client-0001', 'ids', 'n');
  const resent = await again.c.request('Mutate', { sid: again.sid, index: again.index, value: u64(1), opId: 77 });
  assert.equal(code(resent), 'MutationResponse', 'answered as done');
  const other = await again.c.request('Mutate', { sid: again.sid, index: again.index, value: u64(3), opId: 77 });
  assert.equal(code(other), 'INVALID_MESSAGE', 'the same id for another write is refused');
  await new Promise((resolve) => setTimeout(resolve, 300)); // a wrongly applied resend would land by now
  assert.equal(onA.get('n'), 2n, 'the resend did not overwrite the later write (node a)');
  assert.equal(onB.get('n'), 2n, 'nor on node b');
  // The node's series in /metrics say so too.
  const metrics = await (await fetch(b.url.replace(/^ws/, 'http') + '/metrics')).text();
  assert.match(metrics, /^commy_cluster_redis_up 1$/m);
  assert.match(metrics, /^commy_cluster_appends_total\{result="dup"\} 1$/m);
  assert.ok(Number(/^commy_cluster_entries_applied_total (\d+)$/m.exec(metrics)?.[1]) >= 3, 'entries applied: the registration and two writes at least');
});

test('a node that joins after the stream was trimmed loads a snapshot: same variables, same values, removals included', { timeout: 120_000 }, async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const a = await node(t, redis.url, 'a', 100);
  const vf = await file(t, a, 'trimmed');
  for (const name of ['x', 'y', 'gone']) await vf.registerVariable(new VariableMetadata(name, -1, 8, VariableType.U64));
  await vf.registerVariable(VariableMetadata.struct('pos', { x: VariableType.F64, y: VariableType.F64 }));
  for (let i = 1n; i <= 600n; i++) {
    vf.set('x', i);
    vf.set('y', 1000n + i);
    await vf.flush();
  }
  await vf.mutate('pos', { x: 1.5, y: -2 });
  await vf.removeVariable('gone');
  const len = await lengthOf(redis.url, 'commy:{acme/trimmed}:log');
  assert.ok(len < 600, `the stream was trimmed (${len} entries left of 600+)`);
  const late = await node(t, redis.url, 'c', 100);
  const there = await file(t, late, 'trimmed');
  await until(() => there.get('x') === 600n, 'the late node to hold the last values');
  assert.deepEqual(there.variables().map((m) => m.name).sort(), ['pos', 'x', 'y']);
  assert.equal(there.get('y'), 1600n);
  assert.deepEqual(there.get('pos'), { x: 1.5, y: -2 });
  // And it goes on from there.
  await vf.mutate('x', 601n);
  await until(() => there.get('x') === 601n, 'a write after the snapshot');
});

async function lengthOf(url: string, key: string): Promise<number> {
  const { Redis } = await import('ioredis');
  const r = new Redis(url);
  try {
    return await r.xlen(key);
  } finally {
    r.disconnect();
  }
}

test('commy serve --cluster … --node-id …: a node; --cluster alone is a configuration error', { timeout: 120_000 }, async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const missing = await runCli(['serve', '--port', '0', '--cluster', redis.url], t);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--node-id/);
  const badUrl = await runCli(['serve', '--port', '0', '--cluster', 'http://x', '--node-id', 'a'], t);
  assert.equal(badUrl.code, 2);
  assert.match(badUrl.stderr, /redis:\/\//);
  const { url, key } = await serveCli(t, tempDir(t, 'commy-serve-cluster-'), ['--port', '0', '--cluster', redis.url, '--node-id', 'n1']);
  const c = await Client.initialize(url, 'dev', AuthCredentials.apiKey(key), { mode: 'remote' });
  t.after(() => c.close());
  const vf = await c.getVirtualServiceFile('dev', 'demo');
  await vf.registerVariable(new VariableMetadata('v', -1, 8, VariableType.U64));
  await vf.mutate('v', 5n);
  const { Redis } = await import('ioredis');
  const r = new Redis(redis.url);
  t.after(() => r.disconnect());
  assert.equal(await r.sismember('commy:services', 'dev/demo'), 1, 'the service is in the cluster catalog');
  assert.ok((await r.xlen('commy:{dev/demo}:log')) >= 2, 'its registration and write are in its stream');
});

test('a node that cannot listen (its port taken) leaves no Redis connection behind', { timeout: 60_000 }, async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const first = await node(t, redis.url, 'a');
  const { Redis } = await import('ioredis');
  const r = new Redis(redis.url);
  t.after(() => r.disconnect());
  const clients = async (): Promise<number> => String(await r.client('LIST')).trim().split('\n').length;
  const before = await clients();
  const port = Number(new URL(first.url).port);
  await assert.rejects(
    Server.start({ host: '127.0.0.1', port, dataDir: tempDir(t, 'commy-node-b-'), config: { tenants: TEST_TENANTS, audit: { enabled: false }, logLevel: 'silent', cluster: { redis: redis.url, nodeId: 'b' } } }),
    /EADDRINUSE/,
  );
  let now = await clients();
  for (let i = 0; i < 100 && now !== before; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    now = await clients();
  }
  assert.equal(now, before, 'its connections closed');
});
