import type { DirEntry } from './directory.js';
import { alignUp } from './file-format.js';

/**
 * Where a new variable of `size` bytes fits in space that removed variables freed: the lowest aligned offset
 * inside a removed variable's old range (adjacent ones merged) that no live variable occupies, or undefined.
 * Only freed space is reused, never a gap a registration at an explicit offset left (its owner may mean to
 * fill it). Runs under the registration lock, so nothing is placed in the same space twice.
 */
export function freedOffset(slots: readonly DirEntry[], size: number, align: number): number | undefined {
  const freed = merged(slots.filter((e) => e.removed).map((e): [number, number] => [e.meta.offset, e.meta.end]));
  if (freed.length === 0) return undefined;
  const taken = slots.filter((e) => !e.removed).map((e): [number, number] => [e.meta.offset, e.meta.end]).sort((a, b) => a[0] - b[0]);
  for (const [start, end] of freed) {
    let from = start;
    for (const [s, e] of taken) {
      if (e <= from) continue;
      if (s >= end) break;
      const at = alignUp(from, align);
      if (at + size <= s) return at;
      from = Math.max(from, e);
    }
    const at = alignUp(from, align);
    if (at + size <= end) return at;
  }
  return undefined;
}

/** Sorted, with overlapping or touching ranges merged. */
function merged(ranges: [number, number][]): [number, number][] {
  ranges.sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const r of ranges) {
    const last = out[out.length - 1];
    if (last !== undefined && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else out.push(r);
  }
  return out;
}
