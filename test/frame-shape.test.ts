import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { decodeFrame, encodeFrame } from '../src/protocol/frame-codec.js';
import { elementCountExceeds } from '../src/protocol/frame-shape.js';

/** The walk that bounds decoding work: it must count exactly what a decoder would build. */

const packr = new Packr({ useRecords: false, variableMapSize: true });

function elements(v: unknown): number {
  if (Array.isArray(v)) return 1 + v.reduce((n: number, x) => n + elements(x), 0);
  if (v instanceof Uint8Array || v === null || typeof v !== 'object') return 1;
  return 1 + Object.entries(v).reduce((n, [, x]) => n + 1 + elements(x), 0);
}

const value = fc.letrec((tie) => ({
  leaf: fc.oneof(
    fc.integer(),
    fc.double({ noNaN: true }),
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }),
    fc.string({ maxLength: 300 }),
    fc.uint8Array({ maxLength: 70_000 }),
    fc.boolean(),
    fc.constant(null),
  ),
  node: fc.oneof({ depthSize: 'small' }, tie('leaf'), fc.array(tie('node'), { maxLength: 20 }), fc.dictionary(fc.string({ maxLength: 8 }), tie('node'), { maxKeys: 20 })),
})).node;

test('the element count matches the decoded structure, for any MessagePack value', () => {
  fc.assert(
    fc.property(value, (v) => {
      const bytes = packr.pack(v);
      const count = elements(v);
      assert.equal(elementCountExceeds(bytes, count), false, `exactly ${count} elements fit a limit of ${count}`);
      assert.equal(elementCountExceeds(bytes, count - 1), true, `${count} elements exceed ${count - 1}`);
    }),
    { numRuns: 1500 },
  );
});

test('a frame that declares more elements than it holds is refused before decoding; truncated frames are left to the decoder', () => {
  const huge = Uint8Array.from([0xdd, 0xff, 0xff, 0xff, 0xff]); // array32 of 4 billion, no bytes
  assert.equal(elementCountExceeds(huge, 1000), true);
  assert.equal(elementCountExceeds(Uint8Array.from([0x93, 0x01]), 1000), false);
  assert.equal(elementCountExceeds(Uint8Array.from([]), 1000), false);
});

test('decodeFrame with maxElements: 262,000 empty changes are MESSAGE_TOO_LARGE without being decoded', () => {
  const frame = encodeFrame('ReportVariableChanges', 7, { sid: 1, changes: Array.from({ length: 262_000 }, () => [0, new Uint8Array(0)] as [number, Uint8Array]) });
  assert.throws(
    () => decodeFrame(frame, 2 << 20, 20_000),
    (err: { code?: string; requestId?: number }) => err.code === 'MESSAGE_TOO_LARGE',
  );
  const ok = encodeFrame('ReportVariableChanges', 8, { sid: 1, changes: Array.from({ length: 4096 }, () => [0, new Uint8Array(8)] as [number, Uint8Array]) });
  assert.equal(decodeFrame(ok, 2 << 20, 3 * 4096 + 64).type, 'ReportVariableChanges');
});
