/**
 * `npm run bench:local-change`: a change written by one local process, seen by a callback in another.
 *
 * This process writes `ping` (a U64: its process.hrtime.bigint(), CLOCK_MONOTONIC) into a service file; the
 * partner process (local-change-partner.ts) maps the same file, and its change callback records
 * `its clock − the stamp` (one way) and echoes the value into `pong`; this process's own callback sees `pong`
 * (so the half round trip is known too) and, after a 1 ms pause, writes the next ping. The pause makes it a
 * latency figure, not a throughput one: the reader is parked when each change comes.
 *
 * Peers, paced the same way and in the same interleaved rounds:
 *   - Redis pub/sub (ioredis, loopback): publish on `ping`, the partner republishes on `pong`; half round trip.
 *   - The machine's floor: bench/pipe-wake.c, compiled here with `cc -O2`: one process wakes the other's
 *     epoll_wait with one pipe byte, and back; half round trip.
 *   - Node's floor (no target; context for the C one): 8 bytes over a Unix socket between two Node processes,
 *     a 'data' event on each side (socket-pingpong-partner.ts); half round trip, and one way.
 * commy is measured twice: with a callback on the file's watcher (FileAccessor.watch from commy/internal,
 * what vf.changes() is built on) and with the public `for await (const ev of vf.changes())`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileFromAccessor, nodePlatform, type FileAccessor } from '../src/internal.js';
import { VariableMetadata, VariableType } from '../src/index.js';
import { compileC, header, interleave, main, percentileRows, printTable, run, Samples, sleep, startChild, type Row } from './harness.js';
import { startRedis } from './redis-server.js';

const ROUNDS = 5;
const PER_ROUND = 1500;
const WARMUP = 5000;
const PACE_MS = 1;

main(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'commy-bench-change-'));
  const stops: Array<() => unknown> = [];
  try {
    // ---- commy
    const path = join(dir, 'change.mem');
    const accessor: FileAccessor = nodePlatform.openFile!(path, { create: true });
    const vf = fileFromAccessor(accessor);
    await vf.registerVariable(new VariableMetadata('ping', -1, 8, VariableType.U64));
    await vf.registerVariable(new VariableMetadata('pong', -1, 8, VariableType.U64));
    const ping = vf.handle('ping', VariableType.U64);
    const pong = vf.handle('pong', VariableType.U64);
    let expected = -1n;
    let answered: (() => void) | undefined;
    const off = accessor.watch((ev) => {
      if (answered !== undefined && ev.changedVariables.includes('pong') && pong.get() === expected) {
        const a = answered;
        answered = undefined;
        a();
      }
    });
    stops.push(async () => {
      off();
      await vf.close();
    });
    const partner = (await startChild('local-change-partner', [path])).child;
    stops.push(() => partner.stop());

    /** One ping → pong; resolves with the half round trip (µs). */
    const commyPing = async (): Promise<number> => {
      const t0 = process.hrtime.bigint();
      expected = t0;
      const got = new Promise<void>((r) => (answered = r));
      ping.set(t0);
      await got;
      return Number(process.hrtime.bigint() - t0) / 2000;
    };

    // ---- Redis
    const redis = await startRedis();
    let redisPing: (() => Promise<number>) | undefined;
    let redisPartner: Awaited<ReturnType<typeof startChild>>['child'] | undefined;
    if (redis) {
      stops.push(() => redis.stop());
      const { Redis } = await import('ioredis');
      const sub = new Redis({ port: redis.port, host: '127.0.0.1' });
      const pub = new Redis({ port: redis.port, host: '127.0.0.1' });
      stops.push(() => {
        sub.disconnect();
        pub.disconnect();
      });
      await sub.subscribe('pong');
      await pub.ping();
      const rp = (await startChild('redis-pingpong-partner', [redis.port])).child;
      redisPartner = rp;
      stops.push(() => rp.stop());
      let want = '';
      let heard: (() => void) | undefined;
      sub.on('message', (_c: string, m: string) => {
        if (heard !== undefined && m === want) {
          const h = heard;
          heard = undefined;
          h();
        }
      });
      redisPing = async () => {
        const t0 = process.hrtime.bigint();
        want = String(t0);
        const got = new Promise<void>((r) => (heard = r));
        void pub.publish('ping', want);
        await got;
        return Number(process.hrtime.bigint() - t0) / 2000;
      };
    }

    // ---- Node's floor: a Unix socket between two Node processes
    const sockPath = join(dir, 'pingpong.sock');
    const server = createServer();
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    await new Promise<void>((resolve) => server.listen(sockPath, resolve));
    const nodePartner = (await startChild('socket-pingpong-partner', [sockPath])).child;
    stops.push(() => nodePartner.stop());
    const sock = await accepted;
    stops.push(() => {
      sock.destroy();
      server.close();
    });
    let echoed: ((stamp: bigint) => void) | undefined;
    sock.on('data', (chunk: Buffer) => echoed?.(chunk.readBigUInt64LE(chunk.length - 8)));
    const nodePing = async (): Promise<number> => {
      const t0 = process.hrtime.bigint();
      const stamp = Buffer.allocUnsafe(8);
      stamp.writeBigUInt64LE(t0);
      const got = new Promise<void>((r) => (echoed = (v) => v === t0 && r()));
      sock.write(stamp);
      await got;
      return Number(process.hrtime.bigint() - t0) / 2000;
    };

    // ---- the C floor
    const c = await compileC(fileURLToPath(new URL('../../bench/pipe-wake.c', import.meta.url)), 'pipe-wake');
    if ('bin' in c) stops.push(c.cleanup);

    header('Change seen by another local process', [
      `${ROUNDS} interleaved rounds × ${PER_ROUND.toLocaleString('en-US')} changes per contender, one every ~${PACE_MS} ms (the next written ${PACE_MS} ms after the previous one was seen), after ${WARMUP.toLocaleString('en-US')} unpaced round trips of warm-up each.`,
      'One way: the receiver\'s CLOCK_MONOTONIC minus the writer\'s stamp. Half round trip: the writer\'s own clock, (answer seen − written) / 2.',
    ]);

    const s = {
      cbOne: new Samples(), cbHalf: new Samples(), itOne: new Samples(), itHalf: new Samples(),
      redisOne: new Samples(), redisHalf: new Samples(), cOne: new Samples(), cHalf: new Samples(),
      nodeOne: new Samples(), nodeHalf: new Samples(),
    };
    const loop = async (n: number, once: () => Promise<number>, into: Samples | undefined, pace: boolean) => {
      for (let i = 0; i < n; i++) {
        if (pace) await sleep(PACE_MS);
        const half = await once();
        into?.add(half);
      }
    };
    const collect = async <T>(child: { request<U>(cmd: string): Promise<U> }, into: Samples | undefined) => {
      const xs = await child.request<number[]>('collect');
      into?.push(xs);
    };
    let mode = '';
    const commyRound = (m: 'callback' | 'iterator', one: Samples | undefined, half: Samples | undefined, n: number, pace: boolean) => async () => {
      if (mode !== m) {
        await partner.request('mode', { mode: m });
        mode = m;
        await loop(200, commyPing, undefined, false); // settle after the switch
      }
      await collect(partner, undefined);
      await loop(n, commyPing, half, pace);
      await collect(partner, one);
    };
    const redisRound = (one: Samples | undefined, half: Samples | undefined, n: number, pace: boolean) => async () => {
      if (!redisPing || !redisPartner) return;
      await collect(redisPartner, undefined);
      await loop(n, redisPing, half, pace);
      await collect(redisPartner, one);
    };
    const nodeRound = (one: Samples | undefined, half: Samples | undefined, n: number, pace: boolean) => async () => {
      await collect(nodePartner, undefined);
      await loop(n, nodePing, half, pace);
      await collect(nodePartner, one);
    };
    const cRound = async () => {
      if (!('bin' in c)) return;
      const out = await run(c.bin, [String(PER_ROUND), '500', String(PACE_MS * 1000)]);
      for (const line of out.trim().split('\n')) {
        const [h, o] = line.split(' ').map(Number);
        s.cHalf.add(h! / 1000);
        s.cOne.add(o! / 1000);
      }
    };

    // Warm-up: unpaced round trips (the JIT and the connections), then a few paced ones.
    await commyRound('callback', undefined, undefined, WARMUP, false)();
    await commyRound('iterator', undefined, undefined, WARMUP, false)();
    await redisRound(undefined, undefined, WARMUP, false)();
    await nodeRound(undefined, undefined, WARMUP, false)();
    for (const m of ['callback', 'iterator'] as const) await commyRound(m, undefined, undefined, 200, true)();
    await redisRound(undefined, undefined, 200, true)();
    await nodeRound(undefined, undefined, 200, true)();

    await interleave(ROUNDS, {
      callback: commyRound('callback', s.cbOne, s.cbHalf, PER_ROUND, true),
      iterator: commyRound('iterator', s.itOne, s.itHalf, PER_ROUND, true),
      redis: redisRound(s.redisOne, s.redisHalf, PER_ROUND, true),
      node: nodeRound(s.nodeOne, s.nodeHalf, PER_ROUND, true),
      floor: cRound,
    });

    const redisName = redis ? 'Redis pub/sub ping-pong ÷ 2' : 'Redis (redis-server not installed)';
    const floorName = 'bin' in c ? 'C floor: pipe byte → epoll_wait, ping-pong ÷ 2' : `C floor (skipped: ${c.skipped})`;
    const vsRedis = {
      p50: { text: '≤ ⅓ Redis p50', pass: (o: number, t: number | undefined) => (t === undefined ? undefined : o <= t / 3) },
      p99: { text: '≤ Redis p99', pass: (o: number, t: number | undefined) => (t === undefined ? undefined : o <= t) },
    };
    const vsFloor = { p50: { text: '≤ 3× floor p50', pass: (o: number, t: number | undefined) => (t === undefined ? undefined : o <= 3 * t) } };
    const cOr = (x: Samples) => (x.count > 0 ? x : undefined);
    const rows: Row[] = [
      ...percentileRows('callback (watcher), one way', s.cbOne, redisName, cOr(s.redisHalf), 'µs', vsRedis),
      ...percentileRows('callback (watcher), one way', s.cbOne, floorName, cOr(s.cHalf), 'µs', vsFloor, false),
      ...percentileRows('`for await (vf.changes())`, one way', s.itOne, redisName, cOr(s.redisHalf), 'µs', vsRedis),
      ...percentileRows('`for await (vf.changes())`, one way', s.itOne, floorName, cOr(s.cHalf), 'µs', vsFloor, false),
    ];
    const notes = [
      `samples: commy callback ${s.cbOne.count}, commy changes() ${s.itOne.count}, Redis ${s.redisHalf.count}, C floor ${s.cHalf.count}, Node floor ${s.nodeHalf.count}.`,
      'The spec compares commy\'s one-way latency with the peers\' half round trips; the table below compares like with like.',
    ];
    printTable('Change seen by a callback in another process (one way; peers: half round trip)', rows, notes);
    const same: Row[] = [
      ...percentileRows('callback, half round trip', s.cbHalf, redisName, cOr(s.redisHalf), 'µs', {}, false),
      ...percentileRows('callback, half round trip', s.cbHalf, floorName, cOr(s.cHalf), 'µs', {}, false),
      ...percentileRows('callback, one way', s.cbOne, 'Redis pub/sub, one way', cOr(s.redisOne), 'µs', {}, false),
      ...percentileRows('callback, one way', s.cbOne, 'C floor, one way', cOr(s.cOne), 'µs', {}, false),
      ...percentileRows('callback, half round trip', s.cbHalf, "Node floor: Unix socket, 'data' event, ping-pong ÷ 2", s.nodeHalf, 'µs', {}, false),
      ...percentileRows('callback, one way', s.cbOne, 'Node floor, one way', s.nodeOne, 'µs', {}, false),
    ];
    printTable('Like with like: half round trips, and one-way figures, of all four', same, [
      'Node floor: what any two Node processes pay to wake each other (a socket, libuv\'s poll, a JS callback); it has no target.',
    ]);
  } finally {
    for (const stop of stops.reverse()) {
      try {
        await stop();
      } catch {
        /* best effort */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
});
