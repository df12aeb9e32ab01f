import type { ServiceHost } from './service-host.js';
import type { SubscriptionSpec } from './subscription-spec.js';

/** Where a subscriber's frames go: one WebSocket connection. */
export interface Outlet {
  send(frame: Uint8Array): void;
  /**
   * True while the connection's unsent output is over its budget: its updates then wait and conflate.
   * Asking also starts the connection's slow-consumer clock.
   */
  overBudget(): boolean;
  readonly open: boolean;
}

/** First wait before looking again at a congested socket or a variable held mid-write; doubles up to the max. */
export const RETRY_MIN_MS = 2;
export const RETRY_MAX_MS = 100;

/**
 * One remote client's view of one service. Backpressure by conflation: the client owes nothing but the
 * latest value of each variable in `dirty`, so a slow client costs at most one entry per variable and
 * always ends up with the last value. A 'names' subscriber (a local client with a read-only mapping) is
 * owed only the names: it reads the values from its own mapping.
 */
export class Subscriber {
  readonly dirty = new Set<number>();
  /**
   * Versions of this client's own acknowledged writes, by variable: the ack told it everything, so an update
   * still at that version is not echoed back (half the frames for a writer). Only variables it is sent (see
   * ownWrite), so at most one entry per variable the subscription covers.
   */
  readonly own = new Map<number, number>();
  /** Directory indexes of removed variables the client may know, to tell it (SyncBatch.removed). */
  readonly removed = new Set<number>();
  /** Directory entries looked at for definitions to send (each wanted one is sent once, in order). */
  knownDefs = 0;
  closed = false;
  /** Set while a held-back flush waits to be tried again (see Broadcaster.retry). */
  retryTimer: NodeJS.Timeout | undefined;
  /** While its snapshot is still being sent, updates wait (they would overtake the snapshot's chunks). */
  loading = true;
  /** The last resume point sent in a SyncBatch (a split batch's earlier parts repeat it). */
  resumeSent = 0;
  /** Current wait before retrying a held-back flush. */
  retryMs = RETRY_MIN_MS;
  /** The service version of the last SyncPending sent (pending-notices.ts): a notice goes only when it moved. */
  noticedVersion = -1;

  constructor(
    readonly sid: number,
    readonly host: ServiceHost,
    readonly outlet: Outlet,
    readonly spec: SubscriptionSpec,
    /** The key may not write this service (the snapshot says so; reports are refused). */
    readonly readOnly: boolean,
  ) {}

  /** Whether the subscription covers the variable at directory `index`. */
  wants(index: number, name: string): boolean {
    return this.spec.filter.wants(index, name);
  }

  /**
   * The client wrote this variable and its acknowledgement carries `version`. Marked only where a flush will
   * look (a covered variable of a 'values' subscription): the flush of the write's own change clears the mark,
   * and a mark nobody looks at (a variable outside the filter, written by index) would be kept for ever.
   */
  ownWrite(index: number, name: string, version: number): void {
    if (this.spec.mode === 'values' && this.wants(index, name)) this.own.set(index, version);
  }
}
