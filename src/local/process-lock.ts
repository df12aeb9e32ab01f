import { CommyError, ErrorCode } from '../core/errors.js';

/**
 * A lock word in shared memory that holds the pid of its owner (0 when free), so that a waiter can tell
 * a slow owner from a dead one. Used for each variable's writer lock and for the registration lock.
 *
 * Recovery: a waiter that sees the same owner for `staleMs` checks whether that pid still exists
 * (kill(pid, 0)); if not, it takes the lock over with one compare-and-swap, so exactly one waiter wins.
 * A live owner is waited for up to `timeoutMs`, then the waiter gives up with TIMEOUT (it never breaks
 * the lock of a live process).
 */
export interface LockPolicy {
  /** How long one owner must hold the lock before its pid is checked. */
  staleMs: number;
  /** How long to wait for a live owner before throwing TIMEOUT. */
  timeoutMs: number;
}

export const DEFAULT_LOCK_POLICY: LockPolicy = { staleMs: 500, timeoutMs: 10_000 };

export const OWN_PID = process.pid;
const SPINS_BEFORE_CLOCK = 4096;
const napCell = new Int32Array(new SharedArrayBuffer(4));

/** Sleeps the thread briefly without burning a core (Atomics.wait on a private word never woken). */
function nap(ms: number): void {
  Atomics.wait(napCell, 0, 0, ms);
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Waits until `stillBlocked()` turns false, watching the owner in `lockIndex`. Calls `takeOver(owner)` when
 * the owner is dead; takeOver returns true if this waiter now holds the lock (then the wait ends). Returning
 * false (lost the race, or not allowed to) keeps waiting; either way the wait ends by `timeoutMs`.
 */
export function waitOut(
  i32: Int32Array,
  lockIndex: number,
  policy: LockPolicy,
  stillBlocked: () => boolean,
  takeOver: (deadOwner: number) => boolean,
  what: string,
): void {
  let owner = -1;
  let since = 0;
  let spins = 0;
  while (stillBlocked()) {
    const current = Atomics.load(i32, lockIndex);
    if (current !== owner) {
      owner = current;
      since = 0;
      spins = 0;
      continue;
    }
    if (++spins < SPINS_BEFORE_CLOCK) continue;
    const now = performance.now();
    if (since === 0) since = now;
    const held = now - since;
    let dead = false;
    if (owner !== 0 && held >= policy.staleMs && !pidAlive(owner)) {
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

/** Takes the lock at `lockIndex` for this process; `onRecovered` runs if it was taken from a dead owner. */
export function acquire(i32: Int32Array, lockIndex: number, policy: LockPolicy, what: string, onRecovered?: () => void): void {
  if (Atomics.compareExchange(i32, lockIndex, 0, OWN_PID) === 0) return;
  let acquired = false;
  waitOut(
    i32,
    lockIndex,
    policy,
    () => !acquired && !(acquired = Atomics.compareExchange(i32, lockIndex, 0, OWN_PID) === 0),
    (dead) => {
      if (Atomics.compareExchange(i32, lockIndex, dead, OWN_PID) !== dead) return false;
      onRecovered?.();
      return (acquired = true);
    },
    what,
  );
}

export function release(i32: Int32Array, lockIndex: number): void {
  Atomics.store(i32, lockIndex, 0);
}
