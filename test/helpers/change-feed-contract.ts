import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ChangeFeed, FeedChange } from '../../src/server/change-feed.js';

/**
 * What every ChangeFeed must do, whatever carries the changes (the local futex watcher today, a Redis
 * backplane later): one suite, run against each implementation, as colyseus tests its presences.
 */
export interface FeedHarness {
  readonly feed: ChangeFeed;
  /** Two u64 variables the feed's service holds. */
  readonly names: readonly [string, string];
  /** Writes `value` to `name` through this server's write path; returns the write's version. */
  write(name: string, value: bigint): bigint;
  /** Makes `count` writes to `name` from somewhere else (another process, another node) and waits for them. */
  writeElsewhere(name: string, count: number): Promise<void>;
  /** The version `name` has now, as the service's file says. */
  versionOf(name: string): bigint;
  close(): Promise<void> | void;
}

type Harnessed = { after(fn: () => void | Promise<void>): void };

/** Collects what the feed reports; `until` waits (generously: machines are noisy) for a condition on it. */
function collect(harness: FeedHarness): { changes: FeedChange[]; errors: unknown[]; until(what: string, cond: () => boolean): Promise<void> } {
  const changes: FeedChange[] = [];
  const errors: unknown[] = [];
  harness.feed.start({ change: (c) => changes.push(c), error: (err) => errors.push(err) });
  return {
    changes,
    errors,
    async until(what, cond) {
      const deadline = Date.now() + 30_000;
      while (!cond()) {
        if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
  };
}

const reported = (changes: readonly FeedChange[], name: string): FeedChange[] => changes.filter((c) => c.changedVariables.includes(name));

export function changeFeedContract(kind: string, make: (t: Harnessed) => Promise<FeedHarness>): void {
  test(`${kind} change feed: a write is reported with its variable and a version at least its own`, async (t) => {
    const h = await make(t);
    const feed = collect(h);
    const [a, b] = h.names;
    const version = h.write(a, 7n);
    await feed.until(`${a} is reported`, () => reported(feed.changes, a).length > 0);
    const change = reported(feed.changes, a)[0]!;
    assert.ok(change.version >= version, `reported version ${change.version} < written ${version}`);
    assert.ok(!reported(feed.changes, b).length, `${b} was not written`);
    assert.deepEqual(feed.errors, []);
  });

  test(`${kind} change feed: versions never go back, and a burst ends on a report covering the last write`, async (t) => {
    const h = await make(t);
    const feed = collect(h);
    const [a, b] = h.names;
    let last = 0n;
    for (let i = 1n; i <= 500n; i++) last = h.write(i % 2n === 0n ? a : b, i);
    await feed.until('the last write is reported', () => feed.changes.some((c) => c.version >= last));
    for (let i = 1; i < feed.changes.length; i++) {
      assert.ok(feed.changes[i]!.version >= feed.changes[i - 1]!.version, 'versions went back');
      assert.ok(feed.changes[i]!.settled >= feed.changes[i - 1]!.settled, 'the settled version went back');
    }
    // The report of the last write vouches for it: a subscriber that got every change may resume from there.
    await feed.until('the settled version reaches the last write', () => feed.changes.some((c) => c.settled >= last));
    assert.ok(reported(feed.changes, a).length > 0 && reported(feed.changes, b).length > 0);
    for (const change of feed.changes) assert.equal(new Set(change.changedVariables).size, change.changedVariables.length, 'a name twice in one report');
  });

  test(`${kind} change feed: writes made elsewhere are reported too`, async (t) => {
    const h = await make(t);
    const feed = collect(h);
    const [a] = h.names;
    await h.writeElsewhere(a, 100);
    const final = h.versionOf(a);
    await feed.until(`${a} at version ${final} is reported`, () => reported(feed.changes, a).some((c) => c.version >= final));
    assert.deepEqual(feed.errors, []);
  });

  test(`${kind} change feed: nothing is reported after close()`, async (t) => {
    const h = await make(t);
    const feed = collect(h);
    const [a] = h.names;
    h.write(a, 1n);
    await feed.until('the first write is reported', () => feed.changes.length > 0);
    h.feed.close();
    h.feed.close(); // idempotent
    const seen = feed.changes.length;
    h.write(a, 2n);
    await h.writeElsewhere(a, 10);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(feed.changes.length, seen);
  });
}
