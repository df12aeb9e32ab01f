import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AuthCredentials, Client, nodePlatform, registerPlatform, VariableMetadata, VariableType, type Transport, type TransportFactory } from '../src/internal.js';
import { startClientServer } from './helpers/client-server.js';
import { FAST_RECONNECT, until } from './helpers/server-process.js';

/**
 * A socket that is closing (its close frame came, its close event not yet) refuses every send on the spot.
 * A mutate() asked then used to retry at once, in microtasks, forever: the event loop never reached the close
 * event that would end the wait, and the process spun at 100 % CPU (found once by the resume property test).
 * The client's transport is wrapped (commy/internal's registerPlatform) so the closing state can be held open.
 */

/** Node's transport, with a switch that makes it look closing: not open, sends dropped, no close event yet. */
function closable(): { factory: TransportFactory; closing(): Transport | undefined } {
  let last: Transport | undefined;
  let closing = false;
  const factory: TransportFactory = async (url, events, options) => {
    const real = await nodePlatform.openTransport(url, events, options);
    closing = false;
    last = real;
    return {
      get isOpen() {
        return !closing && real.isOpen;
      },
      send: (frame) => void (closing || real.send(frame)),
      close: (code, reason) => real.close(code, reason),
    };
  };
  return { factory, closing: () => ((closing = true), last) };
}

test('a mutate() asked while the socket is closing waits for the connection without starving the event loop, then commits once', { timeout: 60_000 }, async (t) => {
  const { url, connect } = await startClientServer(t);
  const wrap = closable();
  registerPlatform({ ...nodePlatform, openTransport: wrap.factory });
  let client: Client;
  try {
    client = await Client.initialize(url, 'acme', AuthCredentials.apiKey('ops:s3cret'), { mode: 'remote', reconnect: FAST_RECONNECT, onError: () => {} });
  } finally {
    registerPlatform(nodePlatform);
  }
  t.after(() => client.close());
  const vf = await client.getVirtualServiceFile('acme', 'closing');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));

  const real = wrap.closing()!;
  const mutating = vf.mutate('n', 7n);
  // With the spin, no timer ever fires again: this one would not, and the test would hang here.
  const ticked = await new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 50));
  assert.ok(ticked);
  await real.close(1000, 'closed at last'); // the close event: the client reconnects, and the mutation goes out
  const { version } = await mutating;
  assert.ok(version > 0n);
  const reader = await (await connect()).getVirtualServiceFile('acme', 'closing');
  await until(() => reader.get('n') === 7n, 'the mutation at the server');
  assert.equal(reader.handle('n').version(), version, 'committed once, at the version the client was told');
});
