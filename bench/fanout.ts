/**
 * `npm run bench:fanout`: one writer, 1,000 updates/s of one U64 variable, fanned out to 100 and then to 1,000
 * remote subscribers, beside a raw `ws` broadcast server (the writer sends it each value; it sends each one to
 * every subscriber: one ws.send per subscriber, the loop of ws's README).
 *
 * Processes: the commy server (bench/commy-server.ts), the ws broadcast server (bench/ws-server.ts), 4
 * subscriber processes (bench/fanout-subscribers.ts, each with a quarter of the subscribers of both kinds), and
 * this one: the writers. commy's writer is a Client with mode 'remote': every ~1 ms `h.set(stamp)` then
 * `vf.flush()` (the time until that flush resolves is the writer's write → ack); the ws writer sends the stamp.
 * A stamp is process.hrtime.bigint() (CLOCK_MONOTONIC, the same clock in every process); a subscriber records
 * receive time − stamp for every value it receives. After each round's last value the writer sends one more,
 * and the subscribers report whether they hold it and when they received it (how long everything took to
 * arrive). The server's CPU time (user + system, read from /proc/<pid>/stat) is counted from the round's
 * start to the last delivery (or to the end of the wait for it).
 *
 * Per subscriber count: a warm-up of 2 s of each, then 3 interleaved rounds of 5 s of each. A peer that has
 * not delivered everything 4 s after the last write is saturated: its round ends there, and its server and
 * subscribers are started afresh so that its backlog cannot spill into the next round.
 */
import { WebSocket } from 'ws';
import { AuthCredentials, Client, VariableMetadata, VariableType } from '../src/index.js';
import {
  atMost, BENCH_KEY, BENCH_TENANT, fmt, header, interleave, LogHistogram, main, paced, percentileRows, printTable, procCpuSeconds, Samples, sleep, startChild, startCommyServer, usSince,
  type Child, type Row, type SparseHistogram,
} from './harness.js';

const RATE = 1000;
const ROUND_MS = 5000;
const WARMUP_MS = 2000;
const ROUNDS = 3;
const PROCS = 4;
const COUNTS = [100, 1000];
const SERVICE = 'fan';
const DRAIN_MS = 4000;

interface Finish {
  hist: SparseHistogram;
  atFinal: number;
  total: number;
  lastAt: string;
  delivered: number;
}

interface Tally {
  latency: LogHistogram;
  cpu: number[];
  atFinal: number[];
  total: number;
  drainMs: number[];
  delivered: number;
  sent: number;
  seconds: number;
  acks: Samples;
  ackErrors: number;
  resets: number;
}

const tally = (): Tally => ({ latency: new LogHistogram(), cpu: [], atFinal: [], total: 0, drainMs: [], delivered: 0, sent: 0, seconds: 0, acks: new Samples(), ackErrors: 0, resets: 0 });

/** The raw ws peer: its server process and the writer's connection to it. */
interface WsPeer {
  child: Child;
  url: string;
  pub: WebSocket;
}

async function startWsPeer(): Promise<WsPeer> {
  const { child, ready } = await startChild<{ url: string }>('ws-server', ['broadcast']);
  const pub = new WebSocket(`${ready.url}/pub`, { perMessageDeflate: false });
  await new Promise((resolve, reject) => {
    pub.once('open', resolve);
    pub.once('error', reject);
  });
  pub.on('error', () => {});
  return { child, url: ready.url, pub };
}

main(async () => {
  const stops: Array<() => unknown> = [];
  let peer: WsPeer | undefined;
  try {
    const commy = await startCommyServer({ limits: { maxUnauthenticatedPerIp: 2000, maxUnauthenticatedConnections: 2000 } });
    stops.push(() => commy.stop());
    peer = await startWsPeer();
    stops.push(() => peer?.child.kill());
    const procs: Child[] = [];
    for (let i = 0; i < PROCS; i++) {
      const p = (await startChild('fanout-subscribers')).child;
      procs.push(p);
      stops.push(() => p.stop());
    }

    // commy's writer.
    const client = await Client.initialize(commy.url, BENCH_TENANT, AuthCredentials.apiKey(BENCH_KEY), { mode: 'remote', reconnect: false });
    stops.push(() => client.close());
    await client.stopFileMonitoring();
    const vf = await client.getVirtualServiceFile(BENCH_TENANT, SERVICE);
    await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
    const h = vf.handle('x', VariableType.U64);
    const stampFrame = Buffer.alloc(8);
    const wsSend = (stamp: bigint) => {
      stampFrame.writeBigUInt64LE(stamp);
      peer!.pub.send(stampFrame, { binary: true });
    };

    let connected = 0;
    /** A saturated peer's backlog is dropped: subscribers cut off, server killed, both started afresh. */
    const resetPeer = async () => {
      await Promise.all(procs.map((p) => p.request('dropWs')));
      peer!.pub.terminate();
      await peer!.child.kill();
      peer = await startWsPeer();
      await Promise.all(procs.map((p) => p.request('connect', { wsUrl: peer!.url, count: connected / PROCS }, 120_000)));
    };

    /** One round of one kind: paced writes for `ms`, a final value, then every subscriber's report. */
    const round = async (kind: 'commy' | 'ws', ms: number, into: Tally | undefined) => {
      const server = kind === 'commy' ? commy.child : peer!.child;
      await Promise.all(procs.map((p) => p.request('start', { kind })));
      const cpu0 = procCpuSeconds(server.pid);
      const acks: Promise<void>[] = [];
      const t0 = performance.now();
      const write = () => {
        const stamp = process.hrtime.bigint();
        if (kind === 'ws') {
          wsSend(stamp);
          return;
        }
        h.set(stamp);
        acks.push(
          vf.flush().then(
            () => void into?.acks.add(usSince(stamp)),
            () => void (into && into.ackErrors++),
          ),
        );
      };
      const sent = await paced(RATE, ms, write);
      const seconds = (performance.now() - t0) / 1000;
      const final = process.hrtime.bigint();
      if (kind === 'ws') wsSend(final);
      else {
        h.set(final);
        acks.push(vf.flush().catch(() => void (into && into.ackErrors++)));
      }
      const finishing = Promise.all(procs.map((p) => p.request<Finish>('finish', { kind, final: String(final), timeoutMs: DRAIN_MS }, DRAIN_MS + 60_000)));
      const settled = await Promise.race([finishing.then(() => true), sleep(DRAIN_MS + 250).then(() => false)]);
      const cpu1 = procCpuSeconds(server.pid);
      // A saturated peer floods its subscribers' processes: stop it, so that they can answer (it is restarted below).
      if (!settled && kind === 'ws') await peer!.child.kill();
      const reports = await finishing;
      await Promise.all(acks);
      let lastAt = 0n;
      let atFinal = 0;
      let total = 0;
      for (const r of reports) {
        into?.latency.merge(r.hist);
        if (into) into.delivered += r.delivered;
        atFinal += r.atFinal;
        total += r.total;
        if (BigInt(r.lastAt) > lastAt) lastAt = BigInt(r.lastAt);
      }
      if (kind === 'ws' && atFinal < total) {
        await resetPeer();
        if (into) into.resets++;
      }
      if (into === undefined) return;
      into.cpu.push(cpu1 - cpu0);
      into.atFinal.push(atFinal);
      into.total = total;
      into.drainMs.push(atFinal === total ? Number(lastAt - final) / 1e6 : NaN);
      into.sent += sent;
      into.seconds += seconds;
    };

    header('Fan-out: 1 writer × 1,000 updates/s of one variable to remote subscribers', [
      `Subscribers spread over ${PROCS} processes; per subscriber count: ${WARMUP_MS / 1000} s of warm-up of each, then ${ROUNDS} interleaved rounds of ${ROUND_MS / 1000} s of each.`,
      'Delivery latency: subscriber receive time − writer stamp, over every value delivered (commy conflates: a subscriber gets the latest value, not every one).',
    ]);

    for (const count of COUNTS) {
      const tConnect = performance.now();
      const each = (count - connected) / PROCS;
      await Promise.all(procs.map((p) => p.request('connect', { commyUrl: commy.url, wsUrl: peer!.url, count: each, service: SERVICE }, 300_000)));
      const added = count - connected;
      connected = count;
      const connectS = (performance.now() - tConnect) / 1000;
      await round('commy', WARMUP_MS, undefined);
      await round('ws', WARMUP_MS, undefined);
      const t = { commy: tally(), ws: tally() };
      await interleave(ROUNDS, { commy: () => round('commy', ROUND_MS, t.commy), ws: () => round('ws', ROUND_MS, t.ws) });

      const big = count >= 1000;
      const toMs = (r: Row): Row => ({ ...r, ours: r.ours === undefined ? undefined : r.ours / 1000, theirs: r.theirs === undefined ? undefined : r.theirs / 1000, unit: 'ms' });
      const rows: Row[] = percentileRows('delivery latency', t.commy.latency, 'raw `ws` broadcast', t.ws.latency, 'µs', big ? { p99: { text: '≤ 5 ms', pass: (o) => o <= 5000 } } : {}).map(toMs);
      // CPU per second of the round, the wait for the last delivery included.
      const cpuOurs = t.commy.cpu.reduce((a, b) => a + b, 0) / ROUNDS;
      const cpuTheirs = t.ws.cpu.reduce((a, b) => a + b, 0) / ROUNDS;
      rows.push({ figure: `server CPU per round (${ROUND_MS / 1000} s of writes + delivery)`, ours: cpuOurs, peer: 'raw `ws` broadcast', theirs: cpuTheirs, unit: 's', target: big ? '< raw ws' : '', pass: big ? cpuOurs < cpuTheirs : undefined });
      const worstAtFinal = (x: Tally) => Math.min(...x.atFinal);
      rows.push({
        figure: 'subscribers on the final value (worst round)',
        ours: worstAtFinal(t.commy),
        peer: 'raw `ws` broadcast',
        theirs: worstAtFinal(t.ws),
        unit: `of ${count.toLocaleString('en-US')}`,
        target: big ? 'all' : '',
        pass: big ? worstAtFinal(t.commy) === count : undefined,
        higherIsBetter: true,
      });
      for (const [label, q] of [['p50', 50], ['p99', 99]] as const) {
        const o = t.commy.acks.p(q) / 1000;
        rows.push({ figure: `writer's write → ack during the fan-out, ${label}`, ours: o, peer: '', unit: 'ms', target: big && q === 99 ? '≤ 10 ms' : '', pass: big && q === 99 ? atMost(o, 10) : undefined });
      }
      const worstDrain = (x: Tally) => (x.drainMs.some(Number.isNaN) ? NaN : Math.max(...x.drainMs));
      rows.push({ figure: 'last write → every subscriber has it (worst round)', ours: worstDrain(t.commy), peer: 'raw `ws` broadcast', theirs: worstDrain(t.ws), unit: 'ms' });
      const perSub = (x: Tally) => x.delivered / Math.max(1, x.total) / x.seconds;
      const drains = (x: Tally) => x.drainMs.map((d) => (Number.isNaN(d) ? `not within ${DRAIN_MS / 1000} s` : `${fmt(d)} ms`)).join(', ');
      printTable(`${count.toLocaleString('en-US')} subscribers × ${RATE.toLocaleString('en-US')} updates/s`, rows, [
        `connecting ${added} more subscribers of each kind took ${fmt(connectS)} s.`,
        `writes: commy ${fmt(t.commy.sent / t.commy.seconds)}/s (acks: ${t.commy.acks.count}, failed: ${t.commy.ackErrors}), ws ${fmt(t.ws.sent / t.ws.seconds)}/s; values received per subscriber per second: commy ${fmt(perSub(t.commy))} (conflated), ws ${fmt(perSub(t.ws))}.`,
        `server CPU per round: commy ${t.commy.cpu.map((x) => fmt(x)).join(', ')} s; ws ${t.ws.cpu.map((x) => fmt(x)).join(', ')} s. Subscribers on the final value per round: commy ${t.commy.atFinal.join(', ')}; ws ${t.ws.atFinal.join(', ')}.`,
        `last write → every subscriber has it, per round: commy ${drains(t.commy)}; ws ${drains(t.ws)}.`,
        ...(t.ws.resets > 0 ? [`the ws peer was saturated in ${t.ws.resets} of ${ROUNDS} rounds: its undelivered backlog was dropped (server and subscribers restarted) before the next round; its latencies cover what it delivered by then.`] : []),
      ]);
    }
  } finally {
    for (const stop of stops.reverse()) {
      try {
        await stop();
      } catch {
        /* best effort */
      }
    }
  }
});
