'use strict';
// Smoke test for build/Release/commy_native.node. Run: node native/smoke.cjs
// The same file doubles as the child / worker script (mode in argv[2]).
const fs = require('fs');
const os = require('os');
const path = require('path');
const assert = require('assert');
const { fork } = require('child_process');

const ADDON = path.join(__dirname, '..', 'build', 'Release', 'commy_native.node');
const native = require(ADDON);

const MiB = 1 << 20;
const WORD = 8; // low 32 bits of the 64-bit change counter
const WAITERS = 16;

function mapFile(file, length = MiB, writable = true) {
  const fd = fs.openSync(file, writable ? 'r+' : 'r');
  try {
    return native.map(fd, length, writable);
  } finally {
    fs.closeSync(fd); // the mapping outlives the fd
  }
}

// ---------------------------------------------------------------- children
const mode = process.argv[2];
if (mode === 'bump') {
  // Another process bumps the change counter and wakes the watchers.
  const buf = mapFile(process.argv[3]);
  const i32 = new Int32Array(buf);
  const times = Number(process.argv[4] || 1);
  let woken = 0;
  for (let k = 0; k < times; k++) {
    Atomics.add(i32, WORD / 4, 1);
    if (Atomics.load(i32, WAITERS / 4) > 0) woken += native.futexWake(buf, WORD, 0x7fffffff);
  }
  native.unmap(buf);
  process.send({ woken }, () => process.exit(0));
  return;
}
if (mode === 'exit-unref') {
  // A live, unref'd watcher must not keep the process alive or crash exit.
  const buf = mapFile(process.argv[3]);
  native.watch(buf, WORD, WAITERS, -1, () => {});
  return;
}
if (mode === 'exit-ref-close') {
  // A ref'd watcher keeps the loop alive until close().
  const buf = mapFile(process.argv[3]);
  const w = native.watch(buf, WORD, WAITERS, -1, () => {});
  w.ref();
  setTimeout(() => w.close(), 300);
  return;
}
if (mode === 'exit-process-exit') {
  const buf = mapFile(process.argv[3]);
  native.watch(buf, WORD, WAITERS, -1, () => {}).ref();
  setTimeout(() => process.exit(7), 50);
  return;
}
if (mode === 'worker') {
  // Worker env teardown with a live watcher (cleanup hook path).
  const { parentPort, workerData } = require('worker_threads');
  const buf = mapFile(workerData);
  native.watch(buf, WORD, WAITERS, -1, () => {}).ref();
  parentPort.postMessage('ready');
  return;
}

// ---------------------------------------------------------------- helpers
let passed = 0;
function ok(name) {
  passed++;
  console.log(`ok ${passed} - ${name}`);
}
function throwsCode(fn, ctor, code, name) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof ctor, `${name}: expected ${ctor.name}, got ${e && e.constructor.name}: ${e && e.message}`);
    if (code) assert.strictEqual(e.code, code, `${name}: code`);
    return true;
  });
  ok(`${name} throws ${ctor.name}${code ? ' ' + code : ''}`);
}
function runChild(args, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = fork(__filename, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const msgs = [];
    child.on('message', (m) => msgs.push(m));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child ${args[0]} hung`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, msgs, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    });
  });
}
const tick = () => new Promise((r) => setImmediate(r));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function getGc() {
  if (global.gc) return global.gc;
  require('v8').setFlagsFromString('--expose-gc');
  return require('vm').runInNewContext('gc');
}

function naiveDiff(a, b) {
  const out = [];
  const n = Math.max(a.length, b.length);
  let start = -1;
  for (let i = 0; i < n; i++) {
    const d = i >= a.length || i >= b.length || a[i] !== b[i];
    if (d && start < 0) start = i;
    if (!d && start >= 0) {
      out.push(start, i);
      start = -1;
    }
  }
  if (start >= 0) out.push(start, n);
  return out;
}

// Deterministic PRNG so failures are reproducible.
let seed = 0x12345678;
function rnd() {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 4294967296;
}
const rint = (n) => Math.floor(rnd() * n);

// ---------------------------------------------------------------- tests
let dir;
async function main() {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'commy-smoke-'));
  const file = path.join(dir, 'svc.commy');
  {
    const fd = fs.openSync(file, 'w+');
    fs.ftruncateSync(fd, 4096);
    fs.closeSync(fd);
  }

  // --- map / shared writes
  const buf = mapFile(file);
  assert.ok(buf instanceof ArrayBuffer);
  assert.strictEqual(buf.byteLength, MiB);
  ok('map 1 MiB over a 4 KiB file');
  const u8 = new Uint8Array(buf);
  const msg = Buffer.from('hello from the mapping');
  u8.set(msg, 100);
  assert.deepStrictEqual(fs.readFileSync(file).subarray(100, 100 + msg.length), msg);
  ok('write through Uint8Array is visible to readFileSync');
  {
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from('via fd'), 0, 6, 2000);
    fs.closeSync(fd);
    assert.strictEqual(Buffer.from(buf, 2000, 6).toString(), 'via fd');
  }
  ok('write through fd is visible in the mapping');
  native.msync(buf, 100, msg.length, true);
  native.msync(buf, 0, 4096, false);
  ok('msync sync/async');

  // --- futex
  {
    const i32 = new Int32Array(buf);
    Atomics.store(i32, 0, 42);
    let t0 = Date.now();
    assert.strictEqual(native.futexWait(buf, 0, 42, 50), 1);
    const el = Date.now() - t0;
    assert.ok(el >= 45 && el < 1000, `timeout elapsed ${el}`);
    ok(`futexWait timeout returns 1 (${el} ms)`);
    assert.strictEqual(native.futexWait(buf, 0, 41, 1000), 2);
    ok('futexWait with wrong expected returns 2');
    assert.strictEqual(native.futexWake(buf, 0, 1), 0);
    ok('futexWake without waiters returns 0');
    Atomics.store(i32, 0, -1);
    assert.strictEqual(native.futexWait(buf, 0, 0xffffffff, 1), 1);
    ok('futexWait accepts a uint32 expected value');
  }

  // --- argument validation
  throwsCode(() => native.map('x', MiB, true), TypeError, 'ERR_INVALID_ARG_TYPE', 'map(fd: string)');
  throwsCode(() => native.map(0, 0, true), RangeError, 'ERR_OUT_OF_RANGE', 'map(length 0)');
  throwsCode(() => native.map(0, 1.5, true), RangeError, 'ERR_OUT_OF_RANGE', 'map(length 1.5)');
  throwsCode(() => native.map(0, MiB, 1), TypeError, 'ERR_INVALID_ARG_TYPE', 'map(writable: number)');
  throwsCode(() => native.map(987654, MiB, true), Error, 'ERR_COMMY_MMAP', 'map(bad fd)');
  {
    let e;
    try { native.map(987654, MiB, true); } catch (err) { e = err; }
    assert.match(e.message, /Bad file descriptor/);
    ok(`mmap error message carries strerror: "${e.message}"`);
  }
  {
    const fd = fs.openSync(file, 'r');
    throwsCode(() => native.map(fd, MiB, true), Error, 'ERR_COMMY_MMAP', 'map(read-only fd, writable)');
    fs.closeSync(fd);
  }
  throwsCode(() => native.futexWait(new ArrayBuffer(8), 0, 0, 0), TypeError, 'ERR_INVALID_ARG_VALUE', 'futexWait(plain ArrayBuffer)');
  throwsCode(() => native.futexWait(new Uint8Array(buf), 0, 0, 0), TypeError, 'ERR_INVALID_ARG_TYPE', 'futexWait(Uint8Array)');
  throwsCode(() => native.futexWait(buf, 2, 0, 0), RangeError, 'ERR_OUT_OF_RANGE', 'futexWait(misaligned)');
  throwsCode(() => native.futexWait(buf, MiB, 0, 0), RangeError, 'ERR_OUT_OF_RANGE', 'futexWait(offset = length)');
  throwsCode(() => native.futexWait(buf, -4, 0, 0), RangeError, 'ERR_OUT_OF_RANGE', 'futexWait(negative)');
  throwsCode(() => native.futexWait(buf, 0, 2 ** 33, 0), RangeError, 'ERR_OUT_OF_RANGE', 'futexWait(expected 2^33)');
  throwsCode(() => native.futexWait(buf, 0, 0, NaN), RangeError, 'ERR_OUT_OF_RANGE', 'futexWait(timeout NaN)');
  throwsCode(() => native.futexWake(buf, 0, -1), RangeError, 'ERR_OUT_OF_RANGE', 'futexWake(count -1)');
  throwsCode(() => native.msync(buf, MiB - 10, 11, true), RangeError, 'ERR_OUT_OF_RANGE', 'msync(past end)');
  throwsCode(() => native.watch(buf, WORD, WAITERS, -1, 'nope'), TypeError, 'ERR_INVALID_ARG_TYPE', 'watch(callback: string)');
  throwsCode(() => native.watch(buf, WORD, WORD, -1, () => {}), RangeError, 'ERR_OUT_OF_RANGE', 'watch(word == waiters)');
  {
    const ro = mapFile(file, MiB, false);
    assert.strictEqual(new Uint8Array(ro)[100], 'h'.charCodeAt(0));
    ok('read-only mapping sees the shared data');
    assert.strictEqual(native.futexWait(ro, 0, 12345, 0), 2);
    ok('futexWait works on a read-only mapping');
    throwsCode(() => native.watch(ro, WORD, WAITERS, -1, () => {}), Error, 'ERR_COMMY_READONLY', 'watch(read-only mapping)');
    native.unmap(ro);
  }
  throwsCode(() => native.unmap(new ArrayBuffer(8)), TypeError, 'ERR_INVALID_ARG_VALUE', 'unmap(plain ArrayBuffer)');
  throwsCode(() => native.diff(new Uint8Array(1), [1]), TypeError, 'ERR_INVALID_ARG_TYPE', 'diff(b: array)');
  throwsCode(() => native.diff(new Uint8Array(1), new Uint16Array(1)), TypeError, 'ERR_INVALID_ARG_TYPE', 'diff(b: Uint16Array)');
  throwsCode(() => native.diff(new Uint8Array(1), new Uint8Array(1), 'sse9'), TypeError, 'ERR_INVALID_ARG_VALUE', "diff(impl 'sse9')");
  const cpu = native.cpu();
  if (!cpu.avx512) throwsCode(() => native.diff(new Uint8Array(1), new Uint8Array(1), 'avx512'), Error, 'ERR_COMMY_UNSUPPORTED', "diff(impl 'avx512')");
  if (!cpu.avx2) throwsCode(() => native.diff(new Uint8Array(1), new Uint8Array(1), 'avx2'), Error, 'ERR_COMMY_UNSUPPORTED', "diff(impl 'avx2')");

  // --- watcher sees a change from another process
  {
    const i32 = new Int32Array(buf);
    let calls = 0;
    let resolveCall;
    let firstCall = new Promise((r) => (resolveCall = r));
    const w = native.watch(buf, WORD, WAITERS, -1, (...args) => {
      assert.strictEqual(args.length, 0);
      calls++;
      resolveCall();
    });
    assert.strictEqual(typeof w.close, 'function');
    assert.strictEqual(w.unref(), w);
    await sleep(100);
    assert.strictEqual(calls, 0, 'no callback without a change');
    ok('watcher does not fire without a change');
    assert.strictEqual(Atomics.load(i32, WAITERS / 4), 1, 'thread is parked and counted in waiters');
    ok('waiters counter shows the parked watcher thread');

    const r = await runChild(['bump', file, '1']);
    assert.strictEqual(r.code, 0);
    await Promise.race([firstCall, sleep(5000).then(() => { throw new Error('no callback after child bump'); })]);
    assert.ok(r.msgs[0].woken >= 1, 'child futexWake woke our thread');
    ok(`watcher callback fired after child process bump (child woke ${r.msgs[0].woken})`);

    // Many changes while the JS thread is busy coalesce into few calls.
    calls = 0;
    const before = Atomics.load(i32, WORD / 4);
    for (let k = 0; k < 1000; k++) {
      Atomics.add(i32, WORD / 4, 1);
      if (Atomics.load(i32, WAITERS / 4) > 0) native.futexWake(buf, WORD, 0x7fffffff);
    }
    const blockUntil = Date.now() + 50; // let the thread queue calls meanwhile
    while (Date.now() < blockUntil);
    await sleep(50);
    assert.ok(calls >= 1 && calls <= 3, `coalesced calls: ${calls}`);
    assert.strictEqual(Atomics.load(i32, WORD / 4), before + 1000);
    ok(`1000 in-process bumps while busy coalesced into ${calls} call(s)`);

    // 200 bumps from a child
    calls = 0;
    const r2 = await runChild(['bump', file, '200']);
    await sleep(50);
    assert.strictEqual(r2.code, 0);
    assert.ok(calls >= 1, 'callback after 200 child bumps');
    ok(`200 child bumps -> ${calls} callback(s)`);

    w.close();
    w.close();
    assert.strictEqual(w.ref(), w); // no-op after close
    calls = 0;
    Atomics.add(i32, WORD / 4, 1);
    native.futexWake(buf, WORD, 1);
    await sleep(50);
    assert.strictEqual(calls, 0);
    assert.strictEqual(Atomics.load(i32, WAITERS / 4), 0, 'waiters back to 0');
    ok('close() is idempotent and stops callbacks; waiters back to 0');
  }

  // --- callback throwing in a watcher surfaces as uncaughtException
  {
    const i32 = new Int32Array(buf);
    let resolveErr;
    const gotErr = new Promise((r) => (resolveErr = r));
    const handler = (e) => resolveErr(e);
    process.once('uncaughtException', handler);
    const w = native.watch(buf, WORD, WAITERS, -1, () => { throw new Error('boom'); });
    Atomics.add(i32, WORD / 4, 1);
    native.futexWake(buf, WORD, 0x7fffffff);
    const e = await Promise.race([gotErr, sleep(3000).then(() => null)]);
    assert.ok(e && e.message === 'boom', 'uncaughtException boom');
    w.close();
    ok('exception in callback -> uncaughtException, process survives');
  }

  // --- close() / unmap() from inside the callback (no deadlock: the thread
  // never blocks on the JS thread)
  {
    const b2 = mapFile(file);
    const i32 = new Int32Array(b2);
    let calls = 0;
    let done;
    const p = new Promise((r) => (done = r));
    const w = native.watch(b2, WORD, WAITERS, -1, () => {
      calls++;
      w.close();
      done();
    });
    Atomics.add(i32, WORD / 4, 1);
    native.futexWake(b2, WORD, 0x7fffffff);
    await Promise.race([p, sleep(3000)]);
    Atomics.add(i32, WORD / 4, 1);
    native.futexWake(b2, WORD, 0x7fffffff);
    await sleep(30);
    assert.strictEqual(calls, 1);
    ok('close() inside the callback');
    let p2done;
    const p2 = new Promise((r) => (p2done = r));
    native.watch(b2, WORD, WAITERS, -1, () => {
      native.unmap(b2);
      p2done();
    });
    native.watch(b2, WORD + 4, WAITERS, -1, () => {}); // a second watcher, closed by unmap too
    Atomics.add(i32, WORD / 4, 1);
    native.futexWake(b2, WORD, 0x7fffffff);
    await Promise.race([p2, sleep(3000)]);
    assert.strictEqual(b2.byteLength, 0);
    ok('unmap() inside the callback closes both watchers');
    const W = native.watch(buf, WORD, WAITERS, -1, () => {});
    const orphan = new W.constructor();
    orphan.ref();
    orphan.unref();
    orphan.close();
    W.close();
    ok('a Watcher constructed from JS is inert');
  }

  // --- safety-net timeout: change without a wake is still noticed
  {
    const i32 = new Int32Array(buf);
    let calls = 0;
    const w = native.watch(buf, WORD, WAITERS, 30, () => calls++);
    await sleep(20);
    Atomics.add(i32, WORD / 4, 1); // no futexWake
    await sleep(150);
    w.close();
    assert.strictEqual(calls, 1);
    ok('watcher timeout picks up a change without a wake');
  }

  // --- unmap closes watchers, detaches, is idempotent
  {
    const b2 = mapFile(file);
    const v = new Uint8Array(b2, 10, 20);
    let calls = 0;
    const w = native.watch(b2, WORD, WAITERS, -1, () => calls++);
    native.unmap(b2);
    assert.strictEqual(v.length, 0);
    assert.strictEqual(b2.byteLength, 0);
    ok('unmap detaches: views become length 0');
    native.unmap(b2);
    ok('unmap is idempotent');
    w.close(); // already closed by unmap
    throwsCode(() => native.futexWait(b2, 0, 0, 0), Error, 'ERR_COMMY_CLOSED', 'futexWait(unmapped)');
    throwsCode(() => native.futexWake(b2, 0, 1), Error, 'ERR_COMMY_CLOSED', 'futexWake(unmapped)');
    throwsCode(() => native.msync(b2, 0, 0, true), Error, 'ERR_COMMY_CLOSED', 'msync(unmapped)');
    throwsCode(() => native.watch(b2, WORD, WAITERS, -1, () => {}), Error, 'ERR_COMMY_CLOSED', 'watch(unmapped)');
    Atomics.add(new Int32Array(buf), WORD / 4, 1);
    native.futexWake(buf, WORD, 0x7fffffff);
    await sleep(30);
    assert.strictEqual(calls, 0);
    ok('unmap closed the watcher (no callback)');
  }

  // --- map/unmap churn: no V8 "Check failed: result.second"
  {
    const gc = getGc();
    for (let round = 0; round < 3; round++) {
      for (let k = 0; k < 1000; k++) {
        const b = mapFile(file);
        const x = new Uint8Array(b);
        if (x[100] !== 'h'.charCodeAt(0)) throw new Error('bad data in churn');
        if (k % 100 === 0) native.watch(b, WORD, WAITERS, -1, () => {}); // closed by unmap
        native.unmap(b);
      }
      gc();
      await tick();
      await tick();
    }
    // Dropped (never unmapped) mappings are released by the finalizer.
    for (let k = 0; k < 1000; k++) mapFile(file);
    gc();
    await tick();
    gc();
    await tick();
    ok('3 x 1000 map/unmap + 1000 dropped mappings with GC in between');
  }

  // --- process exit behaviour
  {
    let r = await runChild(['exit-unref', file]);
    assert.strictEqual(r.code, 0);
    assert.ok(r.ms < 3000, `exit-unref took ${r.ms} ms`);
    ok(`process with a live unref'd watcher exits cleanly (${r.ms.toFixed(0)} ms)`);
    r = await runChild(['exit-ref-close', file]);
    assert.strictEqual(r.code, 0);
    assert.ok(r.ms >= 300, `ref'd watcher kept the process alive (${r.ms} ms)`);
    ok(`ref'd watcher keeps the loop alive until close() (${r.ms.toFixed(0)} ms)`);
    r = await runChild(['exit-process-exit', file]);
    assert.strictEqual(r.code, 7);
    ok('process.exit() with a ref\'d live watcher');
    const { Worker } = require('worker_threads');
    for (let k = 0; k < 5; k++) {
      const wk = new Worker(__filename, { argv: ['worker'], workerData: file });
      await new Promise((res, rej) => { wk.once('message', res); wk.once('error', rej); });
      await wk.terminate();
    }
    ok('worker.terminate() with live watchers (env cleanup hooks)');
  }

  // --- diff correctness
  const impls = native.diffImpls();
  console.log(`# cpu: ${JSON.stringify(cpu)}  diffImpls: ${JSON.stringify(impls)}`);
  assert.strictEqual(impls[impls.length - 1], 'u64');
  {
    const sizes = [0, 1, 7, 8, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 4099, MiB];
    const pool = new Uint8Array(MiB + 4096 + 64);
    const pool2 = new Uint8Array(MiB + 4096 + 64);
    let cases = 0;
    const check = (a, b, label) => {
      const want = naiveDiff(a, b);
      for (const impl of [...impls, 'auto', undefined]) {
        const got = native.diff(a, b, impl);
        assert.ok(got instanceof Uint32Array);
        if (got.length !== want.length || got.some((v, i) => v !== want[i])) {
          throw new Error(`diff mismatch impl=${impl} ${label}\n got ${Array.from(got).slice(0, 20)}\nwant ${want.slice(0, 20)}`);
        }
      }
      cases++;
    };
    const patterns = ['equal', 'sparse', 'dense', 'runs', 'all', 'edges'];
    for (const size of sizes) {
      const reps = size >= MiB ? 2 : 8;
      for (const pat of patterns) {
        for (let rep = 0; rep < reps; rep++) {
          const oa = rint(64);
          const ob = rint(64);
          const a = pool.subarray(oa, oa + size);
          const b = pool2.subarray(ob, ob + size);
          for (let i = 0; i < size; i++) a[i] = rint(256);
          b.set(a);
          if (pat === 'sparse') {
            for (let k = 0; k < 10; k++) if (size) b[rint(size)] ^= 1 + rint(255);
          } else if (pat === 'dense') {
            const lim = Math.min(size, 4096);
            for (let i = 0; i < lim; i++) if (rnd() < 0.5) b[i] ^= 0xff;
            for (let k = 0; k < 50; k++) if (size) b[rint(size)] ^= 0x10;
          } else if (pat === 'runs') {
            for (let k = 0; k < 20 && size; k++) {
              const s = rint(size);
              const len = 1 + rint(200);
              for (let i = s; i < Math.min(size, s + len); i++) b[i] = ~a[i] & 0xff;
            }
          } else if (pat === 'all') {
            for (let i = 0; i < size; i++) b[i] = ~a[i] & 0xff;
          } else if (pat === 'edges') {
            // around 32/64/128/256-byte boundaries
            for (const p of [0, 31, 32, 63, 64, 127, 128, 255, 256, size - 1]) {
              if (p >= 0 && p < size && rnd() < 0.7) b[p] ^= 0x80;
            }
          }
          check(a, b, `size=${size} pat=${pat} oa=${oa} ob=${ob}`);
          // different lengths: the extra tail counts as differing
          if (size > 0 && rep < 2) {
            const cut = rint(size);
            check(a.subarray(0, cut), b, `len ${cut} vs ${size} pat=${pat}`);
            check(a, b.subarray(0, cut), `len ${size} vs ${cut} pat=${pat}`);
          }
        }
      }
    }
    // Buffer is a Uint8Array too
    check(Buffer.from([1, 2, 3]), Buffer.from([1, 9, 3, 4]), 'Buffer inputs');
    assert.deepStrictEqual(Array.from(native.diff(Buffer.from([1, 2, 3]), Buffer.from([1, 9, 3, 4]))), [1, 2, 3, 4]);
    ok(`diff matches the naive loop for ${cases} cases x impls ${JSON.stringify(impls)} (+auto, default)`);
  }

  // --- diff throughput: 1 MiB, 10 sparse changes
  {
    const a = new Uint8Array(MiB + 64).subarray(3, 3 + MiB); // unaligned on purpose
    for (let i = 0; i < MiB; i++) a[i] = rint(256);
    const b = new Uint8Array(MiB);
    b.set(a);
    for (let k = 0; k < 10; k++) b[rint(MiB)] ^= 0x5a;
    const bench = (fn) => {
      for (let k = 0; k < 200; k++) fn(); // warm-up
      let best = Infinity;
      for (let round = 0; round < 5; round++) {
        const iters = 2000;
        const t0 = process.hrtime.bigint();
        for (let k = 0; k < iters; k++) fn();
        const ns = Number(process.hrtime.bigint() - t0) / iters;
        best = Math.min(best, ns);
      }
      return best;
    };
    const ba = Buffer.from(a.buffer, a.byteOffset, a.length);
    const eq = Buffer.from(ba);
    const memeq = bench(() => ba.equals(eq));
    console.log(`# baseline Buffer.equals on identical 1 MiB (full memcmp): ${(MiB / memeq).toFixed(1)} GB/s (${(memeq / 1000).toFixed(1)} us/call)`);
    for (const impl of impls) {
      const r = native.diff(a, b, impl);
      assert.ok(r.length >= 2 && r.length <= 20);
      const ns = bench(() => native.diff(a, b, impl));
      console.log(`# diff ${impl.padEnd(6)} 1 MiB, 10 changes: ${(MiB / ns).toFixed(1)} GB/s (${(ns / 1000).toFixed(1)} us/call)`);
    }
    ok('diff throughput measured');
  }

  native.unmap(buf);
  assert.strictEqual(u8.length, 0);
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(`# all ${passed} checks passed`);
}

main().catch((e) => {
  console.error('FAIL', e);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  process.exit(1);
});
