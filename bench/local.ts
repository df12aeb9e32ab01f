/**
 * `npm run bench`: local figures of commy beside peers measured in the same run.
 * Peers: lmdb-js (embedded, memory-mapped B-tree), Redis pub/sub on loopback (if redis-server is installed),
 * Buffer.compare (memcmp) for the diff.
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { open as openLmdb } from 'lmdb';
import { VirtualVariableFile, VariableMetadata, VariableType } from '../src/index.js';
import { native } from '../src/native/addon.js';
import { diffRangesJs } from '../src/core/byte-diff.js';
import { nsPerOp, percentile, printTable, type Row } from './harness.js';
import { startRedis } from './redis-server.js';

const dir = mkdtempSync(join(tmpdir(), 'commy-bench-'));
const here = (name: string) => fileURLToPath(new URL(name, import.meta.url));

async function accessRows(): Promise<Row[]> {
  const vf = await VirtualVariableFile.open(join(dir, 'bench.mem'), { create: true });
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.F64));
  const h = vf.handle<number>('x');
  h.set(1.5);
  const N = 5_000_000;
  const readHandle = nsPerOp(N, (n) => { let s = 0; for (let i = 0; i < n; i++) s += h.get(); return s; });
  const readName = nsPerOp(N, (n) => { let s = 0; for (let i = 0; i < n; i++) s += vf.get<number>('x'); return s; });
  const writeHandle = nsPerOp(N, (n) => { for (let i = 0; i < n; i++) h.set(i); });
  const writeName = nsPerOp(N, (n) => { for (let i = 0; i < n; i++) vf.set('x', i); });
  const raw = new Float64Array(1024);
  const rawRead = nsPerOp(N, (n) => { let s = 0; for (let i = 0; i < n; i++) s += raw[i & 1023]!; return s; });
  await vf.close();

  const db = openLmdb({ path: join(dir, 'lmdb'), noSync: true, compression: false });
  const value = Buffer.alloc(8);
  value.writeDoubleLE(1.5);
  await db.put('x', value);
  const lmdbGet = nsPerOp(1_000_000, (n) => { let s = 0; for (let i = 0; i < n; i++) s += db.getBinaryFast('x')!.length; return s; });
  const lmdbPut = nsPerOp(100_000, (n) => { for (let i = 0; i < n; i++) { value.writeDoubleLE(i); db.putSync('x', value); } }, 3);
  await db.close();
  return [
    { figure: 'typed read, 8-byte F64, handle()', ours: readHandle, peer: 'lmdb getBinaryFast', theirs: lmdbGet, unit: 'ns/op', target: '≤ 25 ns' },
    { figure: 'typed read, 8-byte F64, get(name)', ours: readName, peer: 'lmdb getBinaryFast', theirs: lmdbGet, unit: 'ns/op', target: '' },
    { figure: 'typed write, visible to other processes, handle()', ours: writeHandle, peer: 'lmdb putSync (noSync)', theirs: lmdbPut, unit: 'ns/op', target: '≤ 100 ns' },
    { figure: 'typed write, set(name)', ours: writeName, peer: 'lmdb putSync (noSync)', theirs: lmdbPut, unit: 'ns/op', target: '' },
    { figure: '(floor) plain Float64Array read, no sharing', ours: rawRead, peer: '', theirs: undefined, unit: 'ns/op', target: '' },
  ];
}

async function commyLatency(rounds: number): Promise<number[]> {
  const path = join(dir, 'pingpong.mem');
  const vf = await VirtualVariableFile.open(path, { create: true });
  await vf.registerVariable(new VariableMetadata('ping', -1, 8, VariableType.I64));
  await vf.registerVariable(new VariableMetadata('pong', -1, 8, VariableType.I64));
  const child = fork(here('./local-echo.js'), [path], { stdio: 'inherit' });
  await new Promise((r) => child.once('message', r));
  const ping = vf.handle<bigint>('ping');
  const pong = vf.handle<bigint>('pong');
  const events = vf.changes();
  const oneWay: number[] = [];
  for (let i = 1n; i <= BigInt(rounds); i++) {
    const t0 = process.hrtime.bigint();
    ping.set(i);
    while (pong.get() !== i) await events.next();
    oneWay.push(Number(process.hrtime.bigint() - t0) / 2 / 1000);
  }
  ping.set(-1n);
  await events.return!();
  await new Promise((r) => child.once('exit', r));
  await vf.close();
  return oneWay.slice(Math.floor(rounds / 10)); // drop the warm-up tenth
}

async function redisLatency(port: number, rounds: number): Promise<number[]> {
  const { Redis } = await import('ioredis');
  const child = fork(here('./redis-echo.js'), [String(port)], { stdio: 'inherit' });
  await new Promise((r) => child.once('message', r));
  const sub = new Redis({ port, host: '127.0.0.1' });
  const pub = new Redis({ port, host: '127.0.0.1' });
  await sub.subscribe('pong');
  let waiting: ((m: string) => void) | undefined;
  sub.on('message', (_c: string, m: string) => waiting?.(m));
  const oneWay: number[] = [];
  for (let i = 1; i <= rounds; i++) {
    const t0 = process.hrtime.bigint();
    const got = new Promise<string>((r) => (waiting = r));
    await pub.publish('ping', String(i));
    await got;
    oneWay.push(Number(process.hrtime.bigint() - t0) / 2 / 1000);
  }
  await pub.publish('ping', 'stop');
  await new Promise((r) => child.once('exit', r));
  sub.disconnect();
  pub.disconnect();
  return oneWay.slice(Math.floor(rounds / 10));
}

async function latencyRows(): Promise<Row[]> {
  const rounds = 5000;
  const ours = await commyLatency(rounds);
  const redis = await startRedis();
  let theirs: number[] | undefined;
  if (redis) {
    try {
      theirs = await redisLatency(redis.port, rounds);
    } finally {
      redis.stop();
    }
  }
  const peer = redis ? 'Redis pub/sub (ioredis, loopback)' : 'Redis (redis-server not installed)';
  return [
    { figure: 'change seen by another process, one way, p50', ours: percentile(ours, 50), peer, theirs: theirs && percentile(theirs, 50), unit: 'µs', target: '≤ 40 µs' },
    { figure: 'change seen by another process, one way, p99', ours: percentile(ours, 99), peer, theirs: theirs && percentile(theirs, 99), unit: 'µs', target: '≤ 100 µs' },
  ];
}

function diffRows(): Row[] {
  const size = 1 << 20;
  const a = new Uint8Array(size);
  const b = new Uint8Array(size);
  for (let i = 0; i < 10; i++) b[Math.floor((i * size) / 10) + 17] = 1;
  const gbps = (ns: number) => size / ns; // bytes per ns = GB/s
  const rows: Row[] = [];
  const bufA = Buffer.from(a.buffer);
  const bufB = Buffer.from(b.buffer);
  const memcmp = nsPerOp(2000, (n) => {
    let d = 0;
    for (let k = 0; k < n; k++) for (let off = 0; off < size; off += 4096) d += Buffer.compare(bufA.subarray(off, off + 4096), bufB.subarray(off, off + 4096)) !== 0 ? 1 : 0;
    return d;
  }, 5);
  for (const impl of native.diffImpls()) {
    const ns = nsPerOp(2000, (n) => { let r = 0; for (let k = 0; k < n; k++) r += native.diff(a, b, impl as never).length; return r; }, 5);
    rows.push({ figure: `diff 1 MiB, 10 sparse changes, native ${impl}`, ours: gbps(ns), peer: 'Buffer.compare per 4 KiB (memcmp)', theirs: gbps(memcmp), unit: 'GB/s', target: impl === native.diffImpls()[0] ? '≥ 12 GB/s' : '', higherIsBetter: true });
  }
  const js = nsPerOp(50, (n) => { let r = 0; for (let k = 0; k < n; k++) r += diffRangesJs(a, b).length; return r; }, 5);
  rows.push({ figure: 'diff 1 MiB, JS fallback (browser build)', ours: gbps(js), peer: 'Buffer.compare per 4 KiB (memcmp)', theirs: gbps(memcmp), unit: 'GB/s', target: '', higherIsBetter: true });
  return rows;
}

try {
  console.log(`commy local bench — ${process.platform}-${process.arch}, Node ${process.version}, CPU diff impls: ${native.diffImpls().join(', ')}`);
  printTable('Local access (one process)', await accessRows());
  printTable('Change notification between two processes (ping-pong / 2)', await latencyRows());
  printTable('Diff (current vs shadow)', diffRows());
} finally {
  rmSync(dir, { recursive: true, force: true });
}
