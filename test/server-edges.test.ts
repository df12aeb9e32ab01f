import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pack } from 'msgpackr';
import type { WebSocket } from 'ws';
import { decodeFrame } from '../src/protocol/frame-codec.js';
import { RawClient } from './helpers/raw-client.js';
import { startServer } from './helpers/server.js';

/** Found by attacking a real server. */

test('an error for a frame with an out-of-range request id does not answer another request id', async (t) => {
  const server = await startServer(t);
  const client = await RawClient.connect(server.url);
  t.after(() => client.close());
  const ids: number[] = [];
  client.ws.on('message', (data: Buffer) => ids.push(decodeFrame(data, 1 << 26).id));
  // 0x80000005 is not a valid id (1 … 2^31−1); the client may well have request 5 waiting.
  client.ws.send(pack([1, 0x80000005, { tenant: 'acme', method: 'apiKey', credential: 'x', protocol: 1 }]));
  client.ws.send(pack([3, 0x80000006, { tenant: 'acme', service: 's' }]));
  const deadline = Date.now() + 5000;
  while (ids.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(ids, [0, 0], `errors answered request ids ${ids.join(', ')}`);
});

test('close() does not wait 30 s for a client that does not read its close frame', async (t) => {
  const server = await startServer(t);
  const client = await RawClient.connect(server.url);
  assert.equal((await client.auth('acme', 'ops:s3cret')).type, 'Authenticated');
  (client.ws as WebSocket & { _socket: { pause(): void } })._socket.pause(); // a stopped client
  const started = Date.now();
  await server.close();
  client.ws.terminate();
  const took = Date.now() - started;
  assert.ok(took < 15_000, `close() took ${took} ms (ws would wait 30 s for the close handshake)`);
});
