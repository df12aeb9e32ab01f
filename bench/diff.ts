/**
 * `npm run bench:diff`: the diff of a 1 MiB buffer against its shadow with 10 sparse changes (what a remote
 * flush and a local flush() of raw writes do), with each native implementation this CPU offers and with the JS
 * fallback of the browser build, beside memcmp (`Buffer.compare` on 4 KiB blocks, which only says whether
 * blocks differ, not where).
 *
 * A sample is one whole diff of 1 MiB (the JS fallback: one per sample too); throughput = 1 MiB / its time.
 * Warm-up: 300 ms of each; then 5 interleaved rounds of 200 ms of each.
 */
import { diffRangesJs } from '../src/core/byte-diff.js';
import { native } from '../src/native/addon.js';
import { atLeast, header, interleave, main, printTable, Samples, type Row } from './harness.js';

const SIZE = 1 << 20;
const ROUNDS = 5;
const ROUND_MS = 200;
const WARMUP_MS = 300;

let sink = 0;

main(async () => {
  const a = new Uint8Array(SIZE);
  const b = new Uint8Array(SIZE);
  for (let i = 0; i < 10; i++) b[Math.floor((i * SIZE) / 10) + 17] = 1;
  const bufA = Buffer.from(a.buffer);
  const bufB = Buffer.from(b.buffer);
  const impls = native.diffImpls();

  const ops: Record<string, { fn: () => number; samples: Samples }> = {
    memcmp: {
      fn: () => {
        let d = 0;
        for (let off = 0; off < SIZE; off += 4096) d += Buffer.compare(bufA.subarray(off, off + 4096), bufB.subarray(off, off + 4096)) !== 0 ? 1 : 0;
        return d;
      },
      samples: new Samples(),
    },
    js: { fn: () => diffRangesJs(a, b).length, samples: new Samples() },
  };
  for (const impl of impls) ops[impl] = { fn: () => native.diff(a, b, impl as never).length, samples: new Samples() };

  const sample = (op: { fn: () => number; samples: Samples }, ms: number, record: boolean) => {
    const end = performance.now() + ms;
    while (performance.now() < end) {
      const t0 = process.hrtime.bigint();
      sink += op.fn();
      const ns = Number(process.hrtime.bigint() - t0);
      if (record) op.samples.add(ns);
    }
  };
  header('Diff of 1 MiB against its shadow, 10 sparse changes', [
    `native implementations on this CPU: ${impls.join(', ')}. ${ROUNDS} interleaved rounds × ${ROUND_MS} ms of each after ${WARMUP_MS} ms of warm-up each.`,
  ]);
  for (const op of Object.values(ops)) sample(op, WARMUP_MS, false);
  await interleave(ROUNDS, Object.fromEntries(Object.entries(ops).map(([k, op]) => [k, () => sample(op, ROUND_MS, true)])));
  if (sink === -1) console.log(sink);

  // GB/s at the p50 time, and at the p99 time (the slow tail).
  const gbps = (s: Samples, q: number) => SIZE / s.p(q);
  const rows: Row[] = [];
  for (const [name, label] of [...impls.map((i) => [i, `native ${i}`]), ['js', 'JS fallback (browser build)']] as const) {
    for (const [stat, q] of [['p50', 50], ['p99', 99]] as const) {
      const ours = gbps(ops[name]!.samples, q);
      const first = name === impls[0] && q === 50;
      rows.push({ figure: `diff 1 MiB, ${label}, ${stat} time`, ours, peer: 'memcmp, 4 KiB blocks', theirs: gbps(ops.memcmp!.samples, q), unit: 'GB/s', higherIsBetter: true, target: first ? '≥ 12 GB/s' : '', pass: first ? atLeast(ours, 12) : undefined });
    }
  }
  printTable('Diff throughput (current vs shadow)', rows, [`samples: ${Object.entries(ops).map(([k, op]) => `${k} ${op.samples.count}`).join(', ')}.`]);
});
