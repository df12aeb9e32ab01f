/**
 * `npm run bench:remote`: remote round trips over a loopback WebSocket beside Redis SET/GET (ioredis,
 * Debian's redis-server started here) measured in the same run. The commy server runs in its own process.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { AuthCredentials, Client, VariableMetadata, VariableType } from '../src/index.js';
import { percentile, printTable, type Row } from './harness.js';
import { startRedis } from './redis-server.js';

const ROUNDS = 5000;

async function timeEach(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < Math.min(500, n); i++) await fn(i); // warm-up
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn(i);
    out.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  return out;
}

async function wsEcho(url: string): Promise<number[]> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  const frame = new Uint8Array(40);
  const out = await timeEach(ROUNDS, () => new Promise((r) => { ws.once('message', r); ws.send(frame); }));
  ws.close();
  return out;
}

async function commy(): Promise<{ flush: number[]; write: number[]; read: number[]; echo: number[] }> {
  const child = fork(fileURLToPath(new URL('./remote-server.js', import.meta.url)), [], { stdio: 'inherit' });
  const { url, echoUrl } = await new Promise<{ url: string; echoUrl: string }>((r) => child.once('message', (m) => r(m as { url: string; echoUrl: string })));
  const echo = await wsEcho(echoUrl);
  const client = await Client.initialize(url, 'bench', AuthCredentials.apiKey('ops:bench'), { mode: 'remote' });
  const vf = await client.getVirtualServiceFile('bench', 'rtt');
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  const h = vf.handle<bigint>('x');
  const bytes = new Uint8Array(8);
  const setAndFlush = async (i: number) => {
    h.set(BigInt(i));
    await vf.flush();
  };
  await timeEach(ROUNDS, setAndFlush); // a whole extra round: the first thousands of round trips still pay for JIT warm-up
  const flush = await timeEach(ROUNDS, setAndFlush);
  const write = await timeEach(ROUNDS, (i) => {
    bytes[0] = i & 0xff;
    return client.writeVariable('bench', 'rtt', 'x', bytes);
  });
  const read = await timeEach(ROUNDS, () => client.readVariable('bench', 'rtt', 'x'));
  await vf.close();
  await client.close();
  child.send('stop');
  await new Promise((r) => child.once('exit', r));
  return { flush, write, read, echo };
}

async function redis(): Promise<{ set: number[]; get: number[] } | undefined> {
  const server = await startRedis();
  if (!server) return undefined;
  const { Redis } = await import('ioredis');
  const r = new Redis({ port: server.port, host: '127.0.0.1' });
  try {
    const set = await timeEach(ROUNDS, (i) => r.set('x', String(i)));
    const get = await timeEach(ROUNDS, () => r.get('x'));
    return { set, get };
  } finally {
    r.disconnect();
    server.stop();
  }
}

const ours = await commy();
const theirs = await redis();
const peerSet = theirs ? 'Redis SET (ioredis, loopback)' : 'Redis (redis-server not installed)';
const peerGet = theirs ? 'Redis GET (ioredis, loopback)' : 'Redis (redis-server not installed)';
const rows: Row[] = [];
for (const [figure, samples, peer, peerSamples, target] of [
  ['remote set() + flush() → acknowledgement', ours.flush, peerSet, theirs?.set, 'below Redis SET'],
  ['remote writeVariable() → acknowledgement (old API)', ours.write, peerSet, theirs?.set, 'below Redis SET'],
  ['remote readVariable() round trip (old API)', ours.read, peerGet, theirs?.get, 'below Redis GET'],
] as const) {
  for (const p of [50, 99]) {
    rows.push({ figure: `${figure}, p${p}`, ours: percentile([...samples], p), peer, theirs: peerSamples && percentile([...peerSamples], p), unit: 'µs', target });
  }
}
for (const p of [50, 99]) {
  rows.push({ figure: `(floor) bare ws echo of a 40-byte frame, p${p}`, ours: percentile(ours.echo, p), peer: 'Redis GET', theirs: theirs && percentile(theirs.get, p), unit: 'µs', target: '' });
}
console.log(`commy remote bench — ${process.platform}-${process.arch}, Node ${process.version}, ${ROUNDS} sequential round trips each`);
printTable('Remote round trips over loopback (server in its own process)', rows);
