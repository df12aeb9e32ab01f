/**
 * Where a plain typed-array access may stand in for an `Atomics` one. In Node every `Atomics.*` call is a call
 * into a builtin (8–20 ns each on these machines, measured), not an inlined instruction, so the hot paths use them
 * only where the ordering needs them (docs/file-format.md, *Plain accesses*):
 *
 * - under an entry's writer lock, the words only lock holders store (seq, state) are read plain: the lock's CAS
 *   orders them on any CPU;
 * - the entry's version is stored plain: the seq's even store after it publishes it;
 * - `orderedLoad` and `orderedStore` are plain only where the CPU keeps the order by itself (x86's TSO: loads are
 *   not reordered with loads, stores not with stores, and no load passes a locked instruction such as the CAS and
 *   the atomic add every write makes); elsewhere they are `Atomics.load` and `Atomics.store`. `orderedLoad`: a
 *   seqlock reader's first load of seq and its load of the state after the second one, and a writer's check for
 *   parked watchers after its atomic add. `orderedStore`: the writer's seq stores (odd before the value, even
 *   after it) and every lock release.
 *
 * V8 never moves a typed-array load across another typed-array access or a call, so only the CPU could.
 */
/** x86: the CPU keeps loads in order, and stores in order (TSO). */
export const LOADS_IN_ORDER: boolean = process.arch === 'x64' || process.arch === 'ia32';

/**
 * A seqlock reader's load of a word another process stores: plain where the CPU keeps loads in order. Chosen once
 * (not a branch per call: an imported constant is not folded by V8, and this sits on the 15 ns read path).
 */
export const orderedLoad: (i32: Int32Array, index: number) => number = LOADS_IN_ORDER
  ? (i32, index) => i32[index]!
  : (i32, index) => Atomics.load(i32, index);

/** A store that must not pass the stores before it (a release), nor the seq's odd store the value's stores. */
export const orderedStore: (i32: Int32Array, index: number, value: number) => void = LOADS_IN_ORDER
  ? (i32, index, value) => {
      i32[index] = value;
    }
  : (i32, index, value) => {
      Atomics.store(i32, index, value);
    };
