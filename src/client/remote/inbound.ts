import type { CommyError } from '../../core/errors.js';
import type { SnapshotChunkBody, SyncBatchBody } from '../../protocol/messages.js';
import type { ChangeEvents } from './change-events.js';
import type { RemoteDirectory, RemoteEntry } from './directory.js';
import type { Reconciler } from './reconciler.js';
import { dropRemoved } from './removal.js';
import type { SnapshotLoad } from './snapshot-load.js';

export type { Loading } from './snapshot-load.js';

/**
 * What the server pushes to one subscription: the rest of a chunked snapshot, then SyncBatches (new
 * definitions, then values, each through the reconciler). Keeps the service version the pushes and
 * acknowledgements carry, and the resume point: the version up to which this client has every change.
 */
export class Inbound {
  private versionSeen: number;
  private resumeAt: number;
  private load: SnapshotLoad | undefined;
  private stopped = false;

  constructor(
    version: number,
    readonly directory: RemoteDirectory,
    readonly reconciler: Reconciler<RemoteEntry>,
    private readonly events: ChangeEvents,
  ) {
    this.versionSeen = version;
    this.resumeAt = version;
  }

  /** The highest service version the server has named. */
  get version(): number {
    return this.versionSeen;
  }

  /**
   * Every change at or below this version has reached this client: the last snapshot's version (or its last
   * chunk's), raised by each batch since. Not by acknowledgements: an ack says nothing of others' writes.
   */
  get resumePoint(): number {
    return this.resumeAt;
  }

  noteVersion(version: number): void {
    if (version > this.versionSeen) this.versionSeen = version;
  }

  /** A snapshot is loaded. A reset (another file, maybe numbered from scratch) restarts the versions seen. */
  loaded(version: number, reset: boolean): void {
    this.resumeAt = version;
    if (reset) this.versionSeen = version;
    else this.noteVersion(version);
  }

  /** The snapshot said `more`: `load` takes the chunks; the subscription is usable after the last. */
  awaitChunks(load: SnapshotLoad): void {
    this.load = load;
  }

  /** The rest of a snapshot too large for one frame. */
  chunk(chunk: SnapshotChunkBody): void {
    const load = this.load;
    if (this.stopped || load === undefined) return;
    if (chunk.defs !== undefined) load.defs(chunk.defs);
    if (chunk.data !== undefined && chunk.offset !== undefined) load.data(chunk.offset, chunk.data);
    if (chunk.more) return;
    this.load = undefined;
    load.finish(chunk.version);
  }

  /** A change to the service by anyone else (our own acknowledged writes are not echoed): removals, definitions, then values. */
  batch(batch: SyncBatchBody): void {
    if (this.stopped) return;
    const changed: RemoteEntry[] = [];
    const removed: string[] = [];
    const added: string[] = [];
    for (const index of batch.removed ?? []) {
      const gone = dropRemoved(this, index);
      if (gone !== undefined) removed.push(gone.meta.name);
    }
    for (const d of batch.defs ?? []) {
      const entry = this.directory.add(d);
      if (entry === undefined) continue;
      changed.push(entry);
      added.push(entry.meta.name);
    }
    for (const [index, version, bytes] of batch.updates) {
      const e = this.directory.at(index);
      if (e === undefined) continue;
      this.reconciler.update(e, version, bytes);
      changed.push(e);
    }
    this.noteVersion(batch.version);
    if (batch.version > this.resumeAt) this.resumeAt = batch.version;
    this.events.emit(changed, batch.version, { added, removed });
  }

  /** The connection is gone: a snapshot still arriving fails with `reason`; later ones are taken in. */
  interrupt(reason: CommyError): void {
    this.load?.fail(reason);
    this.load = undefined;
  }

  /** Nothing more is taken in; a snapshot still arriving fails with `reason`. */
  stop(reason: CommyError): void {
    this.stopped = true;
    this.interrupt(reason);
  }
}
