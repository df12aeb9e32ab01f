import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeFrame, encodeFrame } from '../src/protocol/frame-codec.js';
import type { Message } from '../src/protocol/messages.js';
import { MAX_PENDING_NAMED } from '../src/server/pending-notices.js';
import { VariableMetadata, VariableType } from '../src/index.js';
import { startClientServer } from './helpers/client-server.js';
import { RawClient } from './helpers/raw-client.js';

/**
 * SyncPending (docs/protocol.md, "Staleness"): while a server's `tick` holds a subscription's updates back, a
 * subscription that asked (`pending: true`) hears what it is owed before the batch comes; one that did not
 * ask hears nothing new.
 */

type Push<K extends Message['type']> = Extract<Message, { type: K }>;

async function subscriber(url: string, service: string, pending: boolean): Promise<{ client: RawClient; sid: number; indexOf(name: string): number }> {
  const client = await RawClient.connect(url);
  assert.equal((await client.auth('acme', 'ops:s3cret')).type, 'Authenticated');
  const reply = await client.request('Subscription', { tenant: 'acme', service, ...(pending ? { pending: true } : {}) });
  assert.equal(reply.type, 'Snapshot');
  const snapshot = (reply as Push<'Snapshot'>).body;
  return {
    client,
    sid: snapshot.sid,
    indexOf: (name) => snapshot.variables.find((d) => d[1] === name)![0],
  };
}

test('SyncPending round-trips and its shape is checked', () => {
  const m = decodeFrame(encodeFrame('SyncPending', 0, { sid: 3, version: 40, pending: [[0, 39], [5, 40]] }));
  assert.ok(m.type === 'SyncPending' && m.body.version === 40 && m.body.pending?.length === 2);
  const bulk = decodeFrame(encodeFrame('SyncPending', 0, { sid: 3, version: 40 }));
  assert.ok(bulk.type === 'SyncPending' && bulk.body.pending === undefined);
  for (const pending of [[[1]], [[1, -2]], [['a', 1]], 'x']) {
    assert.throws(() => decodeFrame(encodeFrame('SyncPending', 0, { sid: 3, version: 40, pending } as never)), { code: 'INVALID_MESSAGE' });
  }
  assert.throws(() => decodeFrame(encodeFrame('Subscription', 1, { tenant: 'a', service: 'b', pending: 1 } as never)), { code: 'INVALID_MESSAGE' });
});

test('a held-back subscription that asked hears its owed versions before the batch; one that did not hears none', { timeout: 60_000 }, async (t) => {
  const s = await startClientServer(t, { tick: 1000 });
  const vf = await (await s.connect()).getVirtualServiceFile('acme', 'held');
  for (const name of ['x', 'y']) await vf.registerVariable(new VariableMetadata(name, -1, 8, VariableType.F64));
  const asking = await subscriber(s.url, 'held', true);
  const silent = await subscriber(s.url, 'held', false);
  t.after(() => (asking.client.close(), silent.client.close()));

  vf.set('x', 1);
  await vf.flush();
  const version = Number(vf.handle('x').version());
  const notice = (await asking.client.push((m) => m.type === 'SyncPending')) as Push<'SyncPending'>;
  assert.equal(notice.body.sid, asking.sid);
  assert.ok(notice.body.version >= version, 'the service version when it was sent');
  assert.deepEqual(notice.body.pending, [[asking.indexOf('x'), version]], 'x is owed, at its latest version; y is not');
  const batch = (await asking.client.push((m) => m.type === 'SyncBatch')) as Push<'SyncBatch'>;
  assert.deepEqual(batch.body.updates.map((u) => u.slice(0, 2)), [[asking.indexOf('x'), version]], 'then the batch delivers it');

  await silent.client.push((m) => m.type === 'SyncBatch');
  assert.deepEqual(silent.client.pushes.filter((m) => m.type === 'SyncPending'), [], 'no notice to a subscription that did not ask');
});

test(`more than ${MAX_PENDING_NAMED} owed variables: the notice names none, only the service version`, { timeout: 60_000 }, async (t) => {
  const s = await startClientServer(t, { tick: 1000 });
  const vf = await (await s.connect()).getVirtualServiceFile('acme', 'many');
  const count = MAX_PENDING_NAMED + 1;
  for (let i = 0; i < count; i++) await vf.registerVariable(new VariableMetadata(`v${i}`, -1, 1, VariableType.U8));
  const asking = await subscriber(s.url, 'many', true);
  t.after(() => asking.client.close());
  for (let i = 0; i < count; i++) vf.set(`v${i}`, 1);
  await vf.flush();
  const notice = (await asking.client.push((m) => m.type === 'SyncPending')) as Push<'SyncPending'>;
  assert.equal(notice.body.pending, undefined);
  assert.ok(notice.body.version >= Number(vf.version));
});

test('an immediate tick holds nothing back: no notices at all', { timeout: 60_000 }, async (t) => {
  const s = await startClientServer(t);
  const vf = await (await s.connect()).getVirtualServiceFile('acme', 'quick');
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.F64));
  const asking = await subscriber(s.url, 'quick', true);
  t.after(() => asking.client.close());
  for (let i = 1; i <= 20; i++) {
    vf.set('x', i);
    await vf.flush();
  }
  await asking.client.push((m) => m.type === 'SyncBatch' && m.body.updates.some((u) => u[1] === Number(vf.handle('x').version())));
  assert.deepEqual(asking.client.pushes.filter((m) => m.type === 'SyncPending'), []);
});
