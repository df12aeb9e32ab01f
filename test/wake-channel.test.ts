import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VariableMetadata, VariableType } from '../src/index.js';
import type { FileChangeEvent } from '../src/core/file-change-event.js';
import { native } from '../src/native/addon.js';
import { ChangeWatcher, type ChangeWatcherOptions } from '../src/local/change-watcher.js';
import { H, WATCH_SLOT_COUNT } from '../src/local/file-format.js';
import { ServiceFile } from '../src/local/service-file.js';
import { startChild } from './helpers/child.js';
import { tempDir } from './helpers/temp.js';

/**
 * Change notification between processes (docs/file-format.md, Change notification): watchers with a slot park on
 * a wake channel polled by their own event loop (no thread), writers take their PARKED bits and send one byte
 * each; watchers without one fall back to a futex thread. The native side alone is in native-addon.test.ts.
 */

type T = Parameters<typeof tempDir>[0];

const PARKED = H.PARKED >> 2;
const WAITERS = H.WAITERS >> 2;

/** A new service file with variables x (u64), ping and pong (i64); closed again (tests open it as they need). */
function makeFile(t: T, name = 'svc.mem'): string {
  const path = join(tempDir(t, 'commy-wake-'), name);
  const file = ServiceFile.open(path, { create: true, maxVariables: 64, maxFileSize: 1 << 20 });
  file.register(new VariableMetadata('x', -1, 8, VariableType.U64));
  for (const n of ['ping', 'pong']) file.register(new VariableMetadata(n, -1, 8, VariableType.I64));
  file.close();
  return path;
}

/** Opens files and watchers for one test, and closes them after it: watchers first, as they give their slots back into the mapping. */
function opener(t: T) {
  const files: ServiceFile[] = [];
  const watchers: ChangeWatcher[] = [];
  t.after(() => {
    for (const w of watchers) w.close();
    for (const f of files) f.close();
  });
  return {
    open(path: string): ServiceFile {
      const file = ServiceFile.open(path);
      files.push(file);
      return file;
    },
    watch(file: ServiceFile, listener: (e: FileChangeEvent) => void, options?: ChangeWatcherOptions): ChangeWatcher {
      const watcher = new ChangeWatcher(file, 'test', undefined, options);
      watchers.push(watcher);
      watcher.add(listener);
      return watcher;
    },
  };
}

/** Native threads of this process named by watcher.cc (the futex fallback). */
function watcherThreads(): number {
  return readdirSync('/proc/self/task').filter((tid) => {
    try {
      return readFileSync(`/proc/self/task/${tid}/comm`, 'latin1').trim() === 'commy-watch';
    } catch {
      return false; // the thread ended while we looked
    }
  }).length;
}

const tasks = (): number => readdirSync('/proc/self/task').length;
const slotOf = (bit: number): number => 31 - Math.clz32(bit);
const tokenOf = (file: ServiceFile, slot: number): bigint => Atomics.load(file.b64, (H.WATCH_TOKENS >> 3) + slot);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const microtasks = () => new Promise<void>((r) => setImmediate(r));

async function until(cond: () => boolean, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** Replaces a native function for one test (a spy, or a squatter), restored after it. */
function patch<K extends 'wakeChannel' | 'wakeChannels' | 'futexWake'>(t: T, name: K, make: (original: (typeof native)[K]) => (typeof native)[K]): void {
  const original = native[name];
  native[name] = make(original.bind(native) as (typeof native)[K]);
  t.after(() => {
    native[name] = original;
  });
}

/** A peer process that writes on command. */
async function writerPeer(t: T) {
  const child = startChild('wake-peer', ['write', ''], t);
  await child.next('ready');
  t.after(() => child.send({ type: 'quit' }));
  return async (paths: string[], name: string, value: bigint): Promise<void> => {
    child.send({ type: 'write', paths, name, value: String(value) });
    await child.next('written');
  };
}

test('20 watched files, each on a wake channel: no watcher thread at all; another process\'s writes reach every listener', { timeout: 120_000 }, async (t) => {
  const o = opener(t);
  const paths = Array.from({ length: 20 }, (_, i) => makeFile(t, `f${i}.mem`));
  const heard = new Array<number>(20).fill(0);
  const before = tasks();
  const files = paths.map((p, i) => {
    const file = o.open(p);
    o.watch(file, (e) => (heard[i]! += e.changedVariables.includes('x') ? 1 : 0));
    return file;
  });
  assert.equal(tasks(), before, 'watching 20 files started no thread');
  assert.equal(watcherThreads(), 0);
  for (const file of files) {
    const bit = file.ownWatchBit;
    assert.notEqual(bit, 0, 'each watcher has a slot');
    assert.notEqual(tokenOf(file, slotOf(bit)), 0n, 'and its channel\'s token is published');
    assert.notEqual(Atomics.load(file.i32, PARKED) & bit, 0, 'and it is parked');
    assert.equal(Atomics.load(file.i32, WAITERS), 0);
  }

  const write = await writerPeer(t);
  await write(paths, 'x', 42n);
  await until(() => heard.every((n) => n === 1), 'every listener to hear the other process');
  assert.equal(watcherThreads(), 0);
  for (const file of files) await until(() => (Atomics.load(file.i32, PARKED) & file.ownWatchBit) !== 0, 'the watcher to park again');
  await write(paths, 'x', 7n);
  await until(() => heard.every((n) => n === 2), 'every listener to hear a second change');
});

test('the fallback: 34 watchers of one file, 32 on wake channels and 2 on futex threads; every one hears another process, and close gives everything back', { timeout: 120_000 }, async (t) => {
  const o = opener(t);
  const path = makeFile(t);
  const files = Array.from({ length: 34 }, () => o.open(path));
  const heard = new Array<number>(34).fill(0);
  const watchers = files.map((f, i) => o.watch(f, () => heard[i]!++));
  const bits = files.map((f) => f.ownWatchBit);
  assert.equal(new Set(bits.filter((b) => b !== 0)).size, WATCH_SLOT_COUNT, 'all 32 slots are taken, each once');
  assert.equal(bits.filter((b) => b === 0).length, 2, 'two watchers without a slot');
  assert.equal(watcherThreads(), 2, 'only those two run a thread');
  const i32 = files[0]!.i32;
  await until(() => Atomics.load(i32, WAITERS) === 2, 'the fallback threads to park');
  assert.equal(Atomics.load(i32, PARKED), -1, 'every slot\'s watcher is parked');

  const write = await writerPeer(t);
  await write([path], 'x', 1n);
  await until(() => heard.every((n) => n === 1), 'all 34 listeners to hear the other process');
  // A write by a fallback watcher's own mapping reaches the channels too.
  const fallback = files[bits.indexOf(0)]!;
  fallback.write(fallback.entry('x'), 2n);
  await until(() => heard.every((n) => n === 2), 'all 34 listeners to hear a write of this process');

  for (const w of watchers) w.close();
  await until(() => Atomics.load(i32, WAITERS) === 0 && watcherThreads() === 0, 'the fallback threads to end');
  assert.equal(Atomics.load(i32, PARKED), 0, 'no bit left parked');
  for (let i = 0; i < WATCH_SLOT_COUNT; i++) {
    assert.equal(Atomics.load(i32, (H.WATCH_SLOTS >> 2) + i), 0, `slot ${i} is free`);
    assert.equal(tokenOf(files[0]!, i), 0n, `slot ${i} has no token`);
  }
});

test('a squatted address: the watcher gives its slot back and falls back to a futex thread; changes still arrive', { timeout: 120_000 }, async (t) => {
  const o = opener(t);
  const path = makeFile(t);
  const scratch = o.open(makeFile(t, 'scratch.mem'));
  const squatted = 0x5351554154544544n;
  // Another socket holds the address first (its token stored in the scratch file's data, out of harm's way).
  const squatter = native.wakeChannel(scratch.buffer, scratch.dataStart, squatted, () => {});
  t.after(() => squatter.close());
  patch(t, 'wakeChannel', (original) => (buffer, offset, _token, callback) => original(buffer, offset, squatted, callback));

  const file = o.open(path);
  let heard = 0;
  o.watch(file, () => heard++);
  assert.equal(file.ownWatchBit, 0, 'no slot kept');
  for (let i = 0; i < WATCH_SLOT_COUNT; i++) {
    assert.equal(Atomics.load(file.i32, (H.WATCH_SLOTS >> 2) + i), 0, `slot ${i} was given back`);
    assert.equal(tokenOf(file, i), 0n);
  }
  assert.equal(watcherThreads(), 1);
  await until(() => Atomics.load(file.i32, WAITERS) === 1, 'the fallback thread to park');
  const write = await writerPeer(t);
  await write([path], 'x', 9n);
  await until(() => heard === 1, 'the change by another process');
});

test('a writer takes the parked bits of other mappings and sends one byte per burst; its own watcher costs no system call', async (t) => {
  const o = opener(t);
  const path = makeFile(t);
  const a = o.open(path);
  const b = o.open(path);
  const x = a.entry('x');
  const sent: number[] = [];
  let futexWakes = 0;
  patch(t, 'wakeChannels', (original) => (buffer, offset, bits) => {
    sent.push(bits);
    return original(buffer, offset, bits);
  });
  patch(t, 'futexWake', (original) => (...args) => {
    futexWakes++;
    return original(...args);
  });

  let heardA = 0;
  o.watch(a, () => heardA++);
  a.write(x, 1n);
  await microtasks();
  assert.equal(heardA, 1, 'its own listener hears it, in the microtask of the wake');
  assert.deepEqual(sent, [], 'nobody else is parked: no send');
  assert.equal(futexWakes, 0);

  let heardB = 0;
  o.watch(b, () => heardB++);
  const bBit = b.ownWatchBit;
  assert.notEqual(Atomics.load(a.i32, PARKED) & bBit, 0);
  for (let k = 0; k < 100; k++) a.write(x, BigInt(k));
  assert.deepEqual(sent, [], 'nothing during the burst');
  await Promise.resolve();
  assert.deepEqual(sent, [bBit], 'one send for the burst, to the other watcher only (not to our own bit)');
  assert.equal(Atomics.load(a.i32, PARKED) & bBit, 0, 'its bit was taken');
  assert.notEqual(Atomics.load(a.i32, PARKED) & a.ownWatchBit, 0, 'ours was kept');
  await until(() => heardB === 1 && (Atomics.load(a.i32, PARKED) & bBit) !== 0, 'the other watcher to hear it and park again');
  assert.equal(heardA, 2, 'our listener heard the burst once');
  assert.equal(futexWakes, 0, 'no futex: nobody sleeps on it');
});

test('spurious wakes (anyone may send to a channel) deliver nothing and cost no scan; the watcher parks again each time', async (t) => {
  const o = opener(t);
  const path = makeFile(t);
  const file = o.open(path);
  const events: FileChangeEvent[] = [];
  o.watch(file, (e) => events.push(e));
  const bit = file.ownWatchBit;
  let scans = 0;
  const slots = file.slots.bind(file);
  file.slots = () => (scans++, slots());

  const stranger = o.open(path); // no watcher: sends whatever it is told to
  for (let k = 0; k < 200; k++) {
    Atomics.and(file.i32, PARKED, ~bit);
    native.wakeChannels(stranger.buffer, H.WATCH_TOKENS, bit); // some find the queue full (10 datagrams)
  }
  await until(() => (Atomics.load(file.i32, PARKED) & bit) !== 0, 'the watcher to park again');
  await sleep(20);
  assert.equal(events.length, 0);
  assert.equal(scans, 0, 'the version had not moved: nothing was scanned');

  stranger.write(stranger.entry('x'), 5n);
  await until(() => events.length === 1, 'a real change');
  assert.deepEqual(events[0]!.changedVariables, ['x']);
  assert.equal(events[0]!.version, file.version);
});

test('a watcher killed while parked: the first writer takes its bit (the refused send is ignored), later writes send nothing, and its slot is taken over', { timeout: 120_000 }, async (t) => {
  const o = opener(t);
  const path = makeFile(t);
  const file = o.open(path);
  const child = startChild('wake-peer', ['watch', path], t);
  const { bit } = await child.next<{ bit: number }>('watching');
  assert.notEqual(Atomics.load(file.i32, PARKED) & bit, 0);
  child.kill('SIGKILL');
  await child.exited;

  const sent: [number, number][] = [];
  patch(t, 'wakeChannels', (original) => (buffer, offset, bits) => {
    const n = original(buffer, offset, bits);
    sent.push([bits, n]);
    return n;
  });
  const x = file.entry('x');
  file.write(x, 1n);
  await microtasks();
  assert.deepEqual(sent, [[bit, 0]], 'one send, refused: nobody has that address any more');
  assert.equal(Atomics.load(file.i32, PARKED) & bit, 0, 'the dead watcher\'s bit went with it');
  file.write(x, 2n);
  await microtasks();
  assert.equal(sent.length, 1, 'nobody parked: no system call');

  o.watch(file, () => {});
  assert.equal(file.ownWatchBit, bit, 'the dead watcher\'s slot is taken over');
});

test('a scribbled header (every parked bit set, tokens nobody holds): a write still completes, wakes only commy-named addresses, and the real watcher hears it', async (t) => {
  const o = opener(t);
  const path = makeFile(t);
  const file = o.open(path);
  const heard: FileChangeEvent[] = [];
  o.watch(file, (e) => heard.push(e));
  const slot = slotOf(file.ownWatchBit);
  // A token in the header names a channel address and nothing else: this one leads to a channel of ours.
  const scratch = o.open(makeFile(t, 'scratch.mem'));
  let decoyCalls = 0;
  const decoy = native.wakeChannel(scratch.buffer, scratch.dataStart, 0xdec0n, () => decoyCalls++);
  t.after(() => decoy.close());
  const vandal = o.open(path);
  for (let i = 0; i < WATCH_SLOT_COUNT; i++) {
    if (i !== slot) Atomics.store(vandal.b64, (H.WATCH_TOKENS >> 3) + i, i === (slot + 1) % WATCH_SLOT_COUNT ? 0xdec0n : BigInt(i + 1) * 0x1111n);
  }
  Atomics.store(vandal.i32, PARKED, -1);
  vandal.write(vandal.entry('x'), 3n);
  await until(() => heard.length === 1 && decoyCalls === 1, 'the watcher and the decoy');
  assert.equal(Atomics.load(file.i32, PARKED), file.ownWatchBit, 'every other bit was taken; the watcher parked again');
  assert.deepEqual(heard[0]!.changedVariables, ['x']);
});

test('close() from inside a listener, and twice: the slot, bit and token are given back; nothing is heard after', async (t) => {
  const o = opener(t);
  const path = makeFile(t);
  const file = o.open(path);
  const other = o.open(path);
  let heard = 0;
  const watcher: ChangeWatcher = o.watch(file, () => {
    heard++;
    watcher.close();
  });
  const slot = slotOf(file.ownWatchBit);
  other.write(other.entry('x'), 1n);
  await until(() => heard === 1, 'the listener that closes');
  watcher.close();
  assert.equal(Atomics.load(file.i32, PARKED), 0);
  assert.equal(tokenOf(file, slot), 0n);
  assert.equal(Atomics.load(file.i32, (H.WATCH_SLOTS >> 2) + slot), 0);
  other.write(other.entry('x'), 2n);
  await sleep(20);
  assert.equal(heard, 1);
});

test('no lost wake: a write that lands while the watcher scans (its bit taken, not parked yet) is found by the re-read after parking', async (t) => {
  const o = opener(t);
  const path = makeFile(t);
  const file = o.open(path);
  const writer = o.open(path); // no watcher: its writes wake only the parked
  const x = writer.entry('x');
  const ping = writer.entry('ping');
  const seen: string[][] = [];
  o.watch(
    file,
    (e) => {
      seen.push(e.changedVariables);
      if (seen.length !== 1) return;
      // Inside the scan's window: our bit was taken by the wake that brought us here, so this write finds
      // nobody parked and sends nothing, like a writer in another process whose take came just before our park.
      assert.equal(Atomics.load(file.i32, PARKED) & file.ownWatchBit, 0);
      writer.write(ping, 1n);
    },
    { safetyNetMs: Infinity },
  );
  writer.write(x, 1n);
  await until(() => seen.length === 2, 'the write made during the scan', 5000);
  assert.deepEqual(seen, [['x'], ['ping']]);
});

test('no lost wake: 2000 ping-pong rounds between two processes, both with the safety net off', { timeout: 180_000 }, async (t) => {
  const o = opener(t);
  const path = makeFile(t);
  const file = o.open(path);
  const ping = file.entry('ping');
  const pong = file.entry('pong');
  const child = startChild('wake-peer', ['echo', path], t);
  await child.next('ready');

  const ROUNDS = 2000;
  let round = 0;
  let progress = Date.now();
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const watcher = o.watch(
    file,
    () => {
      if ((file.readValue(pong) as bigint) !== BigInt(round)) return;
      progress = Date.now();
      if (round === ROUNDS) return done();
      file.write(ping, BigInt(++round)); // from inside the listener: our wake races the other side's parking
    },
    { safetyNetMs: Infinity },
  );
  watcher.hold();
  const stalled = new Promise<never>((_, reject) => {
    const timer = setInterval(() => {
      if (Date.now() - progress > 20_000) reject(new Error(`no progress for 20 s at round ${round}: a lost wake`));
    }, 500);
    void finished.then(() => clearInterval(timer));
  });
  file.write(ping, BigInt(++round));
  await Promise.race([finished, stalled]);
  watcher.unhold();
  file.write(ping, -1n);
  assert.deepEqual(await child.exited, { code: 0, signal: null });
});
