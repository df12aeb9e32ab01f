import { MAX_CALLER_OP_ID } from '../core/mutate-options.js';
import { CommyError, ErrorCode } from '../core/errors.js';
import { MAX_CHANGES_PER_REPORT, type AuthenticatedBody } from '../protocol/messages.js';
import { asCommyError, clientClosedError } from './client-errors.js';
import type { ResolvedClientOptions } from './client-options.js';
import type { ClientStateCell } from './client-state.js';
import { Connection } from './connection.js';
import type { OpenFile, OpenFiles } from './open-files.js';
import type { ClientPlatform } from './platform.js';
import type { PushRouter } from './push-router.js';
import { isReattachable } from './reattachable.js';
import { ReconnectPolicy } from './reconnect-policy.js';
import { Reconnector } from './reconnector.js';
import { RemoteFileAccessor, type RemoteContext } from './remote-accessor.js';
import { TenantAuth } from './tenant-auth.js';

const noop = (): void => {};

/** The remote context's fields that change with each connection. */
type MutableRemoteContext = { -readonly [K in keyof RemoteContext]: RemoteContext[K] };

/** What the connection's lifecycle needs of its client. */
export interface LinkSite {
  readonly url: string;
  readonly options: ResolvedClientOptions;
  readonly platform: ClientPlatform;
  readonly state: ClientStateCell;
  readonly router: PushRouter;
  readonly files: OpenFiles;
  /** close() was called: nothing new starts. */
  isClosing(): boolean;
}

/**
 * A client's connection over time: the first one opened, its tenants authenticated, and when it is lost,
 * every file suspended and a new connection re-established (or, with reconnect: false, everything that
 * needs the server ended).
 */
export class ClientLink {
  readonly auth: TenantAuth;
  private conn: Connection | undefined;
  private remoteContext: MutableRemoteContext | undefined;
  private connecting: Promise<void> | undefined;
  /** The client's own operation ids start above the range callers pick from (MAX_CALLER_OP_ID), so none collides. */
  private lastOpId = MAX_CALLER_OP_ID;
  private readonly policy: ReconnectPolicy | undefined;
  private reconnector: Reconnector | undefined;

  constructor(private readonly site: LinkSite) {
    this.auth = new TenantAuth((reply) => this.authenticated(reply));
    this.policy = site.options.reconnect === false ? undefined : new ReconnectPolicy(site.options.reconnect);
  }

  /** The connection now: a new one after each reconnection; undefined before the first. */
  get current(): Connection | undefined {
    return this.conn;
  }

  get serverHostId(): string | undefined {
    return this.auth.serverHostId;
  }

  /** Remote files' context, made with the first connection. */
  get remote(): RemoteContext | undefined {
    return this.remoteContext;
  }

  /** Opens the WebSocket (NOT_CONNECTED or TIMEOUT when it cannot). */
  connect(): Promise<void> {
    if (this.site.isClosing()) return Promise.reject(clientClosedError());
    this.connecting ??= this.open().catch((err: unknown) => {
      this.site.state.set('closed');
      throw err;
    });
    return this.connecting;
  }

  /** connect()'s attempt, settled either way (undefined if none was made). */
  settled(): Promise<void> | undefined {
    return this.connecting?.catch(noop);
  }

  /** The open connection, for a request. */
  connection(): Connection {
    if (this.site.isClosing()) throw clientClosedError();
    const conn = this.conn;
    if (conn === undefined || !conn.isOpen) throw new CommyError(ErrorCode.NOT_CONNECTED, `not connected to ${this.site.url}: call connect() first`);
    return conn;
  }

  /** Operation ids: one counter per Client, so ids never repeat across its services or connections. */
  nextOpId(): number {
    return ++this.lastOpId;
  }

  stopReconnecting(): void {
    this.reconnector?.stop();
  }

  close(): Promise<void> | undefined {
    return this.conn?.close();
  }

  private async open(): Promise<void> {
    const o = this.site.options;
    const conn = await this.openConnection();
    this.conn = conn;
    const self = this;
    this.remoteContext = {
      get conn(): Connection {
        return self.conn ?? conn;
      },
      maxFrameBytes: o.maxFrameBytes,
      requestTimeoutMs: o.requestTimeoutMs,
      maxChangesPerReport: MAX_CHANGES_PER_REPORT,
      diff: this.site.platform.diff,
      onError: o.onError,
      route: (sid, accessor) => this.site.router.routeFile(sid, accessor),
      nextOpId: () => this.nextOpId(),
    };
    this.site.state.set('open');
  }

  private openConnection(): Promise<Connection> {
    const o = this.site.options;
    let opened: Connection | undefined;
    return Connection.open(this.site.url, this.site.platform.openTransport, {
      requestTimeoutMs: o.requestTimeoutMs,
      maxFrameBytes: o.maxFrameBytes,
      maxIncomingBytes: o.maxIncomingBytes,
      ...(o.tls !== undefined ? { tls: o.tls } : {}),
      onPush: (m) => this.site.router.onPush(m),
      onClosed: (reason) => this.onConnectionLost(opened, reason),
      onError: o.onError,
    }).then((conn) => (opened = conn));
  }

  /** The server's limit on changes per report applies to every remote file from now on. */
  private authenticated(reply: AuthenticatedBody): void {
    if (this.remoteContext !== undefined && reply.maxChangesPerReport !== undefined) this.remoteContext.maxChangesPerReport = reply.maxChangesPerReport;
  }

  /**
   * The connection went away. With reconnect (the default), every service file is suspended (remote ones keep
   * their buffers and writes; local ones are mappings and need no server) and the client reconnects. Without
   * it, remote files stop (NOT_CONNECTED) and waits end; local files keep working until close().
   */
  private onConnectionLost(conn: Connection | undefined, reason: CommyError): void {
    // A connection still authenticating for a reconnection attempt: its requests fail with it, and so does the attempt.
    if (conn === undefined || conn !== this.conn) return;
    if (this.site.isClosing()) return;
    if (this.site.state.value === 'reconnecting') {
      this.attemptLost(reason);
      return;
    }
    if (this.site.state.value !== 'open') return;
    this.site.options.onError(reason);
    if (this.policy === undefined) {
      this.lostForGood(reason);
      return;
    }
    this.suspendAll(reason);
    this.site.state.set('reconnecting');
    void this.reconnect();
  }

  /**
   * The connection of a reconnection attempt died while it was resubscribing the files. Requests waiting for an
   * answer fail with it, but a snapshot whose chunks were still arriving waits for pushes that will never come:
   * suspending every file fails such a load, so the attempt fails and the reconnector tries again after its
   * backoff. Files already resubscribed on it wait again, as after any loss. Not reported: the outage was.
   */
  private attemptLost(reason: CommyError): void {
    this.suspendAll(reason);
  }

  private lostForGood(reason: CommyError): void {
    this.site.state.set('closed');
    this.site.router.detachAll(reason);
    this.site.files.inbox.end(reason);
  }

  /** Every file stops using the connection; a remote file still loading its first snapshot ends. */
  private suspendAll(reason: CommyError): void {
    this.site.router.suspendAll(reason);
    for (const file of this.site.files.live()) if (isReattachable(file.accessor)) file.accessor.suspend(reason);
  }

  private async reconnect(): Promise<void> {
    const loop = new Reconnector(this.policy!, {
      attempt: () => this.reestablish(),
      failed: noop, // the loss itself was reported; each failed attempt would only repeat it
    });
    this.reconnector = loop;
    await loop.run();
    if (this.reconnector === loop) this.reconnector = undefined;
  }

  /** One attempt: a new connection, every tenant authenticated again, every file subscribed again. */
  private async reestablish(): Promise<void> {
    const conn = await this.openConnection();
    try {
      for (const [tenant, credentials] of this.auth.remembered()) await this.auth.authenticateOn(conn, tenant, credentials);
      if (this.site.isClosing()) throw clientClosedError();
      // Lost already (no request was waiting to notice): fail now rather than subscribe on a dead connection.
      if (!conn.isOpen) throw this.lostWhileReconnecting();
      // A previous attempt may have resubscribed some files on a connection that then failed.
      if (this.conn !== undefined && this.conn !== conn) this.suspendAll(new CommyError(ErrorCode.NOT_CONNECTED, 'reconnecting'));
      this.conn = conn;
      await Promise.all([...this.site.files.live()].map((file) => this.reattach(file)));
      if (!conn.isOpen || this.site.isClosing()) throw this.lostWhileReconnecting();
    } catch (err) {
      await conn.close();
      throw err;
    }
    this.site.state.set('open');
  }

  private lostWhileReconnecting(): CommyError {
    return new CommyError(ErrorCode.NOT_CONNECTED, `connection to ${this.site.url} lost while reconnecting`);
  }

  /** Resubscribes one file; one that cannot go on (its right withdrawn, its file replaced) stops, with why. */
  private async reattach(file: OpenFile): Promise<void> {
    const accessor = file.accessor;
    if (!isReattachable(accessor)) return;
    try {
      await accessor.reattach();
    } catch (err) {
      const reason = asCommyError(err, `${accessor.serviceId}: resubscribing failed`);
      if (reason.code === ErrorCode.NOT_CONNECTED || reason.code === ErrorCode.TIMEOUT) throw reason;
      if (accessor instanceof RemoteFileAccessor) accessor.detach(reason);
      this.site.options.onError(reason);
    }
  }
}
