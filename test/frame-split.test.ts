import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { splitByCost } from '../src/protocol/frame-split.js';

test('splitByCost: runs keep the order, stay within the budget and the count (an item alone may exceed the budget)', () => {
  fc.assert(
    fc.property(fc.array(fc.nat(300)), fc.integer({ min: 1, max: 500 }), fc.integer({ min: 1, max: 20 }), (costs, budget, maxCount) => {
      const runs = splitByCost(costs, (c) => c, budget, maxCount);
      assert.deepEqual(runs.flat(), costs);
      if (costs.length === 0) assert.deepEqual(runs, [[]]);
      for (const run of runs) {
        if (costs.length > 0) assert.ok(run.length > 0);
        assert.ok(run.length <= maxCount);
        if (run.length > 1) assert.ok(run.reduce((a, b) => a + b, 0) <= budget);
      }
    }),
    { numRuns: 1000 },
  );
});
