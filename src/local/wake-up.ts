import { native } from '../native/addon.js';
import { H } from './file-format.js';
import { I32, type FileMapping } from './file-mapping.js';
import { orderedLoad } from './memory-order.js';

/** How this process's ChangeWatcher hooks into the file's wake-ups (ServiceFile.attachWatcher). */
export interface WatcherHooks {
  /** The watcher's bit (0 without a slot): writes of this process never take it, nor send it a byte. */
  readonly bit: number;
  /** Called where the wake would be: this process's listeners hear its own writes directly, with no system call. */
  readonly onLocalChange: () => void;
}

const PARKED = I32(H.PARKED);
const WAITERS = I32(H.WAITERS);

/**
 * Waking the watchers after a change (docs/file-format.md, Change notification). A write only stores into the
 * mapping; the wake is one microtask queued by the first change since the last wake, so a burst of synchronous
 * writes shares one. The wake takes the PARKED bits of the other watchers (one atomic AND keeps only our own)
 * and sends each taken one a byte on its wake channel; the futex is only for fallback watchers (WAITERS). No
 * system call at all unless a watcher of another process (or of another mapping) is parked.
 */
export class WakeUps {
  private pending = false;
  private ownBit = 0;
  private localChange: (() => void) | undefined;
  private readonly i32: Int32Array;
  private readonly wake = (): void => {
    this.pending = false;
    if (this.file.closed) return;
    this.wakeOthers();
    this.localChange?.();
  };

  constructor(private readonly file: FileMapping) {
    this.i32 = file.i32;
  }

  /** This process's watcher bit (0 without one). */
  get ownWatchBit(): number {
    return this.ownBit;
  }

  /** Hooks a watcher in (replacing any other); the returned function unhooks it, if it is still the one hooked. */
  attach(hooks: WatcherHooks): () => void {
    const onLocalChange = hooks.onLocalChange;
    this.localChange = onLocalChange;
    this.ownBit = hooks.bit | 0;
    return () => {
      if (this.localChange !== onLocalChange) return;
      this.localChange = undefined;
      this.ownBit = 0;
    };
  }

  /** Is a watcher of another process (or another mapping in this one) parked, or a fallback watcher asleep? */
  othersWaiting(): boolean {
    // orderedLoad: after a write's atomic add and stores, which on x86 are full fences (memory-order.ts).
    return orderedLoad(this.i32, WAITERS) !== 0 || (orderedLoad(this.i32, PARKED) & ~this.ownBit) !== 0;
  }

  /** After a value write: a wake only if someone could hear it (the hot path's usual answer is no). */
  afterWrite(): void {
    if (this.localChange !== undefined || this.othersWaiting()) this.schedule();
  }

  /** Queues the wake (one microtask, however many changes come before it runs). */
  schedule(): void {
    if (this.pending) return;
    this.pending = true;
    queueMicrotask(this.wake);
  }

  /**
   * Runs after the version bumps it follows (they happened before the microtask). Taking a bit is what makes one
   * byte per parked watcher enough: a watcher gets no second byte until it has scanned and parked again. The
   * load first keeps the atomic AND (a store to a shared line) off the path where only our own bit is set.
   */
  private wakeOthers(): void {
    const own = this.ownBit;
    if ((Atomics.load(this.i32, PARKED) & ~own) !== 0) {
      const taken = Atomics.and(this.i32, PARKED, own) & ~own;
      if (taken !== 0) native.wakeChannels(this.file.buffer, H.WATCH_TOKENS, taken);
    }
    if (Atomics.load(this.i32, WAITERS) !== 0) native.futexWake(this.file.buffer, H.VERSION, 0x7fffffff);
  }
}
