import { CommyError, ErrorCode, isCommyError } from '../core/errors.js';
import { removedError } from '../local/directory.js';
import { BUSY, type DirEntry, type ServiceFile } from '../local/service-file.js';
import { encodeFrame } from '../protocol/frame-codec.js';
import { Broadcaster, type BroadcastSource } from './broadcaster.js';
import { FileSyncer, type DurabilityMode } from './durability.js';
import type { ServerMetrics } from './metrics.js';
import type { OpRecord } from './op-record.js';
import type { ChangeFeed, ChangeFeedFactory, FeedChange } from './change-feed.js';
import { localChangeFeed } from './local-change-feed.js';
import { snapshotFrames } from './snapshot.js';
import { Subscriber, type Outlet } from './subscriber.js';
import type { SubscriptionSpec } from './subscription-spec.js';

export { Subscriber, type Outlet } from './subscriber.js';

export interface ApplyOptions {
  /** The subscriber that wrote: its own write is not echoed back to it. */
  origin?: Subscriber;
  /** Per entry, the version it must still have (compare-and-set); undefined: any. */
  expected?: readonly (number | undefined)[];
  /**
   * A report: a variable removed meanwhile is skipped (version 0 in the result), the rest applied; its writer
   * learns of the removal from its subscription. Otherwise a removed one is VARIABLE_NOT_FOUND, nothing written.
   */
  skipRemoved?: boolean;
  /**
   * The operation journal's record of this write (op-journal.ts): its intent is written under the locks, before
   * the first value, and each version as it is known, so a server killed in between can tell later what it did.
   */
  record?: OpRecord;
}

export interface BroadcastOptions {
  /** 'immediate': send at the end of the event-loop turn; a number: at most one batch per that many ms. */
  tick: 'immediate' | number;
  /** Keep each SyncBatch under this size. */
  maxFrameBytes: number;
  /** Where changes come from (default: the local change watcher). */
  feed?: ChangeFeedFactory;
  /** Changes written by another process straight into the mapping (a local client): for the audit log. */
  onLocalWrite?: (host: ServiceHost, pid: number, variables: string[]) => void;
  /** The file became unusable (another process truncated it): the owner drops the host. */
  onBroken?: (host: ServiceHost) => void;
  /** Unexpected failures while broadcasting (logged by the server). */
  onError?: (err: unknown) => void;
  /** `ack`: acknowledgements wait for the file's sync (durable()); other modes sync elsewhere. Default 'none'. */
  durability?: DurabilityMode;
  /** A sync of a service file finished (for the server's count). */
  onSynced?: () => void;
  /** Counts what the service does (absent: nothing counted). */
  metrics?: ServerMetrics;
}

/** A service the server has open: its mapped file, the feed that reports every change, its subscribers. */
export class ServiceHost {
  readonly serviceId: string;
  private readonly feed: ChangeFeed;
  private readonly subscribers = new Set<Subscriber>();
  /** Why the service stopped (its file was damaged by another process); undefined while it works. */
  broken: CommyError | undefined;
  /** Every change at or below this version has been reported by the feed (see FeedChange.settled). */
  private settledVersion = 0n;
  private readonly broadcaster: Broadcaster;
  /** The file's syncs (durability.ts): on close, and in `ack` or `periodic` mode as they say. */
  readonly syncer: FileSyncer;
  /** Removed slots already passed on to subscribers. */
  private readonly removals = new Set<number>();

  constructor(
    readonly tenant: string,
    readonly service: string,
    readonly file: ServiceFile,
    private readonly options: BroadcastOptions,
  ) {
    this.serviceId = `${tenant}/${service}`;
    this.syncer = new FileSyncer(() => file.descriptor, options.onSynced);
    this.broadcaster = new Broadcaster(this.broadcastSource());
    this.feed = (options.feed ?? localChangeFeed)(file, this.serviceId);
    this.feed.start({ change: (c) => this.onChange(c), error: (err) => this.feedFailed(err) });
  }

  /** What the broadcaster sees of this host (the settled version as it moves). */
  private broadcastSource(): BroadcastSource {
    const { tick, maxFrameBytes } = this.options;
    return {
      file: this.file,
      serviceId: this.serviceId,
      settled: () => this.settledVersion,
      tick,
      maxFrameBytes,
      fail: (err) => (err instanceof CommyError ? this.fail(err) : this.report(err)),
      report: (err) => this.report(err),
      ...(this.options.metrics !== undefined ? { batchSent: (n: number) => this.options.metrics!.batch(n) } : {}),
    };
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /**
   * Adds a subscriber, still `loading`: send `snapshot(sub, requestId)`'s frames, then call `loaded(sub)`.
   * Registered before the snapshot is read, so a change racing with it is sent again, never lost.
   */
  subscribe(sid: number, outlet: Outlet, spec: SubscriptionSpec, readOnly: boolean): Subscriber {
    const subscriber = new Subscriber(sid, this, outlet, spec, readOnly);
    subscriber.resumeSent = Number(this.settledVersion); // at most what its snapshot will say
    this.subscribers.add(subscriber);
    subscriber.knownDefs = this.file.slots().length;
    return subscriber;
  }

  /** The subscriber's snapshot as frames (see snapshotFrames), each within half the frame limit. */
  snapshot(sub: Subscriber, requestId: number, reset?: string): Generator<Uint8Array, void, undefined> {
    return snapshotFrames({
      ...(reset !== undefined ? { reset } : {}),
      file: this.file,
      requestId,
      sid: sub.sid,
      serviceId: this.serviceId,
      readOnly: sub.readOnly,
      spec: sub.spec,
      budget: this.options.maxFrameBytes / 2,
      owe: (index) => sub.dirty.add(index),
    });
  }

  /** The snapshot is out: updates may flow. */
  loaded(sub: Subscriber): void {
    sub.loading = false;
    if (this.owes(sub, this.file.slots().length)) this.broadcaster.mark(sub);
  }

  /** The highest version at which a variable was removed (0 if none was): a resume from below it is a reset. */
  lastRemoval(): bigint {
    let last = 0n;
    for (const e of this.file.slots()) if (e.removed) last = bigMax(last, this.file.entryVersion(e));
    return last;
  }

  /** Removes a variable without waiting (BUSY while a local process holds its lock); subscribers are told by the feed. */
  remove(name: string): bigint | typeof BUSY {
    return this.file.tryRemoveVariable(name);
  }

  unsubscribe(subscriber: Subscriber): void {
    subscriber.closed = true;
    this.subscribers.delete(subscriber);
    this.broadcaster.drop(subscriber);
  }

  /**
   * Every write to the service by this server goes here. Takes every entry's writer lock without waiting
   * (BUSY, holding none, if a live process holds any), then writes each value in order: all or nothing. A
   * variable named twice takes its last value, and both get that write's version. `origin`'s own writes are
   * not echoed back to it (its acknowledgement carries the versions). With `expected` (compare-and-set), each
   * entry must still be at its expected version, checked under the locks: CONFLICT and nothing written if not.
   */
  apply(entries: readonly DirEntry[], values: readonly Uint8Array[], options: ApplyOptions = {}): bigint[] | typeof BUSY {
    const { origin, expected } = options;
    const file = this.file;
    const locked: DirEntry[] = [];
    for (const e of new Set(entries)) {
      if (!file.tryLock(e)) {
        for (const held of locked) file.unlock(held);
        return BUSY;
      }
      locked.push(e);
    }
    const gone = locked.filter((e) => !file.isLive(e)); // under the locks: no removal can land before the writes
    const refusal = gone.length > 0 && options.skipRemoved !== true ? removedError(gone[0]!, this.serviceId) : expected === undefined ? undefined : this.conflict(entries, expected);
    if (refusal !== undefined) {
      for (const held of locked) file.unlock(held);
      throw refusal;
    }
    for (const e of gone) file.unlock(e);
    const last = new Map<DirEntry, number>();
    entries.forEach((e, i) => {
      if (!gone.includes(e)) last.set(e, i);
    });
    const record = options.record;
    record?.intent(entries.map((e) => ({ index: e.index, skipped: gone.includes(e), before: Number(file.entryVersion(e)) })));
    const written = new Map<DirEntry, bigint>();
    for (const [e, i] of last) {
      const version = file.writeLocked(e, values[i]!);
      written.set(e, version);
      record?.wrote(i, Number(version));
    }
    if (record !== undefined) {
      // A variable named twice was written once, with the last value: the other changes get its version too.
      entries.forEach((e, j) => void (last.get(e) !== j && written.has(e) && record.wrote(j, Number(written.get(e)))));
      record.done();
    }
    this.syncer.dirty = true;
    if (origin !== undefined) for (const [e, version] of written) origin.ownWrite(e.index, e.meta.name, Number(version));
    return entries.map((e) => written.get(e) ?? 0n);
  }

  /**
   * Compare-and-set: CONFLICT unless each entry is still at its expected version. apply() asks it under the
   * entries' locks; a cluster node asks it first, before it appends (cluster-node.ts).
   */
  conflict(entries: readonly DirEntry[], expected: readonly (number | undefined)[]): CommyError | undefined {
    for (let i = 0; i < entries.length; i++) {
      const want = expected[i];
      if (want === undefined) continue;
      const e = entries[i]!;
      const have = this.file.entryVersion(e);
      if (have !== BigInt(want)) {
        return new CommyError(ErrorCode.CONFLICT, `${this.serviceId}/${e.meta.name} is at version ${have}, not ${want}`);
      }
    }
    return undefined;
  }

  private onChange(change: FeedChange): void {
    this.syncer.dirty = true; // a local process's write, a registration, a removal: the file has changed
    this.options.metrics?.wakeUp();
    if (change.settled > this.settledVersion) this.settledVersion = change.settled;
    if (this.options.onLocalWrite !== undefined) this.reportLocalWrites(change, this.options.onLocalWrite);
    if (change.removedVariables.length > 0) this.passOnRemovals();
    if (this.subscribers.size === 0) return;
    // A name removed again since the feed saw it change has no entry: its removal is what subscribers get.
    const changed = change.changedVariables.flatMap((name) => this.file.find(name) ?? []);
    const slotCount = this.file.slots().length;
    for (const sub of this.subscribers) {
      for (const e of changed) {
        if (!sub.wants(e.index, e.meta.name)) continue;
        if (sub.dirty.has(e.index)) this.options.metrics?.conflated(); // still owed: it will get the latest value only
        else sub.dirty.add(e.index);
      }
      if (this.owes(sub, slotCount)) this.broadcaster.mark(sub);
    }
  }

  private owes(sub: Subscriber, slotCount: number): boolean {
    return sub.dirty.size > 0 || sub.removed.size > 0 || slotCount > sub.knownDefs;
  }

  /**
   * Each removed slot not passed on yet goes to every subscriber that may know it (its definition was sent:
   * below knownDefs, in the snapshot or a batch); its pending update and own-write mark go with it.
   */
  private passOnRemovals(): void {
    for (const e of this.file.slots()) {
      if (!e.removed || this.removals.has(e.index)) continue;
      this.removals.add(e.index);
      for (const sub of this.subscribers) {
        sub.dirty.delete(e.index);
        sub.own.delete(e.index);
        if (e.index < sub.knownDefs && sub.wants(e.index, e.meta.name)) sub.removed.add(e.index);
      }
    }
  }

  /** Groups the changes other processes wrote by writer pid (each entry records its last writer). */
  private reportLocalWrites(change: FeedChange, report: NonNullable<BroadcastOptions['onLocalWrite']>): void {
    const byPid = new Map<number, string[]>();
    for (const name of change.changedVariables) {
      const entry = this.file.find(name);
      if (entry === undefined) continue; // removed since
      const pid = this.file.lastWriter(entry);
      if (pid === process.pid) continue; // written through this server: audited where it was accepted
      const names = byPid.get(pid);
      if (names === undefined) byPid.set(pid, [name]);
      else names.push(name);
    }
    for (const [pid, names] of byPid) report(this, pid, names);
  }

  /** A file that another process made unusable (corrupt directory, truncated) ends the service for everyone. */
  private feedFailed(err: unknown): void {
    if (isCommyError(err, ErrorCode.INVALID_FILE)) this.fail(err);
    else this.report(err);
  }

  private report(err: unknown): void {
    if (this.options.onError !== undefined) this.options.onError(err);
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
      this.broadcaster.drop(sub);
      sub.outlet.send(encodeFrame('Unsubscribed', 0, { sid: sub.sid, errorCode: err.code, message: err.message }));
    }
    this.subscribers.clear();
    this.options.onBroken?.(this);
  }

  /**
   * In `ack` mode, resolves once every write made so far is on disk (one fdatasync shared by the writes that
   * ask meanwhile); in the other modes at once (undefined: nothing to await).
   */
  durable(): Promise<void> | undefined {
    return this.options.durability === 'ack' ? this.syncer.sync() : undefined;
  }

  /**
   * Stops serving the service at once; the file itself is closed after a last sync if anything was written
   * since the last one, or a sync is still running (whatever the durability mode: a closed file is never left to
   * the kernel's timing).
   * Resolves when the file is closed.
   */
  close(): Promise<void> {
    for (const sub of this.subscribers) {
      sub.closed = true;
      this.broadcaster.drop(sub);
    }
    this.subscribers.clear();
    this.feed.close();
    // A sync still running (periodic, or an ack's) was started on this descriptor: closing it now would make that
    // fdatasync fail (EBADF) or sync whatever file reuses the number, and leave the writes it covers unsynced.
    if (this.file.closed || (!this.syncer.dirty && !this.syncer.running)) {
      this.file.close();
      return Promise.resolve();
    }
    return this.syncer.sync().then(
      () => this.file.close(),
      (err: unknown) => {
        this.options.onError?.(err);
        this.file.close();
      },
    );
  }
}

function bigMax(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}
