import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { native, type NativeWakeChannel, type NativeWatcher } from '../src/native/addon.js';
import { H, MAGIC, readHeader, type HeaderInfo } from '../src/local/file-format.js';
import { ServiceFile } from '../src/local/service-file.js';
import { startChild } from './helpers/child.js';
import { tempDir } from './helpers/temp.js';

/**
 * The native addon's own contract (native/*.cc), called raw on a real service file: the futex watchers sleep on
 * the header's VERSION word and count themselves in WAITERS (or, with a watcher bit, mark PARKED), as
 * ChangeWatcher's fallback does; the wake channels publish their tokens in WATCH_TOKENS, as ChangeWatcher does
 * (its protocol around them is test/wake-channel.test.ts). What has to run in a process of its own (exit, worker teardown, uncaught exceptions, gc churn) runs in
 * test/fixtures/native-addon-child.ts. Diff correctness against the byte loop is test/byte-diff.test.ts.
 */

type T = Parameters<typeof tempDir>[0];
type Err = Error & { code?: string };

const VERSION = H.VERSION >> 2;
const WAITERS = H.WAITERS >> 2;
const PARKED = H.PARKED >> 2;
const ALL = 0x7fffffff;

/** A fresh, real service file (small limits), closed again: only the raw calls below touch it. */
function makeFile(t: T): { path: string; info: HeaderInfo; size: number } {
  const path = join(tempDir(t, 'commy-native-'), 'svc.mem');
  ServiceFile.open(path, { create: true, maxVariables: 16, maxFileSize: 64 * 1024 }).close();
  const fd = openSync(path, 'r');
  try {
    const page = Buffer.alloc(4096);
    readSync(fd, page, 0, page.length, 0);
    const size = fstatSync(fd).size;
    return { path, info: readHeader(path, page, size), size };
  } finally {
    closeSync(fd);
  }
}

/** Maps maxFileSize bytes (more than the file holds, as ServiceFile does); the fd is closed at once, the mapping outlives it. */
function mapFile(t: T, path: string, length: number, writable = true): ArrayBuffer {
  const fd = openSync(path, writable ? 'r+' : 'r');
  let buf: ArrayBuffer;
  try {
    buf = native.map(fd, length, writable);
  } finally {
    closeSync(fd);
  }
  t.after(() => native.unmap(buf));
  return buf;
}

function bump(buf: ArrayBuffer): void {
  Atomics.add(new Int32Array(buf), VERSION, 1);
  native.futexWake(buf, H.VERSION, ALL);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until it holds; fails after a generous bound instead of hanging. */
async function until(cond: () => boolean, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** A watcher counting its calls; closed after the test. */
function counting(t: T, buf: ArrayBuffer, timeoutMs = -1): { w: NativeWatcher; calls: () => number } {
  let calls = 0;
  const w = native.watch(buf, H.VERSION, H.WAITERS, timeoutMs, (...args: unknown[]) => {
    assert.equal(args.length, 0);
    calls++;
  });
  t.after(() => w.close());
  return { w, calls: () => calls };
}

const code = (ctor: new (...a: never[]) => Error, c: string) => (e: Err) => e instanceof ctor && e.code === c;

// ---- map / msync ------------------------------------------------------------------------------------

test('map: maxFileSize bytes over a smaller file; writes through the mapping and through an fd are seen by the other; msync', (t) => {
  const { path, info, size } = makeFile(t);
  assert.ok(size < info.maxFileSize);
  const buf = mapFile(t, path, info.maxFileSize);
  assert.ok(buf instanceof ArrayBuffer);
  assert.equal(buf.byteLength, info.maxFileSize);
  assert.equal(Buffer.from(buf, 0, MAGIC.length).toString('ascii'), MAGIC);

  const msg = Buffer.from('hello from the mapping');
  new Uint8Array(buf).set(msg, info.dataStart);
  assert.deepEqual(readFileSync(path).subarray(info.dataStart, info.dataStart + msg.length), msg);

  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.from('via fd'), 0, 6, info.dataStart + 100);
  closeSync(fd);
  assert.equal(Buffer.from(buf, info.dataStart + 100, 6).toString(), 'via fd');

  native.msync(buf, info.dataStart, msg.length, true);
  native.msync(buf, 0, size, false);

  const ro = mapFile(t, path, info.maxFileSize, false);
  assert.deepEqual(Buffer.from(ro, info.dataStart, msg.length), msg, 'a read-only mapping sees the shared data');
});

// ---- futex ------------------------------------------------------------------------------------------

test('futexWait: 1 on timeout, 2 when the word does not hold the expected value (uint32 accepted); futexWake without waiters: 0', (t) => {
  const { path, info } = makeFile(t);
  const buf = mapFile(t, path, info.maxFileSize);
  const i32 = new Int32Array(buf);
  Atomics.store(i32, VERSION, 42);
  assert.equal(native.futexWait(buf, H.VERSION, 42, 20), 1);
  assert.equal(native.futexWait(buf, H.VERSION, 41, 10_000), 2);
  assert.equal(native.futexWake(buf, H.VERSION, 1), 0);
  Atomics.store(i32, VERSION, -1);
  assert.equal(native.futexWait(buf, H.VERSION, 0xffffffff, 1), 1);
  const ro = mapFile(t, path, info.maxFileSize, false);
  assert.equal(native.futexWait(ro, H.VERSION, 12345, 0), 2, 'futexWait works on a read-only mapping');
});

// ---- argument validation ----------------------------------------------------------------------------

test('bad arguments throw with a code, never crash', (t) => {
  const { path, info } = makeFile(t);
  const len = info.maxFileSize;
  const buf = mapFile(t, path, len);
  const n = native as unknown as Record<string, (...a: unknown[]) => unknown>;
  const noop = () => {};

  assert.throws(() => n.map!('x', len, true), code(TypeError, 'ERR_INVALID_ARG_TYPE'));
  assert.throws(() => n.map!(0, 0, true), code(RangeError, 'ERR_OUT_OF_RANGE'));
  assert.throws(() => n.map!(0, 1.5, true), code(RangeError, 'ERR_OUT_OF_RANGE'));
  assert.throws(() => n.map!(0, len, 1), code(TypeError, 'ERR_INVALID_ARG_TYPE'));
  assert.throws(() => n.map!(987654, len, true), (e: Err) => code(Error, 'ERR_COMMY_MMAP')(e) && /Bad file descriptor/.test(e.message));
  const rofd = openSync(path, 'r');
  try {
    assert.throws(() => native.map(rofd, len, true), code(Error, 'ERR_COMMY_MMAP'), 'writable map of a read-only fd');
  } finally {
    closeSync(rofd);
  }

  assert.throws(() => native.futexWait(new ArrayBuffer(8), 0, 0, 0), code(TypeError, 'ERR_INVALID_ARG_VALUE'), 'not a mapping');
  assert.throws(() => n.futexWait!(new Uint8Array(buf), 0, 0, 0), code(TypeError, 'ERR_INVALID_ARG_TYPE'));
  assert.throws(() => native.futexWait(buf, 2, 0, 0), code(RangeError, 'ERR_OUT_OF_RANGE'), 'misaligned');
  assert.throws(() => native.futexWait(buf, len, 0, 0), code(RangeError, 'ERR_OUT_OF_RANGE'), 'offset = length');
  assert.throws(() => native.futexWait(buf, -4, 0, 0), code(RangeError, 'ERR_OUT_OF_RANGE'), 'negative');
  assert.throws(() => native.futexWait(buf, 0, 2 ** 33, 0), code(RangeError, 'ERR_OUT_OF_RANGE'), 'expected 2^33');
  assert.throws(() => native.futexWait(buf, 0, 0, NaN), code(RangeError, 'ERR_OUT_OF_RANGE'), 'timeout NaN');
  assert.throws(() => native.futexWake(buf, 0, -1), code(RangeError, 'ERR_OUT_OF_RANGE'), 'count -1');
  assert.throws(() => native.msync(buf, len - 10, 11, true), code(RangeError, 'ERR_OUT_OF_RANGE'), 'msync past the end');

  assert.throws(() => n.watch!(buf, H.VERSION, H.WAITERS, -1, 'nope'), code(TypeError, 'ERR_INVALID_ARG_TYPE'));
  assert.throws(() => native.watch(buf, H.VERSION, H.VERSION, -1, noop), code(RangeError, 'ERR_OUT_OF_RANGE'), 'word = waiters');
  const ro = mapFile(t, path, len, false);
  assert.throws(() => native.watch(ro, H.VERSION, H.WAITERS, -1, noop), code(Error, 'ERR_COMMY_READONLY'));
  assert.throws(() => native.unmap(new ArrayBuffer(8)), code(TypeError, 'ERR_INVALID_ARG_VALUE'));
  assert.equal(Atomics.load(new Int32Array(buf), WAITERS), 0, 'no refused watch left a waiter behind');

  assert.throws(() => n.diff!(new Uint8Array(1), [1]), code(TypeError, 'ERR_INVALID_ARG_TYPE'));
  assert.throws(() => n.diff!(new Uint8Array(1), new Uint16Array(1)), code(TypeError, 'ERR_INVALID_ARG_TYPE'));
  assert.throws(() => n.diff!(new Uint8Array(1), new Uint8Array(1), 'sse9'), code(TypeError, 'ERR_INVALID_ARG_VALUE'));
  const cpu = native.cpu();
  if (!cpu.avx512) assert.throws(() => native.diff(new Uint8Array(1), new Uint8Array(1), 'avx512'), code(Error, 'ERR_COMMY_UNSUPPORTED'));
  if (!cpu.avx2) assert.throws(() => native.diff(new Uint8Array(1), new Uint8Array(1), 'avx2'), code(Error, 'ERR_COMMY_UNSUPPORTED'));
});

test("diff: 'auto' and the default agree with every implementation; u64 is always there; Buffers are Uint8Arrays", () => {
  const impls = native.diffImpls();
  assert.equal(impls[impls.length - 1], 'u64');
  const a = new Uint8Array(4099 + 3).subarray(3);
  for (let i = 0; i < a.length; i++) a[i] = (i * 31) & 0xff;
  const b = a.slice();
  for (const i of [0, 31, 32, 63, 64, 255, 256, 1000, 4098]) b[i] = b[i]! ^ 0x80;
  const want = Array.from(native.diff(a, b, 'u64'));
  for (const impl of [...impls, 'auto', undefined] as const) {
    const got = native.diff(a, b, impl as never);
    assert.ok(got instanceof Uint32Array);
    assert.deepEqual(Array.from(got), want, String(impl));
  }
  assert.deepEqual(Array.from(native.diff(Buffer.from([1, 2, 3]), Buffer.from([1, 9, 3, 4]))), [1, 2, 3, 4]);
});

// ---- watch ------------------------------------------------------------------------------------------

test('watch: no call without a change; parked thread counted in WAITERS; another process\'s bump calls back with no arguments', { timeout: 120_000 }, async (t) => {
  const { path, info } = makeFile(t);
  const buf = mapFile(t, path, info.maxFileSize);
  const i32 = new Int32Array(buf);
  const { w, calls } = counting(t, buf);
  assert.equal(typeof w.close, 'function');
  assert.equal(w.unref(), w);
  await until(() => Atomics.load(i32, WAITERS) === 1, 'the watcher thread to park');
  await sleep(50);
  assert.equal(calls(), 0, 'no callback without a change');

  const child = startChild('native-addon-child', ['bump', path, '1'], t);
  const { woken } = await child.next<{ woken: number }>('bumped');
  assert.equal((await child.exited).code, 0);
  assert.equal(typeof woken, 'number');
  await until(() => calls() >= 1, 'the callback after a bump in another process');

  const before = calls();
  const many = startChild('native-addon-child', ['bump', path, '200'], t);
  await many.next('bumped');
  assert.equal((await many.exited).code, 0);
  await until(() => calls() > before, 'a callback after 200 bumps in another process');
  assert.ok(calls() - before <= 200);
});

test('watch: 1000 changes while the JS thread is busy coalesce into one or two calls', async (t) => {
  const { path, info } = makeFile(t);
  const buf = mapFile(t, path, info.maxFileSize);
  const i32 = new Int32Array(buf);
  const { calls } = counting(t, buf);
  await until(() => Atomics.load(i32, WAITERS) === 1, 'the watcher thread to park');
  const before = Atomics.load(i32, VERSION);
  for (let k = 0; k < 1000; k++) {
    Atomics.add(i32, VERSION, 1);
    if (Atomics.load(i32, WAITERS) > 0) native.futexWake(buf, H.VERSION, ALL);
  }
  assert.equal(Atomics.load(i32, VERSION), before + 1000);
  // All the changes happened before any callback could run: one call is queued and the rest ride along with
  // it; at most one more, for the last value the thread read after the first call started.
  await until(() => calls() >= 1, 'the coalesced callback');
  await until(() => Atomics.load(i32, WAITERS) === 1, 'the watcher thread to park again');
  await sleep(50);
  assert.ok(calls() >= 1 && calls() <= 2, `coalesced calls: ${calls()}`);
});

test('watch: close() is idempotent and final, ref() after it is a no-op, WAITERS back to 0 at once', async (t) => {
  const { path, info } = makeFile(t);
  const buf = mapFile(t, path, info.maxFileSize);
  const i32 = new Int32Array(buf);
  const { w, calls } = counting(t, buf);
  await until(() => Atomics.load(i32, WAITERS) === 1, 'the watcher thread to park');
  w.close();
  assert.equal(Atomics.load(i32, WAITERS), 0);
  w.close();
  assert.equal(w.ref(), w);
  assert.equal(w.unref(), w);
  bump(buf);
  await sleep(50);
  assert.equal(calls(), 0);
});

test('watch: the timeout is a safety net: a change made without a wake is still noticed', async (t) => {
  const { path, info } = makeFile(t);
  const buf = mapFile(t, path, info.maxFileSize);
  const i32 = new Int32Array(buf);
  const { calls } = counting(t, buf, 30);
  await until(() => Atomics.load(i32, WAITERS) === 1, 'the watcher thread to park');
  Atomics.add(i32, VERSION, 1); // no futexWake
  await until(() => calls() === 1, 'the callback after the timeout');
});

test('close() and unmap() inside a watcher callback: no deadlock; unmap closes every watcher of the mapping', async (t) => {
  const { path, info } = makeFile(t);
  const main = mapFile(t, path, info.maxFileSize);
  const i32 = new Int32Array(main);

  let calls = 0;
  const w: NativeWatcher = native.watch(main, H.VERSION, H.WAITERS, -1, () => {
    calls++;
    w.close();
  });
  bump(main);
  await until(() => calls === 1, 'the callback that closes its watcher');
  bump(main);
  await sleep(50);
  assert.equal(calls, 1);
  assert.equal(Atomics.load(i32, WAITERS), 0);

  // A second mapping of the same file, unmapped from inside one of its two watchers' callbacks (one counting
  // itself in WAITERS, one with watcher bit 0 in PARKED, as ChangeWatcher does).
  const fd = openSync(path, 'r+');
  const b2 = native.map(fd, info.maxFileSize, true);
  closeSync(fd);
  t.after(() => native.unmap(b2));
  const view = new Uint8Array(b2, 10, 20);
  let unmapped = false;
  native.watch(b2, H.VERSION, H.WAITERS, -1, () => {
    native.unmap(b2);
    unmapped = true;
  });
  let otherCalls = 0;
  native.watch(b2, H.VERSION, H.PARKED, -1, () => otherCalls++, 1);
  await until(() => Atomics.load(i32, WAITERS) === 1 && Atomics.load(i32, PARKED) === 1, 'both watcher threads to park');
  Atomics.add(i32, VERSION, 1);
  native.futexWake(main, H.VERSION, ALL, 0xfffffffe); // wakes the counting watcher only, not watcher bit 0
  await until(() => unmapped, 'the callback that unmaps');
  assert.equal(b2.byteLength, 0);
  assert.equal(view.length, 0, 'views of an unmapped mapping are detached');
  assert.equal(Atomics.load(i32, WAITERS), 0);
  assert.equal(Atomics.load(i32, PARKED), 0, 'the watcher with bit 0 was closed too');
  bump(main);
  await sleep(50);
  assert.equal(otherCalls, 0, 'the closed watcher never calls back');
});

test('unmap: detaches views, closes the mapping\'s watchers, is idempotent; the unmapped buffer is refused with ERR_COMMY_CLOSED', async (t) => {
  const { path, info } = makeFile(t);
  const main = mapFile(t, path, info.maxFileSize);
  const i32 = new Int32Array(main);
  const fd = openSync(path, 'r+');
  const b2 = native.map(fd, info.maxFileSize, true);
  closeSync(fd);
  const v = new Uint8Array(b2, 10, 20);
  let calls = 0;
  const w = native.watch(b2, H.VERSION, H.WAITERS, -1, () => calls++);
  await until(() => Atomics.load(i32, WAITERS) === 1, 'the watcher thread to park');
  native.unmap(b2);
  assert.equal(v.length, 0);
  assert.equal(b2.byteLength, 0);
  assert.equal(Atomics.load(i32, WAITERS), 0);
  native.unmap(b2);
  w.close();
  const closed = code(Error, 'ERR_COMMY_CLOSED');
  assert.throws(() => native.futexWait(b2, 0, 0, 0), closed);
  assert.throws(() => native.futexWake(b2, 0, 1), closed);
  assert.throws(() => native.msync(b2, 0, 0, true), closed);
  assert.throws(() => native.watch(b2, H.VERSION, H.WAITERS, -1, () => {}), closed);
  bump(main);
  await sleep(50);
  assert.equal(calls, 0);
});

test('a Watcher constructed from JS is inert', (t) => {
  const { path, info } = makeFile(t);
  const buf = mapFile(t, path, info.maxFileSize);
  const w = native.watch(buf, H.VERSION, H.WAITERS, -1, () => {});
  const orphan = new (w.constructor as new () => NativeWatcher)();
  orphan.ref();
  orphan.unref();
  orphan.close();
  w.close();
});

// ---- wake channels ----------------------------------------------------------------------------------

const TOKENS = H.WATCH_TOKENS;
const tokenAt = (buf: ArrayBuffer, slot: number): bigint => Atomics.load(new BigUint64Array(buf), (TOKENS >> 3) + slot);

/** A channel on watcher slot `slot` of `buf` counting its calls; closed after the test. */
function channel(t: T, buf: ArrayBuffer, slot: number, token: bigint, onCall: () => void = () => {}): { ch: NativeWakeChannel; calls: () => number } {
  let calls = 0;
  const ch = native.wakeChannel(buf, TOKENS + 8 * slot, token, (...args: unknown[]) => {
    assert.equal(args.length, 0);
    calls++;
    onCall();
  });
  t.after(() => ch.close());
  return { ch, calls: () => calls };
}

test('wakeChannel: publishes its token once bound; wakeChannels sends one byte per bit with a token, and queued bytes make one call', async (t) => {
  const { path, info } = makeFile(t);
  const buf = mapFile(t, path, info.maxFileSize);
  const { ch, calls } = channel(t, buf, 3, 0xfeedn);
  assert.equal(tokenAt(buf, 3), 0xfeedn);
  assert.equal(ch.unref(), ch);
  assert.equal(native.wakeChannels(buf, TOKENS, 0), 0);
  assert.equal(native.wakeChannels(buf, TOKENS, 1 << 5), 0, 'a slot without a token is skipped');
  assert.equal(native.wakeChannels(buf, TOKENS, 1 << 3), 1);
  assert.equal(native.wakeChannels(buf, TOKENS, (1 << 3) | 1), 1);
  assert.equal(calls(), 0, 'never from inside the send: the event loop calls back');
  await until(() => calls() === 1, 'the callback');
  await sleep(20);
  assert.equal(calls(), 1, 'both queued bytes were read by one call');
  const { calls: calls31 } = channel(t, buf, 31, 0xffffffffffffffffn);
  assert.equal(native.wakeChannels(buf, TOKENS, 1 << 31), 1, 'bit 31 as an int32');
  assert.equal(native.wakeChannels(buf, TOKENS, 0x80000000), 1, 'and as a uint32');
  await until(() => calls31() >= 1, 'slot 31\'s callback');
});

test('wakeChannel: the token is the address: a second bind is ERR_COMMY_WAKE (EADDRINUSE); close() frees it at once and is idempotent', (t) => {
  const { path, info } = makeFile(t);
  const buf = mapFile(t, path, info.maxFileSize);
  const { ch } = channel(t, buf, 0, 0xabcn);
  assert.throws(
    () => native.wakeChannel(buf, TOKENS + 8, 0xabcn, () => {}),
    (e: Err & { syscall?: string; errno?: number }) => e.code === 'ERR_COMMY_WAKE' && e.syscall === 'bind' && /in use/.test(e.message),
  );
  assert.equal(tokenAt(buf, 1), 0n, 'a failed channel publishes nothing');
  ch.close();
  ch.close();
  assert.equal(ch.ref(), ch);
  const again = native.wakeChannel(buf, TOKENS + 8, 0xabcn, () => {});
  again.close();
  const orphan = new (ch.constructor as new () => NativeWakeChannel)();
  orphan.ref();
  orphan.unref();
  orphan.close();
});

test('wakeChannel: the callback runs like any Node event: its microtasks before the next macrotask; close() inside it', async (t) => {
  const { path, info } = makeFile(t);
  const buf = mapFile(t, path, info.maxFileSize);
  const order: string[] = [];
  let ch!: NativeWakeChannel;
  ({ ch } = channel(t, buf, 2, 0x77n, () => {
    order.push('callback');
    queueMicrotask(() => order.push('microtask'));
    setImmediate(() => order.push('immediate'));
    ch.close();
  }));
  native.wakeChannels(buf, TOKENS, 1 << 2);
  await until(() => order.length === 3, 'the callback, its microtask and its immediate');
  assert.deepEqual(order, ['callback', 'microtask', 'immediate']);
  native.wakeChannels(buf, TOKENS, 1 << 2);
  await sleep(20);
  assert.equal(order.length, 3, 'closed inside its callback: never called again');
});

test('wakeChannel / wakeChannels: bad arguments throw with a code', (t) => {
  const { path, info } = makeFile(t);
  const buf = mapFile(t, path, info.maxFileSize);
  const n = native as unknown as Record<string, (...a: unknown[]) => unknown>;
  const noop = () => {};
  assert.throws(() => native.wakeChannel(buf, TOKENS, 0n, noop), code(RangeError, 'ERR_OUT_OF_RANGE'), 'token 0');
  assert.throws(() => native.wakeChannel(buf, TOKENS, 1n << 64n, noop), code(RangeError, 'ERR_OUT_OF_RANGE'), 'token 2^64');
  assert.throws(() => n.wakeChannel!(buf, TOKENS, 5, noop), code(RangeError, 'ERR_OUT_OF_RANGE'), 'token as a number');
  assert.throws(() => native.wakeChannel(buf, TOKENS + 4, 5n, noop), code(RangeError, 'ERR_OUT_OF_RANGE'), 'misaligned');
  assert.throws(() => native.wakeChannel(buf, info.maxFileSize - 4, 5n, noop), code(RangeError, 'ERR_OUT_OF_RANGE'), 'past the end');
  assert.throws(() => n.wakeChannel!(buf, TOKENS, 5n, 'nope'), code(TypeError, 'ERR_INVALID_ARG_TYPE'));
  assert.throws(() => native.wakeChannel(new ArrayBuffer(8), 0, 5n, noop), code(TypeError, 'ERR_INVALID_ARG_VALUE'));
  const ro = mapFile(t, path, info.maxFileSize, false);
  assert.throws(() => native.wakeChannel(ro, TOKENS, 5n, noop), code(Error, 'ERR_COMMY_READONLY'));
  assert.throws(() => native.wakeChannels(buf, info.maxFileSize - 8, 1), code(RangeError, 'ERR_OUT_OF_RANGE'), '32 tokens past the end');
  assert.throws(() => native.wakeChannels(buf, TOKENS, 2 ** 32), code(RangeError, 'ERR_OUT_OF_RANGE'));
  assert.throws(() => native.wakeChannels(buf, TOKENS, 1.5), code(RangeError, 'ERR_OUT_OF_RANGE'));
  assert.throws(() => n.wakeChannels!(buf, TOKENS, '1'), code(TypeError, 'ERR_INVALID_ARG_TYPE'));
  assert.equal(tokenAt(buf, 0), 0n, 'no refused channel published a token');
});

// ---- in a process of its own --------------------------------------------------------------------------

test('an exception thrown in a watcher callback is an uncaught exception; the process and its watchers go on', { timeout: 120_000 }, async (t) => {
  const { path } = makeFile(t);
  const child = startChild('native-addon-child', ['throw', path], t);
  const { message } = await child.next<{ message: string }>('caught');
  assert.equal(message, 'boom');
  assert.equal((await child.exited).code, 0);
});

test('3 × 1000 map/unmap cycles (some with a live watcher) and 1000 dropped mappings, with gc in between', { timeout: 300_000 }, async (t) => {
  const { path } = makeFile(t);
  const child = startChild('native-addon-child', ['churn', path], t);
  const done = await child.next<{ mapped: number; watched: number; waiters: number }>('done', 240_000);
  assert.deepEqual(done, { type: 'done', mapped: 4000, watched: 30, waiters: 0 });
  assert.deepEqual(await child.exited, { code: 0, signal: null });
});

test('process exit with a live watcher: unref\'d it does not hold the process; ref\'d it holds it until closed; process.exit() with ref\'d watchers is clean', { timeout: 120_000 }, async (t) => {
  const { path, info } = makeFile(t);
  const buf = mapFile(t, path, info.maxFileSize);

  const unrefd = startChild('native-addon-child', ['exit-unref', path], t);
  await unrefd.next('ready');
  assert.deepEqual(await unrefd.exited, { code: 0, signal: null });

  const marker = join(tempDir(t), 'fired');
  const refd = startChild('native-addon-child', ['exit-ref', path, marker], t);
  await refd.next('ready');
  // The child's main has returned and its IPC channel is gone: only the ref'd watcher keeps it alive, so it
  // is there to see this change.
  if (refd.proc.connected) await new Promise((r) => refd.proc.once('disconnect', r));
  bump(buf);
  assert.deepEqual(await refd.exited, { code: 0, signal: null });
  assert.ok(existsSync(marker), 'the ref\'d watcher kept the process alive until its callback closed it');

  const exiting = startChild('native-addon-child', ['exit-process-exit', path], t);
  await exiting.next('ready');
  assert.deepEqual(await exiting.exited, { code: 7, signal: null });
});

// A call still queued when the environment is torn down runs during FreeEnvironment's handle cleanup, where JS
// cannot run: the addon must drop it (it once aborted the process: a fatal napi_throw, SIGABRT, exit 134).
test('process exit while a change notification is queued for an unref\'d watcher: a clean exit', { timeout: 120_000 }, async (t) => {
  const { path } = makeFile(t);
  const child = startChild('native-addon-child', ['exit-pending', path], t);
  await child.next('ready');
  assert.deepEqual(await child.exited, { code: 0, signal: null });
});

test('wake channels in a process of their own: an exception in the callback is uncaught and the process goes on; unref\'d does not hold the process, ref\'d does until closed, process.exit() is clean', { timeout: 120_000 }, async (t) => {
  const { path, info } = makeFile(t);
  const thrower = startChild('native-addon-child', ['channel-throw', path], t);
  assert.equal((await thrower.next<{ message: string }>('caught')).message, 'boom');
  assert.deepEqual(await thrower.exited, { code: 0, signal: null });

  const unrefd = startChild('native-addon-child', ['channel-exit-unref', path], t);
  await unrefd.next('ready');
  assert.deepEqual(await unrefd.exited, { code: 0, signal: null });

  const marker = join(tempDir(t), 'fired');
  const refd = startChild('native-addon-child', ['channel-exit-ref', path, marker], t);
  const { token } = await refd.next<{ token: string }>('ready');
  if (refd.proc.connected) await new Promise((r) => refd.proc.once('disconnect', r));
  const buf = mapFile(t, path, info.maxFileSize);
  assert.equal(tokenAt(buf, 0).toString(), token);
  assert.equal(native.wakeChannels(buf, TOKENS, 1), 1);
  assert.deepEqual(await refd.exited, { code: 0, signal: null });
  assert.ok(existsSync(marker), 'the ref\'d channel kept the process alive until its callback closed it');

  const exiting = startChild('native-addon-child', ['channel-exit-process-exit', path], t);
  await exiting.next('ready');
  assert.deepEqual(await exiting.exited, { code: 7, signal: null });
});

test('wakeChannels: bytes left unread by 320 stopped readers do not stop a writer (its socket is replaced when its send buffer is full)', { timeout: 120_000 }, async (t) => {
  const files = Array.from({ length: 11 }, () => makeFile(t));
  const child = startChild('native-addon-child', ['channel-hold', files.slice(0, 10).map((f) => f.path).join(',')], t);
  assert.equal((await child.next<{ channels: number }>('ready')).channels, 320);
  child.kill('SIGSTOP');
  let sent = 0;
  for (const f of files.slice(0, 10)) sent += native.wakeChannels(mapFile(t, f.path, f.info.maxFileSize), TOKENS, -1);
  // One socket's send buffer holds about 280 such bytes: without a fresh socket the rest would fail.
  assert.equal(sent, 320, 'every stopped reader got its byte');
  const last = files[10]!;
  const buf = mapFile(t, last.path, last.info.maxFileSize);
  const { calls } = channel(t, buf, 0, 0x1a57n);
  assert.equal(native.wakeChannels(buf, TOKENS, 1), 1);
  await until(() => calls() === 1, 'a live reader to be woken after them');
  child.kill('SIGKILL');
});

test('worker threads with a live ref\'d wake channel: terminate() closes it (an async env cleanup hook) and frees its address; an unref\'d one lets the worker end', { timeout: 120_000 }, async (t) => {
  const { path } = makeFile(t);
  const child = startChild('native-addon-child', ['channel-workers', path], t);
  const done = await child.next<{ rebound: boolean[]; exitCode: number }>('done');
  assert.deepEqual(done.rebound, [true, true, true, true, true, true], 'each torn-down channel freed its address');
  assert.equal(done.exitCode, 0);
  assert.deepEqual(await child.exited, { code: 0, signal: null });
});

test('worker threads with a live mapping and ref\'d watcher: terminate() tears them down (env cleanup hooks); an unref\'d one lets the worker end', { timeout: 120_000 }, async (t) => {
  const { path } = makeFile(t);
  const child = startChild('native-addon-child', ['workers', path], t);
  const done = await child.next<{ waitersAfter: number[]; exitCode: number }>('done');
  assert.deepEqual(done.waitersAfter, [0, 0, 0, 0, 0, 0], 'each torn-down watcher thread left WAITERS');
  assert.equal(done.exitCode, 0);
  assert.deepEqual(await child.exited, { code: 0, signal: null });
});
