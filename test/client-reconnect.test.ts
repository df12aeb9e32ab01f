import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VariableMetadata, VariableType, VirtualVariableFile, type ClientState, type CommyError } from '../src/index.js';
import { reconnectingClient, serverIn, until } from './helpers/server-process.js';
import { tempDir } from './helpers/temp.js';

/**
 * A client that survives its server: a real server in a child process, killed (-9) and restarted on the same
 * port and data directory, or stopped (SIGSTOP) past the client's request timeout.
 */





test('kill -9 and a restart on the same port and data dir: the client reconnects, resubscribes, and writes made offline arrive', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const port = new URL(first.url).port;
  const writer = await reconnectingClient(t, first.url);
  const states: ClientState[] = [];
  writer.on('state', (s) => states.push(s));
  const vf = await writer.getVirtualServiceFile('acme', 'phoenix');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.F64));
  await vf.registerVariable(new VariableMetadata('label', -1, 16, VariableType.String));
  vf.set('n', 1);
  await vf.flush();

  first.child.kill('SIGKILL');
  await first.child.exited;
  await until(() => writer.state === 'reconnecting', "state 'reconnecting'");
  // Offline: the file keeps working on its buffer.
  vf.set('n', 2);
  vf.set('label', 'offline');
  assert.equal(vf.get('n'), 2);
  const flushed = vf.flush(); // waits for the connection (up to requestTimeoutMs)

  const second = await serverIn(t, dataDir, port);
  assert.equal(second.url, first.url);
  await flushed;
  await until(() => writer.state === 'open', "state 'open'");
  assert.deepEqual(states, ['reconnecting', 'open']);

  // Another client sees what was written offline; the writer's new subscription hears the others.
  const reader = await reconnectingClient(t, second.url);
  const rv = await reader.getVirtualServiceFile('acme', 'phoenix');
  assert.equal(rv.get('n'), 2);
  assert.equal(rv.get('label'), 'offline');
  rv.set('n', 3);
  await rv.flush();
  await until(() => vf.get('n') === 3, 'the update after the restart reaches the reconnected client');
  assert.deepEqual(vf.bytes(), rv.bytes());
  second.child.send({ type: 'quit' });
});

test('a client keeps its change queue across a reconnection, and close() while reconnecting stops it all', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const c = await reconnectingClient(t, first.url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50, breaker: { failures: 1000, resetMs: 50 } } });
  const states: ClientState[] = [];
  c.on('state', (s) => states.push(s));
  const vf = await c.getVirtualServiceFile('acme', 'queue');
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  first.child.kill('SIGKILL');
  await until(() => c.state === 'reconnecting', "state 'reconnecting'");
  while (c.tryGetFileChange() !== null);
  // The queue lives on while reconnecting: a wait times out (null) instead of rejecting.
  assert.equal(await c.waitForFileChange({ timeoutMs: 50 }), null);
  const waiting = c.waitForFileChange({ timeoutMs: 60_000 });
  vf.set('x', 7n); // not acknowledged while offline, so no change event for it yet
  await c.close();
  await assert.rejects(waiting, { code: 'NOT_CONNECTED' });
  assert.equal(c.state, 'closed');
  assert.deepEqual(states, ['reconnecting', 'closed']);
  assert.throws(() => vf.get('x'), { code: 'NOT_CONNECTED' });
});

test('a server stopped (SIGSTOP) past the request timeout while a write is in flight: the writer converges to the value it wrote', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const { child, url } = await serverIn(t, dataDir);
  t.after(() => child.kill('SIGCONT'));
  const errors: CommyError[] = [];
  const writer = await reconnectingClient(t, url, { requestTimeoutMs: 500, onError: (e) => errors.push(e) });
  const vf = await writer.getVirtualServiceFile('acme', 'diverge');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.F64));
  vf.set('n', 1);
  await vf.flush();

  child.kill('SIGSTOP'); // the server is alive, its socket open, and answers nothing
  vf.set('n', 2);
  await assert.rejects(vf.flush(), { code: 'TIMEOUT' });
  assert.equal(vf.get('n'), 2, 'a timed-out write is not undone: its outcome is unknown');
  child.kill('SIGCONT'); // the report is applied now, and its late acknowledgement settles it
  await vf.flush();
  assert.deepEqual(vf.bytes(), vf.shadowBytes(), 'nothing pending: the server acknowledged n = 2');

  const reader = await reconnectingClient(t, url);
  const seen = await reader.getVirtualServiceFile('acme', 'diverge');
  assert.equal(seen.get('n'), 2, 'the server has the value the writer wrote');
  assert.equal(vf.get('n'), seen.get('n'));
  child.send({ type: 'quit' });
});

test('reconnect: false keeps the old behaviour: a killed server closes the client for good', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const errors: CommyError[] = [];
  const c = await reconnectingClient(t, first.url, { reconnect: false, onError: (e) => errors.push(e) });
  const states: ClientState[] = [];
  c.on('state', (s) => states.push(s));
  const vf = await c.getVirtualServiceFile('acme', 'mortal');
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  vf.set('x', 1n);
  await vf.flush();
  first.child.kill('SIGKILL');
  await until(() => c.state === 'closed', "state 'closed'");
  assert.deepEqual(states, ['closed']);
  assert.throws(() => vf.get('x'), { code: 'NOT_CONNECTED' });
  const second = await serverIn(t, dataDir, new URL(first.url).port);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(c.state, 'closed', 'no reconnection');
  await assert.rejects(c.readVariable('acme', 'mortal', 'x'), { code: 'NOT_CONNECTED' });
  assert.equal(errors.filter((e) => e.code === 'NOT_CONNECTED').length, 1, 'the loss is reported once');
  second.child.send({ type: 'quit' });
});

test('a server that stays down: the client keeps reconnecting (state stays reconnecting) and flush() rejects NOT_CONNECTED after its timeout, keeping the write', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const c = await reconnectingClient(t, first.url, { requestTimeoutMs: 400, reconnect: { initialDelayMs: 5, maxDelayMs: 20, breaker: { failures: 3, resetMs: 50 } } });
  const vf = await c.getVirtualServiceFile('acme', 'down');
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  first.child.kill('SIGKILL');
  await until(() => c.state === 'reconnecting', "state 'reconnecting'");
  vf.set('x', 5n);
  await assert.rejects(vf.flush(), { code: 'NOT_CONNECTED' });
  assert.equal(vf.get('x'), 5n, 'kept');
  assert.equal(c.state, 'reconnecting');
  const second = await serverIn(t, dataDir, new URL(first.url).port);
  await until(() => c.state === 'open', "state 'open'");
  await vf.flush();
  const reader = await reconnectingClient(t, second.url);
  assert.equal((await reader.getVirtualServiceFile('acme', 'down')).get('x'), 5n, 'sent once reconnected');
  second.child.send({ type: 'quit' });
});

test('a client offline while 1,000 writes land gets them all in one resume, with their versions', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const port = new URL(first.url).port;
  const reader = await reconnectingClient(t, first.url);
  const vf = await reader.getVirtualServiceFile('acme', 'offline');
  const names = Array.from({ length: 10 }, (_, i) => `v${i}`);
  for (const name of names) await vf.registerVariable(new VariableMetadata(name, -1, 8, VariableType.U64));

  first.child.kill('SIGKILL');
  await first.child.exited;
  await until(() => reader.state === 'reconnecting', "state 'reconnecting'");
  // Meanwhile a local process writes straight into the service file: 1,000 writes the reader misses.
  const { join } = await import('node:path');
  const local = await VirtualVariableFile.open(join(dataDir, 'tenants', 'acme', 'offline.mem'));
  for (let i = 1; i <= 1000; i++) local.set(names[i % 10]!, BigInt(i));
  const versions = names.map((n) => local.handle(n).version());
  await local.close();

  await serverIn(t, dataDir, port);
  await until(() => reader.state === 'open' && names.every((n, i) => vf.get(n) === BigInt(i === 0 ? 1000 : 990 + i)), 'every final value');
  assert.deepEqual(names.map((n) => vf.handle(n).version()), versions, 'and every version');
});
