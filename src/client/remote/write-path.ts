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
    const changes = this.entries(group);
    this.reconciler.acknowledged(changes, ack);
    // The server does not echo our own writes back: the ack is their change event (a local file's watcher
    // reports a process's own writes too).
    this.events.emit(changes.map(([e]) => e), this.inbound.version);
  }

  refused(group: OutboundGroup, retry: boolean): void {
    const changes = this.entries(group);
    if (retry) this.reconciler.deferred(changes);
    else this.events.emit(this.reconciler.refused(changes), this.inbound.version);
  }

  onError(err: CommyError): void {
    this.ctx.onError(err);
  }

  private entries(group: OutboundGroup): SentChange<RemoteEntry>[] {
    return group.changes.map((c) => [this.directory.at(c.index)!, c.bytes]);
  }
}
