/**
 * Subscribers of bench/fanout.ts: many connections in one process, each a commy Client (mode 'remote',
 * subscribed to the whole service) and each a plain `ws` client of the broadcast peer. Every value is a
 * writer's stamp (process.hrtime.bigint(), CLOCK_MONOTONIC): on receipt, `now − stamp` goes into a histogram.
 *
 * Requests: 'connect' {commyUrl?, wsUrl?, count, service} adds `count` subscribers of each kind given;
 * 'dropWs' terminates every ws subscriber (unread backlog and all);
 * 'start' {kind} clears the counts and records that kind's deliveries; 'finish' {kind, final, timeoutMs}
 * waits until every subscriber of the kind holds `final` (or the time is up), then answers with the
 * histogram, how many hold it, when the last of them received it, and how many values were delivered.
 */
import { WebSocket } from 'ws';
import { AuthCredentials, Client, VariableType } from '../src/index.js';
import { BENCH_KEY, BENCH_TENANT, LogHistogram, serveRequests, sleep } from './harness.js';

type Kind = 'commy' | 'ws';

interface Sub {
  last: bigint;
  lastAt: bigint;
}

const subs: Record<Kind, Sub[]> = { commy: [], ws: [] };
const closers: Array<() => unknown> = [];
const wsClosers: Array<() => void> = [];
const hist = new LogHistogram();
let recording: Kind | undefined;
let delivered = 0;

function receive(kind: Kind, sub: Sub, v: bigint): void {
  if (v === 0n || v === sub.last) return;
  const now = process.hrtime.bigint();
  sub.last = v;
  sub.lastAt = now;
  if (recording === kind) {
    hist.add(Number(now - v) / 1000);
    delivered++;
  }
}

async function connectCommy(url: string, service: string): Promise<void> {
  const client = await Client.initialize(url, BENCH_TENANT, AuthCredentials.apiKey(BENCH_KEY), { mode: 'remote', reconnect: false, onError: () => {} });
  await client.stopFileMonitoring(); // the per-client queue of waitForFileChange(): nobody reads it here
  closers.push(() => client.close());
  const vf = await client.getVirtualServiceFile(BENCH_TENANT, service);
  const h = vf.handle('x', VariableType.U64);
  const sub: Sub = { last: h.get(), lastAt: 0n };
  subs.commy.push(sub);
  void (async () => {
    try {
      for await (const _ev of vf.changes()) receive('commy', sub, h.get());
    } catch {
      /* closed */
    }
  })();
}

async function connectWs(url: string): Promise<void> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.on('error', () => {});
  const sub: Sub = { last: 0n, lastAt: 0n };
  subs.ws.push(sub);
  ws.on('message', (data: Buffer) => receive('ws', sub, data.readBigUInt64LE(0)));
  wsClosers.push(() => ws.terminate());
}

/** Runs `n` connects, `parallel` at a time. */
async function inBatches(n: number, parallel: number, fn: () => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      await fn();
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, n) }, worker));
}

serveRequests({ pid: process.pid }, {
  connect: async ({ commyUrl, wsUrl, count, service }) => {
    if (commyUrl) await inBatches(count as number, 20, () => connectCommy(commyUrl as string, service as string));
    if (wsUrl) await inBatches(count as number, 50, () => connectWs(wsUrl as string));
    return { commy: subs.commy.length, ws: subs.ws.length };
  },
  /** Drops every ws subscriber at once, unread backlog and all (a saturated peer's round must not spill into the next). */
  dropWs: () => {
    for (const close of wsClosers) close();
    wsClosers.length = 0;
    subs.ws.length = 0;
    return true;
  },
  start: ({ kind }) => {
    hist.reset();
    delivered = 0;
    recording = kind as Kind;
    return true;
  },
  finish: async ({ kind, final, timeoutMs }) => {
    const want = BigInt(final as string);
    const list = subs[kind as Kind];
    const end = performance.now() + (timeoutMs as number);
    while (list.some((s) => s.last !== want) && performance.now() < end) await sleep(5);
    recording = undefined;
    let atFinal = 0;
    let lastAt = 0n;
    for (const s of list) {
      if (s.last === want) {
        atFinal++;
        if (s.lastAt > lastAt) lastAt = s.lastAt;
      }
    }
    return { hist: hist.sparse(), atFinal, total: list.length, lastAt: String(lastAt), delivered };
  },
}, async () => {
  for (const close of wsClosers) close();
  await Promise.allSettled(closers.map((c) => c()));
});
