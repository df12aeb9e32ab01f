import type { ByteRange } from '../../core/byte-diff.js';
import type { CommyError } from '../../core/errors.js';
import type { ChangeEvents } from './change-events.js';
import type { RemoteDirectory, RemoteEntry } from './directory.js';
import type { Inbound } from './inbound.js';
import type { GroupAck, OutboundChange, OutboundGroup } from './outbound-group.js';
import type { OutboxPeer } from './outbox.js';
import type { Reconciler, SentChange } from './reconciler.js';
import type { RemoteStore } from './store.js';

/** What the write path needs from the client. */
export interface WritePathContext {
  /** Sorted [start, end) runs where two buffers differ. */
  diff(a: Uint8Array, b: Uint8Array): ByteRange[];
  onError(err: CommyError): void;
}

/**
 * The outbox's view of one remote service: a flush collects the variables whose bytes differ (one diff of
 * current against shadow, through the reconciler), and each answer goes to the reconciler and, as a change
 * event, to the listeners. The outbox knows indices and bytes only; this is where they meet the variables.
 */
export class WritePath implements OutboxPeer {
  constructor(
    private readonly store: RemoteStore,
    private readonly directory: RemoteDirectory,
    private readonly reconciler: Reconciler<RemoteEntry>,
    private readonly inbound: Inbound,
    private readonly events: ChangeEvents,
    private readonly ctx: WritePathContext,
  ) {}

  collect(): OutboundChange[] {
    const { current, shadow, dataEnd } = this.store;
    const ranges = this.ctx.diff(current.subarray(0, dataEnd), shadow.subarray(0, dataEnd));
    return this.reconciler.startFlush(this.directory.touched(ranges)).map(([e, bytes]) => ({ index: e.index, bytes }));
  }

  flushed(): void {
    this.events.emit(this.reconciler.finishFlush(), this.inbound.version);
  }

  sending(group: OutboundGroup): void {
    for (const [e, bytes] of this.entries(group)) this.reconciler.sent(e, bytes);
  }

  acknowledged(group: OutboundGroup, ack: GroupAck): void {
    this.inbound.noteVersion(ack.version);
    const { changes, versions } = this.present(group, ack);
    this.reconciler.acknowledged(changes, { version: ack.version, versions });
    // The server does not echo our own writes back: the ack is their change event (a local file's watcher
    // reports a process's own writes too).
    this.events.emit(changes.flatMap(([e]) => (e.removed === true ? [] : [e])), this.inbound.version);
  }

  refused(group: OutboundGroup, retry: boolean): void {
    const changes = this.entries(group);
    if (retry) this.reconciler.deferred(changes);
    else this.events.emit(this.reconciler.refused(changes), this.inbound.version);
  }

  onError(err: CommyError): void {
    this.ctx.onError(err);
  }

  /**
   * The group's changes whose variables this client still knows. One dropped by a resync meanwhile (a reset that
   * pruned it) has no entry left: its answer concerns nobody, and there is nothing to apply it to.
   */
  private entries(group: OutboundGroup): SentChange<RemoteEntry>[] {
    return group.changes.flatMap((c): SentChange<RemoteEntry>[] => {
      const e = this.directory.at(c.index);
      return e === undefined ? [] : [[e, c.bytes]];
    });
  }

  /** entries() with each one's version from the ack, stated for each (positions change when some are dropped). */
  private present(group: OutboundGroup, ack: GroupAck): { changes: SentChange<RemoteEntry>[]; versions: number[] } {
    const last = group.changes.length - 1;
    const changes: SentChange<RemoteEntry>[] = [];
    const versions: number[] = [];
    group.changes.forEach((c, i) => {
      const e = this.directory.at(c.index);
      if (e === undefined) return;
      changes.push([e, c.bytes]);
      // An older server names only the version after the whole report; its changes were applied in order,
      // one version each, so change i got about version - (last - i).
      versions.push(ack.versions?.[i] ?? ack.version - (last - i));
    });
    return { changes, versions };
  }
}
