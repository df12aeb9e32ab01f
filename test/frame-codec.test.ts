import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { decodeFrame, encodeFrame } from '../src/protocol/frame-codec.js';
import { SharedSyncBatch } from '../src/protocol/sync-batch-frame.js';
import { CommyError } from '../src/index.js';
import { MessageType, type Update } from '../src/protocol/messages.js';

const ALLOWED = new Set(['INVALID_MESSAGE', 'UNKNOWN_MESSAGE', 'MESSAGE_TOO_LARGE']);

function decodeOrCode(bytes: Uint8Array): string {
  try {
    decodeFrame(bytes);
    return 'ok';
  } catch (err) {
    assert.ok(err instanceof CommyError, `decode threw a non-CommyError: ${String(err)}`);
    assert.ok(ALLOWED.has(err.code), err.code);
    return err.code;
  }
}

test('every client request round-trips', () => {
  const frames = [
    encodeFrame('Authenticate', 1, { tenant: 'acme', method: 'apiKey', credential: 'ops:x', protocol: 1 }),
    encodeFrame('GetServiceFilePath', 2, { tenant: 'acme', service: 's', create: true }),
    encodeFrame('Subscription', 3, { tenant: 'acme', service: 's', variables: ['a*'] }),
    encodeFrame('Unsubscribe', 4, { sid: 1 }),
    encodeFrame('RegisterVariable', 5, { sid: 1, name: 'x', offset: -1, size: 8, typeId: 1 }),
    encodeFrame('ReadVariable', 6, { tenant: 'acme', service: 's', name: 'x' }),
    encodeFrame('WriteVariable', 7, { tenant: 'acme', service: 's', name: 'x', value: new Uint8Array([1, 2]) }),
    encodeFrame('ReportVariableChanges', 8, { sid: 1, changes: [[0, new Uint8Array([9])]] }),
    encodeFrame('SyncBatch', 0, { sid: 1, version: 5, defs: [[0, 'x', 0, 8, 1, 5]], updates: [[0, 5, new Uint8Array(8)]] }),
    encodeFrame('Error', 9, { errorCode: 'AUTH_FAILED', message: 'no' }),
  ];
  const decoded = frames.map((f) => decodeFrame(f));
  assert.deepEqual(decoded.map((m) => m.type), ['Authenticate', 'GetServiceFilePath', 'Subscription', 'Unsubscribe', 'RegisterVariable', 'ReadVariable', 'WriteVariable', 'ReportVariableChanges', 'SyncBatch', 'Error']);
  assert.deepEqual(decoded.map((m) => m.id), [1, 2, 3, 4, 5, 6, 7, 8, 0, 9]);
  const w = decoded[6]!;
  assert.ok(w.type === 'WriteVariable' && w.body.value instanceof Uint8Array && w.body.value[1] === 2);
});

test('notify subscriptions and their VariablesUpdated (with sid) round-trip', () => {
  const sub = decodeFrame(encodeFrame('Subscription', 3, { tenant: 'acme', service: 's', notify: true }));
  assert.ok(sub.type === 'Subscription' && sub.body.notify === true);
  const upd = decodeFrame(encodeFrame('VariablesUpdated', 0, { serviceId: 'acme/s', version: 7, variables: ['x', 'y'], sid: 2 }));
  assert.ok(upd.type === 'VariablesUpdated' && upd.body.sid === 2 && upd.body.variables.length === 2);
  const plain = decodeFrame(encodeFrame('VariablesUpdated', 0, { serviceId: 'acme/s', version: 7, variables: [] }));
  assert.ok(plain.type === 'VariablesUpdated' && plain.body.sid === undefined, 'sid is optional');
});

test('malformed frames: the right code, with the request id when it can be read', () => {
  const packr = new Packr({ useRecords: false });
  const cases: [unknown, string][] = [
    [[MessageType.Authenticate, 1, { tenant: 'a', method: 'password', credential: 'x', protocol: 1 }], 'INVALID_MESSAGE'],
    [[MessageType.Authenticate, 1, { tenant: 5, method: 'apiKey', credential: 'x', protocol: 1 }], 'INVALID_MESSAGE'],
    [[MessageType.WriteVariable, 2, { tenant: 'a', service: 'b', name: 'c', value: 'text' }], 'INVALID_MESSAGE'],
    [[MessageType.ReportVariableChanges, 3, { sid: 1, changes: [[-1, new Uint8Array(1)]] }], 'INVALID_MESSAGE'],
    [[MessageType.Subscription, 3, { tenant: 'a', service: 'b', notify: 'yes' }], 'INVALID_MESSAGE'],
    [[MessageType.VariablesUpdated, 0, { serviceId: 'a/b', version: 1, variables: ['x'], sid: 0 }], 'INVALID_MESSAGE'],
    [[99, 4, {}], 'UNKNOWN_MESSAGE'],
    [[MessageType.Unsubscribe, 5, []], 'INVALID_MESSAGE'],
    [[MessageType.Unsubscribe, -5, { sid: 1 }], 'INVALID_MESSAGE'],
    [{ type: 1 }, 'INVALID_MESSAGE'],
    ['hello', 'INVALID_MESSAGE'],
  ];
  for (const [value, code] of cases) {
    try {
      decodeFrame(packr.pack(value));
      assert.fail(`accepted ${JSON.stringify(value)}`);
    } catch (err) {
      assert.equal((err as CommyError).code, code, JSON.stringify(value));
    }
  }
  try {
    decodeFrame(packr.pack([99, 42, {}]));
  } catch (err) {
    assert.equal((err as { requestId?: number }).requestId, 42);
  }
});

test('a frame over the limit is MESSAGE_TOO_LARGE before it is parsed', () => {
  const frame = encodeFrame('WriteVariable', 1, { tenant: 'a', service: 'b', name: 'c', value: new Uint8Array(2000) });
  assert.throws(() => decodeFrame(frame, 1000), { code: 'MESSAGE_TOO_LARGE' });
  assert.equal(decodeFrame(frame, 4000).type, 'WriteVariable');
});

test('every prefix of a valid frame is refused cleanly (fed one byte at a time)', () => {
  const frame = encodeFrame('ReportVariableChanges', 7, { sid: 3, changes: [[1, new Uint8Array([1, 2, 3])], [2, new Uint8Array(40)]] });
  for (let n = 0; n < frame.length; n++) assert.notEqual(decodeOrCode(frame.subarray(0, n)), 'ok', `prefix ${n}`);
  assert.equal(decodeOrCode(frame), 'ok');
});

test('fuzz: random bytes and random MessagePack never crash the decoder', () => {
  const packr = new Packr({ useRecords: false });
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      decodeOrCode(bytes);
    }),
    { numRuns: 20_000, interruptAfterTimeLimit: 15_000 },
  );
  fc.assert(
    fc.property(fc.tuple(fc.integer({ min: 0, max: 130 }), fc.integer({ min: -2, max: 2 ** 32 }), fc.anything()), (value) => {
      decodeOrCode(packr.pack(value));
    }),
    { numRuns: 20_000, interruptAfterTimeLimit: 15_000 },
  );
});

test('a shared SyncBatch decodes, for every sid, exactly as the same batch encoded alone', () => {
  const updates: Update[] = [
    [0, 7, Uint8Array.of(1, 2, 3)],
    [300, 2 ** 40, new Uint8Array(70_000).fill(9)],
  ];
  const shared = new SharedSyncBatch(123_456, updates);
  for (const sid of [1, 127, 128, 65_536, 0x7fffffff]) {
    const frame = shared.frameFor(sid);
    assert.equal(frame.length, shared.byteLength);
    const got = decodeFrame(frame, 1 << 20);
    const alone = decodeFrame(encodeFrame('SyncBatch', 0, { sid, version: 123_456, updates }), 1 << 20);
    assert.deepEqual(got, alone);
  }
});
