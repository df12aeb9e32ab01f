import { CommyError, ErrorCode } from '../core/errors.js';
import { LruMap } from '../core/lru-map.js';
import type { DirEntry } from '../local/service-file.js';
import type { OpRecord } from '../server/op-record.js';
import type { Subscriber } from '../server/subscriber.js';
import type { ClusterEntry } from './cluster-entry.js';
import { serviceKeys, type ServiceKeys } from './cluster-keys.js';
import { compareIds, STREAM_START, type StreamId } from './stream-id.js';

/** What an entry's apply gives its waiter: versions (a write), the entry (a registration), a version (a removal). */
export type Applied = bigint[] | DirEntry | bigint;

/** A client's write this node appended, waiting for the node's own apply of it (that apply answers the client). */
export interface Waiter {
  /** The subscriber that wrote: not echoed its own write (ServiceHost.apply's origin). */
  readonly origin?: Subscriber | undefined;
  readonly record?: OpRecord | undefined;
  /** A local process's writes, appended by this node: counted in `localPending` until applied. */
  readonly localNames?: readonly string[];
  /** A compare-and-set: the version of its variable at the check (a local process's write since refuses it here). */
  readonly casVersion?: bigint;
  /** Its entry's id and when Redis gave it (Date.now()), once Redis took it. */
  id?: StreamId;
  since?: number;
  resolve(applied: Applied): void;
  reject(err: unknown): void;
}

/** Versions of the last entries applied, kept to answer a resent operation id (a dup from Redis). */
const RECENT_ENTRIES = 4096;

/**
 * One service as this node replicates it: where it has read and applied its stream to, the entries read and not
 * applied yet (applied in order, one at a time), and the writes it appended that wait for their apply.
 */
export class ServiceReplica {
  readonly serviceId: string;
  readonly keys: ServiceKeys;
  /** The last entry read (XREAD goes on after it). */
  readFrom: StreamId;
  /** The last entry applied to the file: the file holds every change of the stream up to here. */
  applied: StreamId;
  /** Read, not yet applied. */
  readonly queue: ClusterEntry[] = [];
  draining = false;
  /** Left out of the reads until its queue is down to half (StreamReader.full). */
  paused = false;
  /** False while a snapshot loads: not read, and writes wait (`ready`). */
  live = false;
  readonly ready: Promise<void>;
  private markReady!: () => void;
  readonly waiters = new Map<string, Waiter>();
  /** Variables a local process wrote that are not in the stream yet: to append, then applied. CAS waits for them. */
  readonly unsent = new Set<string>();
  readonly localPending = new Map<string, number>();
  /** Entry id → versions it got here (a resent operation id is answered from it). */
  readonly recent = new LruMap<StreamId, bigint[]>(RECENT_ENTRIES);
  /** Waits for the apply to reach an id. */
  private reaching: { id: StreamId; resolve: () => void; reject: (err: unknown) => void }[] = [];

  constructor(
    readonly tenant: string,
    readonly service: string,
    from: StreamId = STREAM_START,
  ) {
    this.serviceId = `${tenant}/${service}`;
    this.keys = serviceKeys(tenant, service);
    this.readFrom = from;
    this.applied = from;
    this.ready = new Promise((resolve) => (this.markReady = resolve));
  }

  /** Starts reading and accepting writes (after a snapshot, from `at`). */
  start(at?: StreamId): void {
    if (at !== undefined && compareIds(at, this.applied) > 0) {
      this.readFrom = at;
      this.moved(at);
    }
    this.live = true;
    this.markReady();
  }

  /** Has a local process's write to `name` not come back from the stream yet? */
  hasLocalPending(name: string): boolean {
    return this.unsent.has(name) || (this.localPending.get(name) ?? 0) > 0;
  }

  countLocal(names: readonly string[], delta: 1 | -1): void {
    for (const name of names) {
      const n = (this.localPending.get(name) ?? 0) + delta;
      if (n > 0) this.localPending.set(name, n);
      else this.localPending.delete(name);
    }
  }

  /** Resolves once the apply has reached `id`. */
  reached(id: StreamId): Promise<void> {
    if (compareIds(this.applied, id) >= 0) return Promise.resolve();
    return new Promise((resolve, reject) => this.reaching.push({ id, resolve, reject }));
  }

  /** The apply reached `id`. */
  moved(id: StreamId): void {
    this.applied = id;
    if (this.reaching.length === 0) return;
    const still: typeof this.reaching = [];
    for (const r of this.reaching) (compareIds(id, r.id) >= 0 ? r.resolve() : still.push(r));
    this.reaching = still;
  }

  /** The node stops: every waiter learns its write's outcome is unknown to it. */
  abandon(reason: string): void {
    const err = new CommyError(ErrorCode.NOT_CONNECTED, reason);
    for (const w of this.waiters.values()) w.reject(err);
    this.waiters.clear();
    for (const r of this.reaching) r.reject(err);
    this.reaching = [];
  }
}
