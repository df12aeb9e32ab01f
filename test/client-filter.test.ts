import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { VariableMetadata, VariableType, VirtualVariableFile, type CommyError } from '../src/index.js';
import { startClientServer } from './helpers/client-server.js';
import { reconnectingClient, serverIn, until } from './helpers/server-process.js';
import { tempDir } from './helpers/temp.js';

/**
 * vf.subscribe()/vf.unsubscribe(): a remote file's variable filter, switched on a live connection against a
 * real server. "Not received" is shown by ordering, never by waiting: after the writes that must not arrive,
 * the writer changes a variable inside the filter (the sentinel); the server sends one connection's pushes in
 * order, so once the sentinel is in, anything sent before it would be too.
 */

const NAMES = ['a', 'b', 'c', 'sensor.1', 'sensor.2'] as const;


async function setUp(vf: VirtualVariableFile): Promise<void> {
  for (const name of NAMES) await vf.registerVariable(new VariableMetadata(name, -1, 8, VariableType.F64));
}

/** Writes `values` (acknowledged), then the sentinel `a` = `mark`, and waits until `reader` has the sentinel. */
async function writeThenMark(writer: VirtualVariableFile, reader: VirtualVariableFile, values: Record<string, number>, mark: number): Promise<void> {
  for (const [name, value] of Object.entries(values)) writer.set(name, value);
  await writer.flush();
  writer.set('a', mark);
  await writer.flush();
  await until(() => reader.get('a') === mark, `the sentinel a = ${mark}`);
}

test('a filtered file receives only matching variables; subscribe adds (current values come whole), unsubscribe removes', { timeout: 60_000 }, async (t) => {
  const { connect } = await startClientServer(t);
  const writerClient = await connect();
  const readerClient = await connect();
  const w = await writerClient.getVirtualServiceFile('acme', 'filtered');
  await setUp(w);
  for (const name of NAMES) w.set(name, 1);
  await w.flush();
  const r = await readerClient.getVirtualServiceFile('acme', 'filtered');
  assert.equal(r.get('b'), 1);

  await r.subscribe(['a']); // from "all" to only `a`
  await writeThenMark(w, r, { b: 2, c: 2, 'sensor.1': 2 }, 2);
  assert.equal(r.get('b'), 1, 'b is outside the filter: it keeps its last value');
  assert.equal(r.get('c'), 1);
  assert.equal(r.get('sensor.1'), 1);

  // Adding globs: the newly wanted variables arrive with their current values, then with later updates.
  await r.subscribe(['b', 'sensor.*']);
  assert.equal(r.get('b'), 2);
  assert.equal(r.get('sensor.1'), 2);
  assert.equal(r.get('c'), 1, 'c is still outside');
  await writeThenMark(w, r, { b: 3, c: 3, 'sensor.2': 3 }, 3);
  assert.equal(r.get('b'), 3);
  assert.equal(r.get('sensor.2'), 3);
  assert.equal(r.get('c'), 1);

  // Removing a glob: no more updates for its variables.
  await r.unsubscribe(['b']);
  await writeThenMark(w, r, { b: 4, 'sensor.1': 4 }, 4);
  assert.equal(r.get('b'), 3, 'b was unsubscribed');
  assert.equal(r.get('sensor.1'), 4, 'sensor.* still holds');

  // Removing every glob: nothing at all; subscribe(['*']) brings everything back, current values first.
  await r.unsubscribe(['a', 'sensor.*']);
  w.set('b', 5);
  w.set('a', 5);
  await w.flush();
  await r.subscribe(['*']);
  assert.equal(r.get('a'), 5);
  assert.equal(r.get('b'), 5);
  assert.equal(r.get('c'), 3);
  w.set('c', 6);
  await w.flush();
  await until(() => r.get('c') === 6, 'c after subscribe([*])');
  // The same glob again, or removing one that is not there, changes nothing.
  await r.subscribe(['*']);
  await r.unsubscribe(['nothing-like-this']);
  assert.deepEqual(r.bytes(), w.bytes());
});

test('a filtered file writes variables inside and outside its filter: acknowledged and seen by others', { timeout: 60_000 }, async (t) => {
  const { connect } = await startClientServer(t);
  const w = await (await connect()).getVirtualServiceFile('acme', 'writes');
  await setUp(w);
  const r = await (await connect()).getVirtualServiceFile('acme', 'writes');
  await r.subscribe(['a']);

  r.set('c', 7); // outside the filter
  r.set('a', 7); // inside
  await r.flush();
  await r.writeVariable('b', new Uint8Array(new Float64Array([8]).buffer));
  const { version } = await r.mutate('sensor.2', 9);
  assert.ok(version > 0n);
  await until(() => w.get('c') === 7 && w.get('a') === 7 && w.get('b') === 8 && w.get('sensor.2') === 9, 'the filtered writer’s values at the other client');
  assert.equal(r.get('c'), 7, 'its own write stays in its buffer');
  assert.deepEqual(r.bytes(), r.shadowBytes(), 'nothing pending: every write acknowledged');
});

test('writes pending or in flight while the filter switches are neither lost nor refused; concurrent switches run in turn', { timeout: 60_000 }, async (t) => {
  const { connect } = await startClientServer(t);
  const errors: CommyError[] = [];
  const w = await (await connect()).getVirtualServiceFile('acme', 'pending');
  await setUp(w);
  const r = await (await connect({ onError: (e) => errors.push(e) })).getVirtualServiceFile('acme', 'pending');
  await r.subscribe(['a']);

  r.set('b', 10);
  const inFlight = r.flush(); // a report under the old sid, not yet answered
  const narrow = r.unsubscribe(['a']);
  r.set('c', 11); // pending while the switch holds the outbox
  const widen = r.subscribe(['b', 'c']);
  r.set('sensor.1', 12);
  const later = r.flush();
  await Promise.all([inFlight, narrow, widen, later]);
  assert.equal(r.get('b'), 10);
  assert.equal(r.get('c'), 11, 'the snapshot did not undo the pending write');
  assert.equal(r.get('sensor.1'), 12);
  assert.deepEqual(r.bytes(), r.shadowBytes(), 'every write acknowledged');
  await until(() => w.get('b') === 10 && w.get('c') === 11 && w.get('sensor.1') === 12, 'the writes at the other client');

  // The filter is now [b, c]: updates to b arrive, a's do not (sentinel: c).
  w.set('a', 13);
  w.set('b', 13);
  await w.flush();
  w.set('c', 14);
  await w.flush();
  await until(() => r.get('c') === 14, 'the sentinel c');
  assert.equal(r.get('b'), 13);
  assert.equal(r.get('a'), 0, 'a is outside the filter');
  assert.deepEqual(errors, []);

  // close() during a switch: the write the switch holds back is still sent before leaving.
  const switching = r.unsubscribe(['b']);
  r.set('sensor.2', 15);
  await r.close();
  await switching;
  await until(() => w.get('sensor.2') === 15, 'the write held by the switch, sent by close()');
  assert.deepEqual(errors, []);
});

test('globs are checked: TYPE_MISMATCH for a non-list, INVALID_MESSAGE past the limits; a local file resolves at once', { timeout: 60_000 }, async (t) => {
  const { connect } = await startClientServer(t);
  const r = await (await connect()).getVirtualServiceFile('acme', 'checks');
  await setUp(r);
  await assert.rejects(r.subscribe('a' as unknown as string[]), { code: 'TYPE_MISMATCH' });
  await assert.rejects(r.subscribe([1 as unknown as string]), { code: 'TYPE_MISMATCH' });
  await assert.rejects(r.subscribe(['']), { code: 'INVALID_MESSAGE' });
  await assert.rejects(r.subscribe(['x'.repeat(257)]), { code: 'INVALID_MESSAGE' });
  await assert.rejects(r.unsubscribe(Array.from({ length: 65 }, (_, i) => `g${i}`)), { code: 'INVALID_MESSAGE' });
  await r.subscribe(Array.from({ length: 60 }, (_, i) => `g${i}`));
  await assert.rejects(r.subscribe(['h1', 'h2', 'h3', 'h4', 'h5']), { code: 'INVALID_MESSAGE' }, 'the filter would hold 65 globs');
  await r.subscribe(['x'.repeat(256), 'a']);
  r.set('a', 1);
  await r.flush();
  await r.close();
  await assert.rejects(r.subscribe(['a']), { code: 'NOT_CONNECTED' });

  const dir = tempDir(t);
  const local = await VirtualVariableFile.open(join(dir, 'local.mem'), { create: true });
  t.after(() => local.close());
  await local.subscribe(['a']);
  await local.unsubscribe(['a']);
  await assert.rejects(local.subscribe('a' as unknown as string[]), { code: 'TYPE_MISMATCH' });
  await assert.rejects(local.unsubscribe(['']), { code: 'INVALID_MESSAGE' });
});

// ---- across a reconnection ------------------------------------------------------------------------------




test('the filter holds across a reconnection (kill -9 and restart); switching while reconnecting is NOT_CONNECTED', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const port = new URL(first.url).port;
  const readerClient = await reconnectingClient(t, first.url);
  const r = await readerClient.getVirtualServiceFile('acme', 'phoenix');
  await setUp(r);
  await r.subscribe(['a', 'c']);
  await r.unsubscribe(['c']);

  first.child.kill('SIGKILL');
  await first.child.exited;
  await until(() => readerClient.state === 'reconnecting', "state 'reconnecting'");
  await assert.rejects(r.subscribe(['b']), { code: 'NOT_CONNECTED' });
  r.set('c', 1); // offline write outside the filter: sent once reconnected

  const second = await serverIn(t, dataDir, port);
  await until(() => readerClient.state === 'open', "state 'open'");
  await r.flush();
  const w = await (await reconnectingClient(t, second.url)).getVirtualServiceFile('acme', 'phoenix');
  assert.equal(w.get('c'), 1);
  await writeThenMark(w, r, { b: 2, c: 2 }, 2);
  assert.equal(r.get('b'), 0, 'b is still outside the filter after the reconnection');
  assert.equal(r.get('c'), 1, 'c is still outside the filter after the reconnection');

  // Switching works on the new connection, and brings the current values.
  await r.subscribe(['b', 'c']);
  assert.equal(r.get('b'), 2);
  assert.equal(r.get('c'), 2);
  second.child.send({ type: 'quit' });
});
