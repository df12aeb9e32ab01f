/**
 * A walk over a MessagePack frame's headers that counts its elements without decoding anything: a 1 MiB frame
 * of 262,000 tiny arrays costs msgpackr ~200 ms to decode (an allocation per element), so the server refuses a
 * frame with more elements than any real request needs before decoding it. Payloads (str, bin, ext) are
 * skipped, not read; the walk stops as soon as the count passes `max`. Linear in the headers visited.
 */
export function elementCountExceeds(frame: Uint8Array, max: number): boolean {
  let pos = 0;
  let pending = 1; // elements still to visit: the top-level value
  let seen = 0;
  const n = frame.length;
  const u16 = (at: number): number => (frame[at]! << 8) | frame[at + 1]!;
  const u32 = (at: number): number => ((frame[at]! << 24) | (frame[at + 1]! << 16) | (frame[at + 2]! << 8) | frame[at + 3]!) >>> 0;
  while (pending > 0) {
    if (pos >= n) return false; // truncated: the decoder will say so
    if (++seen > max) return true;
    pending--;
    const b = frame[pos]!;
    if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) pos += 1;
    else if (b <= 0x8f) (pending += 2 * (b & 0x0f)), (pos += 1);
    else if (b <= 0x9f) (pending += b & 0x0f), (pos += 1);
    else if (b <= 0xbf) pos += 1 + (b & 0x1f);
    else {
      const step = WIDE[b - 0xc0];
      if (step === undefined) return false; // 0xc1 (never used): the decoder refuses it
      const [head, kind] = step;
      if (pos + head > n) return false;
      if (kind === 'fixed') pos += head;
      else if (kind === 'len8') pos += head + frame[pos + 1]!;
      else if (kind === 'len16') pos += head + u16(pos + 1);
      else if (kind === 'len32') pos += head + u32(pos + 1);
      else if (kind === 'arr16') (pending += u16(pos + 1)), (pos += head);
      else if (kind === 'arr32') (pending += u32(pos + 1)), (pos += head);
      else if (kind === 'map16') (pending += 2 * u16(pos + 1)), (pos += head);
      else (pending += 2 * u32(pos + 1)), (pos += head);
    }
    if (seen + pending > max) return true; // it declares more elements than it may hold
  }
  return false;
}

/** `lenN`: an N-bit length right after the type byte, then that many payload bytes after the header. */
type Kind = 'fixed' | 'len8' | 'len16' | 'len32' | 'arr16' | 'arr32' | 'map16' | 'map32';

/** Bytes 0xc0–0xdf: header size (type byte included) and how the rest is measured. */
const WIDE: ([number, Kind] | undefined)[] = [
  [1, 'fixed'], // c0 nil (handled above)
  undefined, // c1 never used
  [1, 'fixed'], // c2 false
  [1, 'fixed'], // c3 true
  [2, 'len8'], // c4 bin8
  [3, 'len16'], // c5 bin16
  [5, 'len32'], // c6 bin32
  [3, 'len8'], // c7 ext8: length, ext type, data
  [4, 'len16'], // c8 ext16
  [6, 'len32'], // c9 ext32
  [5, 'fixed'], // ca float32
  [9, 'fixed'], // cb float64
  [2, 'fixed'], // cc uint8
  [3, 'fixed'], // cd uint16
  [5, 'fixed'], // ce uint32
  [9, 'fixed'], // cf uint64
  [2, 'fixed'], // d0 int8
  [3, 'fixed'], // d1 int16
  [5, 'fixed'], // d2 int32
  [9, 'fixed'], // d3 int64
  [3, 'fixed'], // d4 fixext1
  [4, 'fixed'], // d5 fixext2
  [6, 'fixed'], // d6 fixext4
  [10, 'fixed'], // d7 fixext8
  [18, 'fixed'], // d8 fixext16
  [2, 'len8'], // d9 str8
  [3, 'len16'], // da str16
  [5, 'len32'], // db str32
  [3, 'arr16'], // dc array16
  [5, 'arr32'], // dd array32
  [3, 'map16'], // de map16
  [5, 'map32'], // df map32
];
