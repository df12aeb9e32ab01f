import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AuthCredentials, Client, VariableMetadata, VariableType, isCommyError, type VirtualVariableFile } from '../src/index.js';
import { startChild } from './helpers/child.js';
import { openedWhenThere, startCluster } from './helpers/cluster.js';
import { OPS, reconnectingClient, until } from './helpers/server-process.js';

/**
 * Cluster mode (docs/cluster.md): three nodes, each a server in its own process with its own data directory,
 * on one real redis-server. What the issue asks of it, one test each.
 */

const VIEWER = AuthCredentials.apiKey('viewer:view');

async function remote(t: { after(fn: () => Promise<void>): void }, url: string, credentials = OPS): Promise<Client> {
  const c = await Client.initialize(url, 'acme', credentials, { mode: 'remote', onError: () => {} });
  t.after(() => c.close());
  return c;
}

const whenThere = openedWhenThere;

test('a service created on one node appears on every node, with its variables', { timeout: 120_000 }, async (t) => {
  const { nodes } = await startCluster(t, 3);
  const vf = await (await remote(t, nodes[0]!.url)).getVirtualServiceFile('acme', 'plant');
  await vf.registerVariable(new VariableMetadata('temp', -1, 8, VariableType.F64));
  await vf.registerVariable(VariableMetadata.struct('pos', { x: VariableType.F64, y: VariableType.F64 }));
  for (const node of nodes.slice(1)) {
    const there = await whenThere(await remote(t, node.url, VIEWER), 'plant');
    await until(() => there.variables().length === 2, `both variables on node ${node.id}`);
    const shapes = (f: VirtualVariableFile) => f.variables().map((m) => [m.name, m.typeId, m.size, m.fields?.map((x) => x.name)]);
    assert.deepEqual(shapes(there), shapes(vf), `node ${node.id} has the same variables`);
  }
});

test('writes on any node reach the subscribers of every node', { timeout: 120_000 }, async (t) => {
  const { nodes } = await startCluster(t, 3);
  const files: VirtualVariableFile[] = [];
  const first = await (await remote(t, nodes[0]!.url)).getVirtualServiceFile('acme', 'grid');
  for (const id of ['a', 'b', 'c']) await first.registerVariable(new VariableMetadata(`from-${id}`, -1, 8, VariableType.U64));
  files.push(first);
  for (const node of nodes.slice(1)) files.push(await whenThere(await remote(t, node.url), 'grid'));
  for (const f of files) await until(() => f.variables().length === 3, 'the variables everywhere');
  // Each node's client writes its own variable 50 times, as set() + flush() (reports) and as mutate().
  await Promise.all(
    files.map(async (f, i) => {
      const name = `from-${nodes[i]!.id}`;
      for (let n = 1n; n <= 50n; n++) {
        if (n % 2n === 0n) await f.mutate(name, n);
        else {
          f.set(name, n);
          await f.flush();
        }
      }
    }),
  );
  for (const [i, f] of files.entries()) {
    await until(() => ['a', 'b', 'c'].every((id) => f.get(`from-${id}`) === 50n), `node ${nodes[i]!.id}'s client to see every node's last write`);
  }
});

test("a local (memory-mapped) writer on one node reaches the remote clients of another, and back", { timeout: 120_000 }, async (t) => {
  const { nodes } = await startCluster(t, 3);
  const admin = await (await remote(t, nodes[0]!.url)).getVirtualServiceFile('acme', 'mill');
  await admin.registerVariable(new VariableMetadata('rpm', -1, 8, VariableType.U64));
  const localClient = await Client.initialize(nodes[0]!.url, 'acme', OPS, { mode: 'local' });
  t.after(() => localClient.close());
  const local = await localClient.getVirtualServiceFile('acme', 'mill');
  assert.equal(local.mode, 'local');
  const far = await whenThere(await remote(t, nodes[2]!.url), 'mill');
  await until(() => far.variables().length === 1, 'rpm on node c');
  local.set('rpm', 1200n); // a store into node a's mapped file: no message to any server
  await until(() => far.get('rpm') === 1200n, "node c's remote client to see node a's local write");
  // A variable the local process registers itself reaches the cluster with its first value.
  await local.registerVariable(new VariableMetadata('torque', -1, 8, VariableType.F64));
  local.set('torque', 3.5);
  await until(() => far.variables().some((m) => m.name === 'torque') && far.get('torque') === 3.5, 'a locally registered variable on node c');
  await far.mutate('rpm', 900n);
  await until(() => local.get('rpm') === 900n, "node a's local reader to see node c's write");
});

test('compare-and-set increments from clients of all three nodes never lose one', { timeout: 180_000 }, async (t) => {
  const { nodes } = await startCluster(t, 3);
  const vf = await (await remote(t, nodes[0]!.url)).getVirtualServiceFile('acme', 'tally');
  await vf.registerVariable(new VariableMetadata('counter', -1, 8, VariableType.U64));
  const PER_CLIENT = 100;
  for (const node of nodes.slice(1)) {
    const there = await whenThere(await remote(t, node.url, VIEWER), 'tally');
    await until(() => there.variables().length === 1, `counter on node ${node.id}`);
  }
  const workers = nodes.map((node) => startChild('remote-cas', [node.url, 'tally', String(PER_CLIENT)], t));
  for (const w of workers) await w.next('ready', 60_000);
  for (const w of workers) w.send({ type: 'go' });
  const conflicts = await Promise.all(workers.map(async (w) => (await w.next<{ conflicts: number }>('done', 150_000)).conflicts));
  for (const node of nodes) {
    const there = await whenThere(await remote(t, node.url, VIEWER), 'tally');
    await until(() => there.get('counter') === BigInt(3 * PER_CLIENT), `node ${node.id} to end on ${3 * PER_CLIENT}`);
  }
  assert.ok(conflicts.reduce((a, b) => a + b, 0) > 0, 'the clients did race (some compare-and-sets were refused)');
});
