import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Connection } from '../src/client/connection.js';
import type { TransportEvents, TransportFactory } from '../src/client/transport.js';
import { CommyError } from '../src/index.js';
import { decodeFrame, encodeFrame } from '../src/protocol/frame-codec.js';
import type { Message } from '../src/protocol/messages.js';

/** A Connection over a scripted transport: the test plays the server, frame by frame. */
async function scripted(t: { after(fn: () => unknown): void }, requestTimeoutMs = 5000) {
  const sent: Message[] = [];
  const pushes: Message[] = [];
  const errors: CommyError[] = [];
  const closed: CommyError[] = [];
  let events: TransportEvents | undefined;
  const factory: TransportFactory = async (_url, ev) => {
    events = ev;
    return { isOpen: true, send: (frame) => sent.push(decodeFrame(frame)), close: async () => {} };
  };
  const conn = await Connection.open('ws://scripted', factory, {
    requestTimeoutMs,
    maxFrameBytes: 2048,
    maxIncomingBytes: 1 << 20,
    onPush: (m) => pushes.push(m),
    onClosed: (e) => closed.push(e),
    onError: (e) => errors.push(e),
  });
  t.after(() => conn.close());
  return { conn, sent, pushes, errors, closed, frame: (bytes: Uint8Array) => events!.frame(bytes), lose: () => events!.closed(1006, '') };
}

const auth = { tenant: 'acme', method: 'apiKey' as const, credential: 'k', protocol: 1 };
const authenticated = { clientId: 'c1', hostId: 'h', protocol: 1, keyId: 'ops' };

test('replies are matched by request id, in any order; pushes and id-0 errors go to their handlers', async (t) => {
  const s = await scripted(t);
  const first = s.conn.request('Authenticate', auth, 'Authenticated');
  const second = s.conn.request('ReadVariable', { tenant: 'acme', service: 's', name: 'x' }, 'VariableValue');
  const [m1, m2] = s.sent;
  assert.notEqual(m1!.id, m2!.id);
  s.frame(encodeFrame('VariableValue', m2!.id, { name: 'x', value: new Uint8Array([1]), version: 3 }));
  s.frame(encodeFrame('SyncBatch', 0, { sid: 1, version: 3, updates: [] }));
  s.frame(encodeFrame('Authenticated', m1!.id, authenticated));
  s.frame(encodeFrame('Error', 0, { errorCode: 'RATE_LIMITED', message: 'slow down' }));
  assert.equal((await second).version, 3);
  assert.equal((await first).keyId, 'ops');
  assert.deepEqual(s.pushes.map((m) => m.type), ['SyncBatch']);
  assert.deepEqual(s.errors.map((e) => e.code), ['RATE_LIMITED']);
});

test('an Error reply rejects its request with the server\'s code; a reply of the wrong type is INVALID_MESSAGE', async (t) => {
  const s = await scripted(t);
  const denied = s.conn.request('Authenticate', auth, 'Authenticated');
  const wrong = s.conn.request('Authenticate', auth, 'Authenticated');
  s.frame(encodeFrame('Error', s.sent[0]!.id, { errorCode: 'AUTH_FAILED', message: 'bad key' }));
  s.frame(encodeFrame('Unsubscribed', s.sent[1]!.id, { sid: 1 }));
  await assert.rejects(denied, (err: unknown) => err instanceof CommyError && err.code === 'AUTH_FAILED');
  await assert.rejects(wrong, { code: 'INVALID_MESSAGE' });
});

test('garbage from the server: reported, and the connection goes on', async (t) => {
  const s = await scripted(t);
  s.frame(new Uint8Array([0xc1, 0xff, 0x00]));
  s.frame(encodeFrame('SyncBatch', 0, { sid: 0, version: 1, updates: [] })); // sid 0 is invalid
  assert.deepEqual(s.errors.map((e) => e.code), ['INVALID_MESSAGE', 'INVALID_MESSAGE']);
  const ok = s.conn.request('Authenticate', auth, 'Authenticated');
  s.frame(encodeFrame('Authenticated', s.sent[0]!.id, authenticated));
  assert.equal((await ok).clientId, 'c1');
});

test('limits: an oversized frame is never sent; a request without a reply times out and its late reply is dropped', async (t) => {
  const s = await scripted(t, 30);
  await assert.rejects(s.conn.request('WriteVariable', { tenant: 'a', service: 'b', name: 'c', value: new Uint8Array(4096) }, 'VariableChangesAcknowledged'), { code: 'MESSAGE_TOO_LARGE' });
  assert.equal(s.sent.length, 0);
  await assert.rejects(s.conn.request('Authenticate', auth, 'Authenticated'), { code: 'TIMEOUT' });
  s.frame(encodeFrame('Authenticated', s.sent[0]!.id, authenticated));
  assert.deepEqual(s.errors, []);
});

test('connection loss rejects every pending request with NOT_CONNECTED, once; later requests fail at once', async (t) => {
  const s = await scripted(t);
  const a = s.conn.request('Authenticate', auth, 'Authenticated');
  const b = s.conn.request('Authenticate', auth, 'Authenticated');
  s.lose();
  await assert.rejects(a, { code: 'NOT_CONNECTED' });
  await assert.rejects(b, { code: 'NOT_CONNECTED' });
  assert.equal(s.closed.length, 1);
  assert.equal(s.conn.state, 'closed');
  await assert.rejects(s.conn.request('Authenticate', auth, 'Authenticated'), { code: 'NOT_CONNECTED' });
});
