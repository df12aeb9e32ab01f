import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCommyError, VariableMetadata, VariableType, type CommyError } from '../src/index.js';
import { reconnectingClient, serverIn, until } from './helpers/server-process.js';
import { tempDir } from './helpers/temp.js';
import { guard } from './helpers/guard.js';

/**
 * Attack: close the client while its work is pending — writes made offline, a report in flight when the
 * server died, a mutation waiting for the connection, a query streaming. Everything must settle (reject with a
 * CommyError code, or resolve only if it really happened), nothing may hang, nothing may reject unhandled.
 * A real server in a child process, killed with SIGKILL or frozen with SIGSTOP.
 */


/** How a promise settled, without letting it reject unhandled. */
async function outcome(p: Promise<unknown>): Promise<{ ok: true } | { ok: false; code: string | undefined; err: unknown }> {
  try {
    await p;
    return { ok: true };
  } catch (err) {
    return { ok: false, code: isCommyError(err) ? err.code : undefined, err };
  }
}

const u64 = (n: bigint): Uint8Array => new Uint8Array(new BigUint64Array([n]).buffer);

test('close() while a report is parked (in flight when the server died): flush() rejects NOT_CONNECTED', { timeout: 120_000 }, async (t) => {
  const g = guard(t);
  const dataDir = tempDir(t);
  const { child, url } = await serverIn(t, dataDir);
  const errors: CommyError[] = [];
  const c = await reconnectingClient(t, url, { requestTimeoutMs: 60_000, onError: (e) => errors.push(e) });
  const vf = await c.getVirtualServiceFile('acme', 'parked');
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  vf.set('x', 1n);
  await vf.flush();

  child.kill('SIGSTOP'); // the report goes out and is never answered
  vf.set('x', 2n);
  const flushing = outcome(vf.flush());
  await new Promise((resolve) => setTimeout(resolve, 100));
  child.kill('SIGKILL');
  await child.exited;
  await until(() => c.state === 'reconnecting', "state 'reconnecting'");
  await c.close();
  const r = await flushing;
  assert.equal(r.ok, false, 'a report the server never answered is not a success');
  assert.equal(!r.ok && r.code, 'NOT_CONNECTED');
  assert.match(!r.ok ? String(r.err) : '', /outcome unknown/, 'sent and unanswered: it may have been applied');
  assert.equal(c.state, 'closed');
  await g.check();
});

/** A client whose server was killed: it is reconnecting, x = 1 acknowledged before the kill, y never written. */
async function offlineClient(t: Parameters<typeof tempDir>[0], service: string) {
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const errors: CommyError[] = [];
  const c = await reconnectingClient(t, first.url, { requestTimeoutMs: 60_000, onError: (e) => errors.push(e) });
  const vf = await c.getVirtualServiceFile('acme', service);
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  await vf.registerVariable(new VariableMetadata('y', -1, 8, VariableType.U64));
  vf.set('x', 1n);
  await vf.flush();
  first.child.kill('SIGKILL');
  await first.child.exited;
  await until(() => c.state === 'reconnecting', "state 'reconnecting'");
  /** What the server holds now (a restart on the same data directory). */
  const serverSees = async (): Promise<{ x: unknown; y: unknown }> => {
    const second = await serverIn(t, dataDir, new URL(first.url).port);
    const reader = await reconnectingClient(t, second.url);
    const seen = await reader.getVirtualServiceFile('acme', service);
    const values = { x: seen.get('x'), y: seen.get('y') };
    await reader.close();
    second.child.send({ type: 'quit' });
    return values;
  };
  return { c, vf, errors, serverSees };
}

test('close() while offline: flush() of a write never sent rejects NOT_CONNECTED, never resolves as if acknowledged', { timeout: 120_000 }, async (t) => {
  const g = guard(t);
  const { c, vf, serverSees } = await offlineClient(t, 'unsent-flush');
  vf.set('x', 2n); // offline: kept in the buffer, never sent
  const flushing = outcome(vf.flush());
  await new Promise((resolve) => setTimeout(resolve, 100));
  await c.close();
  const f = await flushing;
  assert.deepEqual(await serverSees(), { x: 1n, y: 0n }, 'x = 2 never reached the server');
  // docs/client.md: flush() "resolves when everything pending at the call is acknowledged (rejects with the first failure)".
  assert.equal(f.ok, false, 'flush() resolved although its write was never sent (lost silently at close)');
  assert.equal(!f.ok && f.code, 'NOT_CONNECTED');
  await g.check();
});

test('close() while offline: writeVariable() of a value never sent rejects NOT_CONNECTED, never resolves as if acknowledged', { timeout: 120_000 }, async (t) => {
  const g = guard(t);
  const { c, vf, serverSees } = await offlineClient(t, 'unsent-write');
  const writing = outcome(vf.writeVariable('y', u64(3n)));
  await new Promise((resolve) => setTimeout(resolve, 100));
  await c.close();
  const w = await writing;
  assert.deepEqual(await serverSees(), { x: 1n, y: 0n }, 'y = 3 never reached the server');
  // docs/client.md: writeVariable() "resolves when the report carrying that variable is acknowledged".
  assert.equal(w.ok, false, 'writeVariable() resolved although its value was never sent');
  assert.equal(!w.ok && w.code, 'NOT_CONNECTED');
  await g.check();
});

test('close() while offline: unawaited writes that never reached the server are reported to onError', { timeout: 120_000 }, async (t) => {
  const g = guard(t);
  const { c, vf, errors } = await offlineClient(t, 'unsent-bg');
  errors.length = 0;
  vf.set('x', 9n); // nobody awaits it
  await new Promise((resolve) => setTimeout(resolve, 50));
  await c.close();
  await new Promise((resolve) => setTimeout(resolve, 50));
  // docs/client.md: "client.close() ... closes every file (reports that never reached the server reject with
  // NOT_CONNECTED and go to onError)". A write lost at close must at least be heard of.
  assert.ok(errors.some((e) => e.code === 'NOT_CONNECTED'), `onError heard: ${JSON.stringify(errors.map((e) => e.code))}`);
  const dropped = errors.filter((e) => /acme\/unsent-bg was closed before the writes of 1 variable were sent/.test(e.message));
  assert.equal(dropped.length, 1, `one error names the service and the count: ${JSON.stringify(errors.map((e) => e.message))}`);
  await g.check();
});

test('close() while a mutation waits for the connection: it rejects NOT_CONNECTED long before its deadline', { timeout: 120_000 }, async (t) => {
  const g = guard(t);
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const c = await reconnectingClient(t, first.url, { requestTimeoutMs: 60_000 });
  const vf = await c.getVirtualServiceFile('acme', 'mut');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  const { version } = await vf.mutate('n', 1n);
  first.child.kill('SIGKILL');
  await first.child.exited;
  await until(() => c.state === 'reconnecting', "state 'reconnecting'");
  const plain = outcome(vf.mutate('n', 2n));
  const cas = outcome(vf.mutate('n', 3n, { expectedVersion: version }));
  vf.set('n', 4n); // and a pending set() a mutation must deliver first
  const behind = outcome(vf.mutate('n', 5n));
  await new Promise((resolve) => setTimeout(resolve, 100));
  const started = Date.now();
  await c.close();
  const results = await Promise.all([plain, cas, behind]);
  assert.ok(Date.now() - started < 30_000, 'settled well before the 60 s request timeout');
  for (const r of results) {
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.code, 'NOT_CONNECTED');
  }
  await g.check();
});

test('close() while a mutation is in flight on a frozen server: it settles with a CommyError, close() returns', { timeout: 120_000 }, async (t) => {
  const g = guard(t);
  const dataDir = tempDir(t);
  const { child, url } = await serverIn(t, dataDir);
  t.after(() => child.kill('SIGCONT'));
  const c = await reconnectingClient(t, url, { requestTimeoutMs: 3_000 });
  const vf = await c.getVirtualServiceFile('acme', 'frozen');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  await vf.mutate('n', 1n);
  child.kill('SIGSTOP');
  const pending = outcome(vf.mutate('n', 2n));
  await new Promise((resolve) => setTimeout(resolve, 100));
  await c.close(); // bounded: the socket's close handshake cannot complete against a stopped process
  const r = await pending;
  assert.equal(r.ok, false);
  assert.ok(!r.ok && (r.code === 'NOT_CONNECTED' || r.code === 'TIMEOUT'), `a CommyError code: ${!r.ok && String(r.err)}`);
  child.kill('SIGCONT');
  await g.check();
});

test('close() while a query streams: the loop ends with NOT_CONNECTED (or completes whole), never hangs', { timeout: 180_000 }, async (t) => {
  const g = guard(t);
  const dataDir = tempDir(t);
  const { child, url } = await serverIn(t, dataDir);
  t.after(() => child.kill('SIGCONT'));
  const setup = await reconnectingClient(t, url);
  const vf = await setup.getVirtualServiceFile('acme', 'stream');
  const count = 300;
  for (let i = 0; i < count; i++) await vf.registerVariable(new VariableMetadata(`v${i}`, -1, 64 * 1024, VariableType.Bytes));
  await vf.close();

  const c = await reconnectingClient(t, url, { requestTimeoutMs: 60_000 });
  let pages = 0;
  const seen = new Set<string>();
  let closing: Promise<void> | undefined;
  const loop = outcome(
    (async () => {
      for await (const page of c.query({ tenant: 'acme', values: true })) {
        pages++;
        for (const s of page.services) for (const v of s.variables) seen.add(`${s.service}/${v.metadata.name}`);
        if (pages === 1) {
          child.kill('SIGSTOP'); // the rest of the stream cannot come any more
          closing = c.close();
        }
      }
    })(),
  );
  const r = await loop;
  await closing;
  t.diagnostic(`${pages} pages, ${seen.size} variables before the loop ended (${r.ok ? 'completed' : 'failed'})`);
  if (r.ok) assert.equal(seen.size, count, 'a loop that ends without an error has every variable');
  else assert.equal(r.code, 'NOT_CONNECTED', `the loop ends with a CommyError: ${String(r.err)}`);
  child.kill('SIGCONT');
  await g.check();
});
