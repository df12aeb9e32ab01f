import { CommyError, ErrorCode } from '../../core/errors.js';
import { CHANGE_STAMP_MISSING, type ChangeStamp, type FileAccessor, type Staleness, type VariableHandle } from '../../core/file-accessor.js';
import type { FileChangeEvent } from '../../core/file-change-event.js';
import type { MutateOptions } from '../../core/mutate-options.js';
import { layoutHashOf } from '../../core/layout-hash.js';
import { assertValidName } from '../../core/names.js';
import { VariableMetadata } from '../../core/variable-metadata.js';
import { assertFits, sameLayout } from '../../core/variable-rules.js';
import type { VariableValue } from '../../core/variable-type.js';
import type { ResumePoint, SnapshotBody, SnapshotChunkBody, SubscriptionBody, SyncBatchBody, SyncPendingBody } from '../../protocol/messages.js';
import { registerBody } from '../../protocol/variable-def.js';
import type { Reattachable } from '../reattachable.js';
import { StalenessTracker } from '../staleness.js';
import { ChangeEvents, type ChangeTap } from './change-events.js';
import type { RemoteContext } from './context.js';
import { withDeadline } from './deadline.js';
import { definedEnd, RemoteDirectory, removedError, type RemoteEntry } from './directory.js';
import { FilterSwitch, resubscribe, type LoadSite } from './filter-switch.js';
import { RemoteVariableHandle, type HandleOwner } from './handle.js';
import { Inbound } from './inbound.js';
import type { SendGroup } from './outbound-group.js';
import { Outbox } from './outbox.js';
import { Reconciler } from './reconciler.js';
import { dropRemoved } from './removal.js';
import { SnapshotLoad, type LoadTarget } from './snapshot-load.js';
import { RemoteStore } from './store.js';
import { WritePath } from './write-path.js';
import { mutateRemote, type MutationSite } from './mutation.js';

const noop = (): void => {};

/**
 * Remote mode: the service as two in-memory buffers kept in sync with the server over one subscription.
 * Composes the directory (variables), the reconciler (what the buffers show), the outbox (reports to the
 * server) and the inbound side (snapshot chunks, batches); this class is the subscription's lifetime and
 * the FileAccessor surface. It outlives its connection: suspended while the client reconnects (writes wait
 * in the buffer), then subscribed again, resuming from the last version it has every change of.
 */
export class RemoteFileAccessor implements FileAccessor, HandleOwner, Reattachable {
  readonly mode = 'remote' as const;
  readonly filePath: string | undefined = undefined;
  readonly serviceId: string;
  /** The key may not write this service: typed writes fail at once with PERMISSION_DENIED. */
  readonly readOnly: boolean;
  readonly store: RemoteStore;
  private readonly directory: RemoteDirectory;
  private readonly reconciler: Reconciler<RemoteEntry>;
  private readonly events: ChangeEvents;
  private readonly inbound: Inbound;
  private readonly outbox: Outbox;
  private readonly handles = new Map<string, RemoteVariableHandle>();
  /** What the server said it holds back (SyncPending): vf.staleness(). */
  private readonly stale = new StalenessTracker();
  private readonly target: LoadTarget;
  private sidValue: number;
  /** The file's incarnation (Snapshot.fileId): a resume names it; absent from servers that cannot resume. */
  private fileId: string | undefined;
  /** Subscribed on a live connection (false while the client reconnects). */
  private online = true;
  /** Counts suspends: a filter switch under way gives up when the connection it started on is gone. */
  private attachment = 0;
  private readonly filter: FilterSwitch;
  private readonly site: LoadSite;
  /** The first snapshot is in: from then on a lost connection suspends this file instead of ending it. */
  private loaded = false;
  private closedFlag = false;
  private closedReason: CommyError | undefined;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly ctx: RemoteContext,
    private readonly tenant: string,
    private readonly service: string,
    snapshot: SnapshotBody,
  ) {
    this.serviceId = snapshot.serviceId;
    this.sidValue = snapshot.sid;
    this.fileId = snapshot.fileId;
    this.readOnly = snapshot.readOnly === true;
    this.store = new RemoteStore(snapshot.data, definedEnd(snapshot.variables));
    this.directory = new RemoteDirectory(this.serviceId, this.store, ctx.onError);
    for (const d of snapshot.variables) this.directory.add(d);
    this.reconciler = new Reconciler(this.store);
    this.events = new ChangeEvents(this.serviceId, ctx.onError);
    this.inbound = new Inbound(snapshot.version, this.directory, this.reconciler, this.events);
    this.target = { serviceId: this.serviceId, directory: this.directory, store: this.store, reconciler: this.reconciler, events: this.events };
    const send: SendGroup = (group, answer) =>
      ctx.conn.call(
        'ReportVariableChanges',
        { sid: this.sidValue, changes: group.changes.map((c) => [c.index, c.bytes]), ...(group.opId !== undefined ? { opId: group.opId } : {}) },
        'VariableChangesAcknowledged',
        // A late answer (after TIMEOUT) is the report's answer all the same: the outbox kept it pending.
        { reply: answer.reply, fail: answer.fail, late: answer.reply, lateFail: answer.fail },
      );
    const path = new WritePath(this.store, this.directory, this.reconciler, this.inbound, this.events, ctx);
    this.outbox = new Outbox(send, path, ctx, () => ctx.nextOpId());
    const { target, inbound, outbox } = this;
    this.site = { ctx, serviceId: this.serviceId, target, inbound, outbox, ref: subscriptionRef(tenant, service) };
    this.filter = new FilterSwitch(this.site, {
      attachment: () => (this.online && !this.closedFlag ? this.attachment : undefined),
      sid: () => this.sidValue,
      fileId: () => this.fileId,
      route: (sid, on) => ctx.route(sid, on ? this : undefined),
      switched: (sid, fileId) => void ((this.sidValue = sid), (this.fileId = fileId)),
    });
  }

  /** Subscribes to a service (creating it if the key may) and starts from the server's snapshot. */
  static subscribe(ctx: RemoteContext, tenant: string, service: string): Promise<RemoteFileAccessor> {
    // Runs before the next frame is decoded, so no SyncBatch for this sid can arrive unrouted.
    return ctx.conn.subscribe(subscriptionRef(tenant, service), (snapshot, { resolve, reject }) => {
      const accessor = new RemoteFileAccessor(ctx, tenant, service, snapshot);
      ctx.route(snapshot.sid, accessor);
      const ready = (version: number): void => {
        accessor.inbound.loaded(version, false);
        accessor.loaded = true;
        resolve(accessor);
      };
      if (snapshot.more !== true) ready(snapshot.version);
      else {
        const failed = (err: CommyError): void => {
          accessor.detach(err);
          reject(err);
        };
        accessor.inbound.awaitChunks(new SnapshotLoad(accessor.target, undefined, snapshot.version, { resolve: ready, reject: failed }));
      }
    });
  }

  /** This subscription's id on the current connection. */
  get sid(): number {
    return this.sidValue;
  }

  /** The mirror file backing this buffer (ClientOptions.mirror), until the file closes. */
  get mirrorPath(): string | undefined {
    return this.events.tap?.path;
  }

  /** Backs this buffer with a mirror file: `tap` hears every change (client/mirror-file.ts). */
  mirror(tap: ChangeTap): void {
    this.assertOpen();
    this.events.tap = tap;
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
    return BigInt(this.inbound.version);
  }

  // ---- variables ----------------------------------------------------------------------------------

  private lookup(name: string): RemoteEntry {
    this.assertOpen();
    return this.directory.find(name);
  }

  /** A known variable with the same layout is a no-op here (no round trip, no admin right needed). */
  async register(meta: VariableMetadata): Promise<VariableMetadata> {
    this.assertOpen();
    if (!(meta instanceof VariableMetadata)) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'registerVariable takes a VariableMetadata');
    assertValidName(meta.name, 'variable name');
    const known = this.directory.named(meta.name);
    if (known !== undefined) return sameLayout(known.meta, meta);
    const reply = await this.ctx.conn.request('RegisterVariable', registerBody(this.sid, meta), 'VariableRegistered');
    const added = this.closedFlag ? undefined : this.directory.add(reply.def);
    if (added !== undefined) this.events.emit([added], Math.max(this.inbound.version, added.version));
    const entry = this.directory.at(reply.def[0]) ?? this.directory.named(meta.name);
    return entry?.meta ?? new VariableMetadata(meta.name, reply.def[2], reply.def[3], meta.typeId, meta.fields);
  }

  /**
   * Removes the variable at the server (admin): every client drops it. Here it is gone once the server has
   * answered; a write of it still unsent is dropped with it.
   */
  async removeVariable(name: string): Promise<bigint> {
    this.lookup(name);
    const reply = await this.ctx.conn.request('RemoveVariable', { sid: this.sid, name }, 'VariableRemoved');
    // The answer or the SyncBatch saying so, whichever comes first, drops it.
    const gone = this.closedFlag ? undefined : dropRemoved(this.target, reply.index);
    if (gone !== undefined) {
      this.inbound.noteVersion(reply.version);
      this.events.emit([], reply.version, { removed: [gone.meta.name] });
    }
    return BigInt(reply.version);
  }

  layoutHash(): string {
    this.assertOpen();
    return layoutHashOf(this.directory.list());
  }

  assertLive(entry: RemoteEntry): void {
    this.assertOpen();
    if (entry.removed === true) throw removedError(this.serviceId, entry.meta.name);
  }

  variables(): VariableMetadata[] {
    this.assertOpen();
    return this.directory.list();
  }

  handle(name: string): VariableHandle {
    let h = this.handles.get(name);
    if (h === undefined || this.closedFlag || !h.live) {
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
    if (this.closedFlag || entry.removed === true) this.assertLive(entry);
    if (this.readOnly) throw this.readOnlyError();
    const checked = entry.codec.check(value);
    entry.codec.store(this.store.view, entry.meta.offset, checked);
    this.reconciler.wrote(entry.index);
    this.events.wrote(entry);
    this.outbox.schedule();
  }

  async writeBytes(name: string, bytes: Uint8Array): Promise<void> {
    const entry = this.lookup(name);
    if (!(bytes instanceof Uint8Array)) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'writeVariable takes a Uint8Array');
    assertFits(entry.meta, bytes.length);
    if (this.readOnly) throw this.readOnlyError();
    RemoteStore.put(this.store.current, entry.meta.offset, entry.meta.size, bytes);
    this.reconciler.wrote(entry.index);
    this.events.wrote(entry);
    await this.bounded(this.outbox.deliver(entry.index), `writeVariable ${name}`);
  }

  /** Sent at once as a Mutate under one operation id (resent after a reconnect); the committed value lands in both buffers. */
  mutate(name: string, value: VariableValue, options: MutateOptions): Promise<bigint> {
    const entry = this.lookup(name);
    if (this.readOnly) return Promise.reject(this.readOnlyError());
    const site: MutationSite = {
      ctx: this.ctx,
      serviceId: this.serviceId,
      sid: () => this.sidValue,
      online: () => this.online,
      closed: () => this.closedFlag,
      deliver: (index) => (this.reconciler.isOurs(index) ? this.outbox.deliver(index) : Promise.resolve()),
      committed: (e, version, bytes) => {
        this.reconciler.update(e, version, bytes);
        this.events.emit([e], version);
      },
    };
    return mutateRemote(site, entry, value, options);
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

  /**
   * Sends every pending change (typed or raw) and resolves once all reports in flight are acknowledged.
   * While the client reconnects it waits; after requestTimeoutMs it rejects (NOT_CONNECTED offline, TIMEOUT
   * otherwise) and the changes stay pending: they are still sent, never undone.
   */
  async flush(): Promise<void> {
    this.assertOpen();
    await this.bounded(this.outbox.flushAll(), `flush of ${this.serviceId}`);
  }

  private bounded(work: Promise<void>, what: string): Promise<void> {
    return withDeadline(work, this.ctx.requestTimeoutMs, () => this.online && this.ctx.conn.isOpen, what);
  }

  private readOnlyError(): CommyError {
    return new CommyError(ErrorCode.PERMISSION_DENIED, `this client's key may not write ${this.serviceId}`);
  }

  /** The variable filter (docs/client.md, "Variable filters"): receive these globs' variables too, or no more. */
  subscribe = (globs: string[]): Promise<void> => this.filter.change('subscribe', globs, () => this.assertOpen());
  unsubscribe = (globs: string[]): Promise<void> => this.filter.change('unsubscribe', globs, () => this.assertOpen());

  // ---- server pushes and change events -------------------------------------------------------------

  onChunk(chunk: SnapshotChunkBody): void {
    this.inbound.chunk(chunk);
  }

  onBatch(batch: SyncBatchBody): void {
    this.inbound.batch(batch);
    this.stale.delivered(batch, this.inbound.resumePoint);
  }

  /** What the server holds back for this subscription (it asked: Subscription.pending). */
  onPending(body: SyncPendingBody): void {
    // Only variables this copy has: the tracker keeps what it is told is owed until it is delivered, so indices
    // it will never be sent (a hostile or confused server named millions, notice after notice) grew it without
    // bound. A variable whose definition is still on its way is not lost: staleness() cannot name it yet.
    const pending = body.pending?.filter(([index]) => this.directory.at(index) !== undefined);
    this.stale.noticed(pending === undefined ? body : { ...body, pending });
  }

  watch(listener: (event: FileChangeEvent) => void): () => void {
    this.assertOpen();
    return this.events.watch(listener);
  }

  /** Every change of `current` stamps the entries it touched with a new ChangeEvents.revision. */
  changeStamp(name?: string): ChangeStamp {
    this.assertOpen();
    if (name === undefined) return this.events.revision;
    const entry = this.directory.named(name);
    return entry === undefined ? CHANGE_STAMP_MISSING : (entry.rev ?? 0);
  }

  watchOwnWrites(listener: (name: string) => void): () => void {
    this.assertOpen();
    return this.events.watchWrites(listener);
  }

  staleness(name: string): Staleness {
    const e = this.lookup(name);
    return this.stale.of(e.index, e.version, this.inbound.resumePoint);
  }

  // The client's WebSocket already keeps the process alive until client.close().
  hold(): void {}
  unhold(): void {}

  // ---- lifetime -----------------------------------------------------------------------------------

  /**
   * Sends what is pending, waits for its acknowledgement, then leaves the service (Unsubscribe). While the
   * client reconnects nothing can go: writes never sent and reports never answered fail NOT_CONNECTED instead.
   */
  close(): Promise<void> {
    this.closing ??= this.leave();
    return this.closing;
  }

  private async leave(): Promise<void> {
    await this.filter.idle(); // a switch holds the outbox: what it holds is sent below
    if (this.closedFlag) return;
    this.events.closing(); // a mirror file's last writes go into the buffer, sent just below
    const waits = this.outbox.drain();
    this.detach(undefined);
    for (const r of await Promise.allSettled(waits)) {
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
    this.inbound.stop(reason ?? new CommyError(ErrorCode.NOT_CONNECTED, `service ${this.serviceId} closed while its snapshot was arriving`));
    // Writes still in the buffer are never sent now: their callers reject, unawaited ones go to onError.
    this.outbox.stop(reason, this.serviceId);
    this.events.clear();
    this.handles.clear();
    this.ctx.route(this.sidValue, undefined);
  }

  // ---- reconnection ---------------------------------------------------------------------------------

  /** The connection is gone: nothing is sent, writes wait in the buffer. One still loading its first snapshot ends. */
  suspend(reason: CommyError): void {
    if (this.closedFlag) return;
    if (!this.loaded) {
      this.detach(reason);
      return;
    }
    this.online = false;
    this.attachment++;
    this.outbox.pause();
    this.inbound.interrupt(reason);
  }

  /**
   * Subscribes again on the client's new connection (with the current filter), resuming from the last version
   * this client has every change of. The snapshot goes through the reconciler (pending local writes survive
   * it); once in, the reports whose outcome is unknown are resent with their operation ids, then the rest.
   */
  reattach(): Promise<void> {
    if (this.closedFlag) return Promise.resolve();
    const since: ResumePoint | undefined = this.fileId !== undefined ? { version: this.inbound.resumePoint, fileId: this.fileId } : undefined;
    const body: SubscriptionBody = { ...this.site.ref, ...this.filter.variables(), ...(since !== undefined ? { since } : {}) };
    return resubscribe(this.site, body, {
      started: (snapshot) => {
        if (this.closedFlag) throw new CommyError(ErrorCode.NOT_CONNECTED, `service ${this.serviceId} was closed`);
        this.sidValue = snapshot.sid;
        this.ctx.route(snapshot.sid, this);
      },
      done: (snapshot, version, resumed, { resolve }) => {
        this.fileId = snapshot.fileId;
        this.inbound.loaded(version, !resumed);
        if (!resumed) this.stale.clear(); // another file, maybe: its versions are not the old one's
        this.stale.caughtUp(version);
        this.online = true;
        this.outbox.resume();
        resolve();
      },
    });
  }
}

/** Every subscription of a remote file asks for SyncPending notices (staleness). */
function subscriptionRef(tenant: string, service: string): SubscriptionBody {
  return { tenant, service, create: true, pending: true };
}
