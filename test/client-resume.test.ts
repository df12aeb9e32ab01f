import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AuthCredentials, Client, VariableType } from '../src/index.js';
import type { SnapshotBody, VariableDef } from '../src/protocol/messages.js';
import { ScriptedServer, send } from './helpers/scripted-server.js';

/**
 * Resuming after a reconnection, against a scripted server on a real socket (every answer chosen by the
 * test): the client sends `since`, loads a resumed snapshot (only the newer variables' bytes) or a reset one
 * (everything), keeps its pending writes through either, and resends the report whose outcome was unknown
 * with the same operation id and clientKey.
 */

const u64 = (n: number): Uint8Array => new Uint8Array(new BigUint64Array([BigInt(n)]).buffer);
const X = (v: number): VariableDef => [0, 'x', 0, 8, VariableType.U64, v];
const Y = (v: number): VariableDef => [1, 'y', 8, 8, VariableType.U64, v];
const Z = (v: number): VariableDef => [2, 'z', 16, 8, VariableType.U64, v];

function region(values: [offset: number, value: number][], size = 24): Uint8Array {
  const data = new Uint8Array(size);
  for (const [offset, value] of values) data.set(u64(value), offset);
  return data;
}

function snapshot(sid: number, version: number, variables: VariableDef[], data: Uint8Array, extra: Partial<SnapshotBody> = {}): SnapshotBody {
  return { sid, serviceId: 'acme/svc', version, variables, data, readOnly: false, fileId: 'file-1', ...extra };
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test('resume: since carries the resume point and fileId; a resumed snapshot updates only newer variables; the unknown report is resent with its opId', { timeout: 60_000 }, async (t) => {
  const server = new ScriptedServer();
  const url = await server.start();
  t.after(() => server.close());
  const initializing = Client.initialize(url, 'acme', AuthCredentials.apiKey('ops:s3cret'), {
    mode: 'remote',
    onError: () => {},
    reconnect: { initialDelayMs: 5, maxDelayMs: 20 },
  });
  const first = await server.accept();
  const client = await initializing;
  t.after(() => client.close());
  assert.match(first.clientKey ?? '', /^[A-Za-z0-9_-]{16,64}$/);

  const opening = client.getVirtualServiceFile('acme', 'svc');
  const sub1 = await server.next('Subscription');
  assert.equal(sub1.msg.body.since, undefined, 'a first subscription resumes nothing');
  send(first.ws, 'Snapshot', sub1.msg.id, snapshot(1, 10, [X(5), Y(7)], region([[0, 1], [8, 2]], 16)));
  const vf = await opening;
  send(first.ws, 'SyncBatch', 0, { sid: 1, version: 12, updates: [[1, 12, u64(3)]] });
  await until(() => vf.get('y') === 3n, 'the batch');

  vf.set('x', 9n);
  const report = await server.next('ReportVariableChanges');
  const opId = report.msg.body.opId;
  assert.equal(typeof opId, 'number');
  first.ws.terminate(); // lost before its ack: applied or not, the client cannot know

  const second = await server.accept();
  assert.equal(second.clientKey, first.clientKey, 'the same clientKey on every connection');
  const sub2 = await server.next('Subscription');
  assert.deepEqual(sub2.msg.body.since, { version: 12, fileId: 'file-1' }, 'resume from the last batch, on the same file');
  assert.equal(vf.get('x'), 9n, 'the pending write survives the loss');
  // y and z changed after 12 (z is new); x did not: its bytes are not sent (zeros here), the client keeps its own.
  send(second.ws, 'Snapshot', sub2.msg.id, snapshot(7, 15, [X(5), Y(14), Z(15)], region([[8, 4], [16, 5]]), { resumed: true }));
  const resent = await server.next('ReportVariableChanges');
  assert.equal(resent.msg.body.sid, 7, 'on the new subscription');
  assert.equal(resent.msg.body.opId, opId, 'the same operation id');
  assert.deepEqual(resent.msg.body.changes.map(([i, b]) => [i, [...b]]), [[0, [...u64(9)]]]);
  assert.equal(vf.get('x'), 9n);
  assert.equal(vf.get('y'), 4n);
  assert.equal(vf.get('z'), 5n, 'a variable registered meanwhile arrives');
  send(second.ws, 'VariableChangesAcknowledged', resent.msg.id, { serviceId: 'acme/svc', count: 1, version: 13, versions: [13] });
  await vf.flush();
  assert.deepEqual(vf.bytes(), vf.shadowBytes(), 'settled');
  assert.equal(client.state, 'open');

  // A server that ignores `since` (or cannot resume) sends a full snapshot: a reset. A write made offline
  // survives it and wins (its ack orders it after the snapshot); a variable not ours takes the server's value.
  second.ws.terminate();
  await until(() => client.state === 'reconnecting', 'reconnecting');
  vf.set('y', 77n);
  const third = await server.accept();
  const sub3 = await server.next('Subscription');
  assert.deepEqual(sub3.msg.body.since, { version: 15, fileId: 'file-1' });
  send(third.ws, 'Snapshot', sub3.msg.id, snapshot(3, 21, [X(20), Y(21), Z(15)], region([[0, 100], [8, 50], [16, 5]])));
  const offline = await server.next('ReportVariableChanges');
  assert.deepEqual(offline.msg.body.changes.map(([i, b]) => [i, [...b]]), [[1, [...u64(77)]]]);
  assert.equal(vf.get('x'), 100n, 'reset: the server value of a variable with nothing pending');
  assert.equal(vf.get('y'), 77n, 'the pending write is not overwritten by the snapshot');
  send(third.ws, 'VariableChangesAcknowledged', offline.msg.id, { serviceId: 'acme/svc', count: 1, version: 22, versions: [22] });
  await vf.flush();
  assert.equal(vf.get('y'), 77n);
  assert.deepEqual(vf.bytes(), vf.shadowBytes());
});

test('resume: a chunked resumed snapshot applies only the carried variables, and the last chunk\'s version is the next resume point', { timeout: 60_000 }, async (t) => {
  const server = new ScriptedServer();
  const url = await server.start();
  t.after(() => server.close());
  const initializing = Client.initialize(url, 'acme', AuthCredentials.apiKey('ops:s3cret'), { mode: 'remote', onError: () => {}, reconnect: { initialDelayMs: 5, maxDelayMs: 20 } });
  const first = await server.accept();
  const client = await initializing;
  t.after(() => client.close());
  const opening = client.getVirtualServiceFile('acme', 'svc');
  const sub1 = await server.next('Subscription');
  send(first.ws, 'Snapshot', sub1.msg.id, snapshot(1, 10, [X(2), Y(3), Z(4)], region([[0, 1], [8, 2], [16, 3]])));
  const vf = await opening;
  first.ws.terminate();

  const second = await server.accept();
  const sub2 = await server.next('Subscription');
  assert.deepEqual(sub2.msg.body.since, { version: 10, fileId: 'file-1' });
  // x and z changed; a run covers x..z with zeros where y (not carried) lies.
  send(second.ws, 'Snapshot', sub2.msg.id, snapshot(4, 30, [X(11)], new Uint8Array(0), { resumed: true, more: true }));
  send(second.ws, 'SnapshotChunk', 0, { sid: 4, defs: [Y(3), Z(12)], more: true });
  send(second.ws, 'SnapshotChunk', 0, { sid: 4, offset: 0, data: region([[0, 10], [16, 30]]), more: false, version: 25 });
  await until(() => client.state === 'open', 'open');
  assert.equal(vf.get('x'), 10n);
  assert.equal(vf.get('y'), 2n, 'not carried: kept');
  assert.equal(vf.get('z'), 30n);
  second.ws.terminate();
  await server.accept();
  const sub3 = await server.next('Subscription');
  assert.deepEqual(sub3.msg.body.since, { version: 25, fileId: 'file-1' }, 'the last chunk\'s version');
});

test('resume: a reset to a file with another layout ends the file with INVALID_FILE; the client goes on', { timeout: 60_000 }, async (t) => {
  const server = new ScriptedServer();
  const url = await server.start();
  t.after(() => server.close());
  const errors: string[] = [];
  const initializing = Client.initialize(url, 'acme', AuthCredentials.apiKey('ops:s3cret'), { mode: 'remote', onError: (e) => errors.push(e.code), reconnect: { initialDelayMs: 5, maxDelayMs: 20 } });
  const first = await server.accept();
  const client = await initializing;
  t.after(() => client.close());
  const opening = client.getVirtualServiceFile('acme', 'svc');
  const sub1 = await server.next('Subscription');
  send(first.ws, 'Snapshot', sub1.msg.id, snapshot(1, 10, [X(2)], region([[0, 1]], 8)));
  const vf = await opening;
  first.ws.terminate();
  const second = await server.accept();
  const sub2 = await server.next('Subscription');
  send(second.ws, 'Snapshot', sub2.msg.id, snapshot(2, 3, [[0, 'x', 8, 8, VariableType.U64, 1]], region([], 16), { reset: 'the file was replaced', fileId: 'file-2' }));
  const unsub = await server.next('Unsubscribe');
  assert.equal(unsub.msg.body.sid, 2);
  await until(() => client.state === 'open', 'open');
  assert.throws(() => vf.get('x'), { code: 'INVALID_FILE' });
  assert.ok(errors.includes('INVALID_FILE'));
});

test('mutate: an update decoded right after the MutationResponse is not overwritten by the older committed value', { timeout: 60_000 }, async (t) => {
  const server = new ScriptedServer();
  const url = await server.start();
  t.after(() => server.close());
  const initializing = Client.initialize(url, 'acme', AuthCredentials.apiKey('ops:s3cret'), { mode: 'remote', onError: () => {}, reconnect: false });
  const conn = await server.accept();
  const client = await initializing;
  t.after(() => client.close());
  const opening = client.getVirtualServiceFile('acme', 'svc');
  const sub = await server.next('Subscription');
  send(conn.ws, 'Snapshot', sub.msg.id, snapshot(1, 10, [X(10)], region([[0, 1]], 8)));
  const vf = await opening;
  const mutating = vf.mutate('x', 2n, { expectedVersion: 10 });
  const m = await server.next('Mutate');
  // The commit (version 11) and, in the same tick (so most likely the same TCP read), another client's later write.
  send(conn.ws, 'MutationResponse', m.msg.id, { sid: 1, index: 0, version: 11 });
  send(conn.ws, 'SyncBatch', 0, { sid: 1, version: 12, updates: [[0, 12, u64(3)]] });
  assert.equal((await mutating).version, 11n);
  await until(() => vf.handle('x').version() === 12n, 'the later write');
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(vf.get('x'), 3n, 'the later value stays');
  assert.equal(vf.handle('x').version(), 12n);
});
