import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ChangeInbox } from '../src/client/change-inbox.js';
import { EventQueue } from '../src/core/event-queue.js';
import { mergeChangeEvents } from '../src/core/file-change-event.js';
import { CommyError, type FileChangeEvent } from '../src/index.js';

const ev = (serviceId: string, name: string, version: bigint, at = 0): FileChangeEvent => ({
  filePath: '',
  serviceId,
  changedVariables: [name],
  byteRanges: [[at, at + 8]],
  version,
  addedVariables: [],
  removedVariables: [],
});

test('poll never waits; take waits, times out with null, and a timed-out wait swallows nothing', async () => {
  const inbox = new ChangeInbox();
  assert.equal(inbox.poll(), null);
  assert.equal(await inbox.take({ timeoutMs: 5 }), null);
  inbox.push(ev('s', 'a', 1n));
  assert.equal(inbox.poll()?.version, 1n);
  const waiting = inbox.take();
  inbox.push(ev('s', 'b', 2n));
  assert.equal((await waiting)?.changedVariables[0], 'b');
  inbox.push(ev('s', 'c', 3n));
  assert.equal((await inbox.take({ timeoutMs: 0 }))?.version, 3n);
});

test('abort rejects with CommyError ABORTED, the reason as its cause; end rejects waits and later calls', async () => {
  const inbox = new ChangeInbox();
  const c = new AbortController();
  const waiting = inbox.take({ signal: c.signal });
  const why = new Error('enough');
  c.abort(why);
  await assert.rejects(waiting, (err: unknown) => err instanceof CommyError && err.code === 'ABORTED' && err.cause === why && /enough/.test(err.message));
  inbox.push(ev('s', 'a', 1n));
  assert.equal(inbox.poll()?.version, 1n, 'the aborted wait took nothing');
  await assert.rejects(inbox.take({ signal: c.signal }), { code: 'ABORTED' }, 'an already aborted signal');
  assert.equal(inbox.poll(), null, 'and it took nothing either');
  await assert.rejects(inbox.take({ timeoutMs: -1 }), { code: 'TYPE_MISMATCH' });
  await assert.rejects(inbox.take(null as never), { code: 'TYPE_MISMATCH' });
  await assert.rejects(inbox.take({ signal: {} as never }), { code: 'TYPE_MISMATCH' });
  const pending = inbox.take();
  inbox.end(new CommyError('NOT_CONNECTED', 'closed'));
  await assert.rejects(pending, { code: 'NOT_CONNECTED' });
  assert.throws(() => inbox.poll(), { code: 'NOT_CONNECTED' });
});

test('bounded: past the limit, events fold into the last one of the same service', () => {
  const inbox = new ChangeInbox(2);
  inbox.push(ev('s', 'a', 1n, 0));
  inbox.push(ev('t', 'b', 2n, 0));
  inbox.push(ev('s', 'c', 3n, 8));
  inbox.push(ev('t', 'd', 4n, 16));
  const s = inbox.poll()!;
  assert.deepEqual([s.serviceId, s.changedVariables, s.byteRanges, s.version], ['s', ['a', 'c'], [[0, 16]], 3n]);
  const t = inbox.poll()!;
  assert.deepEqual([t.serviceId, t.changedVariables, t.version], ['t', ['b', 'd'], 4n]);
  assert.equal(inbox.poll(), null);
});

test('one queue behind both APIs: the iterator and take() share items and waiters, in order', async () => {
  const q = new EventQueue<FileChangeEvent>({ merge: mergeChangeEvents });
  const viaIterator = q.next();
  const viaTake = q.take();
  q.push(ev('s', 'a', 1n));
  q.push(ev('s', 'b', 2n));
  assert.equal((await viaIterator).value?.version, 1n, 'the first waiter gets the first item');
  assert.equal((await viaTake)?.version, 2n);
  q.push(ev('s', 'c', 3n));
  for await (const e of q) {
    assert.equal(e.version, 3n);
    break; // ends the queue, as breaking out of vf.changes() does
  }
  assert.equal(q.closed, true);
  assert.deepEqual(await q.next(), { value: undefined, done: true });
  await assert.rejects(q.take(), { code: 'CLOSED' });
});

test('the iterator ends when the queue ends; a pending next() finishes, it does not reject', async () => {
  let ended = 0;
  const q = new EventQueue<FileChangeEvent>({ merge: mergeChangeEvents, onEnd: () => ended++ });
  const pending = q.next();
  q.end();
  q.end();
  assert.deepEqual(await pending, { value: undefined, done: true });
  assert.equal(ended, 1, 'onEnd runs once');
  q.push(ev('s', 'a', 1n));
  assert.throws(() => q.poll(), { code: 'CLOSED' }, 'nothing is queued after the end');
});

test('bounded, one group (vf.changes()): past the limit, events fold into the newest one', () => {
  const q = new EventQueue<FileChangeEvent>({ merge: mergeChangeEvents, limit: 2 });
  q.push(ev('s', 'a', 1n, 0));
  q.push(ev('s', 'b', 2n, 8));
  q.push(ev('s', 'c', 3n, 16));
  assert.equal(q.poll()?.version, 1n);
  const folded = q.poll()!;
  assert.deepEqual([folded.changedVariables, folded.byteRanges, folded.version], [['b', 'c'], [[8, 24]], 3n]);
  assert.equal(q.poll(), null);
});

test('a timed-out take() leaves no waiter behind to swallow the next item', async () => {
  const q = new ChangeInbox();
  assert.equal(await q.take({ timeoutMs: 1 }), null);
  q.push(ev('s', 'a', 1n));
  assert.equal(q.poll()?.version, 1n);
});

test('merging events of the same variables written again and again keeps their union, ranges and the newest version', () => {
  const layout = { a: [0, 8], b: [8, 16], c: [32, 40] } as const;
  fc.assert(
    fc.property(fc.array(fc.record({ names: fc.subarray(['a', 'b', 'c'] as const, { minLength: 1 }), version: fc.bigInt({ min: 1n, max: 1000n }) }), { minLength: 1, maxLength: 20 }), (events) => {
      const made = events.map(({ names, version }): FileChangeEvent => ({
        filePath: 'f',
        serviceId: 't/s',
        changedVariables: [...names].sort((x, y) => layout[x][0] - layout[y][0]),
        byteRanges: [...names].sort((x, y) => layout[x][0] - layout[y][0]).map((n) => [layout[n][0], layout[n][1]] as [number, number]),
        version,
        addedVariables: [],
        removedVariables: [],
      }));
      const merged = made.reduce((into, next) => mergeChangeEvents(into, next));
      const union = new Set(events.flatMap((e) => e.names));
      assert.deepEqual(new Set(merged.changedVariables), union);
      const covered = (at: number): boolean => merged.byteRanges.some(([s, e]) => s <= at && at < e);
      for (const [name, [s, e]] of Object.entries(layout)) {
        for (let at = s; at < e; at++) assert.equal(covered(at), union.has(name as keyof typeof layout), `byte ${at} of ${name}`);
      }
      assert.equal(merged.version, events.reduce((m, e) => (e.version > m ? e.version : m), 0n));
    }),
  );
});
