/**
 * `npm run soak`: a real `commy serve` in its own process takes fuzzed and half-valid frames (soak/frames.ts)
 * from several connections, a million by default, while a correct client writes a counter and a self-checking
 * blob and a second client checks every value it is sent. Then the server is stopped with SIGTERM and every
 * service file is opened and checked. Prints what happened; exit code 1 if the server crashed, answered
 * INTERNAL_ERROR, corrupted a value, lost a write, or left a file it cannot read back.
 *
 *   node dist/soak/soak.js [--frames 1000000] [--connections 4] [--window 16] [--seed 1]
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { LogHistogram } from '../src/core/log-histogram.js';
import { inspectFile } from '../src/local/file-report.js';
import { decodeFrame, encodeFrame } from '../src/protocol/frame-codec.js';
import { FrameFuzzer } from './frames.js';

export interface SoakOptions {
  frames: number;
  connections: number;
  /** Frames a connection keeps unanswered at most. */
  window: number;
  seed: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export interface SoakReport {
  frames: number;
  seconds: number;
  byKind: Record<string, number>;
  repliesByType: Record<string, number>;
  errorsByCode: Record<string, number>;
  /** Connections the server closed, by close code (a closed one is replaced). */
  closesByCode: Record<string, number>;
  /** Frames whose answer never came (counted when a connection went quiet or closed with them pending). */
  unanswered: number;
  /** Answers the client could not decode: must be 0. */
  undecodable: number;
  /** The server exited before it was told to: must be 0. */
  crashes: number;
  /** The server's exit code after SIGTERM: must be 0. */
  exitCode: number | null;
  truth: { writes: number; checks: number; mismatches: string[]; lastWritten: number; lastSeen: number; ackMs: LogHistogram };
  files: { checked: number; invalid: string[] };
}

const TENANT = 'soak';
const FUZZ_KEY = 'fuzz:fuzz-secret';
const TRUTH_KEY = 'truth:truth-secret';
const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));

export async function runSoak(o: SoakOptions): Promise<SoakReport> {
  const dir = mkdtempSync(join(tmpdir(), 'commy-soak-'));
  const report: SoakReport = {
    frames: 0, seconds: 0, byKind: {}, repliesByType: {}, errorsByCode: {}, closesByCode: {}, unanswered: 0, undecodable: 0,
    crashes: 0, exitCode: null, truth: { writes: 0, checks: 0, mismatches: [], lastWritten: 0, lastSeen: 0, ackMs: new LogHistogram() }, files: { checked: 0, invalid: [] },
  };
  const server = await startServer(dir);
  let stopping = false;
  server.proc.on('exit', () => {
    if (!stopping) report.crashes++;
  });
  try {
    const started = performance.now();
    const truth = await startTruth(server.url);
    const quota = { left: o.frames };
    const progress = setInterval(() => o.log?.(`${(o.frames - quota.left).toLocaleString('en-US')} frames sent`), 5000);
    const own = ['fuzz-a', 'fuzz-b', 'fuzz-c'];
    await Promise.all(
      Array.from({ length: o.connections }, (_, i) => attack(server.url, new FrameFuzzer(o.seed * 1000 + i, { tenant: TENANT, own, forbidden: ['truth'] }), quota, o.window, report, () => report.crashes > 0)),
    );
    clearInterval(progress);
    report.frames = o.frames - quota.left;
    report.truth = await truth.stop();
    report.seconds = (performance.now() - started) / 1000;
    stopping = true;
    report.exitCode = await stopServer(server.proc);
    checkFiles(join(dir, 'data'), report);
    return report;
  } finally {
    stopping = true;
    server.proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `commy serve` on its own port and data directory: fuzz may use fuzz-*, truth may use truth; rates raised. */
async function startServer(dir: string): Promise<{ proc: ChildProcess; url: string }> {
  const config = {
    tenants: {
      [TENANT]: {
        keys: [
          { id: 'fuzz', secret: 'fuzz-secret', read: ['fuzz-*', 'truth'], write: ['fuzz-*'], admin: ['fuzz-*'] },
          { id: 'truth', secret: 'truth-secret', read: ['truth'], write: ['truth'], admin: ['truth'] },
        ],
      },
    },
    limits: { rateLimit: { messagesPerSecond: 1_000_000, burst: 1_000_000 } },
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  const proc = spawn(process.execPath, [CLI, 'serve', '--config', join(dir, 'config.json'), '--port', '0', '--data', join(dir, 'data'), '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] });
  for await (const line of createInterface({ input: proc.stdout! })) {
    const url = /listening on (\S+)/.exec(line)?.[1];
    if (url !== undefined) {
      proc.stdout!.resume(); // keep draining whatever it prints later
      return { proc, url };
    }
  }
  throw new Error('commy serve exited before it listened');
}

function stopServer(proc: ChildProcess): Promise<number | null> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(proc.exitCode);
  return new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
    proc.kill('SIGTERM');
  });
}

/**
 * One attacking connection at a time on this slot until the quota is spent: most authenticate, one in ten
 * does not (and meets the auth rules). A connection the server closes is counted and replaced.
 */
async function attack(url: string, fuzzer: FrameFuzzer, quota: { left: number }, window: number, report: SoakReport, crashed: () => boolean): Promise<void> {
  for (let round = 0; quota.left > 0 && !crashed(); round++) {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 1 << 26 });
    ws.on('error', () => {});
    const opened = await new Promise<boolean>((resolve) => {
      ws.once('open', () => resolve(true));
      ws.once('close', () => resolve(false));
    });
    if (!opened) {
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    fuzzer.reset();
    if (round % 10 !== 9) ws.send(encodeFrame('Authenticate', 0x7fffffff, { tenant: TENANT, method: 'apiKey', credential: FUZZ_KEY, protocol: 2 }));
    await pump(ws, fuzzer, quota, window, report);
  }
}

/** Sends frames while fewer than `window` are unanswered; resolves when the connection closes. */
function pump(ws: WebSocket, fuzzer: FrameFuzzer, quota: { left: number }, window: number, report: SoakReport): Promise<void> {
  let pending = 0;
  let quiet: NodeJS.Timeout | undefined;
  const fill = () => {
    while (pending < window && quota.left > 0 && ws.readyState === ws.OPEN) {
      const { frame, kind, answered } = fuzzer.next();
      quota.left--;
      if (answered) pending++;
      count(report.byKind, kind);
      ws.send(frame);
    }
    if (quota.left === 0 && pending === 0) ws.close();
    // An answer that never comes (a frame the server had to drop with its connection) must not stall the run.
    clearTimeout(quiet);
    quiet = setTimeout(() => {
      report.unanswered += pending;
      pending = 0;
      if (quota.left === 0) ws.close();
      else fill();
    }, 3000);
  };
  ws.on('message', (data: Buffer) => {
    try {
      const m = decodeFrame(data, 1 << 26);
      count(report.repliesByType, m.type);
      if (m.type === 'Error') count(report.errorsByCode, m.body.errorCode);
      fuzzer.learn(m.type, m.body);
      if ((m.id === 0 && m.type !== 'Error') || isPush(m.type) || (m.type === 'QueryResponse' && m.body.more)) return;
    } catch {
      report.undecodable++;
    }
    pending = Math.max(0, pending - 1);
    fill();
  });
  return new Promise((resolve) => {
    ws.once('close', (code) => {
      clearTimeout(quiet);
      count(report.closesByCode, String(code));
      report.unanswered += pending;
      resolve();
    });
    fill();
  });
}

/** Pushes carry id 0 too, but SnapshotChunk carries its Snapshot's id: none of them answers a frame. */
function isPush(type: string): boolean {
  return type === 'SyncBatch' || type === 'VariablesUpdated' || type === 'SnapshotChunk';
}

function count(into: Record<string, number>, key: string): void {
  into[key] = (into[key] ?? 0) + 1;
}

/**
 * The correct client, in a process of its own (soak/truth-client.ts), so that what it measures is the server's
 * fairness and not this process's own load: `stop()` ends its writes and answers what it found.
 */
async function startTruth(url: string): Promise<{ stop(): Promise<SoakReport['truth']> }> {
  const child = fork(fileURLToPath(new URL('./truth-client.js', import.meta.url)), [url, TENANT, TRUTH_KEY], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const next = <T>(type: string) =>
    new Promise<T>((resolve, reject) => {
      const onMessage = (m: { type: string }) => {
        if (m.type !== type) return;
        child.off('message', onMessage);
        resolve(m as T);
      };
      child.on('message', onMessage);
      child.once('exit', (code) => reject(new Error(`the truth client exited (${code}) before it sent ${type}`)));
    });
  await next('ready');
  return {
    async stop() {
      const done = next<{ truth: Omit<SoakReport['truth'], 'ackMs'> & { ackMs: number[] } }>('result');
      child.send({ type: 'stop' });
      const { truth } = await done;
      const ackMs = new LogHistogram();
      ackMs.merge(truth.ackMs);
      return { ...truth, ackMs };
    },
  };
}

/** Every service file the run left: it must open, hold no torn value, and the truth file must hold the last write. */
function checkFiles(dataDir: string, report: SoakReport): void {
  for (const path of memFiles(dataDir)) {
    report.files.checked++;
    try {
      const file = inspectFile(path);
      for (const v of file.variables) if (v.torn) report.files.invalid.push(`${path}: ${v.name} is torn`);
      if (file.service === 'truth') {
        const n = file.variables.find((v) => v.name === 'n')?.value;
        if (n !== report.truth.lastWritten) report.files.invalid.push(`${path}: n is ${String(n)}, the last acknowledged write was ${report.truth.lastWritten}`);
      }
    } catch (err) {
      report.files.invalid.push(`${path}: ${(err as Error).message}`);
    }
  }
}

function memFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) out.push(...memFiles(path));
    else if (e.name.endsWith('.mem')) out.push(path);
  }
  return out;
}

/** What must hold after a soak: the reasons it failed (empty: it passed). */
export function soakFailures(r: SoakReport): string[] {
  const out: string[] = [];
  if (r.crashes > 0) out.push(`the server crashed ${r.crashes} time(s)`);
  if (r.exitCode !== 0) out.push(`the server exited ${r.exitCode} on SIGTERM`);
  if ((r.errorsByCode.INTERNAL_ERROR ?? 0) > 0) out.push(`${r.errorsByCode.INTERNAL_ERROR} INTERNAL_ERROR answers`);
  if (r.undecodable > 0) out.push(`${r.undecodable} answers the client could not decode`);
  out.push(...r.truth.mismatches.slice(0, 10), ...r.files.invalid.slice(0, 10));
  if (r.truth.writes === 0) out.push('the correct client wrote nothing');
  return out;
}

export function formatSoak(r: SoakReport): string {
  const n = (x: number) => x.toLocaleString('en-US');
  const ms = (x: number) => `${x.toFixed(x < 10 ? 2 : 0)} ms`;
  const table = (rec: Record<string, number>) => Object.entries(rec).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${n(v)}`).join(', ') || 'none';
  return [
    `frames sent       ${n(r.frames)} in ${r.seconds.toFixed(1)} s (${n(Math.round(r.frames / r.seconds))}/s): ${table(r.byKind)}`,
    `answers           ${table(r.repliesByType)}`,
    `errors by code    ${table(r.errorsByCode)}`,
    `closes by code    ${table(r.closesByCode)}`,
    `unanswered        ${n(r.unanswered)} (frames pending when their connection closed or went quiet)`,
    `crashes           ${r.crashes}; exit code on SIGTERM ${r.exitCode}`,
    `correct client    ${n(r.truth.writes)} acknowledged writes, ${n(r.truth.checks)} values checked, ${r.truth.mismatches.length} wrong; last written ${r.truth.lastWritten}, last seen ${r.truth.lastSeen}`,
    `                  write → ack under the attack: p50 ${ms(r.truth.ackMs.p(50))}, p99 ${ms(r.truth.ackMs.p(99))}, max ${ms(r.truth.ackMs.p(100))}`,
    `service files     ${r.files.checked} checked, ${r.files.invalid.length} invalid`,
  ].join('\n');
}

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const options: SoakOptions = { frames: flag('frames', 1_000_000), connections: flag('connections', 4), window: flag('window', 16), seed: flag('seed', 1), log: (l) => console.error(l) };
  const report = await runSoak(options);
  console.log(formatSoak(report));
  const failures = soakFailures(report);
  for (const f of failures) console.log(`FAILED: ${f}`);
  process.exit(failures.length === 0 ? 0 : 1);
}
