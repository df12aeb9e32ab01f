import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCommyError, VariableMetadata, VariableType } from '../src/index.js';
import { startClientServer } from './helpers/client-server.js';

/**
 * Attack: a careless user's operation ids on vf.mutate (remote). docs/client.md lets the caller pick `opId`
 * ("a positive integer unique per client; default: the client picks one"); docs/protocol.md: the server
 * answers a known id with the first write's answer. What the *client* then shows must still be the server's
 * value, and an id the user picked must not break the client's own writes.
 */

async function twoClients(t: Parameters<typeof startClientServer>[0], service: string) {
  const s = await startClientServer(t);
  const writer = await s.connect({ onError: () => {} });
  const vf = await writer.getVirtualServiceFile('acme', service);
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  await vf.registerVariable(new VariableMetadata('m', -1, 8, VariableType.U64));
  /** What the server holds: a fresh client's snapshot. */
  const truth = async (name: string): Promise<{ value: unknown; version: bigint }> => {
    const c = await s.connect();
    const seen = await c.getVirtualServiceFile('acme', service);
    const r = { value: seen.get(name), version: seen.handle(name).version() };
    await c.close();
    return r;
  };
  return { s, writer, vf, truth };
}

test('an opId reused by the caller with another value is refused (INVALID_MESSAGE): the server keeps the first value, and so does the client', { timeout: 60_000 }, async (t) => {
  const { vf, truth } = await twoClients(t, 'reuse');
  const first = await vf.mutate('n', 1n, { opId: 1_000_001 });
  const same = await vf.mutate('n', 1n, { opId: 1_000_001 }); // the same write again: answered with the first answer
  assert.equal(same.version, first.version, 'a true retry gets the first answer');
  await assert.rejects(vf.mutate('n', 2n, { opId: 1_000_001 }), { code: 'INVALID_MESSAGE' }, 'the same id for another value is another write');
  const server = await truth('n');
  assert.equal(server.value, 1n, 'not applied again at the server');
  // The client committed 2n into both buffers at the first write's version: a value the server never had,
  // under a version that names another value, and nothing will ever correct it (no echo of one's own writes).
  assert.equal(vf.get('n'), server.value, `the client shows ${String(vf.get('n'))}, the server has ${String(server.value)}`);
  assert.deepEqual(vf.bytes(), vf.shadowBytes());
});

test('an opId reused with a stale expectedVersion and another value is refused: a compare-and-set that did not happen never reports success', { timeout: 60_000 }, async (t) => {
  const { vf, truth } = await twoClients(t, 'reuse-cas');
  const v0 = vf.handle('n').version();
  const first = await vf.mutate('n', 10n, { opId: 2_000_001, expectedVersion: v0 });
  // v0 is stale now: a fresh id would get CONFLICT. Reusing the id gets the first answer instead.
  await assert.rejects(vf.mutate('n', 99n, { expectedVersion: v0 }), { code: 'CONFLICT' });
  let outcome: string;
  try {
    const r = await vf.mutate('n', 99n, { opId: 2_000_001, expectedVersion: v0 });
    outcome = `resolved at ${r.version} (first was ${first.version})`;
  } catch (err) {
    outcome = isCommyError(err) ? err.code : String(err);
  }
  const server = await truth('n');
  assert.equal(server.value, 10n);
  assert.equal(vf.get('n'), 10n, `a CAS against a stale version ${outcome}, and the client now shows ${String(vf.get('n'))}`);
});

test("an opId the caller picked never collides with the client's own counter: a later unrelated flush goes through", { timeout: 60_000 }, async (t) => {
  const { vf, truth } = await twoClients(t, 'collide');
  // Callers pick ids from 1 to 2^32 - 1; the client numbers its own writes above that range (docs/client.md).
  await vf.mutate('n', 5n, { opId: 1 });
  vf.set('m', 7n); // the client's first report: opId 1, already the server's answer for the Mutate of n
  let failure: string | undefined;
  try {
    await vf.flush();
  } catch (err) {
    failure = isCommyError(err) ? `${err.code}: ${err.message}` : String(err);
  }
  const server = await truth('m');
  assert.equal(failure, undefined, `a plain set()+flush() of another variable is refused: ${failure}`);
  assert.equal(server.value, 7n);
  assert.equal(vf.get('m'), 7n);
});
