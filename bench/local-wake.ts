/**
 * One-way latency of a local change between two processes: A writes a u64 timestamp (process.hrtime.bigint(),
 * CLOCK_MONOTONIC, the same clock in every process) through a handle every 100 µs–1 ms; B's change listener
 * reads it and records now − timestamp. B is this process, A a fork of it.
 *
 *   node dist/bench/local-wake.js [warmup=5000] [count=20000] [minUs=100] [maxUs=1000]
 *   WRITER_CPU=0 taskset -c 1 node dist/bench/local-wake.js      (both pinned, to different CPUs)
 *
 * A sleeps between writes in Atomics.wait (a futex: no CPU), never spinning, so on a 2-core machine the reader
 * keeps a core. A write's wake is a microtask, so A yields one microtask turn after each write.
 *
 * Also printed: B's threads before and while watching, and what each measured event cost B (context switches
 * of all its threads, CPU time), which a loaded machine disturbs far less than the latency.
 */
import { fork } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VariableMetadata, VariableType, VirtualVariableFile } from '../src/index.js';
import { LocalFileAccessor } from '../src/internal.js';
import { percentile } from './harness.js';

const [role, pathArg, ...rest] = process.argv.slice(2);

async function writer(path: string, total: number, minUs: number, maxUs: number): Promise<void> {
  const vf = await VirtualVariableFile.open(path);
  const t = vf.handle<bigint>('t');
  const nap = new Int32Array(new SharedArrayBuffer(4));
  process.send!({ type: 'ready' });
  await new Promise<void>((resolve) => process.once('message', () => resolve()));
  for (let i = 0; i < total; i++) {
    t.set(process.hrtime.bigint());
    await null; // the wake microtask runs here
    Atomics.wait(nap, 0, 0, (minUs + Math.random() * (maxUs - minUs)) / 1000);
  }
  t.set(0n); // the end
  await null;
  await vf.close();
  process.disconnect();
}

function taskCount(): number {
  return readdirSync('/proc/self/task').length;
}

/** Context switches of this process so far, all its threads together (ended threads are not counted). */
function contextSwitches(): number {
  let n = 0;
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const status = readFileSync(`/proc/self/task/${tid}/status`, 'latin1');
      for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)) n += Number(m[1]);
    } catch {
      /* the thread ended */
    }
  }
  return n;
}

async function reader(warmup: number, count: number, minUs: number, maxUs: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'commy-wake-bench-'));
  const path = join(dir, 'wake.mem');
  try {
    const setup = await VirtualVariableFile.open(path, { create: true });
    await setup.registerVariable(new VariableMetadata('t', -1, 8, VariableType.U64));
    await setup.close();

    const threadsBefore = taskCount();
    const accessor = LocalFileAccessor.open(path);
    const t = accessor.handle('t');
    const latencies = new Float64Array(warmup + count + 1000);
    let n = 0;
    let events = 0;
    let done!: () => void;
    const finished = new Promise<void>((resolve) => (done = resolve));
    // What the measured part costs this process: context switches and CPU time, per event.
    let from: { switches: number; cpu: NodeJS.CpuUsage; events: number } | undefined;
    accessor.watch(() => {
      const now = process.hrtime.bigint();
      const ts = t.get() as bigint;
      events++;
      if (ts === 0n) return done();
      if (n < latencies.length) latencies[n++] = Number(now - ts) / 1000;
      if (n === warmup) from = { switches: contextSwitches(), cpu: process.cpuUsage(), events };
    });
    accessor.hold();
    const threadsWatching = taskCount();

    // WRITER_CPU=n pins the writer to CPU n (run the reader under `taskset -c m` to pin it too).
    const pin = process.env.WRITER_CPU !== undefined ? { execPath: 'taskset', execArgv: ['-c', process.env.WRITER_CPU, process.execPath] } : {};
    const child = fork(fileURLToPath(import.meta.url), ['writer', path, String(warmup + count), String(minUs), String(maxUs)], { stdio: 'inherit', ...pin });
    await new Promise((resolve) => child.once('message', resolve));
    child.send({ type: 'go' });
    await finished;
    const perEvent = from && { switches: (contextSwitches() - from.switches) / (events - from.events), cpuUs: cpuUs(process.cpuUsage(from.cpu)) / (events - from.events) };
    accessor.unhold();
    await accessor.close();
    await new Promise((resolve) => child.once('exit', resolve));

    const measured = Array.from(latencies.subarray(Math.min(warmup, n), n));
    const fmt = (x: number) => x.toFixed(1).padStart(7);
    console.log(
      `writes ${warmup + count}, events ${events}, measured ${measured.length} (after ${warmup} warm-up)  ` +
        `p50 ${fmt(percentile(measured, 50))} µs  p99 ${fmt(percentile(measured, 99))} µs  p99.9 ${fmt(percentile(measured, 99.9))} µs  ` +
        `max ${fmt(Math.max(...measured))} µs  threads: ${threadsBefore} before watching, ${threadsWatching} watching; ` +
        `per event: ${perEvent?.switches.toFixed(2)} context switches, ${perEvent?.cpuUs.toFixed(1)} µs CPU`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function cpuUs(u: NodeJS.CpuUsage): number {
  return u.user + u.system;
}

if (role === 'writer') {
  const [total, minUs, maxUs] = rest.map(Number) as [number, number, number];
  await writer(pathArg!, total, minUs, maxUs);
} else {
  const [warmup = 5000, count = 20_000, minUs = 100, maxUs = 1000] = process.argv.slice(2).map(Number);
  await reader(warmup, count, minUs, maxUs);
}
