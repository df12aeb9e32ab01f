import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { AuthCredentials, Client, VariableMetadata, VariableType, isCommyError, type VirtualVariableFile } from '../src/index.js';
import { startChild, type Child } from './helpers/child.js';
import { openedWhenThere, startCluster, type TestNode } from './helpers/cluster.js';
import { OPS, FAST_RECONNECT, until } from './helpers/server-process.js';

/**
 * Cluster mode under failures (docs/cluster.md, "Failures"): a node killed -9 under load, the writer's node
 * killed -9, Redis killed and restarted. Each node is a server in its own process; clients in their own too.
 * Each test prints what was acknowledged and what was found.
 */

const VIEWER = AuthCredentials.apiKey('viewer:view');

type Hooks = { after(fn: () => void | Promise<void>): void };

async function client(t: Hooks, url: string, credentials = OPS, requestTimeoutMs?: number): Promise<Client> {
  const c = await Client.initialize(url, 'acme', credentials, { mode: 'remote', onError: () => {}, reconnect: FAST_RECONNECT, ...(requestTimeoutMs !== undefined ? { requestTimeoutMs } : {}) });
  t.after(() => c.close());
  return c;
}

/** A service of U64 variables, registered through node a, present on every node before the test goes on. */
async function service(t: Hooks, nodes: TestNode[], name: string, variables: string[]): Promise<void> {
  const vf = await (await client(t, nodes[0]!.url)).getVirtualServiceFile('acme', name);
  for (const v of variables) await vf.registerVariable(new VariableMetadata(v, -1, 8, VariableType.U64));
  for (const node of nodes.slice(1)) {
    const there = await opened(await client(t, node.url, VIEWER), name);
    await until(() => there.variables().length === variables.length, `the variables on node ${node.id}`);
  }
}

const opened = openedWhenThere;

/** A load-client (fixtures/load-client.ts) on `node`, ready. */
async function loadClient(t: Hooks, node: TestNode, serviceName: string, role: 'writer' | 'subscriber', vars: string[] = []): Promise<Child> {
  const child = startChild('load-client', [node.url, 'remote', serviceName, role, ...vars], t);
  await child.next('ready', 60_000);
  return child;
}

/** Stops the writers (each flushes until it succeeds), then waits for every watcher to hold their final values. */
async function stopAndConverge(writers: Child[], watchers: Child[]): Promise<{ finals: Record<string, string>; writes: number; failedFlushes: number }> {
  const finals: Record<string, string> = {};
  let writes = 0;
  let failedFlushes = 0;
  for (const w of writers) {
    w.send({ type: 'stop' });
    const stopped = await w.next<{ finals: Record<string, string>; writes: number; failedFlushes: number }>('stopped', 120_000);
    Object.assign(finals, stopped.finals);
    writes += stopped.writes;
    failedFlushes += stopped.failedFlushes;
  }
  for (const w of watchers) w.send({ type: 'expect', values: finals });
  for (const w of watchers) await w.next('converged', 120_000);
  return { finals, writes, failedFlushes };
}

test('kill -9 of a node under write load: it restarts, catches up and every node ends on the same final values', { timeout: 240_000 }, async (t) => {
  const { nodes } = await startCluster(t, 3);
  const [a, b, c] = nodes as [TestNode, TestNode, TestNode];
  await service(t, nodes, 'load', ['wa', 'wb']);
  const writers = [await loadClient(t, a, 'load', 'writer', ['wa']), await loadClient(t, b, 'load', 'writer', ['wb'])];
  const watchers = [await loadClient(t, a, 'load', 'subscriber'), await loadClient(t, b, 'load', 'subscriber'), await loadClient(t, c, 'load', 'subscriber')];
  for (const w of writers) w.send({ type: 'start', style: 'nowait', intervalMs: 2 });
  await sleep(1000);
  await c.kill();
  await sleep(700); // the writers go on: node c misses these entries
  await c.restart();
  await sleep(1000);
  const { finals, writes } = await stopAndConverge(writers, watchers);
  // The restarted node's file itself holds them (a fresh client of it, not only one that was reconnected).
  const fresh = await opened(await client(t, c.url, VIEWER), 'load');
  await until(() => Object.entries(finals).every(([n, v]) => String(fresh.get(n)) === v), 'a fresh client of the restarted node to read the finals');
  console.log(`cluster kill -9 of a node under load: ${writes} writes from nodes a and b, final ${JSON.stringify(finals)} on all three nodes`);
});

test("kill -9 of the writer's node loses no acknowledged write", { timeout: 240_000 }, async (t) => {
  const { nodes } = await startCluster(t, 3);
  const [a, b, c] = nodes as [TestNode, TestNode, TestNode];
  await service(t, nodes, 'acks', ['seq']);
  // A short request timeout: once node a is gone, the write in flight gives up in 2 s.
  const writer = await (await client(t, a.url, OPS, 2000)).getVirtualServiceFile('acme', 'acks');
  let acknowledged = 0n;
  let stopped = false;
  const loop = (async () => {
    for (let i = 1n; !stopped; i++) {
      try {
        await writer.mutate('seq', i);
        acknowledged = i;
      } catch {
        return; // node a is gone: this write's outcome is unknown, and no later one is sent
      }
    }
  })();
  await until(() => acknowledged >= 300n, '300 acknowledged writes', 60_000);
  await a.kill(); // mid-stream: a write is almost surely in flight
  stopped = true;
  await loop;
  const readers = [await opened(await client(t, b.url, VIEWER), 'acks'), await opened(await client(t, c.url, VIEWER), 'acks')];
  await until(() => readers.every((r) => (r.get('seq') as bigint) >= acknowledged), 'nodes b and c to hold every acknowledged write');
  const found = readers.map((r) => r.get('seq') as bigint);
  assert.ok(found.every((v) => v <= acknowledged + 1n), `at most the one write in flight beyond the acknowledged ones: ${found.join(', ')} for ${acknowledged}`);
  await until(() => readers[0]!.get('seq') === readers[1]!.get('seq'), 'nodes b and c to agree');
  await a.restart();
  const back = await opened(await client(t, a.url, VIEWER), 'acks');
  await until(() => back.get('seq') === readers[0]!.get('seq'), 'the restarted node a to agree with b and c');
  console.log(`cluster kill -9 of the writer's node: ${acknowledged} writes acknowledged, ${found[0]} found on b and c, ${back.get('seq') as bigint} on a after its restart`);
});

test('Redis killed and restarted under load: every node reconnects by itself and all converge', { timeout: 240_000 }, async (t) => {
  const { nodes, redis } = await startCluster(t, 3);
  const [a, b, c] = nodes as [TestNode, TestNode, TestNode];
  await service(t, nodes, 'outage', ['wa', 'wb']);
  const writers = [await loadClient(t, a, 'outage', 'writer', ['wa']), await loadClient(t, b, 'outage', 'writer', ['wb'])];
  const watchers = [await loadClient(t, a, 'outage', 'subscriber'), await loadClient(t, b, 'outage', 'subscriber'), await loadClient(t, c, 'outage', 'subscriber')];
  writers[0]!.send({ type: 'start', style: 'await', intervalMs: 2 });
  writers[1]!.send({ type: 'start', style: 'nowait', intervalMs: 2 });
  await sleep(800);
  await redis.kill('SIGKILL');
  await sleep(1500); // writes go on against the nodes: refused (UNAVAILABLE), resent by the clients
  await redis.restart();
  await sleep(1500);
  const { finals, failedFlushes: failed } = await stopAndConverge(writers, watchers);
  console.log(`cluster Redis restart under load: final ${JSON.stringify(finals)} on all three nodes; ${failed} flushes refused while Redis was away`);
});
