/** FNV-1a's 32-bit offset basis: where a digest starts. */
export const FNV_BASIS = 0x811c9dc5;

/**
 * 32-bit FNV-1a of `data` (bytes, or a string's UTF-16 code units), continuing from `h`: a cheap change
 * detector (operation fingerprints and their journal digests), not a security boundary.
 */
export function fnv1a(data: Uint8Array | string, h: number = FNV_BASIS): number {
  if (typeof data === 'string') {
    for (let i = 0; i < data.length; i++) h = Math.imul(h ^ data.charCodeAt(i), 0x01000193);
  } else {
    for (let i = 0; i < data.length; i++) h = Math.imul(h ^ data[i]!, 0x01000193);
  }
  return h >>> 0;
}
