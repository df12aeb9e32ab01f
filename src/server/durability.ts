import { fdatasync } from 'node:fs';

/**
 * When what a server acknowledged reaches the disk (docs/operations.md, Durability). A write lands in the
 * service file's shared mapping, i.e. in the kernel's page cache: it survives the server's death (kill -9)
 * in every mode, and a machine's crash or power loss only once synced.
 *
 * - `ack`: every acknowledgement waits for an fdatasync of the file that covers its write (concurrent writes
 *   share one: group commit);
 * - `periodic`: every `intervalMs`, each file written since its last sync is synced (a crash loses at most
 *   about that much);
 * - `none`: the kernel writes the pages back when it likes (Linux: within ~30 s by default).
 *
 * Syncs run on libuv's thread pool (fdatasync on the file's descriptor: on Linux the same as msync MS_SYNC for
 * pages written through a shared mapping), never on the event loop: a slow disk delays acknowledgements in
 * `ack` mode, never other clients.
 */
export type DurabilityMode = 'ack' | 'periodic' | 'none';

export interface Durability {
  mode: DurabilityMode;
  /** The period of `periodic` syncs. */
  intervalMs: number;
}

export const DEFAULT_DURABILITY: Readonly<Durability> = Object.freeze({ mode: 'periodic', intervalMs: 1000 });

/** One service file's syncs: concurrent callers share one fdatasync, and a caller never gets one that began before it asked. */
export class FileSyncer {
  private current: Promise<void> | undefined;
  private next: Promise<void> | undefined;
  /** Written since the last sync began (periodic syncs skip clean files). */
  dirty = false;
  /** Syncs completed (for /metrics and the tests). */
  syncs = 0;

  constructor(
    private readonly fd: () => number,
    private readonly onSynced?: () => void,
  ) {}

  /** A sync is running or waiting to (its fdatasync holds the descriptor: the file must not be closed under it). */
  get running(): boolean {
    return this.current !== undefined || this.next !== undefined;
  }

  /** Resolves once everything written to the file before the call is on disk. */
  sync(): Promise<void> {
    if (this.current === undefined) return (this.current = this.start());
    // The running sync may have begun before the caller's writes: the next one (shared by every caller until it
    // starts) begins when it ends.
    return (this.next ??= this.current.then(
      () => this.afterCurrent(),
      () => this.afterCurrent(),
    ));
  }

  private afterCurrent(): Promise<void> {
    this.next = undefined;
    return (this.current = this.start());
  }

  private start(): Promise<void> {
    this.dirty = false;
    const run = new Promise<void>((resolve, reject) => fdatasync(this.fd(), (err) => (err ? reject(err) : resolve())));
    const settled = run.finally(() => {
      this.syncs++;
      this.onSynced?.();
      if (this.current === settled) this.current = undefined;
    });
    return settled;
  }
}
