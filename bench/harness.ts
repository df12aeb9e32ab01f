/**
 * The shared bench harness (docs/benchmarks.md): samples and percentiles, a log histogram that merges across
 * processes, interleaved rounds, child processes with request/reply IPC, a C compiler probe, and the one
 * Markdown table every figure prints (commy, the peer, the ratio, the spec's target, PASS/MISS).
 *
 * Every figure is measured in steady state: a warm-up first (thousands of round trips or ~2 s: the first
 * 2,000–5,000 round trips of a fresh process are 6–10× slower, ../shared/spec/NOTES.md), then rounds of
 * commy and its peers alternating in the same run, so that a noisy neighbour hurts both alike.
 */
import { execFile, execFileSync, fork, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setImmediate as immediate, setTimeout as sleep } from 'node:timers/promises';

// ------------------------------------------------------------------------------------------- statistics

/** The p-th percentile (0–100) of unsorted samples: nearest rank. NaN for no samples. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export function median(xs: readonly number[]): number {
  return percentile(xs, 50);
}

export function mean(xs: readonly number[]): number {
  return xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Samples of one contender over all its rounds. */
export class Samples {
  readonly values: number[] = [];
  add(x: number): void {
    this.values.push(x);
  }
  push(xs: readonly number[]): void {
    for (const x of xs) this.values.push(x);
  }
  get count(): number {
    return this.values.length;
  }
  p(q: number): number {
    return percentile(this.values, q);
  }
}

export { LogHistogram, type SparseHistogram } from '../src/core/log-histogram.js';

/** What a child measured since its parent last asked: add() each sample; `collect` is the 'collect' request's handler. */
export class SampleBox {
  private samples: number[] = [];

  add(x: number): void {
    this.samples.push(x);
  }

  readonly collect = (): number[] => {
    const out = this.samples;
    this.samples = [];
    return out;
  };
}

/** A small seeded PRNG (mulberry32): the same sequence on every run and in every process. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Anything with percentiles: Samples or LogHistogram. */
export interface Distribution {
  p(q: number): number;
}

// ------------------------------------------------------------------------------------------------ timing

export function nowNs(): bigint {
  return process.hrtime.bigint();
}

/** Microseconds since `t0` (from nowNs()). */
export function usSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1000;
}

/**
 * Interleaved rounds: each round runs every contender once, in an order that rotates from round to round
 * (A B C, B C A, …), so that neither drift nor a noisy neighbour favours one of them.
 */
export async function interleave<K extends string>(rounds: number, contenders: Record<K, (round: number) => unknown>): Promise<void> {
  const names = Object.keys(contenders) as K[];
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < names.length; k++) {
      const name = names[(k + r) % names.length]!;
      await contenders[name](r);
    }
  }
}

/**
 * Sequential round trips: `fn` awaited `n` times, each timed (µs). No pause between them (a sequential
 * client's latency, as the spec's remote figures are).
 */
export async function timeEach(n: number, fn: (i: number) => Promise<unknown>, into?: Samples): Promise<Samples> {
  const out = into ?? new Samples();
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn(i);
    out.add(Number(process.hrtime.bigint() - t0) / 1000);
  }
  return out;
}

/** Runs `fn` over and over until `ms` have passed and at least `minCalls` calls were made (warm-up). */
export async function warmUp(ms: number, minCalls: number, fn: (i: number) => unknown): Promise<number> {
  const end = performance.now() + ms;
  let i = 0;
  while (i < minCalls || performance.now() < end) await fn(i++);
  return i;
}

/**
 * A steady pace of `perSecond` calls for `ms`, whatever each call costs: calls are due at fixed times, and a
 * late loop catches up (setImmediate) instead of drifting, so the average rate is the one asked for. Returns
 * how many calls were made.
 */
export async function paced(perSecond: number, ms: number, fn: (i: number) => void): Promise<number> {
  const interval = 1000 / perSecond;
  const start = performance.now();
  let i = 0;
  for (;;) {
    const due = start + i * interval;
    if (due >= start + ms) return i;
    const wait = due - performance.now();
    if (wait >= 1) await sleep(Math.floor(wait));
    else if (wait > 0) await immediate();
    else {
      fn(i++);
      if (i % 64 === 0) await immediate(); // never starve the event loop when far behind
    }
  }
}

export { sleep, immediate };

// ------------------------------------------------------------------------------------------ child processes

interface Reply {
  id: number;
  result?: unknown;
  error?: string;
}

/** A forked Node child with request/reply over IPC (its side: serveRequests). */
export class Child {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly exited: Promise<number | null>;
  private exitCode: number | null | undefined;

  constructor(readonly name: string, readonly proc: ChildProcess) {
    proc.on('message', (m: unknown) => {
      const reply = m as Reply;
      const w = this.waiting.get(reply.id);
      if (w === undefined) return;
      this.waiting.delete(reply.id);
      if (reply.error !== undefined) w.reject(new Error(`${name}: ${reply.error}`));
      else w.resolve(reply.result);
    });
    this.exited = new Promise((resolve) =>
      proc.once('exit', (code, signal) => {
        this.exitCode = code;
        for (const w of this.waiting.values()) w.reject(new Error(`${name} exited (code ${code}, signal ${signal})`));
        this.waiting.clear();
        resolve(code);
      }),
    );
  }

  get pid(): number {
    return this.proc.pid!;
  }

  request<T = unknown>(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 120_000): Promise<T> {
    if (this.exitCode !== undefined) return Promise.reject(new Error(`${this.name} has exited`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`${this.name}: ${cmd} took over ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.proc.send({ id, cmd, ...args });
    });
  }

  /** Asks it to stop ('stop'), and kills it (SIGKILL, this pid only) if it has not exited after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.exitCode !== undefined) return;
    this.request('stop', {}, graceMs).catch(() => {});
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  kill(): Promise<number | null> {
    if (this.exitCode === undefined) this.proc.kill('SIGKILL');
    return this.exited;
  }
}

/** The compiled file next to this one (dist/bench/<name>.js). */
export function benchFile(name: string): string {
  return fileURLToPath(new URL(`./${name}.js`, import.meta.url));
}

/** Forks dist/bench/<name>.js; resolves once the child has sent its first message ('ready', with data). */
export async function startChild<T = unknown>(name: string, args: unknown[] = [], execArgv: string[] = []): Promise<{ child: Child; ready: T }> {
  const proc = fork(benchFile(name), args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv });
  const ready = new Promise<T>((resolve, reject) => {
    proc.once('message', (m) => resolve((m as { ready: T }).ready));
    proc.once('exit', (code, signal) => reject(new Error(`${name} exited before it was ready (code ${code}, signal ${signal})`)));
  });
  const child = new Child(name, proc);
  return { child, ready: await ready };
}

/**
 * The child's side: announces `ready` (any data), then answers each request with its handler's result.
 * 'stop' runs `onStop` (if any) and exits; so does a parent that goes away (the IPC channel closes).
 */
export function serveRequests(ready: unknown, handlers: Record<string, (msg: Record<string, unknown>) => unknown>, onStop?: () => unknown): void {
  const stop = async () => {
    try {
      await onStop?.();
    } finally {
      process.exit(0);
    }
  };
  process.on('disconnect', () => void stop());
  process.on('message', async (raw: unknown) => {
    const msg = raw as Record<string, unknown> & { id: number; cmd: string };
    if (msg.cmd === 'stop') {
      process.send?.({ id: msg.id, result: true });
      await stop();
      return;
    }
    const handler = handlers[msg.cmd];
    try {
      if (handler === undefined) throw new Error(`unknown command ${msg.cmd}`);
      const result = await handler(msg);
      process.send?.({ id: msg.id, result: result ?? null });
    } catch (err) {
      process.send?.({ id: msg.id, error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    }
  });
  process.send?.({ ready });
}

/** The tenant and API key of bench/commy-server.ts. */
export const BENCH_TENANT = 'bench';
export const BENCH_KEY = 'ops:bench';

/**
 * bench/commy-server.ts in a child process, in a data directory made here and removed by `stop()`, which asks
 * the server to close (or, with `kill`, SIGKILLs it: quicker with thousands of connections open).
 */
export async function startCommyServer(
  opts: { limits?: Record<string, unknown>; authThrottle?: Record<string, number>; durability?: 'ack' | 'periodic' | 'none'; cluster?: { redis: string; nodeId: string } } = {},
  execArgv: string[] = [],
): Promise<{ child: Child; url: string; stop: (how?: 'close' | 'kill') => Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'commy-bench-server-'));
  try {
    const { child, ready } = await startChild<{ url: string }>('commy-server', [{ ...opts, dataDir }], execArgv);
    const stop = async (how: 'close' | 'kill' = 'close') => {
      if (how === 'kill') await child.kill();
      else await child.stop();
      rmSync(dataDir, { recursive: true, force: true });
    };
    return { child, url: ready.url, stop };
  } catch (err) {
    rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
}

/** What every server child answers: CPU time used so far (s), and memory after a forced GC if it can. */
export const serverProbes = {
  cpu: () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  },
  mem: async () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    if (gc !== undefined) {
      for (let i = 0; i < 3; i++) {
        gc();
        await sleep(100);
      }
    }
    const m = process.memoryUsage();
    return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, gc: gc !== undefined };
  },
};

/** Clock ticks per second of /proc/<pid>/stat (sysconf(_SC_CLK_TCK)). */
let clockTicks: number | undefined;

/**
 * CPU seconds (user + system) a process has used so far, read from /proc/<pid>/stat by another process: it
 * needs nothing from the process itself, so a server that is saturated (its event loop busy for seconds) is
 * measured as promptly as an idle one. 10 ms resolution.
 */
export function procCpuSeconds(pid: number): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

// --------------------------------------------------------------------------------------------- C programs

/** Compiles one C file with `cc -O2` into a fresh temporary directory; a reason instead when it cannot. */
export async function compileC(source: string, name: string): Promise<{ bin: string; cleanup: () => void } | { skipped: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'commy-bench-c-'));
  const bin = join(dir, name);
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  return new Promise((resolve) => {
    execFile('cc', ['-O2', '-o', bin, source], (err, _stdout, stderr) => {
      if (err) {
        cleanup();
        const code = (err as NodeJS.ErrnoException).code;
        resolve({ skipped: code === 'ENOENT' ? 'no C compiler (cc) on this machine' : `cc failed: ${stderr.trim() || err.message}` });
      } else resolve({ bin, cleanup });
    });
  });
}

/** Runs a program; resolves with its stdout (rejects on a non-zero exit). */
export function run(bin: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${bin} ${args.join(' ')}: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

// ------------------------------------------------------------------------------------------------ output

/** One line about the machine and the moment: the figures mean little without it (2 noisy cores here). */
export function machine(): string {
  const c = cpus();
  const model = (c[0]?.model ?? 'unknown CPU').replace(/\s+/g, ' ').trim();
  const load = loadavg().map((x) => x.toFixed(2)).join(' ');
  return `${process.platform}-${process.arch}, Node ${process.version}, ${c.length} × ${model}, load average ${load}`;
}

export function header(title: string, lines: string[] = []): void {
  console.log(`\n## ${title}\n`);
  console.log(`${machine()}  `);
  for (const l of lines) console.log(`${l}  `);
}

export interface Row {
  /** What is measured, including the statistic: 'typed read, p50'. */
  figure: string;
  ours: number | undefined;
  /** The peer's name; '' for a row without one. */
  peer: string;
  theirs?: number | undefined;
  unit: string;
  /** The spec's target as text ('≤ 25 ns'); '' when the row has none. */
  target?: string;
  /** The verdict: true PASS, false MISS, undefined (no target, or not measurable) blank. */
  pass?: boolean | undefined;
  /** Throughput-like rows (GB/s, deliveries): more is better. Default: less is better. */
  higherIsBetter?: boolean;
}

export function fmt(x: number | undefined, unit = ''): string {
  if (x === undefined || Number.isNaN(x)) return 'n/a';
  const abs = Math.abs(x);
  const s = Number.isInteger(x) || abs >= 999.5 ? Math.round(x).toLocaleString('en-US') : abs >= 100 ? x.toFixed(0) : abs >= 10 ? x.toFixed(1) : abs >= 1 ? x.toFixed(2) : x.toPrecision(2);
  return unit === '' ? s : `${s} ${unit}`;
}

/** "12× better" / "1.4× worse": how many times better commy is than the peer on this row. */
export function ratio(r: Pick<Row, 'ours' | 'theirs' | 'higherIsBetter'>): string {
  if (r.ours === undefined || r.theirs === undefined || !(r.ours > 0) || !(r.theirs > 0)) return '';
  const x = r.higherIsBetter ? r.ours / r.theirs : r.theirs / r.ours;
  if (Math.abs(x - 1) < 0.005) return 'same';
  if (x >= 1) return `${x >= 10 ? x.toFixed(0) : x.toFixed(2)}× better`;
  const y = 1 / x;
  return `${y >= 10 ? y.toFixed(0) : y.toFixed(2)}× worse`;
}

export function verdict(pass: boolean | undefined): string {
  return pass === undefined ? '' : pass ? 'PASS' : '**MISS**';
}

/** Prints the rows as a Markdown table, and appends them to $COMMY_BENCH_RESULTS (the runner's summary). */
export function printTable(title: string, rows: Row[], notes: string[] = []): void {
  console.log(`\n### ${title}\n`);
  console.log('| figure | commy | peer | peer figure | commy vs peer | target | result |');
  console.log('|---|---:|---|---:|---:|---|---|');
  for (const r of rows) {
    console.log(`| ${r.figure} | ${fmt(r.ours, r.unit)} | ${r.peer} | ${r.peer === '' && r.theirs === undefined ? '' : fmt(r.theirs, r.unit)} | ${ratio(r)} | ${r.target ?? ''} | ${verdict(r.pass)} |`);
  }
  if (notes.length > 0) console.log('');
  for (const n of notes) console.log(`- ${n}`);
  const file = process.env.COMMY_BENCH_RESULTS;
  if (file) {
    for (const r of rows) {
      if (r.target) appendFileSync(file, JSON.stringify({ table: title, figure: r.figure, ours: fmt(r.ours, r.unit), theirs: r.peer ? `${fmt(r.theirs, r.unit)} (${r.peer})` : '', target: r.target, pass: r.pass ?? null }) + '\n');
    }
  }
}

/** ours ≤ limit (undefined when ours was not measured). */
export function atMost(ours: number | undefined, limit: number | undefined): boolean | undefined {
  if (ours === undefined || limit === undefined || Number.isNaN(ours) || Number.isNaN(limit)) return undefined;
  return ours <= limit;
}

/** ours ≥ limit. */
export function atLeast(ours: number | undefined, limit: number | undefined): boolean | undefined {
  if (ours === undefined || limit === undefined || Number.isNaN(ours) || Number.isNaN(limit)) return undefined;
  return ours >= limit;
}

/** Both must hold; undefined if neither could be checked. */
export function both(a: boolean | undefined, b: boolean | undefined): boolean | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return a && b;
}

/** p50, p99 (and p99.9 with `withP999`) rows of one figure, commy beside a peer. */
export function percentileRows(
  figure: string,
  ours: Distribution | undefined,
  peer: string,
  theirs: Distribution | undefined,
  unit: string,
  targets: { [q: string]: { text: string; pass: (ours: number, theirs: number | undefined) => boolean | undefined } } = {},
  withP999 = true,
): Row[] {
  const qs: Array<[string, number]> = [['p50', 50], ['p99', 99]];
  if (withP999) qs.push(['p99.9', 99.9]);
  return qs.map(([label, q]) => {
    const o = ours?.p(q);
    const t = theirs?.p(q);
    const target = targets[label];
    return {
      figure: `${figure}, ${label}`,
      ours: o,
      peer,
      theirs: t,
      unit,
      target: target?.text ?? '',
      pass: target === undefined || o === undefined || Number.isNaN(o) ? undefined : target.pass(o, t === undefined || Number.isNaN(t) ? undefined : t),
    };
  });
}

/** Keeps a bench script's exit status 0 whatever the verdicts; only a crash fails it. */
export function main(fn: () => Promise<void>): void {
  fn().then(
    () => process.exit(0),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
