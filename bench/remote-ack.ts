/**
 * `npm run bench:remote-ack`: a remote write → its acknowledgement over loopback: `h.set(v); await vf.flush()`
 * in a Client with mode 'remote', against a commy server in its own process (bench/commy-server.ts: audit log
 * off, rate limit raised). Peers, each in its own process too: a bare `ws` echo server (a 40-byte binary
 * frame, about the size of commy's report) and Redis `SET` (ioredis). The old API (`client.writeVariable`,
 * `client.readVariable`) and Redis `GET` are shown beside them without targets.
 *
 * Sequential round trips (the next sent when the previous one is answered). Warm-up: 5,000 of each; then 5
 * interleaved rounds of 3,000 of each.
 */
import { WebSocket } from 'ws';
import { AuthCredentials, Client, VariableMetadata, VariableType } from '../src/index.js';
import { BENCH_KEY, BENCH_TENANT, header, interleave, main, percentileRows, printTable, Samples, startChild, startCommyServer, timeEach, type Row } from './harness.js';
import { startRedis } from './redis-server.js';

const ROUNDS = 5;
const PER_ROUND = 3000;
const WARMUP = 5000;

main(async () => {
  const stops: Array<() => unknown> = [];
  try {
    const commy = await startCommyServer();
    stops.push(() => commy.stop());
    const echo = await startChild<{ url: string }>('ws-server', ['echo']);
    stops.push(() => echo.child.stop());
    const redis = await startRedis();
    if (redis) stops.push(() => redis.stop());

    const client = await Client.initialize(commy.url, BENCH_TENANT, AuthCredentials.apiKey(BENCH_KEY), { mode: 'remote', reconnect: false });
    stops.push(() => client.close());
    await client.stopFileMonitoring();
    const vf = await client.getVirtualServiceFile(BENCH_TENANT, 'ack');
    await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
    const h = vf.handle('x', VariableType.U64);
    const bytes = new Uint8Array(8);

    const ws = new WebSocket(echo.ready.url, { perMessageDeflate: false });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    stops.push(() => ws.close());
    const frame = new Uint8Array(40);
    let echoed: (() => void) | undefined;
    ws.on('message', () => {
      const e = echoed;
      echoed = undefined;
      e?.();
    });

    let r: import('ioredis').Redis | undefined;
    if (redis) {
      const { Redis } = await import('ioredis');
      r = new Redis({ port: redis.port, host: '127.0.0.1' });
      await r.ping();
      stops.push(() => r?.disconnect());
    }

    const ops: Record<string, { fn: (i: number) => Promise<unknown>; samples: Samples }> = {
      flush: { fn: (i) => { h.set(BigInt(i)); return vf.flush(); }, samples: new Samples() },
      write: { fn: (i) => { bytes[0] = i & 0xff; return client.writeVariable(BENCH_TENANT, 'ack', 'x', bytes); }, samples: new Samples() },
      read: { fn: () => client.readVariable(BENCH_TENANT, 'ack', 'x'), samples: new Samples() },
      echo: { fn: () => new Promise<void>((resolve) => { echoed = resolve; ws.send(frame); }), samples: new Samples() },
    };
    if (r) {
      const redisClient = r;
      ops.set = { fn: (i) => redisClient.set('x', String(i)), samples: new Samples() };
      ops.get = { fn: () => redisClient.get('x'), samples: new Samples() };
    }

    header('Remote write → acknowledgement over loopback', [
      `Sequential round trips; ${WARMUP.toLocaleString('en-US')} of each to warm up, then ${ROUNDS} interleaved rounds × ${PER_ROUND.toLocaleString('en-US')} of each. Every server in its own process.`,
    ]);
    for (const op of Object.values(ops)) await timeEach(WARMUP, op.fn, new Samples());
    await interleave(ROUNDS, Object.fromEntries(Object.entries(ops).map(([k, op]) => [k, () => timeEach(PER_ROUND, op.fn, op.samples)])));

    const redisSet = r ? 'Redis SET (ioredis)' : 'Redis (redis-server not installed)';
    const redisGet = r ? 'Redis GET (ioredis)' : 'Redis (redis-server not installed)';
    const orNone = (k: string) => ops[k]?.samples;
    const rows: Row[] = [
      ...percentileRows('`set()` + `flush()` → ack', ops.flush!.samples, 'bare `ws` echo, 40 B', ops.echo!.samples, 'µs', {
        p50: { text: '≤ 1.3× ws echo p50', pass: (o, t) => (t === undefined ? undefined : o <= 1.3 * t) },
      }, false),
      ...percentileRows('`set()` + `flush()` → ack', ops.flush!.samples, redisSet, orNone('set'), 'µs', {
        p99: { text: '≤ Redis SET p99', pass: (o, t) => (t === undefined ? undefined : o <= t) },
      }),
      ...percentileRows('(old API) `client.writeVariable()` → ack', ops.write!.samples, redisSet, orNone('set'), 'µs', {}, false),
      ...percentileRows('(old API) `client.readVariable()`', ops.read!.samples, redisGet, orNone('get'), 'µs', {}, false),
    ];
    printTable('Remote write → acknowledgement, loopback', rows, [
      `samples per contender: ${Object.entries(ops).map(([k, op]) => `${k} ${op.samples.count}`).join(', ')}.`,
      'commy server: audit log off, message rate limit raised; Redis: no persistence (--save "", --appendonly no).',
    ]);
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
