import type { FileChangeEvent } from '../core/file-change-event.js';
import { ChangeWatcher } from '../local/change-watcher.js';
import { BUSY, type DirEntry, type ServiceFile } from '../local/service-file.js';
import { CommyError, ErrorCode, isCommyError } from '../core/errors.js';
import { encodeFrame } from '../protocol/frame-codec.js';
import type { SyncBatchBody, Update } from '../protocol/messages.js';
import { splitByCost } from '../protocol/frame-split.js';
import { defOf, snapshotFrames } from './snapshot.js';

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

export interface BroadcastOptions {
  /** 'immediate': send at the end of the event-loop turn; a number: at most one batch per that many ms. */
  tick: 'immediate' | number;
  /** Keep each SyncBatch under this size. */
  maxFrameBytes: number;
  /** Changes written by another process straight into the mapping (a local client): for the audit log. */
  onLocalWrite?: (host: ServiceHost, pid: number, variables: string[]) => void;
  /** The file became unusable (another process truncated it): the owner drops the host. */
  onBroken?: (host: ServiceHost) => void;
}

export interface SubscribeOptions {
  /** Which variables the subscriber wants (compiled once); undefined: all. */
  wants?: (name: string) => boolean;
  readOnly: boolean;
  /** Names instead of values (a local client with a read-only mapping, see SubscriptionBody.notify). */
  notify: boolean;
}

/** First wait before looking again at a congested socket or a variable held mid-write; doubles up to the max. */
const RETRY_MIN_MS = 2;
const RETRY_MAX_MS = 100;

/**
 * One remote client's view of one service. Backpressure by conflation: the client owes nothing but the
 * latest value of each variable in `dirty`, so a slow client costs at most one entry per variable and
 * always ends up with the last value. A `notify` subscriber (a local client with a read-only mapping) is
 * owed only the names: it reads the values from its own mapping.
 */
export class Subscriber {
  readonly dirty = new Set<number>();
  /**
   * Versions of this client's own acknowledged writes, by variable: the ack told it everything, so an update
   * still at that version is not echoed back (half the frames for a writer).
   */
  readonly own = new Map<number, number>();
  /** Directory entries the client has been told about (defs are sent once, in order). */
  knownDefs = 0;
  scheduled = false;
  closed = false;
  /** While its snapshot is still being sent, updates wait (they would overtake the snapshot's chunks). */
  loading = true;
  /** Current wait before retrying a held-back flush. */
  retryMs = RETRY_MIN_MS;
  readonly notify: boolean;
  readonly readOnly: boolean;
  private readonly filter: ((name: string) => boolean) | undefined;

  constructor(
    readonly sid: number,
    readonly host: ServiceHost,
    readonly outlet: Outlet,
    options: SubscribeOptions,
  ) {
    this.filter = options.wants;
    this.notify = options.notify;
    this.readOnly = options.readOnly;
  }

  wants(name: string): boolean {
    return this.filter === undefined || this.filter(name);
  }
}

/** A service the server has open: its mapped file, the watcher that sees every change, its subscribers. */
export class ServiceHost {
  readonly serviceId: string;
  private readonly watcher: ChangeWatcher;
  private readonly subscribers = new Set<Subscriber>();
  /** Why the service stopped (its file was damaged by another process); undefined while it works. */
  broken: CommyError | undefined;

  constructor(
    readonly tenant: string,
    readonly service: string,
    readonly file: ServiceFile,
    private readonly options: BroadcastOptions,
  ) {
    this.serviceId = `${tenant}/${service}`;
    this.watcher = new ChangeWatcher(file, this.serviceId, (err) => this.watchFailed(err));
    this.watcher.add((event) => this.onChange(event));
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /**
   * Adds a subscriber, still `loading`: send `snapshot(sub, requestId)`'s frames, then call `loaded(sub)`.
   * Registered before the snapshot is read, so a change racing with it is sent again, never lost.
   */
  subscribe(sid: number, outlet: Outlet, options: SubscribeOptions): Subscriber {
    const subscriber = new Subscriber(sid, this, outlet, options);
    this.subscribers.add(subscriber);
    subscriber.knownDefs = this.file.list().length;
    return subscriber;
  }

  /** The subscriber's snapshot as frames (see snapshotFrames), each within half the frame limit. */
  snapshot(sub: Subscriber, requestId: number): Generator<Uint8Array, void, undefined> {
    return snapshotFrames({
      file: this.file,
      requestId,
      sid: sub.sid,
      serviceId: this.serviceId,
      readOnly: sub.readOnly,
      namesOnly: sub.notify,
      budget: this.options.maxFrameBytes / 2,
      owe: (index) => sub.dirty.add(index),
    });
  }

  /** The snapshot is out: updates may flow. */
  loaded(sub: Subscriber): void {
    sub.loading = false;
    if (sub.dirty.size > 0 || this.file.list().length > sub.knownDefs) this.schedule(sub);
  }

  unsubscribe(subscriber: Subscriber): void {
    subscriber.closed = true;
    this.subscribers.delete(subscriber);
  }

  private onChange(event: FileChangeEvent): void {
    if (this.options.onLocalWrite !== undefined) this.reportLocalWrites(event, this.options.onLocalWrite);
    if (this.subscribers.size === 0) return;
    const indexes = event.changedVariables.map((name) => this.file.entry(name).index);
    for (const sub of this.subscribers) {
      for (let i = 0; i < indexes.length; i++) if (sub.wants(event.changedVariables[i]!)) sub.dirty.add(indexes[i]!);
      if (sub.dirty.size > 0 || this.file.list().length > sub.knownDefs) this.schedule(sub);
    }
  }

  /** Groups the changes other processes wrote by writer pid (each entry records its last writer). */
  private reportLocalWrites(event: FileChangeEvent, report: NonNullable<BroadcastOptions['onLocalWrite']>): void {
    const byPid = new Map<number, string[]>();
    for (const name of event.changedVariables) {
      const pid = this.file.lastWriter(this.file.entry(name));
      if (pid === process.pid) continue; // written through this server: audited where it was accepted
      const names = byPid.get(pid);
      if (names === undefined) byPid.set(pid, [name]);
      else names.push(name);
    }
    for (const [pid, names] of byPid) report(this, pid, names);
  }

  private schedule(sub: Subscriber, delayMs?: number): void {
    if (sub.scheduled || sub.loading) return;
    sub.scheduled = true;
    const run = () => {
      sub.scheduled = false;
      try {
        this.flush(sub);
      } catch (err) {
        // A service file corrupted by a local writer must not take the server down with it.
        if (isCommyError(err, ErrorCode.INVALID_FILE) && this.file.damaged) this.fail(err);
        else process.emitWarning(err instanceof Error ? err : new Error(String(err)));
      }
    };
    const tick = delayMs ?? this.options.tick;
    if (tick === 'immediate') setImmediate(run);
    else setTimeout(run, tick);
  }

  /** Looks again later, waiting longer each time the subscriber is held back. */
  private retry(sub: Subscriber): void {
    const wait = sub.retryMs;
    sub.retryMs = Math.min(wait * 2, RETRY_MAX_MS);
    this.schedule(sub, wait);
  }

  /** Sends the subscriber's dirty set as SyncBatches (new definitions first), unless its socket is backed up. */
  private flush(sub: Subscriber): void {
    if (sub.closed || sub.loading || !sub.outlet.open || this.file.closed) return;
    if (sub.outlet.overBudget()) {
      this.retry(sub);
      return;
    }
    const entries = this.file.list();
    if (sub.notify) {
      this.flushNames(sub, entries);
      return;
    }
    // New definitions ride with the first batch, before any update to them.
    const defs = entries.slice(sub.knownDefs).map((e) => defOf(e, this.file.entryVersion(e)));
    sub.knownDefs = entries.length;
    const updates: Update[] = [];
    let held = false;
    for (const index of sub.dirty) {
      const e = entries[index];
      if (e === undefined) {
        sub.dirty.delete(index);
        continue;
      }
      const update = this.updateOf(sub, e);
      if (update === BUSY) held = true; // a writer is mid-write: stays dirty, sent once it is done
      else {
        sub.dirty.delete(index);
        if (update !== undefined) updates.push(update);
      }
    }
    if (held) this.retry(sub);
    else sub.retryMs = RETRY_MIN_MS;
    if (updates.length === 0 && defs.length === 0) return;
    const version = Number(this.file.version);
    const batches = splitByCost(updates, (u) => u[2].length + 16, this.options.maxFrameBytes / 2);
    batches.forEach((batch, i) => {
      const body: SyncBatchBody = { sid: sub.sid, version, updates: batch };
      if (i === 0 && defs.length > 0) body.defs = defs;
      sub.outlet.send(encodeFrame('SyncBatch', 0, body));
    });
  }

  /** The variable's update for this subscriber: undefined when it is the client's own write, BUSY mid-write. */
  private updateOf(sub: Subscriber, e: DirEntry): Update | undefined | typeof BUSY {
    const mine = sub.own.get(e.index);
    if (mine !== undefined) {
      sub.own.delete(e.index);
      if (Number(this.file.entryVersion(e)) === mine) return undefined; // nobody wrote it since the client's own write
    }
    return this.file.tryRead(e, () => [e.index, Number(this.file.entryVersion(e)), this.file.u8.slice(e.at, e.at + e.meta.size)] as Update);
  }

  /**
   * A notify subscriber's dirty set as VariablesUpdated names (one message per flush unless the names
   * exceed the frame budget). New variables need no definitions: they are in the directory it maps.
   */
  private flushNames(sub: Subscriber, entries: readonly DirEntry[]): void {
    sub.knownDefs = entries.length;
    const names = [...sub.dirty].flatMap((index) => entries[index]?.meta.name ?? []);
    sub.dirty.clear();
    if (names.length === 0) return;
    const version = Number(this.file.version);
    for (const variables of splitByCost(names, (n) => n.length + 2, this.options.maxFrameBytes / 2)) {
      sub.outlet.send(encodeFrame('VariablesUpdated', 0, { serviceId: this.serviceId, version, variables, sid: sub.sid }));
    }
  }

  /** A file that another process made unusable (corrupt directory, truncated) ends the service for everyone. */
  private watchFailed(err: unknown): void {
    if (isCommyError(err, ErrorCode.INVALID_FILE)) this.fail(err);
    else process.emitWarning(err instanceof Error ? err : new Error(String(err)));
  }

  /**
   * The file can no longer be trusted: every subscriber is told (an Unsubscribed push with the error) and dropped,
   * and the owner closes the host. Other services are untouched.
   */
  fail(err: CommyError): void {
    if (this.broken !== undefined) return;
    this.broken = err;
    for (const sub of this.subscribers) {
      sub.closed = true;
      sub.outlet.send(encodeFrame('Unsubscribed', 0, { sid: sub.sid, errorCode: err.code, message: err.message }));
    }
    this.subscribers.clear();
    this.options.onBroken?.(this);
  }

  close(): void {
    for (const sub of this.subscribers) sub.closed = true;
    this.subscribers.clear();
    this.watcher.close();
    this.file.close();
  }
}
