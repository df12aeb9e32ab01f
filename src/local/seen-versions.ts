const NEVER = 0;
const LIVE = 1;
const GONE = 2;

/**
 * What a ChangeWatcher last saw of each directory slot: the variable's version, kept as its two 32-bit words so
 * that the scan compares it without making a bigint (a scan that finds nothing allocates nothing), and whether
 * the variable was live or removed then.
 */
export class SeenVersions {
  private lo = new Int32Array(64);
  private hi = new Int32Array(64);
  private state = new Uint8Array(64);

  /** Makes room for slots [0, n). */
  grow(n: number): void {
    if (n <= this.state.length) return;
    const size = Math.max(n, this.state.length * 2);
    this.lo = copyInto(new Int32Array(size), this.lo);
    this.hi = copyInto(new Int32Array(size), this.hi);
    this.state = copyInto(new Uint8Array(size), this.state);
  }

  /** Slot `i` was seen live at exactly the version whose words are `lo` and `hi`. */
  isSame(i: number, lo: number, hi: number): boolean {
    return this.lo[i] === lo && this.hi[i] === hi && this.state[i] === LIVE;
  }

  /** Records `version` as slot `i`'s, live; true if the slot was never seen before (an added variable). */
  recordLive(i: number, version: bigint): boolean {
    const added = this.state[i] === NEVER;
    this.lo[i] = Number(BigInt.asIntN(32, version));
    this.hi[i] = Number(BigInt.asIntN(32, version >> 32n));
    this.state[i] = LIVE;
    return added;
  }

  /** Marks slot `i` removed; true if it was seen live before (a removal to report). */
  markGone(i: number): boolean {
    const wasLive = this.state[i] === LIVE;
    this.state[i] = GONE;
    return wasLive;
  }

  /** Slot `i` was seen removed already. */
  isGone(i: number): boolean {
    return this.state[i] === GONE;
  }
}

function copyInto<T extends Int32Array | Uint8Array>(to: T, from: T): T {
  to.set(from);
  return to;
}
