import { CommyError, ErrorCode } from '../core/errors.js';
import { FLAG_TORN } from './file-format.js';
import type { DirEntry } from './directory.js';
import type { FileMapping } from './file-mapping.js';
import { HolderClock, OWN_PID, OWN_START, acquire, release, takeLock, waitOut, type LockPolicy, type LockWord } from './process-lock.js';

/**
 * Locks this thread holds across code that is not ours (lock() … unlock(), update()'s callback, tryLock() …
 * writeLocked()), by file id: shared by every mapping of one file in this thread. A lock with our own pid and
 * start time that is not in here is a leftover (see holderGone in process-lock.ts).
 */
const heldByFile = new Map<string, { locks: Set<number>; users: number }>();

function heldLocksFor(fileId: string): Set<number> {
  let held = heldByFile.get(fileId);
  if (held === undefined) heldByFile.set(fileId, (held = { locks: new Set(), users: 0 }));
  held.users++;
  return held.locks;
}

function dropHeldLocks(fileId: string): void {
  const held = heldByFile.get(fileId);
  if (held !== undefined && --held.users === 0) heldByFile.delete(fileId);
}

/**
 * The pid locks of one mapped file (process-lock.ts rules) as its operations use them: each variable's writer
 * lock, waited for or taken without waiting, and recovered from a gone holder (marking a half-done write TORN);
 * the registration lock without waiting. Which locks this thread holds across code that is not ours is kept
 * here, so that such a lock is never taken for a leftover.
 */
export class WriterLocks {
  private readonly i32: Int32Array;
  private readonly held: Set<number>;
  /** Since when each contended lock has had its holder: try* judge a holder gone only after staleMs. */
  private readonly clock: HolderClock;

  constructor(
    private readonly file: FileMapping,
    readonly policy: LockPolicy,
  ) {
    this.i32 = file.i32;
    this.held = heldLocksFor(file.info.fileId);
    this.clock = new HolderClock(policy.staleMs);
  }

  /**
   * The writer lock for a critical section of ours (synchronous, released before returning), waiting for a live
   * holder. Every writer comes through here first, so this is where a read-only mapping is refused.
   */
  acquire(entry: DirEntry): void {
    this.file.assertWritable();
    const i32 = this.i32;
    if (Atomics.compareExchange(i32, entry.lockIdx, 0, OWN_PID) === 0) {
      i32[entry.lockStartIdx] = OWN_START; // the one store this costs the hot path: lets others tell a reused pid
      return;
    }
    this.acquireContended(entry);
  }

  release(entry: DirEntry): void {
    release(this.i32, entry.lockIdx);
  }

  /**
   * Takes the entry's writer lock and keeps it until unlock(): while this thread holds it, it is never taken for
   * a leftover. A write that a gone process left half done marks the value TORN. A read-only mapping is refused.
   */
  lock(entry: DirEntry): void {
    this.file.assertOpen();
    this.acquire(entry);
    this.file.assertIntact();
    this.held.add(entry.lockIdx);
  }

  unlock(entry: DirEntry): void {
    this.file.assertWritable();
    this.held.delete(entry.lockIdx);
    release(this.i32, entry.lockIdx);
  }

  /**
   * lock() without waiting, for an event loop that must never spin on another process: true holding the lock
   * (taken over from a gone holder after staleMs, marking a half-done write TORN), false at once otherwise.
   */
  tryLock(entry: DirEntry): boolean {
    this.file.assertOpen();
    this.file.assertWritable();
    if (!this.tryTake(entry, () => this.markTornIfMidWrite(entry))) return false;
    this.file.assertIntact();
    this.held.add(entry.lockIdx);
    return true;
  }

  /** Marks the entry's lock as held across code that is not ours (update()'s callback) until letGo(). */
  hold(entry: DirEntry): void {
    this.held.add(entry.lockIdx);
  }

  letGo(entry: DirEntry): void {
    this.held.delete(entry.lockIdx);
  }

  /**
   * For writeLocked(): the lock taken with lock() or tryLock() is now ours to release, no longer held across
   * other code. INTERNAL_ERROR if this thread does not hold it.
   */
  claimHeld(entry: DirEntry): void {
    if (Atomics.load(this.i32, entry.lockIdx) !== OWN_PID || !this.held.has(entry.lockIdx)) {
      throw new CommyError(ErrorCode.INTERNAL_ERROR, `writeLocked: this thread does not hold the lock of variable ${entry.meta.name}`);
    }
    this.held.delete(entry.lockIdx);
  }

  /** tryRead's recovery: takes a gone writer's lock without waiting, marks a half-done write TORN, lets go. */
  recoverGoneWriter(entry: DirEntry): boolean {
    if (!this.tryTake(entry, () => this.markTornIfMidWrite(entry))) return false;
    release(this.i32, entry.lockIdx);
    return true;
  }

  /**
   * Waits while `seq` stays odd; breaks the lock of a gone writer (marking the value TORN). A read-only
   * mapping never does: it waits on, and a writer that died mid-write ends the wait with TIMEOUT.
   */
  waitForWriter(entry: DirEntry, oddSeq: number): void {
    const i32 = this.i32;
    waitOut(
      i32,
      entry,
      this.policy,
      () => Atomics.load(i32, entry.seqIdx) === oddSeq,
      (dead) => {
        if (this.file.readOnly) return false;
        if (!takeLock(i32, entry, dead)) return false;
        this.markTornIfMidWrite(entry);
        release(i32, entry.lockIdx);
        return true;
      },
      `variable ${entry.meta.name}`,
      this.held.has(entry.lockIdx),
    );
  }

  /** The registration lock (or any other pid lock word), waiting for a live holder. */
  acquireWord(word: LockWord, what: string): void {
    acquire(this.i32, word, this.policy, what);
  }

  releaseWord(word: LockWord): void {
    release(this.i32, word.lockIdx);
  }

  /**
   * Takes `word` without waiting: if free, or if its holder has been there for staleMs (counted across calls)
   * and is gone (holderGone); `onRecovered` then runs holding it. False at once otherwise.
   */
  tryTake(word: LockWord, onRecovered?: () => void): boolean {
    const i32 = this.i32;
    if (takeLock(i32, word, 0)) return true;
    const gone = this.clock.goneHolder(i32, word, this.held.has(word.lockIdx));
    if (gone === undefined || !takeLock(i32, word, gone)) return false;
    this.clock.forget(word);
    onRecovered?.();
    return true;
  }

  /** The file is closed: this mapping no longer counts among the users of the file's held-lock set. */
  dispose(): void {
    dropHeldLocks(this.file.info.fileId);
  }

  /** acquire's slow path, kept out of the hot one: waits for the holder, or takes over from a gone one. */
  private acquireContended(entry: DirEntry): void {
    acquire(this.i32, entry, this.policy, `variable ${entry.meta.name}`, () => this.markTornIfMidWrite(entry), this.held.has(entry.lockIdx));
  }

  /** Holding the lock of a gone writer: a seqlock it left odd means a half-done write, so the value is flagged. */
  private markTornIfMidWrite(entry: DirEntry): void {
    const seq = Atomics.load(this.i32, entry.seqIdx);
    if ((seq & 1) === 0) return;
    Atomics.or(this.i32, entry.flagsIdx, FLAG_TORN);
    Atomics.store(this.i32, entry.seqIdx, seq + 1);
  }
}
