import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, openSync, readSync, statSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { VariableMetadata, VariableType } from '../src/index.js';
import { startTimeOf } from '../src/local/process-lock.js';
import { ServiceFile } from '../src/local/service-file.js';
import { OpJournal } from '../src/server/op-journal.js';
import { identityDigest, OpRecord, RecordState, settleWrites, whatDigest } from '../src/server/op-record.js';
import { OpLedger } from '../src/server/op-ledger.js';
import { tempDir } from './helpers/temp.js';

/** The operation journal (op-journal.ts): a ring of records in a mapped file, read back by the next server. */

const KiB = 1024;

function record(j: OpJournal, n: number, changes = 1): OpRecord {
  const rec = new OpRecord(j, identityDigest(`id-${n % 7}`), n, whatDigest(`w${n}`), `svc-${n % 3}`);
  rec.intent(Array.from({ length: changes }, (_, i) => ({ index: i, skipped: false, before: n })));
  for (let i = 0; i < changes; i++) rec.wrote(i, n + 1);
  rec.done();
  return rec;
}

test('records are read back in order, with what they said; the ring keeps the newest when it wraps', (t) => {
  const path = join(tempDir(t), 'acme.ops');
  const j = OpJournal.open(path, 64 * KiB);
  // Mixed sizes (1 to 40 changes: 152 to 1,088 bytes) wrap the 64 KiB ring many times over.
  for (let n = 1; n <= 3000; n++) record(j, n, 1 + (n % 40));
  const got = j.read();
  assert.ok(got.length > 50, `kept ${got.length}`);
  const ids = got.map((e) => e.opId);
  assert.equal(ids.at(-1), 3000, 'the newest is there');
  ids.forEach((id, i) => i > 0 && assert.equal(id, ids[i - 1]! + 1, 'contiguous, oldest first'));
  for (const e of got) {
    assert.equal(e.identity, identityDigest(`id-${e.opId % 7}`).toString('hex'));
    assert.equal(e.what, whatDigest(`w${e.opId}`));
    assert.equal(e.service, `svc-${e.opId % 3}`);
    assert.equal(e.state, RecordState.Done);
    assert.equal(e.changes.length, 1 + (e.opId % 40));
    assert.ok(e.changes.every((c, i) => c.index === i && c.before === e.opId && c.version === e.opId + 1));
  }
});

test('an unfinished intent reads back as one, with the versions it had; settling it is kept; the file survives a reopen', async (t) => {
  const path = join(tempDir(t), 'acme.ops');
  const j = OpJournal.open(path, 64 * KiB);
  record(j, 1);
  const open = new OpRecord(j, identityDigest('alice'), 2, whatDigest('w'), 'svc');
  open.intent([{ index: 0, skipped: false, before: 10 }, { index: 1, skipped: false, before: 11 }, { index: 2, skipped: true, before: 3 }]);
  open.wrote(0, 12); // killed here: change 1 not yet recorded
  const voided = new OpRecord(j, identityDigest('alice'), 3, whatDigest('w'), 'svc');
  voided.intent([{ index: 0, skipped: false, before: 12 }]);
  voided.void();
  await j.close();

  const again = OpJournal.open(path, 64 * KiB);
  const [first, unfinished, gone] = again.read();
  assert.equal(first?.state, RecordState.Done);
  assert.equal(unfinished?.state, RecordState.Intent);
  assert.deepEqual(unfinished?.changes.map((c) => [c.before, c.version, c.skipped]), [[10, 12, false], [11, 0, false], [3, 0, true]]);
  assert.equal(gone?.state, RecordState.Void);
  unfinished!.settle([12, 13, 0]);
  await again.close();
  const third = OpJournal.open(path, 64 * KiB);
  const settled = third.read()[1]!;
  assert.equal(settled.state, RecordState.Done);
  assert.deepEqual(settled.changes.map((c) => c.version), [12, 13, 0]);
  await third.close();
});

test('settleWrites: a change is written when its variable moved past the version taken under the lock', (t) => {
  const file = ServiceFile.open(join(tempDir(t), 's.mem'), { create: true });
  t.after(() => file.close());
  const a = file.register(new VariableMetadata('a', -1, 8, VariableType.U64));
  const b = file.register(new VariableMetadata('b', -1, 8, VariableType.U64));
  const beforeA = Number(file.entryVersion(a));
  const beforeB = Number(file.entryVersion(b));
  const changes = [
    { index: a.index, skipped: false, before: beforeA, version: 0 },
    { index: b.index, skipped: false, before: beforeB, version: 0 },
  ];
  assert.equal(settleWrites(file, changes), undefined, 'nothing moved: nothing was written');
  const va = Number(file.write(a, 5n));
  assert.deepEqual(settleWrites(file, changes), [va, 0], 'killed between the two writes: the first was written');
  assert.deepEqual(settleWrites(file, [{ ...changes[0]!, version: 3 }]), [3], 'a recorded version is the answer');
  assert.equal(settleWrites(file, [{ index: 99, skipped: false, before: 0, version: 0 }]), undefined, 'no such variable');
});

test('the ledger answers a retry from a journal an earlier ledger left, and settles its unfinished write from the file', async (t) => {
  const dir = tempDir(t);
  const file = ServiceFile.open(join(dir, 's.mem'), { create: true });
  t.after(() => file.close());
  const x = file.register(new VariableMetadata('x', -1, 8, VariableType.U64));
  const options = { dir, bytes: 64 * KiB, durability: 'none' as const, intervalMs: 1000, settle: (_t: string, _s: string, changes: Parameters<typeof settleWrites>[1]) => settleWrites(file, changes) };
  const limits = { ttlMs: 60_000, maxPerClient: 100, maxWeight: 1000 };
  const first = new OpLedger(limits, Date.now, options);
  const key = (opId: number, what = 'w') => ({ tenant: 'acme', identity: 'acme/key:k/c1', opId, what, service: 's' });
  const answer = { weigh: () => 1, revive: (versions: readonly number[]) => ({ revived: true, versions: [...versions] }) };
  let runs = 0;
  const done = await first.once(key(1), async (record) => {
    runs++;
    record!.intent([{ index: x.index, skipped: false, before: Number(file.entryVersion(x)) }]);
    const v = Number(file.write(x, 1n));
    record!.wrote(0, v);
    record!.done();
    return { revived: false, versions: [v] };
  }, answer);
  // Op 2 dies between its write and its record's version: the intent is all the journal has.
  void first.once(key(2), async (record) => {
    runs++;
    record!.intent([{ index: x.index, skipped: false, before: Number(file.entryVersion(x)) }]);
    file.write(x, 2n);
    return new Promise<never>(() => undefined);
  }, answer);
  // Op 3 dies after its intent, before writing anything.
  void first.once(key(3), async (record) => {
    runs++;
    record!.intent([{ index: x.index, skipped: false, before: Number(file.entryVersion(x)) }]);
    return new Promise<never>(() => undefined);
  }, answer);

  const second = new OpLedger(limits, Date.now, options); // the restarted server (same process: same owner)
  t.after(() => second.close());
  const run = async () => {
    runs++;
    return { revived: false, versions: [0] };
  };
  assert.deepEqual(await second.once(key(1), run, answer), { revived: true, versions: done.versions });
  assert.deepEqual(await second.once(key(2), run, answer), { revived: true, versions: [Number(file.entryVersion(x))] });
  await assert.rejects(second.once(key(1, 'another write'), run, answer), { code: 'INVALID_MESSAGE' });
  assert.equal(runs, 3, 'ops 1 and 2 were answered from the journal');
  assert.deepEqual(await second.once(key(3), run, answer), { revived: false, versions: [0] }, 'op 3 wrote nothing: its retry runs');
  assert.equal(runs, 4);
});

test('a damaged journal is read up to the damage, and one of another size is started afresh; neither throws', async (t) => {
  const path = join(tempDir(t), 'acme.ops');
  const j = OpJournal.open(path, 64 * KiB);
  for (let n = 1; n <= 100; n++) record(j, n);
  await j.close();
  // Scribble over the middle of the records (a careless process, a bad disk).
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.alloc(600, 0xab), 0, 600, 64 + 50 * 152);
  closeSync(fd);
  const damaged = OpJournal.open(path, 64 * KiB);
  const kept = damaged.read();
  assert.ok(kept.length < 100 && kept.every((e, i) => e.opId === i + 1), `a clean prefix: ${kept.length}`);
  record(damaged, 500);
  assert.deepEqual(damaged.read().map((e) => e.opId).slice(-1), [500], 'and it goes on after it');
  await damaged.close();

  const resized = OpJournal.open(path, 128 * KiB);
  assert.deepEqual(resized.read(), []);
  assert.equal(statSync(path).size, 64 + 128 * KiB);
  await resized.close();
});

test('a journal owned by another live server is refused (INVALID_FILE); one whose owner is gone is taken over', async (t) => {
  const path = join(tempDir(t), 'acme.ops');
  await OpJournal.open(path, 64 * KiB).close();
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  t.after(() => child.kill('SIGKILL'));
  const pid = child.pid!;
  let start: number | undefined;
  for (let i = 0; i < 100 && start === undefined; i++) start = startTimeOf(pid);
  const own = (owner: number, ownerStart: number) => {
    const fd = openSync(path, 'r+');
    const b = Buffer.alloc(8);
    b.writeInt32LE(owner, 0);
    b.writeUInt32LE(ownerStart, 4);
    writeSync(fd, b, 0, 8, 32);
    closeSync(fd);
  };
  own(pid, start ?? 0);
  assert.throws(() => OpJournal.open(path, 64 * KiB), { code: 'INVALID_FILE' });
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  const taken = OpJournal.open(path, 64 * KiB);
  const b = Buffer.alloc(4);
  const fd = openSync(path, 'r');
  readSync(fd, b, 0, 4, 32);
  closeSync(fd);
  assert.equal(b.readInt32LE(0), process.pid);
  await taken.close();
});

test('a journal truncated by another process: no crash; the writes go on unrecorded, and the next open starts it afresh', async (t) => {
  const path = join(tempDir(t), 'acme.ops');
  const j = OpJournal.open(path, 64 * KiB);
  record(j, 1);
  truncateSync(path, 0);
  const rec = new OpRecord(j, identityDigest('alice'), 2, whatDigest('w'), 'svc');
  rec.intent([{ index: 0, skipped: false, before: 1 }]); // a SIGBUS, repaired: the record is not kept
  rec.wrote(0, 2);
  rec.done();
  assert.equal(rec.synced, undefined);
  record(j, 3);
  await j.close();
  const again = OpJournal.open(path, 64 * KiB);
  assert.deepEqual(again.read(), []);
  record(again, 4);
  assert.deepEqual(again.read().map((e) => e.opId), [4]);
  await again.close();
});
