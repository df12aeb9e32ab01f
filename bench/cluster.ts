/**
 * `npm run bench:cluster`: cross-node delivery in cluster mode (docs/cluster.md) at a steady 1,000 writes/s of one
 * U64, beside the same delivery on one node of the cluster, on a single server, and Redis pub/sub.
 *
 *   cross-node: a writer on node A; subscribers on nodes B and C (remote Clients). A write goes A → Redis (the
 *               append script) → every node's reader → B's and C's files → their subscribers.
 *   same-node:  writer and subscriber both on A: what the Redis hop costs a node's own subscribers (A answers
 *               and broadcasts only once its own apply of the entry read back from the stream is done).
 *   single:     a server without `cluster`, writer and subscriber on it.
 *   peer:       Redis pub/sub on the cluster's redis-server: PUBLISH on one ioredis connection, one subscriber
 *               connection (the floor of one Redis hop).
 *
 * Every server is bench/commy-server.ts in its own process (audit log off, rate limit raised; the nodes with
 * `cluster: { redis, nodeId }`), redis-server in its own; the writers and subscribers are in this process, so a
 * value's send time and its arrival are read on one clock (performance.now()). Each contender has its own
 * service (or channel) and writer. A value is a sequence number; the writer records when it wrote each one.
 *
 * The writer does what a user streaming updates does: `h.set(seq)` then `vf.flush()`, not awaited (the flush
 * promise only times the write → ack). A write made while the previous report is in flight waits for its
 * acknowledgement and goes with the next one, latest value only (docs/client.md, "Remote mode: how a write
 * travels"): a subscriber gets fewer values than were written, always the latest, and a value's latency includes
 * that wait. Delivery latency = arrival at a subscriber (its `vf.changes()` iterator, as in bench/fanout.ts) −
 * the time the writer wrote that value, over every value a subscriber received.
 *
 * Warm-up: 3,000 writes of each contender; then 4 interleaved rounds × 2,000 writes of each. After each round's
 * last write, every subscriber of the contender must hold that value within 3 s (the correctness check, and no
 * backlog spills into the next round). Argument `--aof always|everysec|no`: the cluster's Redis append-only
 * file (default everysec, the counterpart of a commy server's default durability 'periodic').
 */
import { createRequire } from 'node:module';
import { Redis } from 'ioredis';
import { AuthCredentials, Client, VariableMetadata, VariableType, type VirtualVariableFile } from '../src/index.js';
import {
  atMost, BENCH_KEY, BENCH_TENANT, fmt, header, interleave, main, paced, percentileRows, printTable, procCpuSeconds, Samples, sleep, startCommyServer, type Row,
} from './harness.js';
import { startRedis } from './redis-server.js';

const RATE = 1000;
const WARMUP = 3000;
const ROUNDS = 4;
const PER_ROUND = 2000;
/** How long after a round's last write every subscriber must hold it. */
const DRAIN_MS = 3000;
const TARGET_P99_MS = 5;
const VARIABLE = 'x';
const CHANNEL = 'commy-bench-cluster';

type Kind = 'cross' | 'same' | 'single' | 'pubsub';

interface Subscriber {
  readonly where: string;
  last: number;
  lastAt: number;
  /** Values older than one already received (never expected: every node applies its stream in order). */
  backwards: number;
}

interface Contender {
  readonly label: string;
  readonly subs: Subscriber[];
  /** Sends value `seq`; what it returns settles on the writer's acknowledgement. */
  write: (seq: number) => Promise<unknown>;
  readonly latency: Samples;
  readonly acks: Samples;
  ackErrors: number;
  /** Per measured round: how many subscribers held its last value in time. */
  readonly atFinal: number[];
  /** Per measured round: last write → every subscriber has it (ms; NaN when one did not get it in time). */
  readonly drainMs: number[];
  /** Values the subscribers received in measured rounds. */
  delivered: number;
  pending: Promise<unknown>[];
  /** The server processes a write goes through, and the CPU seconds each used in measured rounds. */
  readonly procs: { name: string; pid: number; cpu: number }[];
}

const aof = aofArgument();
/** When each sequence number was written (performance.now(), ms). */
const sentAt = new Float64Array(4 * (WARMUP + ROUNDS * PER_ROUND) + 16);
let nextSeq = 1;
let recording: Contender | undefined;

function contender(label: string): Contender {
  return { label, subs: [], write: () => Promise.resolve(), latency: new Samples(), acks: new Samples(), ackErrors: 0, atFinal: [], drainMs: [], delivered: 0, pending: [], procs: [] };
}

function receive(c: Contender, sub: Subscriber, v: number): void {
  const now = performance.now();
  if (v === sub.last) return;
  if (v < sub.last) sub.backwards++;
  sub.last = v;
  sub.lastAt = now;
  if (recording === c) {
    c.latency.add(now - sentAt[v]!);
    c.delivered++;
  }
}

function aofArgument(): 'always' | 'everysec' | 'no' {
  const i = process.argv.indexOf('--aof');
  const v = i >= 0 ? process.argv[i + 1] : 'everysec';
  if (v !== 'always' && v !== 'everysec' && v !== 'no') throw new Error(`--aof: always, everysec or no (got ${v})`);
  return v;
}

/** Are socket.io and its Redis adapter (the usual way to spread a WebSocket broadcast over several servers) installed here? */
function socketIoInstalled(): boolean {
  const require = createRequire(import.meta.url);
  try {
    require.resolve('socket.io');
    require.resolve('@socket.io/redis-adapter');
    return true;
  } catch {
    return false;
  }
}

async function until(what: string, ok: () => boolean, ms = 30_000): Promise<void> {
  const end = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > end) throw new Error(`${what}: not within ${ms / 1000} s`);
    await sleep(10);
  }
}

main(async () => {
  const stops: Array<() => unknown> = [];
  const remote = async (url: string): Promise<Client> => {
    const client = await Client.initialize(url, BENCH_TENANT, AuthCredentials.apiKey(BENCH_KEY), { mode: 'remote', reconnect: false });
    stops.push(() => client.close());
    await client.stopFileMonitoring(); // the per-client queue of waitForFileChange(): nobody reads it here
    return client;
  };
  /** A writer of `service` (it creates the service and registers the variable): `write` sets, then flushes. */
  const writer = async (c: Contender, url: string, service: string): Promise<void> => {
    const vf = await (await remote(url)).getVirtualServiceFile(BENCH_TENANT, service);
    await vf.registerVariable(new VariableMetadata(VARIABLE, -1, 8, VariableType.U64));
    const h = vf.handle(VARIABLE, VariableType.U64);
    c.write = (seq) => {
      h.set(BigInt(seq));
      return vf.flush();
    };
  };
  /** A subscriber of `service` (a remote Client subscribed to it), once the variable has reached its node. */
  const subscriber = async (c: Contender, url: string, service: string, where: string): Promise<void> => {
    const vf: VirtualVariableFile = await (await remote(url)).getVirtualServiceFile(BENCH_TENANT, service);
    await until(`${VARIABLE} of ${service} on ${where}`, () => vf.variables().some((m) => m.name === VARIABLE));
    const h = vf.handle(VARIABLE, VariableType.U64);
    const sub: Subscriber = { where, last: Number(h.get()), lastAt: 0, backwards: 0 };
    c.subs.push(sub);
    void (async () => {
      try {
        for await (const _ev of vf.changes()) receive(c, sub, Number(h.get()));
      } catch {
        /* closed */
      }
    })();
  };

  const cross = contender('cross-node: writer on A, subscribers on B and C');
  const same = contender('same node of the cluster: writer and subscriber on A');
  const single = contender('single server (no cluster)');
  const pubsub = contender('Redis pub/sub');
  try {
    const redis = await startRedis(aof === 'no' ? undefined : aof);
    if (redis) stops.push(() => redis.stop()); // stopped last (stops run in reverse): after the nodes
    const singleServer = await startCommyServer();
    stops.push(() => singleServer.stop());
    single.procs.push({ name: 'server', pid: singleServer.child.pid, cpu: 0 });
    await writer(single, singleServer.url, 'single');
    await subscriber(single, singleServer.url, 'single', 'the server');
    const contenders: Partial<Record<Kind, Contender>> = { single };

    if (redis) {
      const nodes: Record<string, string> = {};
      for (const id of ['a', 'b', 'c']) {
        const node = await startCommyServer({ cluster: { redis: redis.url, nodeId: id } });
        stops.push(() => node.stop());
        nodes[id] = node.url;
        for (const c of [cross, same]) c.procs.push({ name: id.toUpperCase(), pid: node.child.pid, cpu: 0 });
      }
      await writer(cross, nodes.a!, 'cross');
      await subscriber(cross, nodes.b!, 'cross', 'B');
      await subscriber(cross, nodes.c!, 'cross', 'C');
      await writer(same, nodes.a!, 'same');
      await subscriber(same, nodes.a!, 'same', 'A');

      const pub = new Redis({ host: '127.0.0.1', port: redis.port });
      const sub = new Redis({ host: '127.0.0.1', port: redis.port });
      stops.push(() => pub.disconnect(), () => sub.disconnect());
      await sub.subscribe(CHANNEL);
      const redisPid = Number(/process_id:(\d+)/.exec(await pub.info('server'))?.[1]);
      for (const c of [cross, same, pubsub]) c.procs.push({ name: 'Redis', pid: redisPid, cpu: 0 });
      const listener: Subscriber = { where: 'subscriber connection', last: 0, lastAt: 0, backwards: 0 };
      pubsub.subs.push(listener);
      sub.on('message', (_channel: string, message: string) => receive(pubsub, listener, Number(message)));
      pubsub.write = (seq) => pub.publish(CHANNEL, String(seq));
      Object.assign(contenders, { cross, same, pubsub });
    }

    /** `n` writes at RATE/s; then every subscriber must hold the last one. */
    const round = async (c: Contender, n: number, measured: boolean): Promise<void> => {
      recording = measured ? c : undefined;
      const cpu0 = c.procs.map((p) => procCpuSeconds(p.pid));
      let last = 0;
      await paced(RATE, (n * 1000) / RATE, () => {
        const seq = (last = nextSeq++);
        const t0 = (sentAt[seq] = performance.now());
        c.pending.push(
          c.write(seq).then(
            () => void (measured && c.acks.add(performance.now() - t0)),
            () => void c.ackErrors++,
          ),
        );
      });
      const end = performance.now() + DRAIN_MS;
      while (c.subs.some((s) => s.last !== last) && performance.now() < end) await sleep(1);
      recording = undefined;
      if (measured) c.procs.forEach((p, i) => (p.cpu += procCpuSeconds(p.pid) - cpu0[i]!));
      await Promise.all(c.pending);
      c.pending = [];
      if (!measured) return;
      const held = c.subs.filter((s) => s.last === last);
      c.atFinal.push(held.length);
      c.drainMs.push(held.length === c.subs.length ? Math.max(...held.map((s) => s.lastAt)) - sentAt[last]! : NaN);
    };

    header('Cluster: cross-node delivery at 1,000 writes/s', [
      `One writer per contender, ${RATE.toLocaleString('en-US')} writes/s of one U64 (\`h.set(seq)\` + \`vf.flush()\`, not awaited; Redis: PUBLISH); ${WARMUP.toLocaleString('en-US')} writes of each to warm up, then ${ROUNDS} interleaved rounds × ${PER_ROUND.toLocaleString('en-US')} writes of each.`,
      'Delivery latency: arrival at a subscriber − the time the writer wrote that value (one process, one clock), over every value a subscriber received (commy conflates: latest value only).',
      `Every server in its own process: 3 cluster nodes (A, B, C) and a single server (bench/commy-server.ts), redis-server (append-only file: ${aof === 'no' ? 'none' : `appendfsync ${aof}`}); writers and subscribers in this process.`,
    ]);
    const list = Object.values(contenders);
    for (const c of list) await round(c, WARMUP, false);
    await interleave(ROUNDS, Object.fromEntries(Object.entries(contenders).map(([k, c]) => [k, () => round(c, PER_ROUND, true)])) as Record<Kind, () => Promise<void>>);

    const measured = (c: Contender | undefined) => (c === undefined || c.latency.count === 0 ? undefined : c.latency);
    const redisPeer = redis ? 'Redis pub/sub, 1 hop' : 'Redis pub/sub (redis-server not installed)';
    const rows: Row[] = [
      ...percentileRows('cross-node delivery (writer on A → subscribers on B, C)', measured(contenders.cross), 'single server (no cluster)', single.latency, 'ms', {
        p99: { text: `≤ ${TARGET_P99_MS} ms`, pass: (o) => atMost(o, TARGET_P99_MS) },
      }, false),
      ...percentileRows('cross-node delivery (writer on A → subscribers on B, C)', measured(contenders.cross), redisPeer, measured(contenders.pubsub), 'ms', {}, false),
      ...percentileRows('same-node delivery in the cluster (writer and subscriber on A)', measured(contenders.same), 'single server (no cluster)', single.latency, 'ms', {}, false),
      ...percentileRows('single server delivery', single.latency, redisPeer, measured(contenders.pubsub), 'ms', {}, false),
      ...percentileRows("cross-node writer's write → ack (node A)", contenders.cross?.acks, 'single server (no cluster)', single.acks, 'ms', {}, false),
    ];
    /** CPU ms per 1,000 writes, over the processes given (default all of the contender's). */
    const cpuPerK = (c: Contender | undefined, only?: string) =>
      c === undefined ? undefined : (c.procs.filter((p) => only === undefined || p.name === only).reduce((a, p) => a + p.cpu, 0) * 1e6) / (ROUNDS * PER_ROUND);
    rows.push(
      { figure: 'server CPU per 1,000 writes, cross-node (nodes A + B + C + Redis)', ours: cpuPerK(contenders.cross), peer: 'single server (no cluster)', theirs: cpuPerK(single), unit: 'ms' },
      { figure: 'server CPU per 1,000 writes, Redis alone, cross-node', ours: cpuPerK(contenders.cross, 'Redis'), peer: redisPeer, theirs: cpuPerK(contenders.pubsub), unit: 'ms' },
    );
    const commy = [contenders.cross, contenders.same, single].filter((c): c is Contender => c !== undefined);
    const subRounds = commy.reduce((n, c) => n + c.subs.length * ROUNDS, 0);
    const heldRounds = commy.reduce((n, c) => n + c.atFinal.reduce((a, b) => a + b, 0), 0);
    rows.push({
      figure: `commy subscribers on their round's last value within ${DRAIN_MS / 1000} s (all contenders, all rounds)`,
      ours: heldRounds,
      peer: '',
      unit: `of ${subRounds}`,
      target: 'all',
      pass: heldRounds === subRounds,
      higherIsBetter: true,
    });

    const perSub = (c: Contender) => (c.subs.length === 0 ? NaN : c.delivered / c.subs.length / ((ROUNDS * PER_ROUND) / RATE));
    const crossP99 = contenders.cross?.latency.p(99);
    const notes = [
      `target (issue 13): cross-node delivery p99 ≤ ${TARGET_P99_MS} ms on loopback: ${crossP99 === undefined || Number.isNaN(crossP99) ? 'not measured (no redis-server)' : crossP99 <= TARGET_P99_MS ? `met (${fmt(crossP99, 'ms')})` : `**not met** (${fmt(crossP99, 'ms')})`}.`,
      `samples (values received): ${list.map((c) => `${c.label} ${c.latency.count}`).join('; ')}.`,
      `values received per subscriber per second (of ${RATE.toLocaleString('en-US')} written; commy conflates): ${list.map((c) => `${c.label.split(':')[0]} ${fmt(perSub(c))}`).join(', ')}.`,
      `last write → every subscriber has it, per round (ms): ${list.map((c) => `${c.label.split(':')[0]} ${c.drainMs.map((d) => (Number.isNaN(d) ? 'not in time' : fmt(d))).join(', ')}`).join('; ')}.`,
      `subscribers on the round's last value, per round: ${list.map((c) => `${c.label.split(':')[0]} ${c.atFinal.join(', ')} of ${c.subs.length}`).join('; ')}; values received out of order: ${list.reduce((n, c) => n + c.subs.reduce((m, s) => m + s.backwards, 0), 0)}; writes refused or failed: ${list.reduce((n, c) => n + c.ackErrors, 0)}.`,
      `server CPU per 1,000 writes, per process (ms): ${list.map((c) => `${c.label.split(':')[0]} ${c.procs.map((p) => `${p.name} ${fmt(cpuPerK(c, p.name))}`).join(' + ')}`).join('; ')} (user + system from /proc, from a round's first write until every subscriber had its last).`,
      `write → ack, p50 / p99 (ms): ${list.map((c) => `${c.label.split(':')[0]} ${fmt(c.acks.p(50))} / ${fmt(c.acks.p(99))}`).join(', ')} (Redis: the PUBLISH reply).`,
      socketIoInstalled()
        ? 'socket.io + @socket.io/redis-adapter are installed, but this bench does not measure them.'
        : 'socket.io + @socket.io/redis-adapter (a broadcast spread over servers through Redis): not installed here (not dependencies of commy), so not measured.',
    ];
    if (!redis) notes.push('redis-server is not installed (sh scripts/install-redis.sh): only the single server was measured.');
    printTable('Cluster delivery at 1,000 writes/s, loopback', rows, notes);
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
