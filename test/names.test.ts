import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { assertValidName, isValidName } from '../src/core/names.js';

test('valid names', () => {
  for (const n of ['a', 'A9', '0', 'temp.sensor-1_x', 'x'.repeat(64)]) assert.ok(isValidName(n), n);
});

test('invalid names', () => {
  for (const n of ['', '.', '..', '../x', 'a/b', 'a\\b', '-x', '_x', '.x', 'x'.repeat(65), 'a\0', 'é', 'a b', 'a:b', 42, null, undefined]) {
    assert.ok(!isValidName(n), String(n));
    assert.throws(() => assertValidName(n), { code: 'INVALID_NAME' });
  }
});

test('no valid name can address outside its directory', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 80 }), (s) => {
      if (isValidName(s)) assert.ok(!s.includes('/') && !s.includes('\\') && !s.includes('\0') && s !== '.' && s !== '..' && s.length <= 64);
    }),
    { numRuns: 5000 },
  );
});
