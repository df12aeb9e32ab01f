import { describeFields } from './struct-layout.js';
import type { VariableMetadata } from './variable-metadata.js';

/**
 * A hash of a set of definitions (name, offset, size, type, a struct's fields), the same whatever order they come in and in
 * every mode: a client that sees `vf.layoutHash` change knows a variable was added or removed and rebuilds
 * its typed views. FNV-1a, 64 bits, as 16 hex digits: a change detector, not a security boundary.
 */
export function layoutHashOf(variables: readonly VariableMetadata[]): string {
  const sorted = [...variables].sort((a, b) => a.offset - b.offset || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  let hi = 0xcbf29ce4;
  let lo = 0x84222325;
  const mix = (text: string): void => {
    for (let i = 0; i < text.length; i++) {
      lo ^= text.charCodeAt(i);
      // (hi, lo) × 0x100000001b3, kept in two 32-bit halves
      const loMul = lo * 0x1b3;
      const carry = Math.floor(loMul / 0x100000000);
      hi = (hi * 0x1b3 + lo * 0x100 + carry) >>> 0;
      lo = loMul >>> 0;
    }
  };
  // A struct's fields follow its type: another layout at the same place is another definition.
  for (const v of sorted) mix(`${v.name}\u0000${v.offset}\u0000${v.size}\u0000${v.typeId}${v.fields === undefined ? '' : describeFields(v.fields)}\u0001`);
  return hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
}
