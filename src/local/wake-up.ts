import { native } from '../native/addon.js';
import { H } from './file-format.js';
import { I32, type FileMapping } from './file-mapping.js';

/** How this process's ChangeWatcher hooks into the file's wake-ups (ServiceFile.attachWatcher). */
export interface WatcherHooks {
  /** The watcher's bit (0 without a slot): writes of this process leave its thread out of the futex wake. */
  readonly bit: number;
  /** Called where the futex wake would be: this process's listeners hear its own writes directly. */
  readonly onLocalChange: () => void;
}

/**
 * Waking the watchers after a change. A write only stores into the mapping; the wake is one microtask queued by
 * the first change since the last wake, so a burst of synchronous writes costs at most one FUTEX_WAKE, and none
 * at all unless a watcher of another process (or another mapping) is asleep on the version word.
 */
export class WakeUps {
  private pending = false;
  private ownBit = 0;
  private localChange: (() => void) | undefined;
  private readonly i32: Int32Array;
  private readonly wake = (): void => {
    this.pending = false;
    if (this.file.closed) return;
    if (this.othersWaiting()) native.futexWake(this.file.buffer, H.VERSION, 0x7fffffff, ~this.ownBit >>> 0);
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

  /** Is a watcher of another process (or another mapping in this one) asleep on the version word? */
  othersWaiting(): boolean {
    return Atomics.load(this.i32, I32(H.WAITERS)) !== 0 || (Atomics.load(this.i32, I32(H.PARKED)) & ~this.ownBit) !== 0;
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
}
