import { CommyError, ErrorCode } from './errors.js';

export interface WaitOptions {
  /** Resolve with null after this long without an item (default: wait until one arrives or the queue ends). */
  timeoutMs?: number;
  /** Aborting rejects the wait with CommyError ABORTED, the signal's reason as its `cause`. */
  signal?: AbortSignal;
}

export interface EventQueueOptions<T> {
  /** Folds `next` into `into`: past the limit nothing is dropped, only merged. */
  merge(into: T, next: T): T;
  /**
   * Past the limit, a new item folds into the newest queued item of its group (default: one group, i.e. the
   * newest item). An item whose group has nothing queued is still queued: merging never mixes groups.
   */
  groupOf?(item: T): unknown;
  /** Queued items before merging starts. Default 1,024. */
  limit?: number;
  /** Called once, when the queue ends. */
  onEnd?(): void;
}

/** Someone waiting: an iterator's next() or a take(). */
interface Waiter<T> {
  deliver(item: T): void;
  end(reason: CommyError): void;
}

const DEFAULT_LIMIT = 1024;
/** Past setTimeout's range (about 24.8 days) a timeout is as good as none. */
const MAX_TIMER_MS = 0x7fffffff;
const oneGroup = (): undefined => undefined;

/**
 * A bounded merging queue fed by push(), read three ways: as an async iterator (for await), by take() (a wait
 * that can time out or be aborted without swallowing the next item) or by poll() (never waits). Bounded: past
 * `limit` queued items a new one is merged into the newest of its group, so a slow consumer costs bounded
 * memory and still sees every change, coalesced.
 */
export class EventQueue<T> implements AsyncIterableIterator<T> {
  private readonly items: T[] = [];
  private readonly waiters = new Set<Waiter<T>>();
  private readonly merge: (into: T, next: T) => T;
  private readonly groupOf: (item: T) => unknown;
  private readonly limit: number;
  private readonly onEnd: () => void;
  private endedWith: CommyError | undefined;

  constructor(options: EventQueueOptions<T>) {
    this.merge = options.merge;
    this.groupOf = options.groupOf ?? oneGroup;
    this.limit = options.limit ?? DEFAULT_LIMIT;
    this.onEnd = options.onEnd ?? (() => {});
  }

  get closed(): boolean {
    return this.endedWith !== undefined;
  }

  push(item: T): void {
    if (this.endedWith !== undefined) return;
    const first = this.waiters.values().next();
    if (!first.done) {
      this.waiters.delete(first.value);
      first.value.deliver(item);
      return;
    }
    if (this.items.length >= this.limit && this.mergeIntoGroup(item)) return;
    this.items.push(item);
  }

  /** The oldest queued item, or null; never waits. Throws the reason once the queue has ended. */
  poll(): T | null {
    this.assertOpen();
    return this.items.length > 0 ? this.items.shift()! : null;
  }

  /** The oldest item, waiting for one if needed; null after `timeoutMs` without one. */
  take(options: WaitOptions = {}): Promise<T | null> {
    try {
      this.assertOpen();
      checkWaitOptions(options);
    } catch (err) {
      return Promise.reject(err);
    }
    const { timeoutMs, signal } = options;
    if (signal?.aborted) return Promise.reject(abortedBy(signal));
    if (this.items.length > 0) return Promise.resolve(this.items.shift()!);
    if (timeoutMs === 0) return Promise.resolve(null);
    return this.wait(timeoutMs, signal);
  }

  next(): Promise<IteratorResult<T>> {
    if (this.items.length > 0) return Promise.resolve({ value: this.items.shift()!, done: false });
    if (this.endedWith !== undefined) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiters.add({ deliver: (value) => resolve({ value, done: false }), end: () => resolve({ value: undefined, done: true }) });
    });
  }

  /** Ends the iteration (breaking out of for-await calls this). */
  return(): Promise<IteratorResult<T>> {
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  /**
   * Ends the queue and drops what it holds: iterators finish; waits, and every later take() or poll(), fail
   * with `reason`.
   */
  end(reason: CommyError = new CommyError(ErrorCode.CLOSED, 'the queue has ended')): void {
    if (this.endedWith !== undefined) return;
    this.endedWith = reason;
    this.items.length = 0;
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w.end(reason);
    this.onEnd();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private wait(timeoutMs: number | undefined, signal: AbortSignal | undefined): Promise<T | null> {
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const finish = (): void => {
        this.waiters.delete(waiter);
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = (): void => {
        finish();
        reject(abortedBy(signal!));
      };
      const waiter: Waiter<T> = {
        deliver: (item) => {
          finish();
          resolve(item);
        },
        end: (reason) => {
          finish();
          reject(reason);
        },
      };
      this.waiters.add(waiter);
      if (timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS) {
        timer = setTimeout(() => {
          finish();
          resolve(null);
        }, timeoutMs);
      }
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Folds `item` into the newest queued item of its group; false when its group has none queued. */
  private mergeIntoGroup(item: T): boolean {
    const group = this.groupOf(item);
    for (let i = this.items.length - 1; i >= 0; i--) {
      if (this.groupOf(this.items[i]!) === group) {
        this.items[i] = this.merge(this.items[i]!, item);
        return true;
      }
    }
    return false;
  }

  private assertOpen(): void {
    if (this.endedWith !== undefined) throw this.endedWith;
  }
}

function checkWaitOptions(options: WaitOptions): void {
  if (typeof options !== 'object' || options === null) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'wait options must be an object');
  const { timeoutMs, signal } = options;
  if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !(timeoutMs >= 0))) {
    throw new CommyError(ErrorCode.TYPE_MISMATCH, 'timeoutMs must be a non-negative number');
  }
  if (signal !== undefined && (typeof signal !== 'object' || signal === null || typeof signal.addEventListener !== 'function')) {
    throw new CommyError(ErrorCode.TYPE_MISMATCH, 'signal must be an AbortSignal');
  }
}

/** The wait's failure when its signal aborts: a CommyError like every other, with the signal's reason as cause. */
function abortedBy(signal: AbortSignal): CommyError {
  const reason: unknown = signal.reason;
  const why = reason instanceof Error && reason.message !== '' ? `: ${reason.message}` : '';
  return new CommyError(ErrorCode.ABORTED, `the wait was aborted${why}`, { cause: reason });
}
