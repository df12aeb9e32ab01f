import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { VariableMetadata, VariableType, VirtualVariableFile } from '../src/index.js';
import { startChild } from './helpers/child.js';
import { tempDir } from './helpers/temp.js';

/** vf.mutate on local files: a committed version per write, compare-and-set that never loses an increment. */

async function counterFile(t: Parameters<typeof tempDir>[0]): Promise<{ path: string; vf: VirtualVariableFile }> {
  const path = join(tempDir(t), 'cas.mem');
  const vf = await VirtualVariableFile.open(path, { create: true });
  t.after(() => vf.close());
  await vf.registerVariable(new VariableMetadata('counter', -1, 8, VariableType.U64));
  return { path, vf };
}

test('mutate resolves with the version it committed; a stale expectedVersion is CONFLICT and writes nothing', async (t) => {
  const { vf } = await counterFile(t);
  const { version } = await vf.mutate('counter', 5n);
  assert.equal(vf.handle('counter').version(), version);
  const next = await vf.mutate('counter', 6n, { expectedVersion: version });
  assert.ok(next.version > version);
  await assert.rejects(vf.mutate('counter', 7n, { expectedVersion: version }), { code: 'CONFLICT' });
  assert.equal(vf.get('counter'), 6n);
  assert.equal(vf.handle('counter').version(), next.version);
  await assert.rejects(vf.mutate('counter', 8n, { expectedVersion: -1 }), { code: 'TYPE_MISMATCH' });
  await assert.rejects(vf.mutate('counter', 8n, { opId: 0 }), { code: 'TYPE_MISMATCH' });
  await assert.rejects(vf.mutate('counter', 'x' as never), { code: 'TYPE_MISMATCH' });
  await assert.rejects(vf.mutate('nope', 1n), { code: 'VARIABLE_NOT_FOUND' });
});

test('a compare-and-set race between 5 processes on one counter never loses an increment', async (t) => {
  const { path, vf } = await counterFile(t);
  const per = 300;
  const racers = Array.from({ length: 5 }, () => startChild('cas-counter', [path, String(per)], t));
  await Promise.all(racers.map((c) => c.next('ready')));
  for (const c of racers) c.send({ type: 'go' });
  const results = await Promise.all(racers.map((c) => c.next<{ conflicts: number }>('done')));
  await Promise.all(racers.map((c) => c.exited));
  assert.equal(vf.get('counter'), BigInt(5 * per));
  // Not a timing assertion: with five writers on two cores some CAS must have lost a race, or none raced at all.
  t.diagnostic(`conflicts met: ${results.map((r) => r.conflicts).join(', ')}`);
});
