/**
 * `npm run bench:idle`: 10,000 idle connections. commy: authenticated Clients (mode 'remote', nothing
 * subscribed); peer: plain connections to a bare `ws` server. Each server runs in its own process with
 * --expose-gc, fresh for every round; the clients run in 4 other processes.
 *
 * Per round: the server starts; 500 connections warm it up (its code paths compiled, its pools made), a
 * forced GC, RSS "before"; then 9,500 more connections (50 at a time per client process, 200 at once in all),
 * 1 s of quiet, a forced GC, RSS "after" (with all 10,000 open). Bytes per connection = (after − before) /
 * 9,500. Rounds alternate commy, ws, commy, ws; the table shows the median of the rounds.
 *
 * The commy server's connection limits are raised through its config: maxConnections and maxConnectionsPerIp
 * (every client is 127.0.0.1) to 20,000, maxUnauthenticatedConnections and maxUnauthenticatedPerIp to 2,000.
 */
import { atMost, fmt, header, interleave, main, median, printTable, sleep, startChild, startCommyServer, type Child, type Row } from './harness.js';

const TOTAL = 10_000;
const WARM = 500;
const PROCS = 4;
const PARALLEL = 50;
const ROUNDS = 2;
const MiB = 1024 * 1024;

interface Mem {
  rss: number;
  heapUsed: number;
  external: number;
  gc: boolean;
}

interface Result {
  before: Mem;
  after: Mem;
  perConn: number;
  heapPerConn: number;
  connectS: number;
  errors: string[];
}

const LIMITS = { maxConnections: 20_000, maxConnectionsPerIp: 20_000, maxUnauthenticatedConnections: 2_000, maxUnauthenticatedPerIp: 2_000 };

async function round(kind: 'commy' | 'ws'): Promise<Result> {
  let server: { child: Child; url: string; stop: (how?: 'close' | 'kill') => Promise<void> };
  if (kind === 'commy') server = await startCommyServer({ limits: LIMITS }, ['--expose-gc']);
  else {
    const ws = await startChild<{ url: string }>('ws-server', ['idle'], ['--expose-gc']);
    server = { child: ws.child, url: ws.ready.url, stop: async () => void (await ws.child.kill()) };
  }
  const clients: Child[] = [];
  try {
    for (let i = 0; i < PROCS; i++) clients.push((await startChild('idle-clients')).child);
    const errors: string[] = [];
    const connect = async (count: number) => {
      const per = Math.ceil(count / PROCS);
      const results = await Promise.all(clients.map((c, i) => c.request<{ ok: number; errors: string[] }>('connect', { kind, url: server.url, count: Math.min(per, count - i * per), parallel: PARALLEL }, 600_000)));
      for (const r of results) errors.push(...r.errors);
      return results.reduce((a, r) => a + r.ok, 0);
    };
    await connect(WARM);
    await sleep(500);
    const before = await server.child.request<Mem>('mem');
    const t0 = performance.now();
    const ok = await connect(TOTAL - WARM);
    const connectS = (performance.now() - t0) / 1000;
    await sleep(1000);
    const after = await server.child.request<Mem>('mem');
    if (ok !== TOTAL - WARM) errors.unshift(`${TOTAL - WARM - ok} of ${TOTAL - WARM} connections failed`);
    return { before, after, perConn: (after.rss - before.rss) / ok, heapPerConn: (after.heapUsed - before.heapUsed) / ok, connectS, errors };
  } finally {
    await server.stop('kill'); // SIGKILL: closing 10,000 connections one by one would only cost time
    await Promise.all(clients.map((c) => c.kill()));
  }
}

main(async () => {
  header(`${TOTAL.toLocaleString('en-US')} idle connections: server memory`, [
    `${ROUNDS} rounds of each, alternating, each with a fresh server process (--expose-gc: RSS after a forced GC); clients in ${PROCS} processes.`,
  ]);
  const results: Record<'commy' | 'ws', Result[]> = { commy: [], ws: [] };
  await interleave(ROUNDS, {
    commy: async () => void results.commy.push(await round('commy')),
    ws: async () => void results.ws.push(await round('ws')),
  });
  const med = (k: 'commy' | 'ws', f: (r: Result) => number) => median(results[k].map(f));
  const rssOurs = med('commy', (r) => r.after.rss) / MiB;
  const perOurs = med('commy', (r) => r.perConn);
  const perTheirs = med('ws', (r) => r.perConn);
  const failed = results.commy.some((r) => r.errors.length > 0);
  const rows: Row[] = [
    { figure: `server RSS with ${TOTAL.toLocaleString('en-US')} idle connections`, ours: rssOurs, peer: 'bare `ws` server', theirs: med('ws', (r) => r.after.rss) / MiB, unit: 'MB', target: '< 200 MB', pass: failed ? false : atMost(rssOurs, 199.999) },
    { figure: 'server RSS before (500 connections, warm)', ours: med('commy', (r) => r.before.rss) / MiB, peer: 'bare `ws` server', theirs: med('ws', (r) => r.before.rss) / MiB, unit: 'MB' },
    { figure: 'RSS per connection', ours: perOurs / 1024, peer: 'bare `ws` server', theirs: perTheirs / 1024, unit: 'KB', target: '≤ bare ws', pass: failed ? false : atMost(perOurs, perTheirs) },
    { figure: 'JS heap per connection', ours: med('commy', (r) => r.heapPerConn) / 1024, peer: 'bare `ws` server', theirs: med('ws', (r) => r.heapPerConn) / 1024, unit: 'KB' },
  ];
  const per = (k: 'commy' | 'ws') => results[k].map((r) => `${fmt(r.after.rss / MiB)} MB, ${fmt(r.perConn / 1024)} KB/conn, ${fmt((TOTAL - WARM) / r.connectS)} conn/s`).join('; ');
  printTable(`${TOTAL.toLocaleString('en-US')} idle connections (median of ${ROUNDS} rounds)`, rows, [
    `per round: commy ${per('commy')}; ws ${per('ws')}.`,
    `forced GC available: ${results.commy.every((r) => r.after.gc) ? 'yes' : 'no'}. KB = 1,024 bytes, MB = 1,048,576 bytes.`,
    ...Object.entries(results).flatMap(([k, rs]) => rs.flatMap((r, i) => r.errors.map((e) => `${k} round ${i + 1}: ${e}`))),
  ]);
});
