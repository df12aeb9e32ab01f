import { CommyError, ErrorCode } from '../core/errors.js';
import { mergeChangeEvents, type FileChangeEvent } from '../core/file-change-event.js';

export interface WaitOptions {
  /** Resolve with null after this long without a change (default: wait until a change or close). */
  timeoutMs?: number;
  /** Aborting rejects the wait with the signal's reason. */
  signal?: AbortSignal;
}

const MAX_TIMER_MS = 0x7fffffff;

interface Waiter {
  resolve(event: FileChangeEvent | null): void;
  reject(err: unknown): void;
}

/**
 * The client's one queue of change events from all its services. Unlike an async iterator, a wait can
 * time out or be aborted without swallowing the next event. Bounded: past `limit` queued events, a new one
 * is folded into the last queued event of the same service, so a slow consumer loses nothing but detail.
 */
export class ChangeInbox {
  private readonly items: FileChangeEvent[] = [];
  private readonly waiters = new Set<Waiter>();
  private closedWith: CommyError | undefined;

  constructor(private readonly limit = 1024) {}

  push(event: FileChangeEvent): void {
    if (this.closedWith !== undefined) return;
    const first = this.waiters.values().next();
    if (!first.done) {
      this.waiters.delete(first.value);
      first.value.resolve(event);
      return;
    }
    if (this.items.length >= this.limit) {
      for (let i = this.items.length - 1; i >= 0; i--) {
        if (this.items[i]!.serviceId === event.serviceId) {
          this.items[i] = mergeChangeEvents(this.items[i]!, event);
          return;
        }
      }
    }
    this.items.push(event);
  }

  /** The oldest queued event, or null; never waits. */
  poll(): FileChangeEvent | null {
    this.assertOpen();
    return this.items.shift() ?? null;
  }

  take(options: WaitOptions = {}): Promise<FileChangeEvent | null> {
    try {
      this.assertOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    const { timeoutMs, signal } = options;
    if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !(timeoutMs >= 0))) {
      return Promise.reject(new CommyError(ErrorCode.TYPE_MISMATCH, 'timeoutMs must be a non-negative number'));
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    const queued = this.items.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (timeoutMs === 0) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = (): void => finish(() => reject(signal!.reason));
      const finish = (settle: () => void): void => {
        this.waiters.delete(waiter);
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        settle();
      };
      const waiter: Waiter = {
        resolve: (event) => finish(() => resolve(event)),
        reject: (err) => finish(() => reject(err)),
      };
      this.waiters.add(waiter);
      // Past setTimeout's range (about 24.8 days) a timeout is as good as none.
      if (timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS) timer = setTimeout(() => waiter.resolve(null), timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Ends the inbox: waits reject with `reason`, and so does every later call. */
  close(reason: CommyError): void {
    if (this.closedWith !== undefined) return;
    this.closedWith = reason;
    this.items.length = 0;
    for (const w of [...this.waiters]) w.reject(reason);
  }

  private assertOpen(): void {
    if (this.closedWith !== undefined) throw this.closedWith;
  }
}
