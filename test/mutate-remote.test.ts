import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VariableMetadata, VariableType } from '../src/index.js';
import { startChild } from './helpers/child.js';
import { startClientServer } from './helpers/client-server.js';

/** vf.mutate on remote files against a real server: versions, compare-and-set, and operation ids. */

test('remote mutate: the committed version, in the buffer at once and seen by others; CONFLICT writes nothing', async (t) => {
  const { connect } = await startClientServer(t);
  const writer = await connect();
  const vf = await writer.getVirtualServiceFile('acme', 'm');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  const { version } = await vf.mutate('n', 41n);
  assert.equal(vf.get('n'), 41n);
  assert.equal(vf.handle('n').version(), version);
  await assert.rejects(vf.mutate('n', 1n, { expectedVersion: version - 1n }), { code: 'CONFLICT' });
  const next = await vf.mutate('n', 42n, { expectedVersion: version });
  assert.ok(next.version > version);
  const reader = await connect();
  const seen = await reader.getVirtualServiceFile('acme', 'm');
  assert.equal(seen.get('n'), 42n);
  assert.equal(seen.handle('n').version(), next.version);
  // A pending set() goes first: the mutation never overtakes it.
  vf.set('n', 7n);
  await vf.mutate('n', 8n);
  await reader.waitForFileChange({ timeoutMs: 30_000 });
  for (let i = 0; i < 100 && seen.get('n') !== 8n; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(seen.get('n'), 8n);
});

test('remote mutate: the same opId is applied once', async (t) => {
  const { connect } = await startClientServer(t);
  const client = await connect();
  const vf = await client.getVirtualServiceFile('acme', 'once');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  const first = await vf.mutate('n', 1n, { opId: 1_000_001 });
  vf.set('n', 5n); // moved on since: a retry of the first mutation must not apply it again
  await vf.flush();
  const again = await vf.mutate('n', 1n, { opId: 1_000_001 });
  assert.equal(again.version, first.version, 'the first answer');
  const reader = await connect();
  assert.equal((await reader.getVirtualServiceFile('acme', 'once')).get('n'), 5n, 'not applied again');
  assert.equal(vf.get('n'), 5n, "the retry's older answer does not put its value back here either");
});

test('remote mutate: a compare-and-set race between 5 client processes never loses an increment', async (t) => {
  const { url, connect } = await startClientServer(t);
  const client = await connect();
  const vf = await client.getVirtualServiceFile('acme', 'race');
  await vf.registerVariable(new VariableMetadata('counter', -1, 8, VariableType.U64));
  const per = 100;
  const racers = Array.from({ length: 5 }, () => startChild('remote-cas', [url, 'race', String(per)], t));
  await Promise.all(racers.map((c) => c.next('ready')));
  for (const c of racers) c.send({ type: 'go' });
  const results = await Promise.all(racers.map((c) => c.next<{ conflicts: number }>('done')));
  await Promise.all(racers.map((c) => c.exited));
  const reader = await connect();
  assert.equal((await reader.getVirtualServiceFile('acme', 'race')).get('counter'), BigInt(5 * per));
  t.diagnostic(`conflicts met: ${results.map((r) => r.conflicts).join(', ')}`);
});
