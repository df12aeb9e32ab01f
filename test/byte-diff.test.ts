import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { native } from '../src/native/addon.js';
import { diffRangesJs, pairsFromFlat, variablesTouched } from '../src/core/byte-diff.js';
import { VirtualVariableFile, VariableMetadata, VariableType } from '../src/index.js';

/** The reference: one byte at a time. */
function naive(a: Uint8Array, b: Uint8Array): [number, number][] {
  const out: [number, number][] = [];
  const n = Math.max(a.length, b.length);
  let start = -1;
  for (let i = 0; i < n; i++) {
    const differs = i >= a.length || i >= b.length || a[i] !== b[i];
    if (differs && start < 0) start = i;
    if (!differs && start >= 0) {
      out.push([start, i]);
      start = -1;
    }
  }
  if (start >= 0) out.push([start, n]);
  return out;
}

const SIZES = [0, 1, 7, 8, 31, 32, 33, 63, 64, 65, 127, 128, 129, 4096 + 3];

/** Two views of the same size at arbitrary (unaligned) starts, the second a mutated copy of the first. */
const pairArb = fc
  .record({
    size: fc.constantFrom(...SIZES),
    skewA: fc.integer({ min: 0, max: 15 }),
    skewB: fc.integer({ min: 0, max: 15 }),
    seed: fc.integer(),
    edits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 70 }), fc.integer({ min: 1, max: 255 })), { maxLength: 12 }),
    dense: fc.boolean(),
  })
  .map(({ size, skewA, skewB, seed, edits, dense }) => {
    const a = new Uint8Array(size + skewA).subarray(skewA);
    let x = seed | 1;
    for (let i = 0; i < size; i++) a[i] = (x = Math.imul(x ^ (x >>> 13), 0x5bd1e995)) & 0xff;
    const b = new Uint8Array(size + skewB).subarray(skewB);
    b.set(a);
    for (const [at, len, delta] of edits) {
      if (size === 0) break;
      const from = at % size;
      for (let i = from; i < Math.min(size, from + len); i++) if (dense || (i & 1) === 0) b[i] = (b[i]! + delta) & 0xff;
    }
    return { a, b };
  });

for (const impl of native.diffImpls()) {
  test(`native diff (${impl}) equals the byte loop on random buffers`, () => {
    fc.assert(
      fc.property(pairArb, ({ a, b }) => {
        assert.deepEqual(pairsFromFlat(native.diff(a, b, impl as never)), naive(a, b));
      }),
      { numRuns: 2000, interruptAfterTimeLimit: 20_000 },
    );
  });
}

test('the JS fallback equals the byte loop', () => {
  fc.assert(
    fc.property(pairArb, ({ a, b }) => {
      assert.deepEqual(diffRangesJs(a, b), naive(a, b));
    }),
    { numRuns: 1000, interruptAfterTimeLimit: 20_000 },
  );
});

test('different lengths: the tail counts as changed', () => {
  const a = new Uint8Array([1, 2, 3, 4, 5]);
  const b = new Uint8Array([1, 2, 9]);
  assert.deepEqual(VirtualVariableFile.compareRanges(a, b), [[2, 5]]);
  assert.deepEqual(VirtualVariableFile.compareRanges(b, a), [[2, 5]]);
  assert.deepEqual(VirtualVariableFile.compareRanges(a, a.subarray(0, 5)), []);
  assert.deepEqual(diffRangesJs(a, b), [[2, 5]]);
});

test('1 MiB with sparse changes', () => {
  const a = new Uint8Array(1 << 20);
  const b = new Uint8Array(1 << 20);
  for (const i of [0, 63, 64, 4095, 500_000, (1 << 20) - 1]) b[i] = 1;
  const expected = [[0, 1], [63, 65], [4095, 4096], [500_000, 500_001], [(1 << 20) - 1, 1 << 20]];
  for (const impl of native.diffImpls()) assert.deepEqual(pairsFromFlat(native.diff(a, b, impl as never)), expected, impl);
});

test('bad arguments are refused, not crashed on', () => {
  assert.throws(() => VirtualVariableFile.compareRanges('x' as never, new Uint8Array(1)), { code: 'TYPE_MISMATCH' });
  assert.throws(() => native.diff(new Uint8Array(1), new Uint8Array(1), 'sse9' as never));
});

test('variablesTouched maps ranges to variables', () => {
  const vars = [
    new VariableMetadata('a', 0, 8, VariableType.U64),
    new VariableMetadata('c', 24, 8, VariableType.U64),
    new VariableMetadata('b', 8, 8, VariableType.U64),
  ];
  assert.deepEqual(variablesTouched(vars, []), []);
  assert.deepEqual(variablesTouched(vars, [[7, 9]]), ['a', 'b']);
  assert.deepEqual(variablesTouched(vars, [[16, 24]]), []);
  assert.deepEqual(variablesTouched(vars, [[0, 1], [31, 40]]), ['a', 'c']);
});
