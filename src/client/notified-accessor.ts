import { CommyError, ErrorCode, isCommyError } from '../core/errors.js';
import { changeEventOf, deliverChange, type FileChangeEvent } from '../core/file-change-event.js';
import type { VariableMetadata } from '../core/variable-metadata.js';
import { LocalFileAccessor, type ChangeSource } from '../local/local-accessor.js';
import type { DirEntry, ServiceFile } from '../local/service-file.js';
import type { SnapshotBody, VariablesUpdatedBody } from '../protocol/messages.js';
import { registerBody } from '../protocol/variable-def.js';
import type { Connection } from './connection.js';
import type { Reattachable } from './reattachable.js';

type Listener = (event: FileChangeEvent) => void;

const noop = (): void => {};

/** What a read-only local service needs from its client. */
export interface NotifyContext {
  /** The client's connection: a new one after each reconnection. */
  readonly conn: Connection;
  readonly tenant: string;
  readonly service: string;
  /** Delivers this subscription's VariablesUpdated pushes to `onUpdated`; `undefined` stops. */
  route(sid: number, onUpdated: ((body: VariablesUpdatedBody) => void) | undefined): void;
  /** A change listener that threw, a notice that could not be read. */
  onError(err: CommyError): void;
}

/**
 * Change events for a read-only mapping, which cannot run a change watcher (it would store into the
 * file): the server watches the file and pushes the changed variables' names over a `notify`
 * subscription; the values are read from the mapping itself.
 */
export class NotifiedChanges implements ChangeSource {
  private readonly listeners = new Set<Listener>();
  private stopped = false;
  private sidValue: number;
  /** The service version of the last notice (or snapshot): what a resubscription catches up from. */
  private seen: number;
  readonly onUpdated = (body: VariablesUpdatedBody): void => this.deliver(body);

  constructor(
    private readonly ctx: NotifyContext,
    private readonly file: ServiceFile,
    private readonly serviceId: string,
    snapshot: SnapshotBody,
  ) {
    this.sidValue = snapshot.sid;
    this.seen = snapshot.version;
  }

  /** The notify subscription's id on the current connection. */
  get sid(): number {
    return this.sidValue;
  }

  add(listener: Listener): void {
    this.file.assertOpen();
    this.listeners.add(listener);
  }

  remove(listener: Listener): void {
    this.listeners.delete(listener);
  }

  // The client's WebSocket already keeps the process alive until client.close().
  hold(): void {}
  unhold(): void {}

  /** Stops delivering at once; then leaves the subscription (Unsubscribe), if the connection is still up. */
  async close(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.listeners.clear();
    this.ctx.route(this.sid, undefined);
    if (this.ctx.conn.isOpen) await this.ctx.conn.request('Unsubscribe', { sid: this.sid }, 'Unsubscribed').catch(noop);
  }

  /**
   * Subscribes again after a reconnection (the mapping itself stayed valid). Notices sent meanwhile were
   * lost: the variables whose definition version moved past the last notice are reported as one change.
   */
  async reattach(): Promise<void> {
    if (this.stopped) return;
    const { conn, tenant, service } = this.ctx;
    await conn.subscribe<void>({ tenant, service, notify: true }, (snapshot, { resolve }) => {
      if (this.stopped) throw new CommyError(ErrorCode.NOT_CONNECTED, `${this.serviceId} was closed`);
      this.sidValue = snapshot.sid;
      this.ctx.route(snapshot.sid, this.onUpdated);
      const missed = snapshot.variables.filter((d) => d[5] > this.seen).map((d) => d[1]);
      if (missed.length > 0) this.deliver({ serviceId: snapshot.serviceId, version: snapshot.version, variables: missed, sid: snapshot.sid });
      if (snapshot.version > this.seen) this.seen = snapshot.version;
      resolve();
    });
  }

  /** One notice → one FileChangeEvent, with ranges from the mapped directory (refreshed: it may have grown). */
  private deliver(body: VariablesUpdatedBody): void {
    if (body.version > this.seen) this.seen = body.version;
    if (this.stopped || this.file.closed || this.listeners.size === 0) return;
    let event: FileChangeEvent;
    try {
      const entries: DirEntry[] = [];
      for (const name of new Set(body.variables)) {
        const entry = this.find(name);
        if (entry !== undefined) entries.push(entry);
      }
      const removed = body.removed ?? [];
      if (entries.length === 0 && removed.length === 0) return;
      event = changeEventOf(this.file.path, this.serviceId, entries.map((e) => e.meta), BigInt(body.version), { removed });
    } catch (err) {
      this.ctx.onError(asCommyError(err, `${this.serviceId}: a change notice could not be read`));
      return;
    }
    deliverChange(this.listeners, event, (err) => this.ctx.onError(asCommyError(err, 'a change listener threw')));
  }

  /** The entry (after a refresh if needed), or undefined for a name this mapping does not have. */
  private find(name: string): DirEntry | undefined {
    try {
      return this.file.entry(name);
    } catch (err) {
      if (isCommyError(err, ErrorCode.VARIABLE_NOT_FOUND)) return undefined;
      throw err;
    }
  }
}

/**
 * Local mode for a read-only key: the server's file mapped read-only, change events from the server.
 * Every write fails with PERMISSION_DENIED (the mapping cannot be written); registering a variable the file
 * does not have yet goes to the server, which needs the admin right for it, as in remote mode.
 */
export class NotifiedLocalAccessor extends LocalFileAccessor implements Reattachable {
  constructor(
    file: ServiceFile,
    private readonly notices: NotifiedChanges,
    private readonly ctx: NotifyContext,
  ) {
    super(file, notices);
  }

  /** The mapping needs no connection; only the notices stop until reattach(). */
  suspend(): void {}

  reattach(): Promise<void> {
    return this.file.closed ? Promise.resolve() : this.notices.reattach();
  }

  override async register(meta: VariableMetadata): Promise<VariableMetadata> {
    try {
      return await super.register(meta); // a known variable with the same layout: a no-op, no right needed
    } catch (err) {
      // Anything but "a new variable on a read-only mapping" (bad layout, closed, …) is the answer.
      if (!isCommyError(err, ErrorCode.PERMISSION_DENIED) || this.file.closed) throw err;
    }
    await this.ctx.conn.request('RegisterVariable', registerBody(this.notices.sid, meta), 'VariableRegistered');
    return this.file.entry(meta.name).meta; // the server has published it in the file this process maps
  }

  /** The mapping is read-only: the server removes it (admin right), in the file this process maps. */
  override async removeVariable(name: string): Promise<bigint> {
    this.file.entry(name); // VARIABLE_NOT_FOUND without a round trip
    const reply = await this.ctx.conn.request('RemoveVariable', { sid: this.notices.sid, name }, 'VariableRemoved');
    return BigInt(reply.version);
  }
}

function asCommyError(err: unknown, what: string): CommyError {
  return err instanceof CommyError ? err : new CommyError(ErrorCode.INTERNAL_ERROR, `${what}: ${String(err)}`, { cause: err });
}
