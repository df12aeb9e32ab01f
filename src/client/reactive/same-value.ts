/**
 * Whether a freshly decoded value equals the one a signal shows, so the signal keeps showing the old object and
 * nothing downstream re-runs: numbers, bigints, booleans and strings by value (NaN equals NaN), byte arrays by
 * their bytes, plain objects (struct values) field by field. Anything else only by identity.
 */
export function sameValue(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (a instanceof Uint8Array) return b instanceof Uint8Array && sameBytes(a, b);
  if (isPlainObject(a)) return isPlainObject(b) && sameFields(a, b);
  return false;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function sameFields(a: Record<string, unknown>, b: Record<string, unknown>): boolean {
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  for (const key of keys) if (!Object.hasOwn(b, key) || !sameValue(a[key], b[key])) return false;
  return true;
}
