import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseExposition } from '../src/core/metrics-text.js';
import { VariableType } from '../src/core/variable-type.js';
import { ago, describeError, formatCell, formatValue, numericOf, parseValue } from '../src/inspector/format.js';
import { History, SAMPLES } from '../src/inspector/sparkline.js';
import { trafficFigures } from '../src/inspector/traffic.js';
import { CommyError, ErrorCode } from '../src/core/errors.js';

/** The inspector's pure parts: how values are shown and edited, the sparkline's points, the traffic figures. */

test('values are shown on one line: numbers, bigints, quoted strings, bytes in hex (cut), struct fields', () => {
  assert.equal(formatValue(42), '42');
  assert.equal(formatValue(0.1 + 0.2), '0.3');
  assert.equal(formatValue(2n ** 64n - 1n), '18446744073709551615');
  assert.equal(formatValue(true), 'true');
  assert.equal(formatValue('a "b"\n'), '"a \\"b\\"\\n"');
  assert.equal(formatValue(new Uint8Array([0, 1, 255])), '0001ff');
  assert.match(formatValue(new Uint8Array(100)), /^0{64}… \(100 bytes\)$/);
  assert.equal(formatValue({ x: 1.5, y: 2n, name: 'p' }), 'x: 1.5, y: 2, name: "p"');
  assert.equal(formatCell({ x: 1.5, y: 2n }), 'x: 1.5\ny: 2', 'in the table: a field a line');
  assert.equal(formatCell(7), '7');
});

test('edited text becomes the variable type\'s value, or TYPE_MISMATCH', () => {
  assert.equal(parseValue(' 42 ', VariableType.U64, 0n), 42n);
  assert.equal(parseValue('-7', VariableType.I64, 0n), -7n);
  assert.equal(parseValue('0xff', VariableType.U8, 0), 255);
  assert.equal(parseValue('2.5', VariableType.F64, 0), 2.5);
  assert.equal(parseValue('1e3', VariableType.F32, 0), 1000);
  assert.equal(parseValue('true', VariableType.Bool, false), true);
  assert.equal(parseValue('0', VariableType.Bool, true), false);
  assert.equal(parseValue('  spaced ', VariableType.String, ''), '  spaced ');
  assert.deepEqual(parseValue('00 01 ff', VariableType.Bytes, new Uint8Array()), new Uint8Array([0, 1, 255]));
  assert.deepEqual(parseValue('{"x": 3}', 13, { x: 1.5, y: 2n }), { x: 3, y: 2n }, 'a struct: fields left out keep their value');
  assert.deepEqual(parseValue('{"y": 5}', 13, { x: 1.5, y: 2n }), { x: 1.5, y: 5n }, 'a bigint field stays a bigint');
  for (const [text, type, current] of [
    ['4.5', VariableType.U32, 0],
    ['', VariableType.F64, 0],
    ['abc', VariableType.F64, 0],
    ['yes', VariableType.Bool, false],
    ['0g', VariableType.Bytes, new Uint8Array()],
    ['{"z": 1}', 13, { x: 1 }],
    ['[1]', 13, { x: 1 }],
    ['not json', 13, { x: 1 }],
  ] as const) {
    assert.throws(() => parseValue(text, type, current), { code: 'TYPE_MISMATCH' }, `${text} as type ${type}`);
  }
});

test('numbers for the sparkline, ages and errors as one line', () => {
  assert.equal(numericOf(3), 3);
  assert.equal(numericOf(3n), 3);
  assert.equal(numericOf(true), 1);
  assert.equal(numericOf(Infinity), undefined);
  assert.equal(numericOf('3'), undefined);
  assert.equal(ago(500), 'just now');
  assert.equal(ago(12_000), '12 s ago');
  assert.equal(ago(180_000), '3 min ago');
  assert.equal(describeError(new CommyError(ErrorCode.PERMISSION_DENIED, 'no')), 'PERMISSION_DENIED: no');
  assert.equal(describeError('x'), 'x');
});

test('the sparkline keeps the last values and scales them into its box', () => {
  const h = new History();
  assert.equal(h.points(100, 20), '');
  h.push(5);
  assert.equal(h.points(100, 20), '100.0,10.0', 'one value: at the right edge, mid-height');
  h.push(5);
  assert.deepEqual(h.points(118, 20).split(' ').map((p) => p.split(',')[1]), ['10.0', '10.0'], 'equal values: flat');
  for (let i = 0; i < 200; i++) h.push(i);
  assert.equal(h.length, SAMPLES);
  const pts = h.points(118, 20).split(' ').map((p) => p.split(',').map(Number));
  assert.deepEqual(pts[0], [0, 20], 'the oldest kept, the lowest: bottom left');
  assert.deepEqual(pts.at(-1), [118, 0], 'the newest, the highest: top right');
});

test('traffic figures between two scrapes: connections, rates, ack percentiles from the histogram', () => {
  const a = parseExposition([
    'commy_connections{state="authenticated"} 3',
    'commy_messages_received_total{type="Mutate"} 100',
    'commy_sent_bytes_total{type="SyncBatch"} 0',
    'commy_write_ack_seconds_bucket{le="0.001"} 0',
    'commy_write_ack_seconds_bucket{le="0.01"} 0',
    'commy_write_ack_seconds_bucket{le="+Inf"} 0',
  ].join('\n'));
  const b = parseExposition([
    '# HELP x y',
    'commy_connections{state="authenticated"} 4',
    'commy_connections{state="unauthenticated"} 1',
    'commy_messages_received_total{type="Mutate"} 300',
    'commy_messages_received_total{type="Ping"} 100',
    'commy_sent_bytes_total{type="SyncBatch"} 20480',
    'commy_write_ack_seconds_bucket{le="0.001"} 90',
    'commy_write_ack_seconds_bucket{le="0.01"} 100',
    'commy_write_ack_seconds_bucket{le="+Inf"} 100',
    'commy_services_open{tenant="acme"} 2',
  ].join('\n'));
  const f = new Map(trafficFigures(a, b, 2).map((x) => [x.label, x.value]));
  assert.equal(f.get('connections'), '5 (1 signing in)');
  assert.equal(f.get('messages in / s'), '150');
  assert.equal(f.get('KB out / s'), '10.0');
  assert.equal(f.get('write → ack p50'), '≤ 1.0 ms');
  assert.equal(f.get('write → ack p99'), '≤ 10.0 ms');
  assert.equal(f.get('services open'), '2');
});
