import { CommyError, ErrorCode, isCommyError } from '../core/errors.js';
import { removedError } from '../local/directory.js';
import { BUSY, type DirEntry, type ServiceFile } from '../local/service-file.js';
import { encodeFrame } from '../protocol/frame-codec.js';
import { splitByCost } from '../protocol/frame-split.js';
import type { SyncBatchBody, Update } from '../protocol/messages.js';
import type { ChangeFeed, ChangeFeedFactory, FeedChange } from './change-feed.js';
import { localChangeFeed } from './local-change-feed.js';
import { defOf, snapshotFrames } from './snapshot.js';
import { RETRY_MAX_MS, RETRY_MIN_MS, Subscriber, type Outlet } from './subscriber.js';
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
}

export interface BroadcastOptions {
  /** 'immediate': send at the end of the event-loop turn; a number: at most one batch per that many ms. */
  tick: 'immediate' | number;
  /** Keep each SyncBatch under this size. */
  maxFrameBytes: number;
  /** Where changes come from (default: the local futex watcher). */
  feed?: ChangeFeedFactory;
  /** Changes written by another process straight into the mapping (a local client): for the audit log. */
  onLocalWrite?: (host: ServiceHost, pid: number, variables: string[]) => void;
  /** The file became unusable (another process truncated it): the owner drops the host. */
  onBroken?: (host: ServiceHost) => void;
  /** Unexpected failures while broadcasting (logged by the server). */
  onError?: (err: unknown) => void;
}

/** A service the server has open: its mapped file, the feed that reports every change, its subscribers. */
export class ServiceHost {
  readonly serviceId: string;
  private readonly feed: ChangeFeed;
  private readonly subscribers = new Set<Subscriber>();
  /** Why the service stopped (its file was damaged by another process); undefined while it works. */
  broken: CommyError | undefined;
  /** Every change at or below this version has been reported by the feed (see FeedChange.settled). */
  private settled = 0n;
  /** Removed slots already passed on to subscribers. */
  private readonly removals = new Set<number>();

  constructor(
    readonly tenant: string,
    readonly service: string,
    readonly file: ServiceFile,
    private readonly options: BroadcastOptions,
  ) {
    this.serviceId = `${tenant}/${service}`;
    this.feed = (options.feed ?? localChangeFeed)(file, this.serviceId);
    this.feed.start({ change: (c) => this.onChange(c), error: (err) => this.feedFailed(err) });
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
    if (this.owes(sub, this.file.slots().length)) this.schedule(sub);
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
    const written = new Map<DirEntry, bigint>();
    for (const [e, i] of last) written.set(e, file.writeLocked(e, values[i]!));
    if (origin !== undefined) for (const [e, version] of written) origin.own.set(e.index, Number(version));
    return entries.map((e) => written.get(e) ?? 0n);
  }

  /** Compare-and-set, under the entries' locks: CONFLICT unless each entry is still at its expected version. */
  private conflict(entries: readonly DirEntry[], expected: readonly (number | undefined)[]): CommyError | undefined {
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
    if (change.settled > this.settled) this.settled = change.settled;
    if (this.options.onLocalWrite !== undefined) this.reportLocalWrites(change, this.options.onLocalWrite);
    if (change.removedVariables.length > 0) this.passOnRemovals();
    if (this.subscribers.size === 0) return;
    // A name removed again since the feed saw it change has no entry: its removal is what subscribers get.
    const changed = change.changedVariables.flatMap((name) => this.file.find(name) ?? []);
    const slotCount = this.file.slots().length;
    for (const sub of this.subscribers) {
      for (const e of changed) if (sub.wants(e.index, e.meta.name)) sub.dirty.add(e.index);
      if (this.owes(sub, slotCount)) this.schedule(sub);
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
        else this.report(err);
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

  /** Sends the subscriber's dirty set (new wanted definitions first), unless its socket is backed up. */
  private flush(sub: Subscriber): void {
    if (sub.closed || sub.loading || !sub.outlet.open || this.file.closed) return;
    if (sub.outlet.overBudget()) {
      this.retry(sub);
      return;
    }
    const entries = this.file.slots();
    const added = entries.slice(sub.knownDefs).filter((e) => !e.removed && sub.wants(e.index, e.meta.name));
    sub.knownDefs = entries.length;
    if (sub.spec.mode === 'names') this.flushNames(sub, entries);
    else this.flushValues(sub, entries, added);
  }

  /**
   * Updates as SyncBatches; removals and new definitions ride with the first batch, before any update (a name
   * removed and registered again is a new slot: the old index goes first).
   */
  private flushValues(sub: Subscriber, entries: readonly DirEntry[], added: readonly DirEntry[]): void {
    const defs = added.map((e) => defOf(e, this.file.entryVersion(e)));
    const removed = [...sub.removed];
    sub.removed.clear();
    const updates: Update[] = [];
    let held = false;
    for (const index of sub.dirty) {
      const e = entries[index];
      const update = e === undefined || e.removed ? undefined : this.updateOf(sub, e);
      if (update === BUSY) held = true; // a writer is mid-write: stays dirty, sent once it is done
      else {
        sub.dirty.delete(index);
        if (update !== undefined) updates.push(update);
      }
    }
    if (held) this.retry(sub);
    else sub.retryMs = RETRY_MIN_MS;
    if (updates.length === 0 && defs.length === 0 && removed.length === 0) return;
    // A resume point: every change reported so far is in this batch or was sent before (or is held mid-write,
    // and will get a version above this one).
    const version = Number(this.settled);
    const batches = splitByCost(updates, (u) => u[2].length + 16, this.options.maxFrameBytes / 2);
    batches.forEach((batch, i) => {
      const body: SyncBatchBody = { sid: sub.sid, version, updates: batch };
      if (i === 0 && removed.length > 0) body.removed = removed;
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
    const copy = this.file.tryReadCopy(e);
    return copy === BUSY ? BUSY : [e.index, Number(copy.version), copy.bytes];
  }

  /**
   * A 'names' subscriber's dirty set as VariablesUpdated pushes (one per flush unless the names exceed the
   * frame budget). New variables need no definitions: they are in the directory it maps.
   */
  private flushNames(sub: Subscriber, entries: readonly DirEntry[]): void {
    const names = [...sub.dirty].flatMap((index) => entries[index]?.meta.name ?? []);
    const removed = [...sub.removed].flatMap((index) => entries[index]?.meta.name ?? []);
    sub.dirty.clear();
    sub.removed.clear();
    if (names.length === 0 && removed.length === 0) return;
    const version = Number(this.file.version);
    // Removals first: a client must drop a name before it hears of a new variable of the same name.
    for (const gone of removed.length === 0 ? [] : splitByCost(removed, (n) => n.length + 2, this.options.maxFrameBytes / 2)) {
      sub.outlet.send(encodeFrame('VariablesUpdated', 0, { serviceId: this.serviceId, version, variables: [], removed: gone, sid: sub.sid }));
    }
    for (const variables of names.length === 0 ? [] : splitByCost(names, (n) => n.length + 2, this.options.maxFrameBytes / 2)) {
      sub.outlet.send(encodeFrame('VariablesUpdated', 0, { serviceId: this.serviceId, version, variables, sid: sub.sid }));
    }
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
      sub.outlet.send(encodeFrame('Unsubscribed', 0, { sid: sub.sid, errorCode: err.code, message: err.message }));
    }
    this.subscribers.clear();
    this.options.onBroken?.(this);
  }

  close(): void {
    for (const sub of this.subscribers) sub.closed = true;
    this.subscribers.clear();
    this.feed.close();
    this.file.close();
  }
}

function bigMax(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}
