import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, linkSync, mkdirSync, openSync, closeSync, ftruncateSync, symlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { VirtualVariableFile, VariableMetadata, VariableType } from '../src/index.js';
import { E, H, MAX_MAX_FILE_SIZE, WATCH_SLOT_COUNT, entryOffset } from '../src/local/file-format.js';
import { LocalFileAccessor } from '../src/local/local-accessor.js';
import { OWN_PID, OWN_START, startTimeOf, type LockPolicy } from '../src/local/process-lock.js';
import { BUSY, ServiceFile, type DirEntry, type ServiceFileOptions } from '../src/local/service-file.js';
import { ChangeWatcher } from '../src/local/change-watcher.js';
import { startChild } from './helpers/child.js';
import { tempDir } from './helpers/temp.js';

type T = Parameters<typeof tempDir>[0];
type Err = Error & { code?: string };

const FAST: LockPolicy = { staleMs: 50, timeoutMs: 2000 };
const i32At = (byteOffset: number): number => byteOffset >> 2;

/** A fresh service file with `x` (u64, 7) and `blob` (64 bytes); closed after the test. */
function makeFile(t: T, options: ServiceFileOptions = {}, name = 'svc.mem'): { path: string; file: ServiceFile } {
  const path = join(tempDir(t), name);
  const file = ServiceFile.open(path, { create: true, lock: FAST, ...options });
  t.after(() => file.close());
  const x = file.register(new VariableMetadata('x', -1, 8, VariableType.U64));
  file.write(x, x.codec.check(7n));
  file.register(new VariableMetadata('blob', -1, 64, VariableType.Bytes));
  return { path, file };
}

function openMore(t: T, path: string, options: ServiceFileOptions = {}): ServiceFile {
  const file = ServiceFile.open(path, { lock: FAST, ...options });
  t.after(() => file.close());
  return file;
}

/** The lock words of an entry, by the format's offsets (not the DirEntry's cached indexes). */
function lockWords(e: DirEntry): { lock: number; start: number; seq: number } {
  const base = entryOffset(e.index);
  return { lock: i32At(base + E.LOCK), start: i32At(base + E.LOCK_START), seq: i32At(base + E.SEQ) };
}

/** Another process truncates the file (what any local process with write access can do). */
function truncateElsewhere(path: string, size: number): void {
  const r = spawnSync(process.execPath, ['-e', `require('node:fs').truncateSync(${JSON.stringify(path)}, ${size})`]);
  assert.equal(r.status, 0, String(r.stderr));
}

function sleeper(t: T): number {
  const proc = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(() => proc.kill('SIGKILL'));
  assert.ok(proc.pid !== undefined);
  return proc.pid;
}

/** Runs fn and returns how long it took, in ms. */
function timed(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

// ---- 1. SIGBUS ------------------------------------------------------------------------------------

const isDamaged = (label: string, dir: string) => (err: Err) =>
  err.code === 'INVALID_FILE' && err.message === `${label} is damaged: it was truncated or shrunk by another process` && !err.message.includes(dir);

for (const first of ['read', 'write'] as const) {
  test(`a file truncated by another process under our mapping: the next ${first} past its end throws INVALID_FILE, the process lives`, async (t) => {
    const dir = tempDir(t);
    const victim = await VirtualVariableFile.open(join(dir, 'victim.mem'), { create: true, label: 'acme/victim' });
    const other = await VirtualVariableFile.open(join(dir, 'other.mem'), { create: true });
    t.after(() => Promise.all([victim.close(), other.close()]));
    await victim.registerVariable(new VariableMetadata('x', -1, 8, VariableType.F64));
    await other.registerVariable(new VariableMetadata('y', -1, 8, VariableType.F64));
    const hx = victim.handle<number>('x');
    const hy = other.handle<number>('y');
    hx.set(1.5);
    hy.set(2.5);
    let sum = 0;
    for (let i = 0; i < 200_000; i++) sum += hx.get(); // hot: the checks must hold in optimized code too
    for (let i = 0; i < 200_000; i++) hx.set(1.5);
    assert.equal(sum, 300_000);

    truncateElsewhere(join(dir, 'victim.mem'), 4096); // the header survives, the directory and data do not
    const damaged = isDamaged('acme/victim', dir);
    if (first === 'read') assert.throws(() => hx.get(), damaged, 'a read past EOF never returns the zeros it saw');
    else assert.throws(() => hx.set(3.5), damaged, 'a write into a repaired page is not reported done');
    assert.throws(() => hx.get(), damaged);
    assert.throws(() => hx.set(4.5), damaged);
    assert.throws(() => victim.bytes(), damaged);
    await assert.rejects(victim.registerVariable(new VariableMetadata('z', -1, 8, VariableType.F64)), damaged);

    assert.equal(hy.get(), 2.5, 'another file in the same process keeps working');
    hy.set(5.5);
    assert.equal(hy.get(), 5.5);
    assert.throws(() => ServiceFile.open(join(dir, 'victim.mem'), { label: 'acme/victim' }), (err: Err) => err.code === 'INVALID_FILE' && /^acme\/victim .*truncated/.test(err.message));
  });
}

for (const fallback of [false, true]) {
  const who = fallback ? 'its fallback futex thread (no slot free) takes' : 'its next look (the safety net) takes';
  test(`a file truncated to nothing while its watcher is parked: ${who} the SIGBUS, the process lives and warns`, { timeout: 120_000 }, async (t) => {
    const { path } = makeFile(t);
    const child = startChild('truncation-watcher', [path, 'x', ...(fallback ? ['fallback'] : [])], t);
    const { bit } = await child.next<{ bit: number }>('watching');
    assert.equal(bit === 0, fallback, fallback ? 'no slot: the futex thread' : 'a slot: the wake channel');
    truncateElsewhere(path, 0);
    const seen = await child.next<{ code: string; message: string; readCode: string }>('survived', 60_000);
    assert.equal(seen.code, 'INVALID_FILE');
    assert.match(seen.message, /is damaged: it was truncated or shrunk by another process/);
    assert.equal(seen.readCode, 'INVALID_FILE');
    const exit = await child.exited;
    assert.deepEqual(exit, { code: 0, signal: null });
  });
}

// ---- 2. header fields ------------------------------------------------------------------------------

test('dataEnd or data capacity set to 1 GiB by a local writer: INVALID_FILE naming the label, nothing allocated', (t) => {
  const { path, file } = makeFile(t, { maxFileSize: MAX_MAX_FILE_SIZE, label: 'acme/big' });
  const writer = openMore(t, path); // a local writer: any process that maps the file
  const GiB = 1n << 30n;
  const names = (what: RegExp) => (err: Err) => err.code === 'INVALID_FILE' && err.message.startsWith('acme/big: ') && what.test(err.message) && !err.message.includes(path);

  const honestEnd = Atomics.load(writer.b64, H.DATA_END >> 3);
  Atomics.store(writer.b64, H.DATA_END >> 3, GiB);
  assert.throws(() => file.checkedDataEnd(), names(/data end 1073741824/));
  assert.throws(() => file.dataEnd, names(/data end 1073741824/));
  assert.throws(() => file.register(new VariableMetadata('y', -1, 8, VariableType.U64)), names(/data end/));
  Atomics.store(writer.b64, H.DATA_END >> 3, honestEnd);
  assert.equal(file.register(new VariableMetadata('y', -1, 8, VariableType.U64)).meta.name, 'y', 'the registration lock was let go');

  const honestCapacity = Atomics.load(writer.b64, H.DATA_CAPACITY >> 3);
  Atomics.store(writer.b64, H.DATA_CAPACITY >> 3, GiB);
  const accessor = new LocalFileAccessor(file);
  assert.throws(() => file.checkedDataCapacity(), names(/data capacity 1073741824 lies past the end/));
  assert.throws(() => file.dataBytes(), names(/data capacity/));
  assert.throws(() => accessor.bytes(), names(/data capacity/));
  assert.throws(() => accessor.shadowBytes(), names(/data capacity/));
  Atomics.store(writer.b64, H.DATA_CAPACITY >> 3, 1n << 40n);
  assert.throws(() => file.checkedDataCapacity(), names(/exceeds the file's limit/));
  Atomics.store(writer.b64, H.DATA_CAPACITY >> 3, honestCapacity);
  assert.equal(file.dataBytes().length, Number(honestCapacity));
});

test('a header whose counts disagree with each other or with the file is refused at open', (t) => {
  const { path, file } = makeFile(t);
  const patch = (offset: number, value: bigint): void => {
    const buf = Buffer.alloc(8);
    buf.writeBigUInt64LE(value);
    const fd = openSync(path, 'r+');
    writeSync(fd, buf, 0, 8, offset);
    closeSync(fd);
  };
  const capacity = BigInt(file.dataCapacity);
  const end = BigInt(file.dataEnd);
  for (const [what, offset, value, why] of [
    ['dataEnd past the capacity', H.DATA_END, capacity + 8n, /corrupt data end/],
    ['a capacity past the size limit', H.DATA_CAPACITY, 1n << 40n, /corrupt data capacity/],
  ] as const) {
    patch(offset, value);
    assert.throws(() => ServiceFile.open(path, { label: 'acme/svc' }), (err: Err) => err.code === 'INVALID_FILE' && why.test(err.message) && err.message.startsWith('acme/svc '), what);
    patch(offset, offset === H.DATA_END ? end : capacity);
  }
  openMore(t, path); // restored: fine again
});

// ---- 3. stale locks --------------------------------------------------------------------------------

test('start times: ours is known, and is what /proc says for our pid', () => {
  assert.ok(OWN_START !== 0);
  assert.equal(startTimeOf(OWN_PID), OWN_START);
  assert.equal(startTimeOf(-1), undefined);
});

test('a writer lock left with our own pid and start time (no thread of ours holds it) is recovered, not TIMEOUT', (t) => {
  const { file } = makeFile(t);
  const x = file.entry('x');
  const w = lockWords(x);
  // What a previous life of this process (a container's pid 1) or a lost thread of it would leave mid-write.
  Atomics.store(file.i32, w.lock, OWN_PID);
  Atomics.store(file.i32, w.start, OWN_START);
  Atomics.add(file.i32, w.seq, 1);
  assert.equal(file.readValue(x), 7n);
  assert.equal(file.isTorn(x), true);
  Atomics.store(file.i32, w.lock, OWN_PID);
  file.write(x, 8n);
  assert.equal(file.readValue(x), 8n);
  assert.equal(Atomics.load(file.i32, w.lock), 0);
});

test('our own pid with another start time is an earlier process with our pid: recovered', (t) => {
  const { file } = makeFile(t);
  const x = file.entry('x');
  const w = lockWords(x);
  Atomics.store(file.i32, w.lock, OWN_PID);
  Atomics.store(file.i32, w.start, (OWN_START + 12345) | 0);
  file.write(x, 9n);
  assert.equal(file.readValue(x), 9n);
});

test('the registration lock and the watcher slots are recovered from our own leftovers too', (t) => {
  const { file } = makeFile(t);
  Atomics.store(file.i32, i32At(H.REG_LOCK), OWN_PID);
  Atomics.store(file.i32, i32At(H.REG_LOCK_START), OWN_START);
  assert.equal(file.register(new VariableMetadata('late', -1, 8, VariableType.U64)).meta.name, 'late');
  assert.equal(Atomics.load(file.i32, i32At(H.REG_LOCK)), 0);

  for (let i = 0; i < WATCH_SLOT_COUNT; i++) {
    Atomics.store(file.i32, i32At(H.WATCH_SLOTS) + i, OWN_PID);
    Atomics.store(file.i32, i32At(H.WATCH_STARTS) + i, OWN_START);
  }
  const watcher = new ChangeWatcher(file, 'test');
  t.after(() => watcher.close());
  watcher.add(() => {});
  assert.notEqual(file.ownWatchBit, 0, 'a slot was reclaimed: this watcher has a bit of its own');
  const other = openMore(t, file.path);
  const second = new ChangeWatcher(other, 'test');
  t.after(() => second.close());
  second.add(() => {});
  assert.notEqual(other.ownWatchBit, 0);
  assert.notEqual(other.ownWatchBit, file.ownWatchBit, 'a live watcher of ours keeps its slot');
});

test('a lock held by a live process (another pid) with a wrong recorded start time: its pid was reused, recovered', (t) => {
  const { file } = makeFile(t);
  const pid = sleeper(t);
  const x = file.entry('x');
  const w = lockWords(x);
  const start = startTimeOf(pid);
  assert.ok(start !== undefined);
  Atomics.store(file.i32, w.lock, pid);
  Atomics.store(file.i32, w.start, (start + 1) | 0);
  Atomics.add(file.i32, w.seq, 1);
  assert.equal(file.readValue(x), 7n, 'the reader recovers the lock');
  assert.equal(file.isTorn(x), true);
  Atomics.store(file.i32, w.lock, pid);
  file.write(x, 10n);
  assert.equal(file.readValue(x), 10n);
});

test('a lock held by a live process with its right start time is waited for: TIMEOUT; so is one with no start time (older files)', (t) => {
  const { file } = makeFile(t, { lock: { staleMs: 20, timeoutMs: 300 } });
  const pid = sleeper(t);
  const x = file.entry('x');
  const w = lockWords(x);
  for (const start of [startTimeOf(pid)!, 0]) {
    Atomics.store(file.i32, w.lock, pid);
    Atomics.store(file.i32, w.start, start);
    assert.throws(() => file.write(x, 11n), { code: 'TIMEOUT' });
    assert.equal(Atomics.load(file.i32, w.lock), pid, 'never robbed');
  }
  Atomics.store(file.i32, w.lock, 0);
});

test('a lock this thread holds (lock() … unlock()) is never taken for a leftover by another mapping in this thread', (t) => {
  const { path, file } = makeFile(t, { lock: { staleMs: 20, timeoutMs: 300 } });
  const other = openMore(t, path, { lock: { staleMs: 20, timeoutMs: 300 } });
  const x = file.entry('x');
  file.lock(x);
  assert.throws(() => other.write(other.entry('x'), 12n), { code: 'TIMEOUT' });
  assert.equal(other.tryLock(other.entry('x')), false);
  file.unlock(x);
  other.write(other.entry('x'), 12n);
  assert.equal(file.readValue(x), 12n);
});

// ---- 4. non-blocking primitives --------------------------------------------------------------------

test('tryRead/tryLock/tryRegister answer BUSY/false at once while a stopped writer holds the locks, and recover once it is killed', { timeout: 120_000 }, async (t) => {
  const { path, file } = makeFile(t);
  const x = file.entry('x');
  const holder = startChild('lock-holder', [path, 'x', 'registration'], t);
  const { pid } = await holder.next<{ pid: number }>('locked');
  holder.kill('SIGSTOP'); // a writer stopped in the middle of a write: alive, never to finish on its own
  t.after(() => holder.kill('SIGKILL'));
  const meta = new VariableMetadata('fresh', -1, 8, VariableType.U64);

  for (let round = 0; round < 2; round++) {
    let read: unknown;
    let locked = true;
    let registered: unknown;
    assert.ok(timed(() => (read = file.tryRead(x, () => file.u8.slice(x.at, x.at + 8)))) < 1000);
    assert.ok(timed(() => (locked = file.tryLock(x))) < 1000);
    assert.ok(timed(() => (registered = file.tryRegister(meta))) < 1000);
    assert.equal(read, BUSY);
    assert.equal(locked, false);
    assert.equal(registered, BUSY);
    await new Promise((r) => setTimeout(r, FAST.staleMs * 3)); // past staleMs: a live holder is still not robbed
  }
  assert.equal(Atomics.load(file.i32, x.lockIdx), pid);
  assert.equal(file.tryRead(file.entry('blob'), () => 'other variables are free'), 'other variables are free');

  holder.kill('SIGKILL');
  await holder.exited;
  const deadline = performance.now() + 30_000;
  let value: bigint | typeof BUSY = BUSY;
  while (value === BUSY && performance.now() < deadline) {
    value = file.tryRead(x, () => file.view.getBigUint64(x.at, true));
    if (value === BUSY) await new Promise((r) => setTimeout(r, 10));
  }
  assert.notEqual(value, BUSY, 'the dead writer\'s lock was recovered');
  assert.equal(file.isTorn(x), true);
  let entry: DirEntry | typeof BUSY = BUSY;
  while (entry === BUSY && performance.now() < deadline) {
    entry = file.tryRegister(meta);
    if (entry === BUSY) await new Promise((r) => setTimeout(r, 10));
  }
  assert.notEqual(entry, BUSY, 'the dead registrar\'s lock was recovered');
  assert.equal(file.tryLock(x), true);
  const version = file.writeLocked(x, new Uint8Array([1, 2]));
  assert.equal(file.entryVersion(x), version);
  assert.equal(file.readValue(x), 0x0201n, 'zero-padded');
  assert.equal(file.isTorn(x), false);
  assert.equal(Atomics.load(file.i32, x.lockIdx), 0, 'writeLocked let go of the lock');
});

test('writeLocked needs the lock and always lets go of it; try* on a read-only mapping never store', (t) => {
  const { path, file } = makeFile(t);
  const x = file.entry('x');
  assert.throws(() => file.writeLocked(x, new Uint8Array(8)), { code: 'INTERNAL_ERROR' });
  assert.equal(file.tryLock(x), true);
  assert.throws(() => file.writeLocked(x, new Uint8Array(9)), { code: 'VALUE_TOO_LARGE' });
  assert.equal(Atomics.load(file.i32, x.lockIdx), 0);
  assert.equal(file.tryLock(x), true);
  assert.equal(file.tryLock(x), false, 'not re-entrant');
  file.unlock(x);

  const r = openMore(t, path, { readOnly: true });
  assert.throws(() => r.tryLock(r.entry('x')), { code: 'PERMISSION_DENIED' });
  assert.throws(() => r.tryRegister(new VariableMetadata('nope', -1, 8, VariableType.U64)), { code: 'PERMISSION_DENIED' });
  assert.equal(r.tryRead(r.entry('x'), () => r.view.getBigUint64(r.entry('x').at, true)), 7n);
  Atomics.store(file.i32, x.lockIdx, -5); // garbage owner, odd seqlock: a writable mapping could recover it, this one may not
  Atomics.add(file.i32, x.seqIdx, 1);
  assert.equal(r.tryRead(r.entry('x'), () => 0), BUSY);
  Atomics.add(file.i32, x.seqIdx, 1);
  Atomics.store(file.i32, x.lockIdx, 0);
});

// ---- 5. paths and names ----------------------------------------------------------------------------

test('a symlink at the path is refused (INVALID_FILE), read-only or not, with or without create', (t) => {
  const { path } = makeFile(t);
  const link = join(tempDir(t), 'link.mem');
  symlinkSync(path, link);
  for (const options of [{}, { readOnly: true }, { create: true }] as ServiceFileOptions[]) {
    assert.throws(() => ServiceFile.open(link, options), (err: Err) => err.code === 'INVALID_FILE' && /symbolic link/.test(err.message));
  }
});

test('a FIFO or a directory at the path is refused without blocking', (t) => {
  const dir = tempDir(t);
  const fifo = join(dir, 'fifo.mem');
  const made = spawnSync('mkfifo', [fifo]);
  if (made.status === 0) {
    assert.throws(() => ServiceFile.open(fifo, { readOnly: true }), (err: Err) => err.code === 'INVALID_FILE' && /not a regular file/.test(err.message));
    assert.throws(() => ServiceFile.open(fifo), (err: Err) => err.code === 'INVALID_FILE' && /not a regular file/.test(err.message));
  }
  mkdirSync(join(dir, 'd.mem'));
  assert.throws(() => ServiceFile.open(join(dir, 'd.mem'), { readOnly: true }), { code: 'INVALID_FILE' });
});

test('label: errors name the file by its label, never by its path', (t) => {
  const { path, file } = makeFile(t, { label: 'acme/plant' });
  const dir = join(path, '..');
  const labelled = (code: string) => (err: Err) => err.code === code && err.message.includes('acme/plant') && !err.message.includes(dir);
  assert.throws(() => ServiceFile.open(join(dir, 'missing.mem'), { label: 'acme/plant' }), labelled('FILE_NOT_FOUND'));
  assert.throws(() => ServiceFile.open(join(dir, 'missing.mem'), { label: 'acme/plant', readOnly: true }), labelled('FILE_NOT_FOUND'));
  assert.throws(() => file.entry('nope'), labelled('VARIABLE_NOT_FOUND'));
  const r = openMore(t, path, { readOnly: true, label: 'acme/plant' });
  assert.throws(() => r.writeBytes(r.entry('x'), new Uint8Array(1)), labelled('PERMISSION_DENIED'));
  const fd = openSync(path, 'r+');
  ftruncateSync(fd, 100);
  closeSync(fd);
  assert.throws(() => ServiceFile.open(path, { label: 'acme/plant' }), labelled('INVALID_FILE'));
  file.close();
  assert.throws(() => file.version, labelled('NOT_CONNECTED'));
});

test('expect: a file whose header names another tenant or service (a planted link or copy) is refused', (t) => {
  const dir = tempDir(t);
  const theirs = join(dir, 'theirs.mem');
  const created = ServiceFile.open(theirs, { create: true, tenant: 'zeta', service: 'hidden' });
  created.close();
  mkdirSync(join(dir, 'acme'));
  const planted = join(dir, 'acme', 'plant.mem');
  linkSync(theirs, planted);
  assert.throws(
    () => ServiceFile.open(planted, { expect: { tenant: 'acme', service: 'plant' }, label: 'acme/plant' }),
    (err: Err) => err.code === 'INVALID_FILE' && /belongs to another service/.test(err.message) && !/zeta|hidden/.test(err.message),
  );
  const ok = ServiceFile.open(theirs, { expect: { tenant: 'zeta', service: 'hidden' } });
  ok.close();
  const fresh = ServiceFile.open(join(dir, 'acme', 'new.mem'), { create: true, expect: { tenant: 'acme', service: 'new' } });
  assert.deepEqual([fresh.info.tenant, fresh.info.service], ['acme', 'new'], 'a file created with expect records it');
  fresh.close();
});

test('requireOwner: a file writable by group or others, or someone else\'s, is refused', (t) => {
  const { path } = makeFile(t);
  openMore(t, path, { requireOwner: true }).close();
  chmodSync(path, 0o620);
  assert.throws(() => ServiceFile.open(path, { requireOwner: true }), (err: Err) => err.code === 'INVALID_FILE' && /writable by group or others/.test(err.message));
  chmodSync(path, 0o602);
  assert.throws(() => ServiceFile.open(path, { requireOwner: true }), { code: 'INVALID_FILE' });
  openMore(t, path); // without the option it still opens
  chmodSync(path, 0o600);
  if (process.getuid?.() === 0) {
    chownSync(path, 4242, 4242);
    assert.throws(() => ServiceFile.open(path, { requireOwner: true }), (err: Err) => err.code === 'INVALID_FILE' && /owned by uid 4242/.test(err.message));
  }
});

// ---- 6. who wrote last -----------------------------------------------------------------------------

test('lastWriter: the pid of the process that completed the last write', { timeout: 120_000 }, async (t) => {
  const { path, file } = makeFile(t);
  const counter = file.register(new VariableMetadata('counter', -1, 8, VariableType.U64));
  assert.equal(file.lastWriter(counter), OWN_PID, 'registration counts as a write');
  const child = startChild('counter', [path, '10'], t);
  await child.next('ready');
  child.send({ type: 'go' });
  await child.next('done');
  assert.equal(file.readValue(counter), 10n);
  assert.equal(file.lastWriter(counter), child.proc.pid);
  file.writeBytes(counter, new Uint8Array([1]));
  assert.equal(file.lastWriter(counter), OWN_PID);
});

test('a file that cannot grow (file-size limit, full disk) is QUOTA_EXCEEDED, never a raw errno', async (t) => {
  const dir = tempDir(t);
  const script = new URL('./fixtures/grow-until-full.js', import.meta.url).pathname;
  // RLIMIT_FSIZE of 4 MiB: ftruncate past it fails with EFBIG, as it would with ENOSPC on a full disk.
  const child = spawn('bash', ['-c', `ulimit -f 4096; exec "${process.execPath}" "${script}" "${join(dir, 'x.mem')}"`], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  t.after(() => child.kill('SIGKILL'));
  const reply = await new Promise<{ code?: string; registered?: number }>((resolve, reject) => {
    child.once('message', (m) => resolve(m as { code?: string; registered?: number }));
    child.once('exit', (code, signal) => reject(new Error(`child exited (${code ?? signal}) without a reply`)));
  });
  assert.equal(reply.code, 'QUOTA_EXCEEDED');
  assert.ok((reply.registered ?? 0) > 0, 'some variables fit before the limit');
});
