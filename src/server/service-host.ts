import type { FileChangeEvent } from '../core/file-change-event.js';
import { ChangeWatcher } from '../local/change-watcher.js';
import type { DirEntry, ServiceFile } from '../local/service-file.js';
import { encodeFrame } from '../protocol/frame-codec.js';
import type { SnapshotBody, SyncBatchBody, Update, VariableDef } from '../protocol/messages.js';
import { globMatch } from './permissions.js';

/** Where a subscriber's frames go: one WebSocket connection. */
export interface Outlet {
  send(frame: Uint8Array): void;
  readonly bufferedAmount: number;
  readonly open: boolean;
}

export interface BroadcastOptions {
  /** 'immediate': send at the end of the event-loop turn; a number: at most one batch per that many ms. */
  tick: 'immediate' | number;
  /** Past this many unsent bytes on a connection, hold updates back (they conflate) until it drains. */
  maxBufferedBytes: number;
  /** Keep each SyncBatch under this size. */
  maxFrameBytes: number;
}

const BACKPRESSURE_RETRY_MS = 5;

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

  constructor(
    readonly sid: number,
    readonly host: ServiceHost,
    readonly outlet: Outlet,
    private readonly patterns: string[] | undefined,
    readonly notify = false,
  ) {}

  wants(name: string): boolean {
    return this.patterns === undefined || this.patterns.some((p) => globMatch(p, name));
  }
}

export function defOf(entry: DirEntry, version: bigint): VariableDef {
  const m = entry.meta;
  return [entry.index, m.name, m.offset, m.size, m.typeId, Number(version)];
}

/** A service the server has open: its mapped file, the watcher that sees every change, its subscribers. */
export class ServiceHost {
  readonly serviceId: string;
  private readonly watcher: ChangeWatcher;
  private readonly subscribers = new Set<Subscriber>();

  constructor(
    readonly tenant: string,
    readonly service: string,
    readonly file: ServiceFile,
    private readonly options: BroadcastOptions,
  ) {
    this.serviceId = `${tenant}/${service}`;
    this.watcher = new ChangeWatcher(file, this.serviceId);
    this.watcher.add((event) => this.onChange(event));
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /**
   * Adds a subscriber and returns the snapshot it starts from; later changes arrive as SyncBatches, or for a
   * `notify` subscriber as VariablesUpdated names (its snapshot has the definitions but no data).
   */
  subscribe(
    sid: number,
    outlet: Outlet,
    patterns: string[] | undefined,
    readOnly: boolean,
    notify = false,
  ): { subscriber: Subscriber; snapshot: SnapshotBody } {
    const subscriber = new Subscriber(sid, this, outlet, patterns, notify);
    // Registered before the snapshot is read: a change racing with it is sent again, never lost.
    this.subscribers.add(subscriber);
    const version = this.file.version;
    const entries = this.file.list();
    if (notify) {
      subscriber.knownDefs = entries.length;
      const variables = entries.map((e) => defOf(e, this.file.entryVersion(e)));
      return { subscriber, snapshot: { sid, serviceId: this.serviceId, version: Number(version), variables, data: new Uint8Array(0), readOnly } };
    }
    const data = new Uint8Array(this.file.dataEnd);
    const variables: VariableDef[] = entries.map((e) => {
      const [bytes, v] = this.file.read(e, () => [this.file.u8.slice(e.at, e.at + e.meta.size), this.file.entryVersion(e)] as const);
      data.set(bytes, e.meta.offset);
      return defOf(e, v);
    });
    subscriber.knownDefs = entries.length;
    return { subscriber, snapshot: { sid, serviceId: this.serviceId, version: Number(version), variables, data, readOnly } };
  }

  unsubscribe(subscriber: Subscriber): void {
    subscriber.closed = true;
    this.subscribers.delete(subscriber);
  }

  private onChange(event: FileChangeEvent): void {
    if (this.subscribers.size === 0) return;
    const indexes = event.changedVariables.map((name) => this.file.entry(name).index);
    for (const sub of this.subscribers) {
      for (let i = 0; i < indexes.length; i++) if (sub.wants(event.changedVariables[i]!)) sub.dirty.add(indexes[i]!);
      if (sub.dirty.size > 0 || this.file.list().length > sub.knownDefs) this.schedule(sub);
    }
  }

  private schedule(sub: Subscriber, delayMs?: number): void {
    if (sub.scheduled) return;
    sub.scheduled = true;
    const run = () => {
      sub.scheduled = false;
      try {
        this.flush(sub);
      } catch (err) {
        // A service file corrupted by a local writer must not take the server down with it.
        process.emitWarning(err instanceof Error ? err : new Error(String(err)));
      }
    };
    const tick = delayMs ?? this.options.tick;
    if (tick === 'immediate') setImmediate(run);
    else setTimeout(run, tick);
  }

  /** Sends the subscriber's dirty set as SyncBatches (new definitions first), unless its socket is backed up. */
  private flush(sub: Subscriber): void {
    if (sub.closed || !sub.outlet.open || this.file.closed) return;
    if (sub.outlet.bufferedAmount > this.options.maxBufferedBytes) {
      this.schedule(sub, BACKPRESSURE_RETRY_MS);
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
    for (const index of sub.dirty) {
      const e = entries[index];
      if (e === undefined) continue;
      const mine = sub.own.get(index);
      if (mine !== undefined) {
        sub.own.delete(index);
        if (Number(this.file.entryVersion(e)) === mine) continue; // nobody wrote it since the client's own write
      }
      updates.push(this.file.read(e, () => [index, Number(this.file.entryVersion(e)), this.file.u8.slice(e.at, e.at + e.meta.size)] as Update));
    }
    sub.dirty.clear();
    if (updates.length === 0 && defs.length === 0) return;
    const version = Number(this.file.version);
    const batches = framesOf(updates, (u) => u[2].length + 16, this.options.maxFrameBytes / 2);
    batches.forEach((batch, i) => {
      const body: SyncBatchBody = { sid: sub.sid, version, updates: batch };
      if (i === 0 && defs.length > 0) body.defs = defs;
      sub.outlet.send(encodeFrame('SyncBatch', 0, body));
    });
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
    for (const variables of framesOf(names, (n) => n.length + 2, this.options.maxFrameBytes / 2)) {
      sub.outlet.send(encodeFrame('VariablesUpdated', 0, { serviceId: this.serviceId, version, variables, sid: sub.sid }));
    }
  }

  close(): void {
    for (const sub of this.subscribers) sub.closed = true;
    this.subscribers.clear();
    this.watcher.close();
    this.file.close();
  }
}

/** Splits `items` into runs whose summed cost stays within `budget` (an item alone may exceed it); at least one run. */
function framesOf<T>(items: readonly T[], cost: (item: T) => number, budget: number): T[][] {
  const frames: T[][] = [[]];
  let used = 0;
  for (const item of items) {
    const c = cost(item);
    if (used + c > budget && frames[frames.length - 1]!.length > 0) {
      frames.push([]);
      used = 0;
    }
    frames[frames.length - 1]!.push(item);
    used += c;
  }
  return frames;
}
