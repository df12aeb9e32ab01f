import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { GroupAck, GroupAnswer, OutboundChange, OutboundGroup } from '../src/client/remote/outbound-group.js';
import { Outbox, type OutboxPeer, type ReportLimits } from '../src/client/remote/outbox.js';
import { CommyError, ErrorCode } from '../src/core/errors.js';

// The outbox against a fake send and a scripted peer: no connection, every answer chosen by the test.

const change = (index: number, size = 8): OutboundChange => ({ index, bytes: new Uint8Array(size).fill(index + 1) });
const indices = (g: OutboundGroup): number[] => g.changes.map((c) => c.index);
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const ack = (version: number): GroupAck => ({ version });

/** Hands out `next` at each flush, logs what the outbox tells it, and keeps a deferred group's changes for the next flush. */
class ScriptedPeer implements OutboxPeer {
  next: OutboundChange[] = [];
  readonly log: string[] = [];
  readonly errors: CommyError[] = [];

  collect(): OutboundChange[] {
    const out = this.next;
    this.next = [];
    return out;
  }
  flushed(): void {}
  sending(group: OutboundGroup): void {
    this.log.push(`send ${indices(group)}`);
  }
  acknowledged(group: OutboundGroup, a: GroupAck): void {
    this.log.push(`ack ${indices(group)} @${a.version}`);
  }
  refused(group: OutboundGroup, retry: boolean): void {
    this.log.push(`refused ${indices(group)}${retry ? ' (retry)' : ''}`);
    if (retry) this.next = [...group.changes, ...this.next];
  }
  onError(err: CommyError): void {
    this.errors.push(err);
  }
}

interface Rig {
  outbox: Outbox;
  peer: ScriptedPeer;
  /** Groups sent and not yet answered, oldest first. */
  wire: { group: OutboundGroup; answer: GroupAnswer }[];
}

function rig(limits: ReportLimits = { maxFrameBytes: 1 << 20, maxChangesPerReport: 4096 }, failAtOnce?: CommyError): Rig {
  const peer = new ScriptedPeer();
  const wire: Rig['wire'] = [];
  const outbox = new Outbox(
    (group, answer) => (failAtOnce !== undefined ? answer.fail(failAtOnce) : wire.push({ group, answer })),
    peer,
    limits,
  );
  return { outbox, peer, wire };
}

test('outbox: writes in one turn go as one report; writes while it is in flight wait for its ack and go as one', async () => {
  const { outbox, peer, wire } = rig();
  peer.next = [change(0)];
  outbox.schedule();
  outbox.schedule();
  await turn();
  assert.deepEqual(wire.map((w) => indices(w.group)), [[0]]);
  for (let i = 0; i < 3; i++) {
    peer.next = [change(0), change(1)]; // the peer's latest view: conflated, not queued
    outbox.schedule();
    await turn();
  }
  assert.equal(wire.length, 1, 'nothing more while the first report is unanswered');
  const flushed = outbox.flushAll();
  wire.shift()!.answer.reply(ack(2));
  assert.deepEqual(wire.map((w) => indices(w.group)), [[0, 1]], 'the waiting flush went out on the ack, at once');
  wire.shift()!.answer.reply(ack(4));
  await flushed;
  assert.deepEqual(peer.log, ['send 0', 'ack 0 @2', 'send 0,1', 'ack 0,1 @4']);
});

test('outbox: a large flush is split, in order, within the frame budget and the server\'s change cap', async () => {
  const { outbox, peer, wire } = rig({ maxFrameBytes: 1000, maxChangesPerReport: 3 });
  peer.next = Array.from({ length: 10 }, (_, i) => change(i, 200));
  const flushed = outbox.flushAll();
  const groups = wire.map((w) => indices(w.group));
  assert.deepEqual(groups.flat(), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  for (const g of wire) {
    assert.ok(g.group.changes.length <= 3);
    assert.ok(g.group.changes.reduce((n, c) => n + c.bytes.length + 12, 64) <= 1000, 'each group fits a frame');
  }
  const opIds = wire.map((w) => w.group.opId!);
  assert.deepEqual(opIds, [...opIds].sort((a, b) => a - b), 'operation ids rise');
  assert.equal(new Set(opIds).size, opIds.length, 'one per group');
  for (const w of wire.splice(0)) w.answer.reply(ack(2));
  await flushed;
});

test('outbox: RATE_LIMITED rejects the awaiting flush, pauses, then sends the values again; no onError', async () => {
  const { outbox, peer, wire } = rig();
  peer.next = [change(0)];
  const flushed = outbox.flushAll();
  wire.shift()!.answer.fail(new CommyError(ErrorCode.RATE_LIMITED, 'slow down'));
  await assert.rejects(flushed, { code: 'RATE_LIMITED' });
  peer.next.push(change(1));
  outbox.schedule();
  await turn();
  assert.equal(wire.length, 0, 'nothing during the pause');
  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.deepEqual(wire.map((w) => indices(w.group)), [[0, 1]], 'after the pause: the refused value and the later one, together');
  wire.shift()!.answer.reply(ack(3));
  await turn();
  assert.deepEqual(peer.log, ['send 0', 'refused 0 (retry)', 'send 0,1', 'ack 0,1 @3']);
  assert.deepEqual(peer.errors, []);
});

test('outbox: a send that fails at once rejects the flush awaiting it, and is not reported twice', async () => {
  const { outbox, peer } = rig(undefined, new CommyError(ErrorCode.MESSAGE_TOO_LARGE, 'too big'));
  peer.next = [change(0)];
  await assert.rejects(outbox.flushAll(), { code: 'MESSAGE_TOO_LARGE' });
  await turn();
  assert.deepEqual(peer.log, ['send 0', 'refused 0']);
  assert.deepEqual(peer.errors, []);
});

test('outbox: a background report that fails goes to onError', async () => {
  const { outbox, peer, wire } = rig();
  peer.next = [change(0)];
  outbox.schedule();
  await turn();
  wire.shift()!.answer.fail(new CommyError(ErrorCode.PERMISSION_DENIED, 'no'));
  await turn();
  assert.deepEqual(peer.log, ['send 0', 'refused 0']);
  assert.deepEqual(peer.errors.map((e) => e.code), ['PERMISSION_DENIED']);
});

test('outbox: deliver() awaits the report that carries the variable, even one already in flight', async () => {
  const { outbox, peer, wire } = rig();
  peer.next = [change(0)];
  outbox.schedule();
  await turn();
  let done = false;
  const delivered = outbox.deliver(0).then(() => (done = true)); // same bytes as in flight: nothing new to send
  wire.shift()!.answer.reply(ack(2));
  await delivered;
  assert.equal(done, true);
  assert.equal(wire.length, 0);
  await outbox.deliver(5); // nothing pending for it: resolves at once
});

test('outbox: stop() sends nothing more; a flush waiting for a wave rejects, its write never sent', async () => {
  const { outbox, peer, wire } = rig();
  peer.next = [change(0)];
  outbox.schedule();
  await turn();
  peer.next = [change(1)];
  const waiting = outbox.deliver(1);
  outbox.stop();
  await assert.rejects(waiting, { code: 'NOT_CONNECTED', message: /closed before the write was sent/ });
  assert.deepEqual(peer.errors, [], 'the dropped write was awaited: its caller heard, not onError');
  outbox.schedule();
  await turn();
  assert.equal(outbox.drain().length, 1, 'a stopped outbox sends nothing; the report already in flight is still answered');
  assert.equal(wire.length, 1);
  assert.deepEqual(peer.log, ['send 0']);
});

test('outbox: stop() while paused: flushAll() rejects, writes nobody awaits go to onError once, with their count', async () => {
  const { outbox, peer, wire } = rig();
  outbox.pause();
  peer.next = [change(0), change(1), change(2)];
  const flushing = outbox.flushAll();
  outbox.stop();
  await assert.rejects(flushing, { code: 'NOT_CONNECTED', message: /closed before the write was sent/ });
  assert.deepEqual(peer.errors, [], 'awaited by the flush: not reported again');

  const other = rig();
  other.outbox.pause();
  other.peer.next = [change(0), change(1), change(2)];
  other.outbox.schedule();
  const writing = other.outbox.deliver(1);
  await turn();
  other.outbox.stop(undefined, 'acme/svc');
  await assert.rejects(writing, { code: 'NOT_CONNECTED' });
  assert.deepEqual(
    other.peer.errors.map((e) => [e.code, e.message]),
    [['NOT_CONNECTED', 'service acme/svc was closed before the writes of 2 variables were sent: they are lost']],
    'one error for the two variables nobody awaited',
  );
  assert.equal(wire.length + other.wire.length, 0, 'nothing sent');
  await assert.rejects(other.outbox.flushAll(), { code: 'NOT_CONNECTED' }, 'a flush after stop() fails at once');
});

test('outbox: stop() while a write waits behind a report lost with the connection: it rejects, outcome unknown', async () => {
  const { outbox, peer, wire } = rig();
  peer.next = [change(0)];
  outbox.schedule();
  await turn();
  wire.shift()!.answer.fail(new CommyError(ErrorCode.NOT_CONNECTED, 'gone'));
  await turn();
  outbox.pause();
  const writing = outbox.deliver(0); // nothing new for 0: it waits for the parked report carrying it
  outbox.stop();
  await assert.rejects(writing, { code: 'NOT_CONNECTED', message: /outcome unknown/ });
});

// ---- outcome unknown: TIMEOUT and a lost connection are not refusals ----

test('outbox: TIMEOUT rejects the awaiting flush but keeps the report; its late ack settles it, then later writes go', async () => {
  const { outbox, peer, wire } = rig();
  peer.next = [change(0)];
  const flushed = outbox.flushAll();
  const first = wire.shift()!;
  first.answer.fail(new CommyError(ErrorCode.TIMEOUT, 'slow'));
  await assert.rejects(flushed, { code: 'TIMEOUT' });
  assert.deepEqual(peer.log, ['send 0'], 'not refused: nothing is undone');
  peer.next = [change(1)];
  outbox.schedule();
  await turn();
  assert.equal(wire.length, 0, 'the next wave waits for the report whose outcome is unknown');
  const again = outbox.flushAll(); // waits for the real answer this time
  first.answer.reply(ack(5)); // late
  assert.deepEqual(indices(wire[0]!.group), [1]);
  wire.shift()!.answer.reply(ack(6));
  await again;
  assert.deepEqual(peer.log, ['send 0', 'ack 0 @5', 'send 1', 'ack 1 @6']);
});

test('outbox: a late refusal after TIMEOUT is a refusal', async () => {
  const { outbox, peer, wire } = rig();
  peer.next = [change(0)];
  outbox.schedule();
  await turn();
  const first = wire.shift()!;
  first.answer.fail(new CommyError(ErrorCode.TIMEOUT, 'slow'));
  await turn();
  assert.deepEqual(peer.errors.map((e) => e.code), ['TIMEOUT'], 'a background TIMEOUT is reported');
  first.answer.fail(new CommyError(ErrorCode.PERMISSION_DENIED, 'no'));
  await turn();
  assert.deepEqual(peer.log, ['send 0', 'refused 0']);
});

test('outbox: reports lost with the connection are parked and resent with the same operation ids; offline writes follow', async () => {
  const { outbox, peer, wire } = rig();
  peer.next = [change(0), change(1)];
  const flushed = outbox.flushAll();
  const lost = wire.shift()!;
  const opId = lost.group.opId;
  lost.answer.fail(new CommyError(ErrorCode.NOT_CONNECTED, 'gone'));
  outbox.pause();
  peer.next = [change(2)];
  outbox.schedule();
  const offline = outbox.flushAll();
  await turn();
  assert.equal(wire.length, 0, 'nothing goes out while paused');
  lost.answer.reply(ack(9)); // an answer to the lost send is not this report's answer any more
  assert.deepEqual(peer.log, ['send 0,1']);
  outbox.resume();
  assert.equal(wire.length, 1);
  assert.equal(wire[0]!.group.opId, opId, 'the same operation id');
  assert.deepEqual(indices(wire[0]!.group), [0, 1]);
  wire.shift()!.answer.reply(ack(3));
  await flushed;
  assert.deepEqual(indices(wire[0]!.group), [2], 'then what was written offline');
  assert.notEqual(wire[0]!.group.opId, opId);
  wire.shift()!.answer.reply(ack(4));
  await offline;
  assert.deepEqual(peer.log, ['send 0,1', 'ack 0,1 @3', 'send 2', 'ack 2 @4']);
  assert.deepEqual(peer.errors, []);
});

test('outbox: a report timed out and then lost with the connection is resent after resume', async () => {
  const { outbox, wire } = rig();
  const peer = (outbox as unknown as { peer: ScriptedPeer }).peer;
  peer.next = [change(0)];
  outbox.schedule();
  await turn();
  const first = wire.shift()!;
  first.answer.fail(new CommyError(ErrorCode.TIMEOUT, 'slow'));
  outbox.pause();
  outbox.resume();
  assert.equal(wire[0]!.group.opId, first.group.opId);
  first.answer.reply(ack(1)); // the old send's late answer: ignored
  wire.shift()!.answer.reply(ack(2));
  assert.deepEqual(peer.log, ['send 0', 'ack 0 @2']);
});

test('outbox: stop() fails the parked reports (a client that does not reconnect)', async () => {
  const { outbox, peer, wire } = rig();
  peer.next = [change(0)];
  const flushed = outbox.flushAll();
  wire.shift()!.answer.fail(new CommyError(ErrorCode.NOT_CONNECTED, 'gone'));
  await turn();
  outbox.stop(new CommyError(ErrorCode.NOT_CONNECTED, 'lost for good'));
  await assert.rejects(flushed, { code: 'NOT_CONNECTED', message: 'lost for good' });
});
