import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCommyError, nodePlatform, registerPlatform, VariableMetadata, VariableType, type Client, type TransportFactory } from '../src/internal.js';
import { reconnectingClient, serverIn, until } from './helpers/server-process.js';
import { tempDir } from './helpers/temp.js';

/**
 * Attack: the server applies a write, its answer is lost, and the server is killed (-9) before the client
 * hears anything — the case operation ids exist for (README: the client "resends a write whose answer was lost
 * under its operation id, so it is applied once"). The client's transport is wrapped (commy/internal's
 * registerPlatform) so the test can drop every frame the server sends: deterministic, no timing.
 */

/** A Node platform whose transport drops incoming frames while `deaf` is set. */
function deafenable(): { factory: TransportFactory; set(deaf: boolean): void } {
  let deaf = false;
  const factory: TransportFactory = (url, events, options) =>
    nodePlatform.openTransport(url, { frame: (data) => void (deaf || events.frame(data)), closed: events.closed }, options);
  return { factory, set: (d) => void (deaf = d) };
}

async function deafClient(t: Parameters<typeof reconnectingClient>[0], url: string): Promise<{ client: Client; deaf(on: boolean): void }> {
  const d = deafenable();
  registerPlatform({ ...nodePlatform, openTransport: d.factory });
  try {
    const client = await reconnectingClient(t, url, { requestTimeoutMs: 60_000 });
    return { client, deaf: d.set };
  } finally {
    registerPlatform(nodePlatform); // only this client's transport is wrapped (the platform is read at construction)
  }
}

test('a compare-and-set applied by a server that died before answering: the resend to the restarted server gets the first answer (the journal), not CONFLICT', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const port = new URL(first.url).port;
  const { client, deaf } = await deafClient(t, first.url);
  const vf = await client.getVirtualServiceFile('acme', 'cas');
  await vf.registerVariable(new VariableMetadata('counter', -1, 8, VariableType.U64));
  const observer = await reconnectingClient(t, first.url);
  const seen = await observer.getVirtualServiceFile('acme', 'cas');

  // One CAS increment, as docs/client.md shows it: read the version, then the value, mutate.
  const h = vf.handle<bigint>('counter');
  const version = h.version();
  deaf(true); // the answer will be lost
  const mutation = vf.mutate('counter', h.get() + 1n, { expectedVersion: version }).then(
    (r) => ({ ok: true as const, version: r.version }),
    (err: unknown) => ({ ok: false as const, code: isCommyError(err) ? err.code : String(err) }),
  );
  await until(() => seen.get('counter') === 1n, 'the server applied the mutation');
  first.child.kill('SIGKILL');
  await first.child.exited;
  deaf(false);
  const second = await serverIn(t, dataDir, port);
  const outcome = await mutation;
  t.diagnostic(`the resent mutation: ${JSON.stringify(outcome, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);
  await until(() => observer.state === 'open', 'the observer is back');
  const reader = await reconnectingClient(t, second.url);
  assert.equal((await reader.getVirtualServiceFile('acme', 'cas')).get('counter'), 1n, 'applied once');
  // CONFLICT means "nothing written" (docs/client.md): a CAS loop then reads again and adds 1 more, so one
  // increment becomes two. Outcome unknown would be NOT_CONNECTED or TIMEOUT; success would be right too.
  assert.ok(outcome.ok || outcome.code !== 'CONFLICT', 'the mutation was applied, but the client was told CONFLICT (nothing written)');
  // The journal answers with the first answer: success, at the version the write got.
  assert.ok(outcome.ok, `the resent mutation failed: ${outcome.ok ? '' : outcome.code}`);
  assert.equal(BigInt(outcome.version), (await reader.getVirtualServiceFile('acme', 'cas')).handle('counter').version());
  second.child.send({ type: 'quit' });
});

test('a plain write applied by a server that died before answering: resent after the restart, the value is right (a second version is the cost)', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const port = new URL(first.url).port;
  const { client, deaf } = await deafClient(t, first.url);
  const vf = await client.getVirtualServiceFile('acme', 'plain');
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  const observer = await reconnectingClient(t, first.url);
  const seen = await observer.getVirtualServiceFile('acme', 'plain');
  deaf(true);
  vf.set('x', 5n);
  const flushed = vf.flush().then(() => 'ok', (err: unknown) => (isCommyError(err) ? err.code : String(err)));
  await until(() => seen.get('x') === 5n, 'the server applied the write');
  first.child.kill('SIGKILL');
  await first.child.exited;
  deaf(false);
  const second = await serverIn(t, dataDir, port);
  assert.equal(await flushed, 'ok');
  const reader = await reconnectingClient(t, second.url);
  const r = await reader.getVirtualServiceFile('acme', 'plain');
  assert.equal(r.get('x'), 5n);
  assert.equal(vf.get('x'), 5n);
  assert.equal(vf.handle('x').version(), r.handle('x').version(), 'the writer knows the version the server has');
  second.child.send({ type: 'quit' });
});

test('a write applied by a server that died before answering is not applied again after the restart, over a newer write by another client (the journal)', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const port = new URL(first.url).port;
  const { client, deaf } = await deafClient(t, first.url);
  const vf = await client.getVirtualServiceFile('acme', 'stale');
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  const observer = await reconnectingClient(t, first.url, { reconnect: false });
  const seen = await observer.getVirtualServiceFile('acme', 'stale');
  deaf(true);
  vf.set('x', 5n); // applied at some version v1; the answer is lost
  const flushed = vf.flush().then(() => 'ok', (err: unknown) => (isCommyError(err) ? err.code : String(err)));
  await until(() => seen.get('x') === 5n, 'the server applied x = 5');
  const v1 = seen.handle('x').version();
  first.child.kill('SIGKILL');
  await first.child.exited;
  deaf(false);

  // The server comes back (on another port first, so the writer cannot reconnect yet); another client writes
  // x = 7: ordered after x = 5, and acknowledged.
  const staging = await serverIn(t, dataDir);
  const other = await reconnectingClient(t, staging.url);
  const ovf = await other.getVirtualServiceFile('acme', 'stale');
  assert.equal(ovf.get('x'), 5n);
  ovf.set('x', 7n);
  await ovf.flush();
  const v2 = ovf.handle('x').version();
  assert.ok(v2 > v1);
  await other.close();
  staging.child.send({ type: 'quit' });
  await staging.child.exited;

  // Back on the writer's port: it resends its report under the same operation id.
  const second = await serverIn(t, dataDir, port);
  assert.equal(await flushed, 'ok');
  const reader = await reconnectingClient(t, second.url);
  const r = await reader.getVirtualServiceFile('acme', 'stale');
  // x = 5 happened once, before x = 7 (docs: "applied once"; "per-variable linearizable writes"). Applying it
  // again now puts x back to 5 with nobody writing it: the acknowledged x = 7 is silently lost.
  assert.equal(r.get('x'), 7n, `x is ${String(r.get('x'))} at version ${r.handle('x').version()} (x = 5 was v${v1}, x = 7 v${v2})`);
  second.child.send({ type: 'quit' });
});

test('compare-and-set increments from three clients while the server is killed (-9) and restarted three times: the counter is exactly the increments that succeeded, none lost, none doubled', { timeout: 240_000 }, async (t) => {
  const dataDir = tempDir(t);
  let server = await serverIn(t, dataDir);
  const port = new URL(server.url).port;
  const clients = await Promise.all([0, 1, 2].map(() => reconnectingClient(t, server.url, { requestTimeoutMs: 120_000 })));
  const files = await Promise.all(clients.map((c) => c.getVirtualServiceFile('acme', 'counter')));
  await files[0]!.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  await Promise.all(files.map((vf) => until(() => vf.variables().some((v) => v.name === 'n'), 'the variable reached every client')));
  let succeeded = 0;
  const conflicts = { n: 0 };
  let stop = false;
  // Each client: read the version and value, mutate with expectedVersion; CONFLICT means nothing was written.
  const loops = files.map(async (vf) => {
    const h = vf.handle<bigint>('n');
    while (!stop) {
      try {
        await vf.mutate('n', h.get() + 1n, { expectedVersion: h.version() });
        succeeded++;
      } catch (err) {
        if (!isCommyError(err) || err.code !== 'CONFLICT') throw err; // anything else: the outcome is unknown
        conflicts.n++;
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    }
  });
  for (let kill = 0; kill < 3; kill++) {
    const target = succeeded + 40;
    await until(() => succeeded >= target, `40 more increments (kill ${kill})`, 60_000);
    server.child.kill('SIGKILL');
    await server.child.exited;
    server = await serverIn(t, dataDir, port);
  }
  const last = succeeded + 40;
  await until(() => succeeded >= last, 'increments after the last restart', 60_000);
  stop = true;
  await Promise.all(loops);
  const reader = await reconnectingClient(t, server.url);
  const final = (await reader.getVirtualServiceFile('acme', 'counter')).get('n');
  t.diagnostic(`${succeeded} increments acknowledged, ${conflicts.n} conflicts, counter ${String(final)}`);
  assert.equal(final, BigInt(succeeded));
  server.child.send({ type: 'quit' });
});
