import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { VariableMetadata, VariableType } from '../src/index.js';
import { FLAG_TORN } from '../src/local/file-format.js';
import { OWN_PID, type LockPolicy } from '../src/local/process-lock.js';
import { BUSY, ServiceFile, type DirEntry } from '../src/local/service-file.js';
import { ValueWriter } from '../src/local/value-write.js';
import { WakeUps } from '../src/local/wake-up.js';
import { WriterLocks } from '../src/local/writer-lock.js';
import { tempDir } from './helpers/temp.js';

/**
 * The seams of src/local/: the one beginWrite/finishWrite pair every write path goes through, seen from a second
 * mapping of the same file; tryReadCopy; the watcher hook (attachWatcher).
 */

type T = Parameters<typeof tempDir>[0];

const FAST: LockPolicy = { staleMs: 50, timeoutMs: 2000 };

/** Two mappings of one fresh file with `rec` (16 bytes), as two processes would have them. */
function twoMappings(t: T): { a: ServiceFile; b: ServiceFile; ea: DirEntry; eb: DirEntry } {
  const path = join(tempDir(t), 'svc.mem');
  const a = ServiceFile.open(path, { create: true, lock: FAST });
  const b = ServiceFile.open(path, { lock: FAST });
  t.after(() => {
    a.close();
    b.close();
  });
  const ea = a.register(new VariableMetadata('rec', -1, 16, VariableType.Bytes));
  return { a, b, ea, eb: b.entry('rec') };
}

/** A ValueWriter of its own over mapping `a` (the facade keeps its own private). */
function writerOf(t: T, file: ServiceFile): ValueWriter {
  const locks = new WriterLocks(file, FAST);
  t.after(() => locks.dispose());
  return new ValueWriter(file, locks, new WakeUps(file));
}

const seqOf = (file: ServiceFile, e: DirEntry): number => Atomics.load(file.i32, e.seqIdx);
const lockOf = (file: ServiceFile, e: DirEntry): number => Atomics.load(file.i32, e.lockIdx);
const copyOf = (file: ServiceFile, e: DirEntry): Uint8Array => file.u8.slice(e.at, e.at + e.meta.size);

test('beginWrite: the writer lock and an odd seqlock, seen by another mapping, which neither reads nor locks meanwhile', (t) => {
  const { a, b, ea, eb } = twoMappings(t);
  const writer = writerOf(t, a);
  const before = b.entryVersion(eb);
  const seq = writer.beginWrite(ea);
  assert.equal(seq % 2, 1);
  assert.equal(seqOf(b, eb), seq, 'the other mapping sees the write in progress');
  assert.equal(lockOf(b, eb), OWN_PID);
  assert.equal(b.tryRead(eb, () => copyOf(b, eb)), BUSY);
  assert.equal(b.tryReadCopy(eb), BUSY);
  assert.equal(b.tryLock(eb), false);
  a.u8.fill(9, ea.at, ea.at + ea.meta.size);
  assert.equal(b.entryVersion(eb), before, 'no new version before finishWrite');

  const version = writer.finishWrite(ea, seq);
  assert.equal(version, before + 1n);
  assert.equal(seqOf(b, eb), seq + 1);
  assert.equal(lockOf(b, eb), 0, 'finishWrite released the lock');
  assert.equal(b.lastWriter(eb), OWN_PID);
  assert.deepEqual(b.tryReadCopy(eb), { bytes: new Uint8Array(16).fill(9), version });
  assert.equal(b.version, version, 'the service version is the entry version');
});

test('finishWrite clears a TORN flag: the next complete write makes the value whole again', (t) => {
  const { a, b, ea, eb } = twoMappings(t);
  Atomics.or(a.i32, ea.flagsIdx, FLAG_TORN);
  assert.equal(b.isTorn(eb), true);
  const writer = writerOf(t, a);
  writer.finishWrite(ea, writer.beginWrite(ea));
  assert.equal(b.isTorn(eb), false);
});

test('beginWrite with the lock already held (tryLock … writeLocked) does not take it again', (t) => {
  const { a, ea } = twoMappings(t);
  const writer = writerOf(t, a);
  assert.equal(a.tryLock(ea), true);
  const seq = writer.beginWrite(ea, true);
  assert.equal(lockOf(a, ea), OWN_PID);
  writer.finishWrite(ea, seq);
  assert.equal(lockOf(a, ea), 0);
  a.unlock(ea); // the facade's held-lock bookkeeping: tryLock marked it held
});

test('every write path is one seqlock write: seq + 2, version + 1, lock free, value seen by the other mapping', (t) => {
  const { a, b, ea, eb } = twoMappings(t);
  const x = a.register(new VariableMetadata('x', -1, 8, VariableType.U64));
  const xb = b.entry('x');
  const paths: [string, DirEntry, DirEntry, () => void][] = [
    ['write', x, xb, () => a.write(x, x.codec.check(5n))],
    ['update', x, xb, () => a.update<bigint>(x, (v) => v + 1n)],
    ['writeBytes', ea, eb, () => a.writeBytes(ea, new Uint8Array([1, 2, 3]))],
    ['tryLock + writeLocked', ea, eb, () => (assert.equal(a.tryLock(ea), true), a.writeLocked(ea, new Uint8Array([4, 5])))],
    ['touch', ea, eb, () => a.touch(ea)],
  ];
  for (const [what, ours, theirs, run] of paths) {
    const seq = seqOf(b, theirs);
    const version = b.version;
    run();
    assert.equal(seqOf(b, theirs), seq + 2, what);
    assert.equal(b.entryVersion(theirs), version + 1n, what);
    assert.equal(lockOf(b, theirs), 0, what);
    assert.equal(lockOf(a, ours), 0, what);
  }
  assert.equal(b.readValue(xb), 6n);
  assert.deepEqual([...b.readBytes(eb)], [4, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 'writeLocked zero-padded the rest');
});

test('tryReadCopy: bytes and version together, a fresh copy or into a buffer; BUSY zeroes the buffer range', (t) => {
  const { a, b, ea, eb } = twoMappings(t);
  const version = a.writeBytes(ea, new Uint8Array(16).fill(7));
  const copy = b.tryReadCopy(eb);
  assert.notEqual(copy, BUSY);
  if (copy === BUSY) return;
  assert.equal(copy.version, version);
  assert.deepEqual(copy.bytes, new Uint8Array(16).fill(7));
  copy.bytes[0] = 1;
  assert.equal(b.u8[eb.at], 7, 'a copy, not a view of the mapping');

  const out = new Uint8Array(20).fill(0xff);
  const into = b.tryReadCopy(eb, out, 2);
  assert.notEqual(into, BUSY);
  if (into === BUSY) return;
  assert.equal(into.bytes.buffer, out.buffer, 'a view of the caller’s buffer');
  assert.deepEqual([...out], [0xff, 0xff, ...new Array(16).fill(7), 0xff, 0xff]);

  const writer = writerOf(t, a);
  const seq = writer.beginWrite(ea);
  out.fill(0xff);
  assert.equal(b.tryReadCopy(eb, out, 2), BUSY);
  assert.deepEqual([...out], [0xff, 0xff, ...new Array(16).fill(0), 0xff, 0xff], 'no torn copy is left behind');
  writer.finishWrite(ea, seq);
});

test('attachWatcher: the hook hears a burst of writes once, in a microtask; its detach unhooks only itself', async (t) => {
  const { a, ea } = twoMappings(t);
  let heard = 0;
  const detach = a.attachWatcher({ bit: 1 << 3, onLocalChange: () => heard++ });
  assert.equal(a.ownWatchBit, 1 << 3);
  for (let i = 0; i < 5; i++) a.writeBytes(ea, new Uint8Array([i]));
  assert.equal(heard, 0, 'not during the writes');
  await Promise.resolve();
  assert.equal(heard, 1, 'once, at the first microtask checkpoint');

  let second = 0;
  const detachSecond = a.attachWatcher({ bit: 0, onLocalChange: () => second++ });
  detach(); // stale: the second hook stays
  a.touch(ea);
  await Promise.resolve();
  assert.deepEqual([heard, second], [1, 1]);
  detachSecond();
  assert.equal(a.ownWatchBit, 0);
  a.touch(ea);
  await Promise.resolve();
  assert.deepEqual([heard, second], [1, 1], 'unhooked: nobody hears');
});
