import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OpLedger } from '../src/server/op-ledger.js';
import { once } from './helpers/ledger.js';

/** The ledger's bounds: by time, per client, by weight; and what it never remembers. */

function counted(): { runs: number; op: () => Promise<number> } {
  const c = {
    runs: 0,
    op: async () => ++c.runs,
  };
  return c;
}

test('an operation id is run once; a retry gets the first answer, a retry during the first waits for it', async () => {
  const ledger = new OpLedger({ ttlMs: 60_000, maxPerClient: 10, maxWeight: 100 });
  const c = counted();
  const [a, b] = await Promise.all([once(ledger, 'acme', 'alice', 1, 'w', c.op, () => 1), once(ledger, 'acme', 'alice', 1, 'w', c.op, () => 1)]);
  assert.equal(c.runs, 1);
  assert.equal(a, b);
  assert.equal(await once(ledger, 'acme', 'alice', 1, 'w', c.op, () => 1), 1);
  assert.equal(await once(ledger, 'acme', 'bob', 1, 'w', c.op, () => 1), 2, 'ids are per client');
  assert.equal(await once(ledger, 'acme', 'alice', undefined, 'w', c.op, () => 1), 3, 'no id: always run');
  assert.equal(await once(ledger, 'acme', 'alice', undefined, 'w', c.op, () => 1), 4);
});

test('a failed operation is forgotten: its retry runs', async () => {
  const ledger = new OpLedger({ ttlMs: 60_000, maxPerClient: 10, maxWeight: 100 });
  await assert.rejects(once(ledger, 'acme', 'alice', 1, 'w', () => Promise.reject(new Error('busy')), () => 1), /busy/);
  assert.equal(await once(ledger, 'acme', 'alice', 1, 'w', async () => 'done', () => 1), 'done');
  assert.equal(ledger.size, 1);
});

test('bounded: entries expire, a client keeps at most its count, and the total weight is capped', async () => {
  let now = 0;
  const ledger = new OpLedger({ ttlMs: 1000, maxPerClient: 3, maxWeight: 10 }, () => now);
  const c = counted();
  await once(ledger, 'acme', 'alice', 1, 'w', c.op, () => 1);
  now = 1001;
  await once(ledger, 'acme', 'alice', 2, 'w', c.op, () => 1); // expires op 1
  assert.equal(await once(ledger, 'acme', 'alice', 1, 'w', c.op, () => 1), 3, 'forgotten after its time: run again');
  for (let id = 10; id < 20; id++) await once(ledger, 'acme', 'carol', id, 'w', c.op, () => 1);
  assert.ok(ledger.size <= 3 + 2, `carol keeps at most 3, alice 2: ${ledger.size}`);
  await once(ledger, 'acme', 'dave', 1, 'w', c.op, () => 9); // weight 9 pushes the oldest out
  const runsBefore = c.runs;
  await once(ledger, 'acme', 'dave', 1, 'w', c.op, () => 9);
  assert.equal(c.runs, runsBefore, 'the newest stays');
  assert.ok(ledger.size <= 2);
});

test('a known operation id on another write is refused, not answered with the first write\'s result', async () => {
  const ledger = new OpLedger({ ttlMs: 60_000, maxPerClient: 10, maxWeight: 100 });
  const c = counted();
  await once(ledger, 'acme', 'alice', 1, 'Mutate acme/s 0', c.op, () => 1);
  await assert.rejects(once(ledger, 'acme', 'alice', 1, 'Mutate acme/t 0', c.op, () => 1), { code: 'INVALID_MESSAGE' });
  assert.equal(c.runs, 1);
});

test('each tenant is bounded on its own: one that makes up many identities never pushes out another tenant\'s operations', async () => {
  const ledger = new OpLedger({ ttlMs: 60_000, maxPerClient: 50, maxWeight: 200 });
  const c = counted();
  const first = await once(ledger, 'acme', 'acme/ops/k', 1, 'w', c.op, () => 1);
  for (let client = 0; client < 10; client++) {
    for (let id = 1; id <= 50; id++) await once(ledger, 'beta', `beta/ops/${client}`, id, 'w', c.op, () => 1);
  }
  assert.ok(ledger.size <= 1 + 200, `bounded: ${ledger.size}`);
  assert.equal(await once(ledger, 'acme', 'acme/ops/k', 1, 'w', c.op, () => 1), first, 'acme\'s retry still gets its first answer');
});

test('a client that writes far past its per-client bound, with some writes failing, keeps the ledger\'s memory bounded', async () => {
  const ledger = new OpLedger({ ttlMs: 3_600_000, maxPerClient: 10, maxWeight: 1_000_000 });
  for (let id = 1; id <= 50_000; id++) {
    const op = id % 7 === 0 ? () => Promise.reject(new Error('refused')) : async () => id;
    await once(ledger, 'acme', 'alice', id, 'w', op, () => 1).catch(() => undefined);
  }
  assert.ok(ledger.size <= 10, `remembered ${ledger.size}`);
  assert.ok(ledger.queued <= 2 * (2 * 10 + 1024) + 10, `queued ${ledger.queued}: forgotten entries are let go`);
  assert.equal(await once(ledger, 'acme', 'alice', 50_000, 'w', async () => -1, () => 1), 50_000, 'the newest is still answered from memory');
});
