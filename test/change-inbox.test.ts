import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChangeInbox } from '../src/client/change-inbox.js';
import { CommyError, type FileChangeEvent } from '../src/index.js';

const ev = (serviceId: string, name: string, version: bigint, at = 0): FileChangeEvent => ({
  filePath: '',
  serviceId,
  changedVariables: [name],
  byteRanges: [[at, at + 8]],
  version,
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

test('abort rejects with the reason; close rejects waits and later calls', async () => {
  const inbox = new ChangeInbox();
  const c = new AbortController();
  const waiting = inbox.take({ signal: c.signal });
  c.abort(new Error('enough'));
  await assert.rejects(waiting, /enough/);
  inbox.push(ev('s', 'a', 1n));
  assert.equal(inbox.poll()?.version, 1n, 'the aborted wait took nothing');
  await assert.rejects(inbox.take({ timeoutMs: -1 }), { code: 'TYPE_MISMATCH' });
  const pending = inbox.take();
  inbox.close(new CommyError('NOT_CONNECTED', 'closed'));
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
