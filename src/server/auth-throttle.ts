import { CommyError, ErrorCode } from '../core/errors.js';
import { LruMap } from '../core/lru-map.js';

/**
 * What keeps credential checking from being a way to take the server down or to guess keys: a bound on
 * verifications running at once (Semaphore) and exponential back-off for sources and key ids that keep
 * failing (FailureThrottle).
 */
export interface ThrottlePolicy {
  /** Failures (verifications still running count too) within windowMs that block the address or key id. */
  maxFailures: number;
  windowMs: number;
  /** The first block; each further one doubles, up to maxBlockMs. */
  firstBlockMs: number;
  maxBlockMs: number;
  /** After this long without a failure, the doubling starts over. */
  forgetAfterMs: number;
  /** Addresses and key ids tracked at once; past it the least recently seen is forgotten. */
  maxEntries: number;
}

export const DEFAULT_THROTTLE: ThrottlePolicy = Object.freeze({
  maxFailures: 5,
  windowMs: 60_000,
  firstBlockMs: 1_000,
  maxBlockMs: 60_000,
  forgetAfterMs: 15 * 60_000,
  maxEntries: 10_000,
});

export function rateLimited(message: string): CommyError {
  return new CommyError(ErrorCode.RATE_LIMITED, message);
}

interface Entry {
  failures: number;
  windowStart: number;
  /** Verifications started and not finished: they count as failures until they succeed. */
  pending: number;
  blockedUntil: number;
  /** Blocks so far (the next one lasts firstBlockMs × 2^blocks). */
  blocks: number;
  lastFailure: number;
}

/**
 * Failure counts per key (an address, or tenant/keyId), in an LRU map of bounded size. A key is blocked
 * while a back-off runs, or while its failures plus its unfinished attempts reach maxFailures: so a burst of
 * parallel guesses from one source gets maxFailures tries, not as many as it has connections.
 */
export class FailureThrottle {
  private readonly entries: LruMap<string, Entry>;

  constructor(private readonly policy: ThrottlePolicy) {
    this.entries = new LruMap(policy.maxEntries);
  }

  get size(): number {
    return this.entries.size;
  }

  isBlocked(key: string, now: number): boolean {
    const entry = this.entries.get(key);
    if (entry === undefined) return false;
    this.refresh(entry, now);
    return entry.blockedUntil > now || entry.failures + entry.pending >= this.policy.maxFailures;
  }

  /** An attempt starts (it counts as a failure until finish says otherwise). */
  begin(key: string, now: number): void {
    const entry = this.entries.get(key) ?? this.add(key, now);
    entry.pending++;
  }

  finish(key: string, failed: boolean, now: number): void {
    // The entry may have been forgotten meanwhile (LRU): a failure still counts, from scratch.
    const entry = this.entries.get(key) ?? (failed ? this.add(key, now) : undefined);
    if (entry === undefined) return;
    entry.pending = Math.max(0, entry.pending - 1);
    if (failed) this.fail(entry, now);
  }

  private fail(entry: Entry, now: number): void {
    this.refresh(entry, now);
    entry.failures++;
    entry.lastFailure = now;
    if (entry.failures < this.policy.maxFailures) return;
    const { firstBlockMs, maxBlockMs } = this.policy;
    entry.blockedUntil = now + Math.min(firstBlockMs * 2 ** entry.blocks, maxBlockMs);
    entry.blocks = Math.min(entry.blocks + 1, 30);
    entry.failures = 0;
    entry.windowStart = now;
  }

  /** Starts a new window when the old one is over; forgets old blocks after a quiet spell. */
  private refresh(entry: Entry, now: number): void {
    if (now - entry.windowStart >= this.policy.windowMs) {
      entry.failures = 0;
      entry.windowStart = now;
    }
    if (entry.blocks > 0 && entry.blockedUntil <= now && now - entry.lastFailure >= this.policy.forgetAfterMs) entry.blocks = 0;
  }

  private add(key: string, now: number): Entry {
    const entry: Entry = { failures: 0, windowStart: now, pending: 0, blockedUntil: 0, blocks: 0, lastFailure: now };
    this.entries.set(key, entry);
    return entry;
  }
}

/**
 * An async semaphore with a bounded queue: at most `permits` tasks run at once, at most `maxQueued` wait, and
 * a task past that is refused at once (RATE_LIMITED) rather than piling up memory and latency.
 */
export class Semaphore {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly permits: number,
    private readonly maxQueued: number,
  ) {}

  get queued(): number {
    return this.waiting.length;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await task();
    } finally {
      this.release();
    }
  }

  private acquire(): Promise<void> {
    if (this.running < this.permits) {
      this.running++;
      return Promise.resolve();
    }
    if (this.waiting.length >= this.maxQueued) return Promise.reject(rateLimited('too many authentications in progress; retry shortly'));
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Hands the permit straight to the next waiter, if any. */
  private release(): void {
    const next = this.waiting.shift();
    if (next !== undefined) next();
    else this.running--;
  }
}
