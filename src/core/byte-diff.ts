import type { VariableMetadata } from './variable-metadata.js';

export type ByteRange = [number, number];

/**
 * Exact maximal runs of differing bytes, [start, end). Bytes past the shorter input count as differing.
 * Portable fallback (browsers); Node uses the native SIMD diff, which gives the same answer.
 */
export function diffRangesJs(a: Uint8Array, b: Uint8Array): ByteRange[] {
  const common = Math.min(a.length, b.length);
  const out: ByteRange[] = [];
  let i = 0;
  // Skip equal 4-byte words when both views happen to be aligned the same way.
  const aligned = (a.byteOffset & 3) === 0 && (b.byteOffset & 3) === 0;
  const a32 = aligned ? new Uint32Array(a.buffer, a.byteOffset, common >> 2) : undefined;
  const b32 = aligned ? new Uint32Array(b.buffer, b.byteOffset, common >> 2) : undefined;
  while (i < common) {
    if (a32 !== undefined && b32 !== undefined && (i & 3) === 0) {
      let w = i >> 2;
      while (w < a32.length && a32[w] === b32[w]) w++;
      i = w << 2;
      if (i >= common) break;
    }
    if (a[i] === b[i]) {
      i++;
      continue;
    }
    const start = i;
    while (i < common && a[i] !== b[i]) i++;
    out.push([start, i]);
  }
  if (a.length !== b.length) {
    const last = out[out.length - 1];
    if (last !== undefined && last[1] === common) last[1] = Math.max(a.length, b.length);
    else out.push([common, Math.max(a.length, b.length)]);
  }
  return out;
}

/** Turns the native flat [s0, e0, s1, e1, ...] into pairs. */
export function pairsFromFlat(flat: ArrayLike<number>): ByteRange[] {
  const out: ByteRange[] = new Array(flat.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = [flat[2 * i]!, flat[2 * i + 1]!];
  return out;
}

/** Names of the variables that overlap any of the ranges (ranges sorted by start, as diffs give them). */
export function variablesTouched(variables: readonly VariableMetadata[], ranges: readonly ByteRange[]): string[] {
  if (ranges.length === 0) return [];
  const sorted = [...variables].sort((x, y) => x.offset - y.offset);
  const names: string[] = [];
  let r = 0;
  for (const v of sorted) {
    while (r < ranges.length && ranges[r]![1] <= v.offset) r++;
    if (r === ranges.length) break;
    // Ranges are disjoint and sorted, so the first range ending past v.offset decides.
    if (ranges[r]![0] < v.offset + v.size) names.push(v.name);
  }
  return names;
}
