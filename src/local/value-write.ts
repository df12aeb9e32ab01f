import { CommyError, ErrorCode } from '../core/errors.js';
import { assertFits } from '../core/variable-rules.js';
import { ENTRY_LIVE, FLAG_TORN } from './file-format.js';
import { removedError, type DirEntry } from './directory.js';
import type { FileMapping } from './file-mapping.js';
import { orderedStore } from './memory-order.js';
import { OWN_PID, release } from './process-lock.js';
import type { WakeUps } from './wake-up.js';
import type { WriterLocks } from './writer-lock.js';

/**
 * Where a local write goes. Every write path (a typed value, update(), raw bytes, the server's writeLocked, a
 * raw write published by touch) is the same sequence, written once:
 *
 *   beginWrite:  writer lock (CAS pid, store start time) → seq + 1 (odd: a write is in progress)
 *   …the caller stores the value…
 *   finishWrite: service version + 1, stored in the entry → last writer ← pid → TORN cleared → seq + 1 (even)
 *                → lock released → damage check → the watchers' wake queued (a microtask, see wake-up.ts)
 *
 * Readers retry while seq is odd or moved under them (value-read.ts); they take the lock only to end a starvation.
 */
export class ValueWriter {
  private readonly i32: Int32Array;
  private readonly b64: BigUint64Array;
  private readonly u8: Uint8Array;
  private readonly view: DataView;

  constructor(
    private readonly file: FileMapping,
    private readonly locks: WriterLocks,
    private readonly wakeUps: WakeUps,
  ) {
    this.i32 = file.i32;
    this.b64 = file.b64;
    this.u8 = file.u8;
    this.view = file.view;
  }

  /**
   * Opens a write of `entry`: takes its writer lock (waiting for a live holder; refused on a read-only mapping)
   * unless the caller holds it already, then makes the seqlock odd. Returns the odd seq for finishWrite.
   */
  beginWrite(entry: DirEntry, lockHeld = false): number {
    if (!lockHeld) this.locks.acquire(entry);
    this.assertLiveLocked(entry);
    const seq = this.i32[entry.seqIdx]! + 1; // plain: only lock holders store it (memory-order.ts)
    orderedStore(this.i32, entry.seqIdx, seq);
    return seq;
  }

  /** Closes a write opened by beginWrite: publishes a new version, releases the lock, queues the wake. */
  finishWrite(entry: DirEntry, oddSeq: number): bigint {
    const i32 = this.i32;
    const version = this.file.nextVersion();
    this.b64[entry.versionIdx] = version; // plain: the seq's even store below publishes it (memory-order.ts)
    i32[entry.lastWriterIdx] = OWN_PID; // who wrote last, for the server's audit of local writes
    if (i32[entry.flagsIdx] !== 0) Atomics.and(i32, entry.flagsIdx, ~FLAG_TORN);
    orderedStore(i32, entry.seqIdx, oddSeq + 1);
    release(i32, entry.lockIdx);
    // A write into a page repaired after a truncation went nowhere: say so rather than report success.
    this.file.assertIntact();
    this.wakeUps.afterWrite();
    return version;
  }

  /** Writes a checked value (entry.codec.check) and publishes a new version. */
  write(entry: DirEntry, checked: unknown): bigint {
    this.file.assertOpen();
    const seq = this.beginWrite(entry);
    entry.codec.store(this.view, entry.at, checked);
    return this.finishWrite(entry, seq);
  }

  /**
   * Compare-and-set: writes a checked value only if the entry's version is still `expected` (compared under its
   * writer lock, so no write lands in between); CONFLICT and nothing written otherwise.
   */
  writeIfAt(entry: DirEntry, checked: unknown, expected: bigint): bigint {
    this.file.assertOpen();
    this.locks.acquire(entry);
    this.assertLiveLocked(entry);
    const have = Atomics.load(this.b64, entry.versionIdx);
    if (have !== expected) {
      this.locks.release(entry);
      throw new CommyError(ErrorCode.CONFLICT, `${entry.meta.name} is at version ${have}, not ${expected}`);
    }
    const seq = this.beginWrite(entry, true);
    entry.codec.store(this.view, entry.at, checked);
    return this.finishWrite(entry, seq);
  }

  /** Read-modify-write under the writer lock; `fn` throwing (or returning a bad value) changes nothing. */
  update<T>(entry: DirEntry, fn: (current: T) => T): T {
    this.file.assertOpen();
    this.locks.acquire(entry);
    let next: T;
    let checked: unknown;
    this.locks.hold(entry); // fn is not ours: it may run into this same lock, which is not a leftover
    try {
      const current = entry.codec.load(this.view, entry.at) as T;
      this.file.assertIntact();
      next = fn(current);
      checked = entry.codec.check(next);
    } catch (err) {
      this.locks.letGo(entry);
      this.locks.release(entry);
      throw err;
    }
    this.locks.letGo(entry);
    const seq = this.beginWrite(entry, true);
    entry.codec.store(this.view, entry.at, checked);
    this.finishWrite(entry, seq);
    return next;
  }

  /** Writes raw bytes (≤ size, zero-padded; VALUE_TOO_LARGE otherwise) and publishes a new version. */
  writeBytes(entry: DirEntry, bytes: Uint8Array): bigint {
    this.file.assertOpen();
    this.file.assertWritable();
    assertFits(entry.meta, bytes.length);
    const seq = this.beginWrite(entry);
    this.storeBytes(entry, bytes);
    return this.finishWrite(entry, seq);
  }

  /**
   * The caller holds the entry's lock (tryLock or lock): writes raw bytes (≤ size, zero-padded), publishes a new
   * version and releases the lock, also when the bytes do not fit (VALUE_TOO_LARGE).
   */
  writeLocked(entry: DirEntry, bytes: Uint8Array): bigint {
    this.file.assertOpen();
    this.file.assertWritable();
    this.locks.claimHeld(entry);
    try {
      assertFits(entry.meta, bytes.length);
    } catch (err) {
      this.locks.release(entry);
      throw err;
    }
    const seq = this.beginWrite(entry, true);
    this.storeBytes(entry, bytes);
    return this.finishWrite(entry, seq);
  }

  /**
   * Publishes a change someone made to the entry's bytes without the API (a raw write into bytes()). With
   * `stillRaw`, asked under the writer lock (no API write can land meanwhile): undefined, nothing published,
   * when it says the change has been versioned already.
   */
  touch(entry: DirEntry, stillRaw?: () => boolean): bigint | undefined {
    this.file.assertOpen();
    this.locks.acquire(entry);
    if (stillRaw !== undefined && !stillRaw()) {
      this.locks.release(entry);
      return undefined;
    }
    return this.finishWrite(entry, this.beginWrite(entry, true));
  }

  /**
   * Holding the entry's writer lock: VARIABLE_NOT_FOUND (the lock released) if it was removed. A removal takes
   * the same lock, so no write that passed this check can land after it, in space a new variable may reuse.
   */
  private assertLiveLocked(entry: DirEntry): void {
    if (this.i32[entry.stateIdx] === ENTRY_LIVE) return; // plain: only lock holders store it (memory-order.ts)
    this.locks.release(entry);
    this.file.assertIntact(); // a state read from a page a truncation repaired is zero: say why, not "removed"
    throw removedError(entry, this.file.label);
  }

  /** Between beginWrite and finishWrite: the bytes (checked to fit), the rest of the variable zeroed. */
  private storeBytes(entry: DirEntry, bytes: Uint8Array): void {
    this.u8.set(bytes, entry.at);
    if (bytes.length < entry.meta.size) this.u8.fill(0, entry.at + bytes.length, entry.at + entry.meta.size);
  }
}
