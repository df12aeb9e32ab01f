import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WebSocket } from 'ws';
import { decodeFrame, encodeFrame } from '../src/protocol/frame-codec.js';
import type { MessageBodies, MessageTypeName } from '../src/protocol/messages.js';
import { startServer } from './helpers/server.js';

/**
 * An operation id reused for a different kind of write (a client bug, or a hostile one): the server must never
 * answer with a frame its own protocol rejects (the cached answer of the first write, encoded as the second's
 * reply type), nor report a write to another service as done when nothing was written there.
 */

async function open(url: string): Promise<(type: MessageTypeName, body: unknown) => Promise<Uint8Array>> {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => (ws.once('open', resolve), ws.once('error', reject)));
  const waiting = new Map<number, (frame: Uint8Array) => void>();
  ws.on('message', (data: Buffer) => {
    const id = data[2]! <= 0x7f ? data[2]! : -1; // small request ids only
    waiting.get(id)?.(new Uint8Array(data));
  });
  let next = 1;
  return (type, body) =>
    new Promise((resolve) => {
      const id = next++;
      waiting.set(id, resolve);
      ws.send(encodeFrame(type, id, body as MessageBodies[typeof type]));
    });
}

test('an opId reused by a Mutate after a WriteVariable gets a valid reply, and no fake success', async (t) => {
  const server = await startServer(t);
  const req = await open(server.url);
  const auth = decodeFrame(await req('Authenticate', { tenant: 'acme', method: 'apiKey', credential: 's3cret', protocol: 1, clientKey: 'attackattackattack01' }));
  assert.equal(auth.type, 'Authenticated');
  for (const service of ['s1', 's2']) {
    const sub = decodeFrame(await req('Subscription', { tenant: 'acme', service, create: true }));
    assert.equal(sub.type, 'Snapshot');
    const reg = decodeFrame(await req('RegisterVariable', { sid: (sub.body as { sid: number }).sid, name: 'x', offset: -1, size: 8, typeId: 0 }));
    assert.equal(reg.type, 'VariableRegistered');
  }
  const first = decodeFrame(await req('WriteVariable', { tenant: 'acme', service: 's1', name: 'x', value: new Uint8Array([1]), opId: 7 }));
  assert.equal(first.type, 'VariableChangesAcknowledged');

  const frame = await req('Mutate', { sid: 2, index: 0, value: new Uint8Array([2]), opId: 7 });
  let reply;
  assert.doesNotThrow(() => (reply = decodeFrame(frame)), 'the server answered a frame its own codec rejects');
  const m = reply!;
  if (m.type === 'MutationResponse') {
    // Claimed as applied: then s2.x must really hold the new value.
    assert.equal(m.body.sid, 2);
    const read = decodeFrame(await req('ReadVariable', { tenant: 'acme', service: 's2', name: 'x' }));
    assert.equal(read.type, 'VariableValue');
    assert.equal((read.body as { value: Uint8Array }).value[0], 2, 'Mutate acknowledged, but s2.x was never written');
  } else {
    assert.equal(m.type, 'Error');
  }
});
