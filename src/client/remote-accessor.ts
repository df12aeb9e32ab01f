import { assertFits, definitionProblem, sameLayout } from '../core/variable-rules.js';
import { variablesTouched, type ByteRange } from '../core/byte-diff.js';
import { CommyError, ErrorCode } from '../core/errors.js';
import type { FileAccessor, VariableHandle } from '../core/file-accessor.js';
import { deliverChange, type FileChangeEvent } from '../core/file-change-event.js';
import { assertValidName } from '../core/names.js';
import { codecFor } from '../core/value-codec.js';
import { VariableMetadata } from '../core/variable-metadata.js';
import { typeName, type VariableTypeId, type VariableValue } from '../core/variable-type.js';
import type { SnapshotBody, SnapshotChunkBody, SyncBatchBody, VariableChangesAcknowledgedBody, VariableDef } from '../protocol/messages.js';
import { splitByCost } from '../protocol/frame-split.js';
import type { Connection } from './connection.js';
import { RemoteVariableHandle, type HandleOwner, type RemoteEntry } from './remote-handle.js';
import { RemoteStore } from './remote-store.js';

/** What a remote service needs from its client. */
export interface RemoteContext {
  readonly conn: Connection;
  readonly maxFrameBytes: number;
  /** Changes per ReportVariableChanges, as the server allows (Authenticated.maxChangesPerReport). */
  maxChangesPerReport: number;
  /** Sorted [start, end) runs where two buffers differ (native SIMD diff on Node). */
  diff(a: Uint8Array, b: Uint8Array): ByteRange[];
  /** Failures nobody awaits (a background flush, a bad push). */
  onError(err: CommyError): void;
  /** Routes this subscription's SyncBatches here (and stops, with `undefined`). */
  route(sid: number, accessor: RemoteFileAccessor | undefined): void;
}

type Listener = (event: FileChangeEvent) => void;
type Change = [RemoteEntry, Uint8Array];

/** One ReportVariableChanges in flight; `watched` once a flush()/writeVariable() caller awaits it. */
interface WriteRecord {
  promise: Promise<void>;
  watched: boolean;
  /** Directory indexes of the variables it carries. */
  indices: number[];
}

/** The flush that waits behind the report in flight; resolves with what it sent, once sent. */
interface Wave {
  promise: Promise<WriteRecord[]>;
  resolve(sent: WriteRecord[]): void;
}

/** A variable with local changes the server has not acknowledged yet. */
interface PendingWrite {
  /** The bytes most recently sent. */
  bytes: Uint8Array;
  /** Reports in flight that carry it. */
  requests: number;
  last: WriteRecord;
}

/** A server update that arrived while the variable had a pending change: decided when the change is acked. */
interface Stashed {
  version: number;
  bytes: Uint8Array;
}

const noop = (): void => {};

/** MessagePack framing around a report's changes: [type, id, {sid, changes: [...]}], generously counted. */
const REPORT_OVERHEAD = 64;
/** Per change: a 2-array, the index (up to 5 bytes) and the bin header (up to 5 bytes). */
const CHANGE_OVERHEAD = 12;

/** After RATE_LIMITED: the server's token bucket refills continuously; this is a few hundred messages' worth. */
const RATE_LIMIT_RETRY_MS = 50;

/**
 * Remote mode: the service as two in-memory buffers kept in sync with the server over one subscription.
 * Writes go into `current` at once and are sent at the end of the turn (one diff, one report); server
 * updates land in both buffers unless the variable has a change of ours pending, in which case the update
 * waits for our acknowledgement and is applied only if the server ordered it after our write.
 */
export class RemoteFileAccessor implements FileAccessor, HandleOwner {
  readonly mode = 'remote' as const;
  readonly filePath: string | undefined = undefined;
  readonly serviceId: string;
  readonly sid: number;
  /** The key may not write this service: typed writes fail at once with PERMISSION_DENIED. */
  readonly readOnly: boolean;
  readonly store: RemoteStore;
  private readonly entries: (RemoteEntry | undefined)[] = [];
  private readonly byName = new Map<string, RemoteEntry>();
  /** Sorted by offset, as variablesTouched wants them. */
  private readonly metas: VariableMetadata[] = [];
  private readonly handles = new Map<string, RemoteVariableHandle>();
  private readonly listeners = new Set<Listener>();
  /** Set since the last flush (typed writes); raw writes into bytes() are found by the diff instead. */
  private readonly dirty = new Set<number>();
  private readonly pending = new Map<number, PendingWrite>();
  private readonly stash = new Map<number, Stashed>();
  private readonly inflight = new Set<WriteRecord>();
  private serviceVersion: number;
  private flushQueued = false;
  /** A flush waits for the report in flight (see flushTask); `wave` is how its callers learn what it sent. */
  private flushAfterAck = false;
  private wave: Wave | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private closedFlag = false;
  private closedReason: CommyError | undefined;
  private closing: Promise<void> | undefined;
  /** Set while the snapshot still arrives in SnapshotChunks: subscribe() resolves after the last one. */
  private loading: { resolve(accessor: RemoteFileAccessor): void; reject(err: CommyError): void } | undefined;
  /**
   * The end-of-turn flush after set(). While a report is in flight it waits for the acknowledgement and then
   * sends everything changed meanwhile in one report: at most one background report per round trip, so a
   * fast writer conflates instead of flooding the server (whose per-connection rate limit would refuse it).
   */
  private readonly flushTask = (): void => {
    if (!this.flushQueued) return;
    if (this.retryTimer !== undefined) {
      this.flushQueued = false; // the RATE_LIMITED pause ends with a flush of everything
      return;
    }
    if (this.inflight.size > 0) {
      this.flushQueued = false;
      this.flushAfterAck = true;
      return;
    }
    this.flushNow();
  };

  private constructor(
    private readonly ctx: RemoteContext,
    snapshot: SnapshotBody,
  ) {
    this.serviceId = snapshot.serviceId;
    this.sid = snapshot.sid;
    this.readOnly = snapshot.readOnly === true;
    this.serviceVersion = snapshot.version;
    let end = 0;
    for (const d of snapshot.variables) end = Math.max(end, d[2] + d[3]);
    this.store = new RemoteStore(snapshot.data, end);
    for (const d of snapshot.variables) this.addDef(d);
  }

  /** Subscribes to a service (creating it if the key may) and starts from the server's snapshot. */
  static subscribe(ctx: RemoteContext, tenant: string, service: string): Promise<RemoteFileAccessor> {
    return new Promise((resolve, reject) => {
      ctx.conn.call('Subscription', { tenant, service, create: true }, 'Snapshot', {
        // Runs before the next frame is decoded, so no SyncBatch for this sid can arrive unrouted.
        reply: (snapshot) => {
          try {
            const accessor = new RemoteFileAccessor(ctx, snapshot);
            ctx.route(snapshot.sid, accessor);
            if (snapshot.more === true) accessor.loading = { resolve, reject };
            else resolve(accessor);
          } catch (err) {
            ctx.conn.call('Unsubscribe', { sid: snapshot.sid }, 'Unsubscribed', { reply: noop, fail: noop });
            reject(err);
          }
        },
        fail: reject,
      });
    });
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  assertOpen(): void {
    if (this.closedFlag) {
      // The reason's code when the server ended it (INVALID_FILE for a damaged file), NOT_CONNECTED otherwise.
      const code = this.closedReason?.code ?? ErrorCode.NOT_CONNECTED;
      throw new CommyError(code, `service ${this.serviceId} is closed${this.closedReason ? `: ${this.closedReason.message}` : ''}`);
    }
  }

  version(): bigint {
    this.assertOpen();
    return BigInt(this.serviceVersion);
  }

  // ---- variables ----------------------------------------------------------------------------------

  /** Adds a definition from the server; returns the new entry, or undefined if known (or unusable). */
  private addDef(def: VariableDef): RemoteEntry | undefined {
    const [index, name, offset, size, typeId, version] = def;
    if (this.entries[index] !== undefined || this.byName.has(name)) return undefined;
    const meta = new VariableMetadata(name, offset, size, typeId as VariableTypeId);
    if (definitionProblem(meta) !== undefined || offset < 0) {
      this.ctx.onError(new CommyError(ErrorCode.INVALID_MESSAGE, `${this.serviceId}: the server defined ${name} as ${typeName(typeId)} of ${size} bytes; ignored`));
      return undefined;
    }
    this.store.ensure(offset + size);
    const entry: RemoteEntry = { index, meta, codec: codecFor(meta.typeId, size), version };
    this.entries[index] = entry;
    this.byName.set(name, entry);
    this.metas.push(meta);
    const n = this.metas.length;
    if (n > 1 && this.metas[n - 2]!.offset > offset) this.metas.sort((a, b) => a.offset - b.offset);
    return entry;
  }

  private lookup(name: string): RemoteEntry {
    this.assertOpen();
    assertValidName(name, 'variable name');
    const entry = this.byName.get(name);
    if (entry === undefined) throw new CommyError(ErrorCode.VARIABLE_NOT_FOUND, `no variable ${JSON.stringify(name)} in ${this.serviceId}`);
    return entry;
  }

  /** A known variable with the same layout is a no-op here (no round trip, no admin right needed). */
  async register(meta: VariableMetadata): Promise<VariableMetadata> {
    this.assertOpen();
    if (!(meta instanceof VariableMetadata)) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'registerVariable takes a VariableMetadata');
    assertValidName(meta.name, 'variable name');
    const known = this.byName.get(meta.name);
    if (known !== undefined) return sameLayout(known.meta, meta);
    const { name, offset, size, typeId } = meta;
    const reply = await this.ctx.conn.request('RegisterVariable', { sid: this.sid, name, offset, size, typeId }, 'VariableRegistered');
    const added = this.closedFlag ? undefined : this.addDef(reply.def);
    if (added !== undefined) this.emit([added], Math.max(this.serviceVersion, added.version));
    const entry = this.entries[reply.def[0]] ?? this.byName.get(name);
    return entry?.meta ?? new VariableMetadata(name, reply.def[2], reply.def[3], meta.typeId);
  }

  variables(): VariableMetadata[] {
    this.assertOpen();
    const out: VariableMetadata[] = [];
    for (const e of this.entries) if (e !== undefined) out.push(e.meta);
    return out;
  }

  handle(name: string): VariableHandle {
    let h = this.handles.get(name);
    if (h === undefined || this.closedFlag) {
      h = new RemoteVariableHandle(this, this.lookup(name));
      this.handles.set(name, h);
    }
    return h;
  }

  isTorn(name: string): boolean {
    this.lookup(name);
    return false; // remote values arrive whole
  }

  // ---- local writes -------------------------------------------------------------------------------

  /** The typed write: checked, stored in `current` (get() sees it at once), sent at the end of the turn. */
  setValue(entry: RemoteEntry, value: VariableValue): void {
    if (this.closedFlag) this.assertOpen();
    if (this.readOnly) throw this.readOnlyError();
    const checked = entry.codec.check(value);
    entry.codec.store(this.store.view, entry.meta.offset, checked);
    this.dirty.add(entry.index);
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushTask);
    }
  }

  async writeBytes(name: string, bytes: Uint8Array): Promise<void> {
    const entry = this.lookup(name);
    if (!(bytes instanceof Uint8Array)) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'writeVariable takes a Uint8Array');
    assertFits(entry.meta, bytes.length);
    if (this.readOnly) throw this.readOnlyError();
    RemoteStore.put(this.store.current, entry.meta.offset, entry.meta.size, bytes);
    this.dirty.add(entry.index);
    const sent = this.inflight.size > 0 ? await this.afterInflight() : this.flushNow();
    // Not sent: the same bytes are already in flight, or the server already holds them.
    const record = sent.find((r) => r.indices.includes(entry.index)) ?? this.pending.get(entry.index)?.last;
    if (record === undefined) return;
    record.watched = true;
    await record.promise;
  }

  async readBytes(name: string): Promise<Uint8Array> {
    const e = this.lookup(name);
    return this.store.current.slice(e.meta.offset, e.meta.end);
  }

  bytes(): Uint8Array {
    this.assertOpen();
    return this.store.current.subarray(0, this.store.dataEnd);
  }

  shadowBytes(): Uint8Array {
    this.assertOpen();
    return this.store.shadow.subarray(0, this.store.dataEnd);
  }

  /** Takes `current` as the baseline: raw changes not yet flushed are then never sent. */
  syncShadow(): void {
    this.assertOpen();
    this.store.shadow.set(this.store.current.subarray(0, this.store.dataEnd));
  }

  /** Sends every pending change (typed or raw) and resolves once all reports in flight are acknowledged. */
  async flush(): Promise<void> {
    this.assertOpen();
    const earlier = [...this.inflight];
    for (const record of earlier) record.watched = true;
    const sent = earlier.length > 0 ? await this.afterInflight() : this.flushNow();
    for (const record of sent) record.watched = true;
    await Promise.all([...earlier, ...sent].map((r) => r.promise));
  }

  /**
   * Joins the flush that goes out when the reports in flight are answered. Waiting rather than pipelining
   * keeps at most one wave of reports in flight per service, however many flush() calls pile up.
   */
  private afterInflight(): Promise<WriteRecord[]> {
    this.flushAfterAck = true;
    if (this.wave === undefined) {
      let resolve: (sent: WriteRecord[]) => void = noop;
      const promise = new Promise<WriteRecord[]>((r) => (resolve = r));
      this.wave = { promise, resolve };
    }
    return this.wave.promise;
  }

  private readOnlyError(): CommyError {
    return new CommyError(ErrorCode.PERMISSION_DENIED, `this client's key may not write ${this.serviceId}`);
  }

  /** Diffs current against shadow and sends what changed, in as few frames as the frame limit allows. */
  private flushNow(): WriteRecord[] {
    this.flushQueued = false;
    this.flushAfterAck = false;
    const wave = this.wave;
    this.wave = undefined;
    const sent: WriteRecord[] = [];
    try {
      if (this.closedFlag) return sent;
      const changes = this.collectChanges();
      // Updates stashed for a variable that was set but, in the end, not sent (set back to the confirmed value).
      const settle = this.stash.size > 0 && this.dirty.size > 0 ? [...this.dirty] : undefined;
      this.dirty.clear();
      if (changes.length > 0) for (const group of this.reports(changes)) sent.push(this.send(group));
      if (settle !== undefined) {
        const applied = settle.map((i) => this.entries[i]!).filter((e) => !this.pending.has(e.index) && this.applyStash(e, -1));
        if (applied.length > 0) this.emit(applied, this.serviceVersion);
      }
      return sent;
    } finally {
      wave?.resolve(sent);
    }
  }

  /**
   * Variables whose bytes differ from what the server last confirmed (or, for one already in flight, from
   * what was last sent). A variable set back to its confirmed value while a change is in flight is sent too.
   */
  private collectChanges(): Change[] {
    const store = this.store;
    const end = store.dataEnd;
    const ranges = this.ctx.diff(store.current.subarray(0, end), store.shadow.subarray(0, end));
    const out: Change[] = [];
    if (ranges.length === 0 && this.pending.size === 0) return out;
    const seen = this.pending.size > 0 ? new Set<number>() : undefined;
    const consider = (e: RemoteEntry): void => {
      seen?.add(e.index);
      const { offset, size } = e.meta;
      const sent = this.pending.get(e.index)?.bytes;
      const unchanged = sent !== undefined ? RemoteStore.holds(store.current, offset, sent) : store.same(offset, size);
      if (!unchanged) out.push([e, store.current.slice(offset, offset + size)]);
    };
    for (const name of variablesTouched(this.metas, ranges)) consider(this.byName.get(name)!);
    if (seen !== undefined) {
      for (const index of this.pending.keys()) if (!seen.has(index)) consider(this.entries[index]!);
    }
    return out;
  }

  /** One flush's changes as reports, each within one frame and the server's cap on changes per report. */
  private reports(changes: Change[]): Change[][] {
    return splitByCost(changes, (c) => c[1].length + CHANGE_OVERHEAD, this.ctx.maxFrameBytes - REPORT_OVERHEAD, this.ctx.maxChangesPerReport);
  }

  private send(group: Change[]): WriteRecord {
    const record: WriteRecord = { promise: Promise.resolve(), watched: false, indices: group.map(([e]) => e.index) };
    for (const [e, bytes] of group) {
      const p = this.pending.get(e.index);
      if (p === undefined) this.pending.set(e.index, { bytes, requests: 1, last: record });
      else {
        p.bytes = bytes;
        p.requests++;
        p.last = record;
      }
    }
    this.inflight.add(record);
    const changes = group.map(([e, bytes]): [number, Uint8Array] => [e.index, bytes]);
    record.promise = new Promise<void>((resolve, reject) => {
      const failed = (err: CommyError): void => {
        this.inflight.delete(record);
        this.rejected(group, err, record);
        reject(err);
        this.sendDeferred();
      };
      let sending = true;
      this.ctx.conn.call('ReportVariableChanges', { sid: this.sid, changes }, 'VariableChangesAcknowledged', {
        reply: (ack) => {
          this.inflight.delete(record);
          this.acknowledged(group, ack);
          resolve();
          this.sendDeferred();
        },
        // A frame that cannot go fails inside call(): settle it after this flush, like any other failure,
        // so flush() and writeVariable() callers find the record and get the error.
        fail: (err) => (sending ? queueMicrotask(() => failed(err)) : failed(err)),
      });
      sending = false;
    });
    record.promise.catch(noop); // unawaited background flushes report through onError instead
    return record;
  }

  /** After an answer: sends the flush that waited for it (unless a RATE_LIMITED pause is running; its timer will). */
  private sendDeferred(): void {
    if (this.flushAfterAck && this.inflight.size === 0 && this.retryTimer === undefined) this.flushNow();
  }

  /** The server applied the report: the sent bytes are now confirmed. */
  private acknowledged(group: Change[], ack: VariableChangesAcknowledgedBody): void {
    this.noteVersion(ack.version);
    const last = group.length - 1;
    for (let i = 0; i <= last; i++) {
      const [e, bytes] = group[i]!;
      this.store.shadow.set(bytes, e.meta.offset);
      // The version this change got. An older server names only the version after the whole report; its
      // changes were applied in order, one version each, so change i got about version - (last - i).
      const version = ack.versions?.[i] ?? ack.version - (last - i);
      if (version > e.version) e.version = version;
      // An update kept aside wins if the server ordered it after this change, even within the same report.
      if (this.release(e)) this.applyStash(e, version);
    }
    // The server does not echo our own writes back: the ack is their change event (a local file's watcher
    // reports a process's own writes too).
    this.emit(group.map(([e]) => e), this.serviceVersion);
  }

  /** The report failed: nothing of it was applied. Undo it locally unless the value changed again since. */
  private rejected(group: Change[], err: CommyError, record: WriteRecord): void {
    if (err.code === ErrorCode.RATE_LIMITED) {
      this.retryLater(group);
      return;
    }
    const changed: RemoteEntry[] = [];
    for (const [e, bytes] of group) {
      if (!this.release(e)) continue; // a later report carries a newer value: it decides
      const { offset, size } = e.meta;
      let touched = false;
      if (!this.dirty.has(e.index) && RemoteStore.holds(this.store.current, offset, bytes)) {
        this.store.restore(offset, size);
        touched = true;
      }
      if (this.applyStash(e, -1)) touched = true;
      if (touched) changed.push(e);
    }
    if (changed.length > 0) this.emit(changed, this.serviceVersion);
    // Decided after the caller had its chance to await: only failures nobody awaits go to onError.
    queueMicrotask(() => {
      if (!record.watched && !this.closedFlag) this.ctx.onError(err);
    });
  }

  /**
   * Over the server's message rate: nothing was applied, and nothing is wrong with the values. They stay in
   * `current` (not restored) and go again after a pause; the caller awaiting this report gets RATE_LIMITED.
   */
  private retryLater(group: Change[]): void {
    for (const [e] of group) if (this.release(e)) this.dirty.add(e.index); // still ours: updates keep waiting
    if (this.retryTimer !== undefined || this.closedFlag) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.flushNow();
    }, RATE_LIMIT_RETRY_MS);
  }

  /** One report carrying `e` is settled; true when none is left. */
  private release(e: RemoteEntry): boolean {
    const p = this.pending.get(e.index);
    if (p === undefined) return true;
    if (--p.requests > 0) return false;
    this.pending.delete(e.index);
    return true;
  }

  /** Applies the update that waited for our write, if the server ordered it after our write (version > floor). */
  private applyStash(e: RemoteEntry, floor: number): boolean {
    const st = this.stash.get(e.index);
    if (st === undefined) return false;
    this.stash.delete(e.index);
    if (st.version <= floor) return false;
    const { offset, size } = e.meta;
    RemoteStore.put(this.store.shadow, offset, size, st.bytes);
    // A newer local value not yet sent stays in current: it will be sent, and ordered after this update.
    if (!this.dirty.has(e.index)) RemoteStore.put(this.store.current, offset, size, st.bytes);
    if (st.version > e.version) e.version = st.version;
    return true;
  }

  // ---- server pushes ------------------------------------------------------------------------------

  /** The rest of a snapshot too large for one frame (SnapshotBody.more); the subscription opens after the last. */
  onChunk(chunk: SnapshotChunkBody): void {
    const loading = this.loading;
    if (this.closedFlag || loading === undefined) return;
    if (chunk.defs !== undefined) for (const d of chunk.defs) this.addDef(d);
    if (chunk.data !== undefined && chunk.offset !== undefined) {
      this.store.ensure(chunk.offset + chunk.data.length);
      this.store.putBoth(chunk.offset, chunk.data.length, chunk.data);
    }
    if (chunk.more) return;
    this.loading = undefined;
    loading.resolve(this);
  }

  /** A change to the service by anyone (our own writes come back too): new definitions, then values. */
  onBatch(batch: SyncBatchBody): void {
    if (this.closedFlag) return;
    const changed: RemoteEntry[] = [];
    if (batch.defs !== undefined) {
      for (const d of batch.defs) {
        const added = this.addDef(d);
        if (added !== undefined) changed.push(added);
      }
    }
    const store = this.store;
    for (const [index, version, bytes] of batch.updates) {
      const e = this.entries[index];
      if (e === undefined) continue;
      if (this.pending.has(index) || this.dirty.has(index)) {
        const st = this.stash.get(index);
        if (st === undefined || version >= st.version) this.stash.set(index, { version, bytes });
      } else {
        store.putBoth(e.meta.offset, e.meta.size, bytes);
        e.version = version;
      }
      changed.push(e);
    }
    this.noteVersion(batch.version);
    if (changed.length > 0) this.emit(changed, batch.version);
  }

  private noteVersion(version: number): void {
    if (version > this.serviceVersion) this.serviceVersion = version;
  }

  private emit(entries: RemoteEntry[], version: number): void {
    if (this.listeners.size === 0) return;
    const sorted = entries.length > 1 ? [...new Set(entries)].sort((a, b) => a.meta.offset - b.meta.offset) : entries;
    const event: FileChangeEvent = {
      filePath: '',
      serviceId: this.serviceId,
      changedVariables: sorted.map((e) => e.meta.name),
      byteRanges: sorted.map((e): [number, number] => [e.meta.offset, e.meta.end]),
      version: BigInt(version),
    };
    deliverChange(this.listeners, event, (err) =>
      this.ctx.onError(err instanceof CommyError ? err : new CommyError(ErrorCode.INTERNAL_ERROR, `a change listener threw: ${String(err)}`, { cause: err })),
    );
  }

  watch(listener: Listener): () => void {
    this.assertOpen();
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // The client's WebSocket already keeps the process alive until client.close().
  hold(): void {}
  unhold(): void {}

  // ---- lifetime -----------------------------------------------------------------------------------

  /** Sends what is pending, waits for its acknowledgement, then leaves the service (Unsubscribe). */
  close(): Promise<void> {
    this.closing ??= this.leave();
    return this.closing;
  }

  private async leave(): Promise<void> {
    if (this.closedFlag) return;
    this.flushNow();
    const waits = [...this.inflight];
    for (const record of waits) record.watched = true;
    this.detach(undefined);
    for (const r of await Promise.allSettled(waits.map((w) => w.promise))) {
      if (r.status === 'rejected') this.ctx.onError(r.reason as CommyError);
    }
    if (this.ctx.conn.isOpen) {
      await this.ctx.conn.request('Unsubscribe', { sid: this.sid }, 'Unsubscribed').catch(noop);
    }
  }

  /** Stops using this subscription: later calls throw NOT_CONNECTED (with `reason`, when the connection died). */
  detach(reason: CommyError | undefined): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.closedReason = reason;
    this.loading?.reject(reason ?? new CommyError(ErrorCode.NOT_CONNECTED, `service ${this.serviceId} closed while its snapshot was arriving`));
    this.loading = undefined;
    this.flushQueued = false;
    this.flushAfterAck = false;
    this.wave?.resolve([]);
    this.wave = undefined;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.listeners.clear();
    this.handles.clear();
    this.ctx.route(this.sid, undefined);
  }
}

