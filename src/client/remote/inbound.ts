import type { CommyError } from '../../core/errors.js';
import type { SnapshotChunkBody, SyncBatchBody } from '../../protocol/messages.js';
import type { ChangeEvents } from './change-events.js';
import type { RemoteDirectory, RemoteEntry } from './directory.js';
import type { Reconciler } from './reconciler.js';
import type { RemoteStore } from './store.js';

/** How a subscription whose snapshot arrives in chunks learns that the last one came (or never will). */
export interface Loading {
  resolve(): void;
  reject(err: CommyError): void;
}

/**
 * What the server pushes to one subscription: the rest of a chunked snapshot, then SyncBatches (new
 * definitions, then values, each through the reconciler). Keeps the service version the pushes and
 * acknowledgements carry.
 */
export class Inbound {
  private versionSeen: number;
  private loading: Loading | undefined;
  private stopped = false;

  constructor(
    version: number,
    private readonly directory: RemoteDirectory,
    private readonly store: RemoteStore,
    private readonly reconciler: Reconciler<RemoteEntry>,
    private readonly events: ChangeEvents,
  ) {
    this.versionSeen = version;
  }

  /** The highest service version the server has named. */
  get version(): number {
    return this.versionSeen;
  }

  noteVersion(version: number): void {
    if (version > this.versionSeen) this.versionSeen = version;
  }

  /** The snapshot said `more`: the subscription opens after the last SnapshotChunk. */
  awaitChunks(loading: Loading): void {
    this.loading = loading;
  }

  /** The rest of a snapshot too large for one frame. */
  chunk(chunk: SnapshotChunkBody): void {
    const loading = this.loading;
    if (this.stopped || loading === undefined) return;
    if (chunk.defs !== undefined) for (const d of chunk.defs) this.directory.add(d);
    if (chunk.data !== undefined && chunk.offset !== undefined) {
      this.store.ensure(chunk.offset + chunk.data.length);
      this.store.putBoth(chunk.offset, chunk.data.length, chunk.data);
    }
    if (chunk.more) return;
    this.loading = undefined;
    loading.resolve();
  }

  /** A change to the service by anyone else (our own acknowledged writes are not echoed): definitions, then values. */
  batch(batch: SyncBatchBody): void {
    if (this.stopped) return;
    const changed: RemoteEntry[] = [];
    for (const d of batch.defs ?? []) {
      const added = this.directory.add(d);
      if (added !== undefined) changed.push(added);
    }
    for (const [index, version, bytes] of batch.updates) {
      const e = this.directory.at(index);
      if (e === undefined) continue;
      this.reconciler.update(e, version, bytes);
      changed.push(e);
    }
    this.noteVersion(batch.version);
    this.events.emit(changed, batch.version);
  }

  /** Nothing more is taken in; a snapshot still arriving fails with `reason`. */
  stop(reason: CommyError): void {
    this.stopped = true;
    this.loading?.reject(reason);
    this.loading = undefined;
  }
}
