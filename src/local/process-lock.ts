import { readFileSync } from 'node:fs';
import { CommyError, ErrorCode } from '../core/errors.js';
import { orderedStore } from './memory-order.js';

/**
 * A lock word in shared memory that holds the pid of its owner (0 when free), with the owner's process start
 * time in a second word beside it, so that a waiter can tell a slow owner from a dead one, and a dead one
 * from a new process that was given the same pid. Used for each variable's writer lock, for the registration
 * lock and (without waiting) for the watcher slots.
 *
 * Recovery: a waiter that sees the same holder (pid and start time) for `staleMs` checks whether it is gone
 * (see holderGone); if so, it takes the lock over with one compare-and-swap, so exactly one waiter wins.
 * A live owner is waited for up to `timeoutMs`, then the waiter gives up with TIMEOUT (it never breaks
 * the lock of a live process).
 */
export interface LockPolicy {
  /** How long one owner must hold the lock before its pid is checked. */
  staleMs: number;
  /** How long to wait for a live owner before throwing TIMEOUT. */
  timeoutMs: number;
}

/** Int32Array indexes of a pid lock word and of the start-time word beside it (a DirEntry is one). */
export interface LockWord {
  readonly lockIdx: number;
  readonly lockStartIdx: number;
}

export const DEFAULT_LOCK_POLICY: LockPolicy = { staleMs: 500, timeoutMs: 10_000 };

export const OWN_PID = process.pid;
const SPINS_BEFORE_CLOCK = 4096;
/** Pause before trusting a start-time mismatch a second time (an owner stores its start right after its CAS). */
const RECHECK_MS = 2;
const napCell = new Int32Array(new SharedArrayBuffer(4));

/**
 * A process's start time as the files record it: the low 32 bits of field 22 of /proc/PID/stat (clock ticks
 * since boot), 0 mapped to 1 because 0 means "unknown" in the file. undefined when /proc cannot tell.
 */
export function startTimeOf(pid: number): number | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // Field 2 (the command) is in parentheses and may itself hold spaces and parentheses: count from the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const raw = fields[22 - 3];
  if (raw === undefined || !/^\d+$/.test(raw)) return undefined;
  return Number(BigInt(raw) & 0xffffffffn) | 0 || 1;
}

/** This process's start time, read once: stored beside our pid in every lock we take (0 if unknown). */
export const OWN_START: number = startTimeOf(OWN_PID) ?? 0;

/** Sleeps the thread briefly without burning a core (Atomics.wait on a private word never woken). */
export function nap(ms: number): void {
  Atomics.wait(napCell, 0, 0, ms);
}

export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false; // kill(-n) would probe a process group
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Is the holder `pid` (with `start` recorded beside it) gone for good, so that its lock may be taken over?
 * - a negative pid is no process at all;
 * - another pid: gone when it is not alive, or when a start time is recorded and that pid's current start
 *   time differs (the pid was reused by a new process);
 * - our own pid with another recorded start time: an earlier process that had our pid (a container's pid 1
 *   after a restart);
 * - our own pid and start time: this process holds it. Our critical sections are synchronous, so unless this
 *   thread holds the lock across other code (`heldHere`), it is a leftover. Callers only ask after staleMs of
 *   holding, which is what lets another thread of this process finish a write in progress.
 * Start time 0 (recorded by an older commy) falls back to "alive means not gone".
 */
export function holderGone(pid: number, start: number, heldHere: boolean): boolean {
  if (pid === 0) return false;
  if (pid < 0) return true;
  if (pid === OWN_PID) return start !== 0 && (start !== OWN_START || !heldHere);
  if (!pidAlive(pid)) return true;
  if (start === 0) return false;
  const now = startTimeOf(pid);
  return now !== undefined && now !== start;
}

/** Takes the lock from `expected` (0: free) for this process, recording our start time beside our pid. */
export function takeLock(i32: Int32Array, word: LockWord, expected: number): boolean {
  if (Atomics.compareExchange(i32, word.lockIdx, expected, OWN_PID) !== expected) return false;
  i32[word.lockStartIdx] = OWN_START;
  return true;
}

/**
 * Waits until `stillBlocked()` turns false, watching the holder of `word`. Calls `takeOver(owner)` when the
 * same holder has been there for staleMs and is gone (holderGone), or when the word stayed free (0) that long
 * while still blocked (a seqlock left odd with no owner); takeOver returns true if this waiter now holds the
 * lock (then the wait ends). Returning false (lost the race, or not allowed to) keeps waiting; either way the
 * wait ends by `timeoutMs`.
 */
export function waitOut(
  i32: Int32Array,
  word: LockWord,
  policy: LockPolicy,
  stillBlocked: () => boolean,
  takeOver: (deadOwner: number) => boolean,
  what: string,
  heldHere = false,
): void {
  let owner = -1;
  let start = 0;
  let since = 0;
  let spins = 0;
  while (stillBlocked()) {
    const current = Atomics.load(i32, word.lockIdx);
    const currentStart = Atomics.load(i32, word.lockStartIdx);
    if (current !== owner || currentStart !== start) {
      owner = current;
      start = currentStart;
      since = 0;
      spins = 0;
      continue;
    }
    if (++spins < SPINS_BEFORE_CLOCK) continue;
    const now = performance.now();
    if (since === 0) since = now;
    const held = now - since;
    let dead = false;
    if (held >= policy.staleMs && (owner === 0 || holderGone(owner, start, heldHere))) {
      if (takeOver(owner)) return;
      // Another waiter won the lock (the word changes: the next look resets), or this waiter may not take it
      // over (a read-only mapping): wait on, bounded by timeoutMs like any other wait.
      dead = true;
    }
    if (held >= policy.timeoutMs) {
      const whose = dead ? `pid ${owner}, which is no longer running (only a writable mapping can recover its lock),` : `pid ${owner}`;
      throw new CommyError(ErrorCode.TIMEOUT, `${what} has been locked by ${whose} for ${Math.round(held)} ms`);
    }
    nap(1);
  }
}

/** Takes the lock of `word` for this process; `onRecovered` runs if it was taken from a gone owner. */
export function acquire(i32: Int32Array, word: LockWord, policy: LockPolicy, what: string, onRecovered?: () => void, heldHere = false): void {
  if (takeLock(i32, word, 0)) return;
  let acquired = false;
  waitOut(
    i32,
    word,
    policy,
    () => !acquired && !(acquired = takeLock(i32, word, 0)),
    (dead) => {
      if (!takeLock(i32, word, dead)) return false;
      onRecovered?.();
      return (acquired = true);
    },
    what,
    heldHere,
  );
}

/** A release store: every store made holding the lock is visible before the lock is seen free (memory-order.ts). */
export function release(i32: Int32Array, lockIndex: number): void {
  orderedStore(i32, lockIndex, 0);
}

/**
 * The non-blocking side of waitOut: remembers since when each lock has been seen with the same holder, so a
 * caller that never waits (the server's event loop) still judges a holder gone only after staleMs of holding.
 */
export class HolderClock {
  private readonly seen = new Map<number, { pid: number; start: number; since: number }>();

  constructor(private readonly staleMs: number) {}

  /**
   * The pid now in `word` (0: the word stayed free) if that holder has held it for staleMs and is gone
   * (holderGone); undefined otherwise. Take the lock over with a CAS from exactly this value.
   */
  goneHolder(i32: Int32Array, word: LockWord, heldHere: boolean): number | undefined {
    const pid = Atomics.load(i32, word.lockIdx);
    const start = Atomics.load(i32, word.lockStartIdx);
    const now = performance.now();
    let last = this.seen.get(word.lockIdx);
    if (last === undefined || last.pid !== pid || last.start !== start) {
      last = { pid, start, since: now };
      this.seen.set(word.lockIdx, last);
    }
    if (now - last.since < this.staleMs) return undefined;
    return pid === 0 || holderGone(pid, start, heldHere) ? pid : undefined;
  }

  forget(word: LockWord): void {
    if (this.seen.size > 0) this.seen.delete(word.lockIdx);
  }
}

/**
 * For a slot claimed once and held for long (a watcher slot): holderGone, asked twice a moment apart, since
 * a new owner stores its start time just after its CAS and a single look could catch it in between.
 */
export function slotHolderGone(i32: Int32Array, word: LockWord, heldHere: boolean): boolean {
  const pid = Atomics.load(i32, word.lockIdx);
  const start = Atomics.load(i32, word.lockStartIdx);
  if (pid === 0 || !holderGone(pid, start, heldHere)) return false;
  if (pid < 0 || (pid !== OWN_PID && !pidAlive(pid))) return true; // the dead cannot race us
  nap(RECHECK_MS);
  return Atomics.load(i32, word.lockIdx) === pid && Atomics.load(i32, word.lockStartIdx) === start && holderGone(pid, start, heldHere);
}
