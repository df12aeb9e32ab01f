/**
 * The two buffers of a remote service. `current` is what get() reads and set() writes; `shadow` holds the
 * bytes the server last confirmed, so a diff of the two is exactly what is not yet sent. Both grow (never
 * shrink) as variables are registered; views taken before a growth keep pointing at the old buffers.
 */
export class RemoteStore {
  current: Uint8Array;
  shadow: Uint8Array;
  /** Over `current`: the typed hot path reads and writes through it. */
  view: DataView;
  /** End of the highest known variable: the part worth diffing. */
  dataEnd: number;

  constructor(data: Uint8Array, end: number) {
    this.dataEnd = Math.max(end, data.length);
    this.current = new Uint8Array(capacityFor(this.dataEnd));
    this.current.set(data);
    this.shadow = this.current.slice();
    this.view = new DataView(this.current.buffer);
  }

  /** Makes room for a variable ending at `end`; new bytes start at zero in both buffers. */
  ensure(end: number): void {
    if (end > this.current.length) {
      const capacity = capacityFor(Math.max(end, this.current.length * 2));
      const current = new Uint8Array(capacity);
      const shadow = new Uint8Array(capacity);
      current.set(this.current.subarray(0, this.dataEnd));
      shadow.set(this.shadow.subarray(0, this.dataEnd));
      this.current = current;
      this.shadow = shadow;
      this.view = new DataView(current.buffer);
    }
    if (end > this.dataEnd) this.dataEnd = end;
  }

  /** Writes `bytes` (zero-padded to `size`) into one buffer. */
  static put(target: Uint8Array, offset: number, size: number, bytes: Uint8Array): void {
    if (bytes.length >= size) {
      target.set(bytes.length === size ? bytes : bytes.subarray(0, size), offset);
    } else {
      target.set(bytes, offset);
      target.fill(0, offset + bytes.length, offset + size);
    }
  }

  /** A server value: the same bytes in both buffers. */
  putBoth(offset: number, size: number, bytes: Uint8Array): void {
    RemoteStore.put(this.current, offset, size, bytes);
    RemoteStore.put(this.shadow, offset, size, bytes);
  }

  /** Undoes an unconfirmed local change: current ← shadow. */
  restore(offset: number, size: number): void {
    this.current.set(this.shadow.subarray(offset, offset + size), offset);
  }

  /** Does `a` at `offset` hold exactly `bytes` (size long)? */
  static holds(a: Uint8Array, offset: number, bytes: Uint8Array): boolean {
    const n = bytes.length;
    for (let i = 0; i < n; i++) if (a[offset + i] !== bytes[i]) return false;
    return true;
  }

  /** Do current and shadow agree on [offset, offset + size)? */
  same(offset: number, size: number): boolean {
    const c = this.current;
    const s = this.shadow;
    const end = offset + size;
    for (let i = offset; i < end; i++) if (c[i] !== s[i]) return false;
    return true;
  }
}

/** 8-byte aligned, at least 64 bytes: room to grow a little without copying. */
function capacityFor(end: number): number {
  return Math.max(64, Math.ceil(end / 8) * 8);
}
