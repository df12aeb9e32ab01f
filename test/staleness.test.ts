import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StalenessTracker } from '../src/client/staleness.js';

/** The tracker fed SyncPending bodies and batches directly, on a clock the test moves. */
function tracker(): { t: StalenessTracker; advance(ms: number): void } {
  let now = 1000;
  return { t: new StalenessTracker(() => now), advance: (ms) => void (now += ms) };
}

const CURRENT = { versionsBehind: 0, ms: 0 };

test('a named owed version: behind by the difference, for as long as it has been known; others are current', () => {
  const { t, advance } = tracker();
  t.noticed({ sid: 1, version: 20, pending: [[3, 18]] });
  advance(40);
  assert.deepEqual(t.of(3, 10, 12), { versionsBehind: 8, ms: 40 });
  assert.deepEqual(t.of(4, 5, 12), CURRENT, 'variable 4 is not owed');
  t.noticed({ sid: 1, version: 25, pending: [[3, 25]] });
  advance(10);
  assert.deepEqual(t.of(3, 10, 12), { versionsBehind: 15, ms: 50 }, 'a newer owed version: further behind, since the first notice');
});

test('delivery: an update at or past the owed version, or a resume point past it, makes the variable current', () => {
  const { t } = tracker();
  t.noticed({ sid: 1, version: 30, pending: [[1, 21], [2, 30]] });
  t.delivered({ sid: 1, version: 22, updates: [[1, 21, new Uint8Array(0)]] }, 22);
  assert.deepEqual(t.of(1, 21, 22), CURRENT);
  assert.equal(t.of(2, 4, 22).versionsBehind, 26);
  t.caughtUp(30);
  assert.deepEqual(t.of(2, 4, 30), CURRENT, 'everything at or below the resume point has arrived');
  assert.deepEqual(t.of(2, 30, 22), CURRENT, 'a copy that has the version (its own write, acknowledged) is current');
});

test('a notice that names no variables: every variable may be behind, by at most the server\'s version', () => {
  const { t, advance } = tracker();
  t.noticed({ sid: 1, version: 100 });
  advance(5);
  assert.deepEqual(t.of(7, 40, 60), { versionsBehind: 40, ms: 5 }, 'from the resume point (the higher of the two)');
  assert.deepEqual(t.of(8, 80, 60), { versionsBehind: 20, ms: 5 }, 'from the variable\'s own version');
  t.caughtUp(100);
  assert.deepEqual(t.of(7, 40, 100), CURRENT);
});

test('clear (a reset snapshot): nothing owed', () => {
  const { t } = tracker();
  t.noticed({ sid: 1, version: 9, pending: [[0, 9]] });
  t.noticed({ sid: 1, version: 9 });
  t.clear();
  assert.deepEqual(t.of(0, 1, 1), CURRENT);
});
