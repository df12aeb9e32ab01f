/**
 * `npm run bench:durability`: what each durability mode costs a remote write (set() + flush() → ack, loopback),
 * beside Redis's append-only file with the matching fsync policy, in the same interleaved rounds. Every server in
 * its own process, on this machine's disk.
 *
 *   commy 'ack'      (an fdatasync of the file before each acknowledgement; concurrent writes share one)
 *     vs Redis appendfsync always
 *   commy 'periodic' (the default: every 1 s, off the event loop)  vs Redis appendfsync everysec
 *   commy 'none'     (the kernel's writeback)                        vs Redis without persistence
 */
import { AuthCredentials, Client, VariableMetadata, VariableType } from '../src/index.js';
import { BENCH_KEY, BENCH_TENANT, header, interleave, main, percentileRows, printTable, Samples, startCommyServer, timeEach, type Row } from './harness.js';
import { startRedis } from './redis-server.js';

const WARMUP = 2000;
const ROUNDS = 5;
const PER_ROUND = 1000;
const MODES = ['ack', 'periodic', 'none'] as const;

main(async () => {
  const stops: Array<() => unknown> = [];
  try {
    const ops: Record<string, { fn: (i: number) => Promise<unknown>; samples: Samples }> = {};
    for (const mode of MODES) {
      const server = await startCommyServer({ durability: mode });
      stops.push(() => server.stop());
      const client = await Client.initialize(server.url, BENCH_TENANT, AuthCredentials.apiKey(BENCH_KEY), { mode: 'remote', reconnect: false });
      stops.push(() => client.close());
      await client.stopFileMonitoring();
      const vf = await client.getVirtualServiceFile(BENCH_TENANT, 'durable');
      await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
      const h = vf.handle('x', VariableType.U64);
      ops[mode] = { fn: (i) => { h.set(BigInt(i)); return vf.flush(); }, samples: new Samples() };
    }
    const redisPeers = { always: 'Redis SET, appendfsync always', everysec: 'Redis SET, appendfsync everysec', off: 'Redis SET, no persistence' } as const;
    for (const policy of ['always', 'everysec', 'off'] as const) {
      const redis = await startRedis(policy === 'off' ? undefined : policy);
      if (!redis) continue;
      stops.push(() => redis.stop());
      const { Redis } = await import('ioredis');
      const r = new Redis({ port: redis.port, host: '127.0.0.1' });
      await r.ping();
      stops.push(() => r.disconnect());
      ops[policy] = { fn: (i) => r.set('x', String(i)), samples: new Samples() };
    }

    header('Durability: what each mode costs a remote write', [
      `Sequential set() + flush() → ack round trips; ${WARMUP.toLocaleString('en-US')} of each to warm up, then ${ROUNDS} interleaved rounds × ${PER_ROUND.toLocaleString('en-US')} of each. Every server in its own process, on this machine's disk.`,
    ]);
    for (const op of Object.values(ops)) await timeEach(WARMUP, op.fn, new Samples());
    await interleave(ROUNDS, Object.fromEntries(Object.entries(ops).map(([k, op]) => [k, () => timeEach(PER_ROUND, op.fn, op.samples)])));

    const peer = (k: keyof typeof redisPeers) => (ops[k] ? redisPeers[k] : 'Redis (redis-server not installed)');
    const rows: Row[] = [
      ...percentileRows("durability 'ack', set() + flush() → ack", ops.ack!.samples, peer('always'), ops.always?.samples, 'µs', {}, false),
      ...percentileRows("durability 'periodic' (default), set() + flush() → ack", ops.periodic!.samples, peer('everysec'), ops.everysec?.samples, 'µs', {}, false),
      ...percentileRows("durability 'none', set() + flush() → ack", ops.none!.samples, peer('off'), ops.off?.samples, 'µs', {}, false),
    ];
    const p50 = (k: string) => ops[k]!.samples.p(50);
    printTable('Durability modes, remote write → acknowledgement', rows, [
      `what a sync adds per write ('ack' − 'none', p50): ${(p50('ack') - p50('none')).toFixed(0)} µs; 'periodic' − 'none': ${(p50('periodic') - p50('none')).toFixed(0)} µs.`,
      `samples per contender: ${Object.entries(ops).map(([k, op]) => `${k} ${op.samples.count}`).join(', ')}.`,
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
