import { CommyError, ErrorCode, isErrorCode } from '../core/errors.js';
import type { FileAccessor } from '../core/file-accessor.js';
import type { FileChangeEvent } from '../core/file-change-event.js';
import { assertValidName } from '../core/names.js';
import { MAX_CHANGES_PER_REPORT, PROTOCOL_VERSION, type Message, type UnsubscribedBody, type VariablesUpdatedBody } from '../protocol/messages.js';
import { VirtualVariableFile } from './virtual-variable-file.js';
import { credentialOf, type AuthCredentials } from './auth-credentials.js';
import { ChangeInbox, type WaitOptions } from './change-inbox.js';
import { newClientKey } from './client-key.js';
import { resolveClientOptions, type ClientOptions, type ClientState, type ResolvedClientOptions } from './client-options.js';
import { Connection } from './connection.js';
import { currentPlatform, type ClientPlatform, type LocalAttachRequest } from './platform.js';
import { isReattachable } from './reattachable.js';
import { ReconnectPolicy } from './reconnect-policy.js';
import { Reconnector } from './reconnector.js';
import { RemoteFileAccessor, type RemoteContext } from './remote-accessor.js';

/** A service file this client opened, and its feed into the client's change queue while monitoring. */
interface OpenFile {
  readonly vf: VirtualVariableFile;
  readonly accessor: FileAccessor;
  stopWatch: (() => void) | undefined;
}

const noop = (): void => {};

type StateListener = (state: ClientState) => void;

/** The remote context's fields that change with each connection. */
type MutableRemoteContext = { -readonly [K in keyof RemoteContext]: RemoteContext[K] };

/**
 * A connection to a Commy server, authenticated to one or more tenants. Its service files are local
 * (the server's file mapped into this process, when on the same machine) or remote (a buffer synced over
 * the WebSocket); the application sees the same VirtualVariableFile either way.
 */
export class Client {
  readonly url: string;
  private readonly options: ResolvedClientOptions;
  private conn: Connection | undefined;
  private remote: MutableRemoteContext | undefined;
  private connecting: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private stateValue: ClientState = 'connecting';
  private readonly stateListeners = new Set<StateListener>();
  private serverHostId: string | undefined;
  /** Every tenant this client authenticated to, to authenticate again after a reconnection. */
  private readonly tenants = new Map<string, AuthCredentials>();
  /** This client's identity for operation ids (Authenticate.clientKey): the same on every connection. */
  private readonly clientKey = newClientKey();
  private lastOpId = 0;
  private readonly policy: ReconnectPolicy | undefined;
  private reconnector: Reconnector | undefined;
  private readonly files = new Set<OpenFile>();
  private readonly routes = new Map<number, RemoteFileAccessor>();
  /** Notify subscriptions of read-only local files: where their VariablesUpdated pushes go. */
  private readonly notices = new Map<number, (body: VariablesUpdatedBody) => void>();
  private readonly inbox = new ChangeInbox();
  private monitoring = false;
  private readonly forward = (event: FileChangeEvent): void => this.inbox.push(event);

  /** The runtime (Node, a browser) comes from the package entry that was imported (platform.ts). */
  private readonly platform: ClientPlatform;

  constructor(url: string, options: ClientOptions = {}) {
    this.url = checkUrl(url);
    this.platform = currentPlatform();
    this.options = resolveClientOptions(options, this.platform.warn);
    this.policy = this.options.reconnect === false ? undefined : new ReconnectPolicy(this.options.reconnect);
  }

  /** new Client, connect, authenticate, initFileWatcher, startFileMonitoring; on failure nothing is left open. */
  static async initialize(url: string, tenant: string, credentials: AuthCredentials, options?: ClientOptions): Promise<Client> {
    const client = new Client(url, options);
    try {
      await client.connect();
      await client.authenticate(tenant, credentials);
      await client.initFileWatcher();
      await client.startFileMonitoring();
    } catch (err) {
      await client.close();
      throw err;
    }
    return client;
  }

  /**
   * 'connecting' until connect() succeeds, then 'open'; 'reconnecting' while a lost connection is being
   * re-established (options.reconnect); 'closed' after close(), or a lost connection with reconnect: false.
   */
  get state(): ClientState {
    return this.stateValue;
  }

  /** `fn` hears every change of `state`, with the new state. */
  on(event: 'state', fn: StateListener): this {
    checkEvent(event, fn);
    this.stateListeners.add(fn);
    return this;
  }

  off(event: 'state', fn: StateListener): this {
    checkEvent(event, fn);
    this.stateListeners.delete(fn);
    return this;
  }

  private setState(state: ClientState): void {
    if (this.stateValue === state) return;
    this.stateValue = state;
    for (const fn of [...this.stateListeners]) {
      try {
        fn(state);
      } catch (err) {
        this.options.onError(asCommyError(err, "a 'state' listener threw"));
      }
    }
  }

  /** Opens the WebSocket (NOT_CONNECTED or TIMEOUT when it cannot). */
  connect(): Promise<void> {
    if (this.closing !== undefined) return Promise.reject(this.closedError());
    this.connecting ??= this.open().catch((err: unknown) => {
      this.setState('closed');
      throw err;
    });
    return this.connecting;
  }

  private async open(): Promise<void> {
    const o = this.options;
    const conn = await this.openConnection();
    this.conn = conn;
    const self = this;
    this.remote = {
      get conn(): Connection {
        return self.conn ?? conn;
      },
      maxFrameBytes: o.maxFrameBytes,
      requestTimeoutMs: o.requestTimeoutMs,
      maxChangesPerReport: MAX_CHANGES_PER_REPORT,
      diff: this.platform.diff,
      onError: o.onError,
      route: (sid, accessor) => (accessor !== undefined ? this.routes.set(sid, accessor) : this.routes.delete(sid)),
      nextOpId: () => this.nextOpId(),
    };
    this.setState('open');
  }

  private openConnection(): Promise<Connection> {
    const o = this.options;
    let opened: Connection | undefined;
    return Connection.open(this.url, this.platform.openTransport, {
      requestTimeoutMs: o.requestTimeoutMs,
      maxFrameBytes: o.maxFrameBytes,
      maxIncomingBytes: o.maxIncomingBytes,
      ...(o.tls !== undefined ? { tls: o.tls } : {}),
      onPush: (m) => this.onPush(m),
      onClosed: (reason) => this.onConnectionLost(opened, reason),
      onError: o.onError,
    }).then((conn) => (opened = conn));
  }

  /** Operation ids: one counter per Client, so ids never repeat across its services or connections. */
  private nextOpId(): number {
    return ++this.lastOpId;
  }

  /** Authenticates this connection to a tenant (once per tenant; a connection may hold several). */
  async authenticate(tenant: string, credentials: AuthCredentials): Promise<void> {
    assertValidName(tenant, 'tenant name');
    credentialOf(credentials); // checked before anything goes out
    await this.authenticateOn(this.connection(), tenant, credentials);
    this.tenants.set(tenant, credentials);
  }

  private async authenticateOn(conn: Connection, tenant: string, credentials: AuthCredentials): Promise<void> {
    const reply = await conn.request(
      'Authenticate',
      { tenant, method: credentials.method, credential: credentialOf(credentials), protocol: PROTOCOL_VERSION, clientKey: this.clientKey },
      'Authenticated',
    );
    this.serverHostId = reply.hostId;
    if (this.remote !== undefined && reply.maxChangesPerReport !== undefined) this.remote.maxChangesPerReport = reply.maxChangesPerReport;
  }

  /** Prepares the change queue; startFileMonitoring() starts filling it. */
  async initFileWatcher(): Promise<void> {
    this.assertUsable();
  }

  /** From now on, every change to any service file of this client is queued for waitForFileChange(). */
  async startFileMonitoring(): Promise<void> {
    this.assertUsable();
    this.monitoring = true;
    for (const file of this.liveFiles()) file.stopWatch ??= file.accessor.watch(this.forward);
  }

  /** Stops queueing changes; events already queued stay available to tryGetFileChange(). */
  async stopFileMonitoring(): Promise<void> {
    this.monitoring = false;
    for (const file of this.files) {
      file.stopWatch?.();
      file.stopWatch = undefined;
    }
  }

  /**
   * The service's variables, local when the server's file can be mapped here (see ClientOptions.mode),
   * remote otherwise. Creates the service if it does not exist and the key has the admin right.
   */
  async getVirtualServiceFile(tenant: string, service: string): Promise<VirtualVariableFile> {
    assertValidName(tenant, 'tenant name');
    assertValidName(service, 'service name');
    const conn = this.connection();
    const accessor = await this.openAccessor(conn, tenant, service);
    if (this.closing !== undefined) {
      await accessor.close();
      throw this.closedError();
    }
    const vf = new VirtualVariableFile(accessor);
    const file: OpenFile = { vf, accessor, stopWatch: undefined };
    this.liveFiles();
    this.files.add(file);
    if (this.monitoring) file.stopWatch = accessor.watch(this.forward);
    return vf;
  }

  private async openAccessor(conn: Connection, tenant: string, service: string): Promise<FileAccessor> {
    const mode = this.options.mode;
    const attach = this.platform.attachLocal;
    if (mode === 'local' && attach === undefined) {
      throw new CommyError(ErrorCode.FILE_NOT_FOUND, `local mode is not available on this platform (${this.platform.name})`);
    }
    if (mode !== 'remote' && attach !== undefined) {
      const self = this;
      const request: LocalAttachRequest = {
        // Read at each use: a read-only file's notices follow the client to its next connection.
        get conn(): Connection {
          return self.conn ?? conn;
        },
        tenant,
        service,
        serverHostId: this.serverHostId,
        route: (sid, onUpdated) => (onUpdated !== undefined ? this.notices.set(sid, onUpdated) : this.notices.delete(sid)),
        onError: this.options.onError,
      };
      try {
        return await attach(request);
      } catch (err) {
        const reason = asCommyError(err, `${tenant}/${service}: the service file could not be mapped`);
        if (mode === 'local') throw reason;
        // 'auto': any reason not to map (another machine, another container, a file that will not open) means remote.
        this.fellBack(reason, tenant, service);
      }
    }
    return RemoteFileAccessor.subscribe(this.remote!, tenant, service);
  }

  /** Tells the application why 'auto' went remote; a throwing callback is reported, not thrown. */
  private fellBack(reason: CommyError, tenant: string, service: string): void {
    try {
      this.options.onFallback?.(reason, { tenant, service });
    } catch (err) {
      this.options.onError(asCommyError(err, 'the onFallback callback threw'));
    }
  }

  /**
   * The next change to any of this client's service files; null after `timeoutMs` without one. Aborting
   * `signal` rejects with ABORTED; a wait that ends either way consumes nothing.
   */
  waitForFileChange(options: WaitOptions = {}): Promise<FileChangeEvent | null> {
    if (this.closing === undefined && this.stateValue !== 'closed' && !this.monitoring) {
      return Promise.reject(new CommyError(ErrorCode.NOT_CONNECTED, 'file monitoring is not running: call startFileMonitoring() first'));
    }
    return this.inbox.take(options);
  }

  /** The next queued change, or null; never waits. */
  tryGetFileChange(): FileChangeEvent | null {
    return this.inbox.poll();
  }

  /** The old API: one variable's bytes, read by the server (a round trip each time). */
  async readVariable(tenant: string, service: string, name: string): Promise<Uint8Array> {
    checkNames(tenant, service, name);
    const reply = await this.connection().request('ReadVariable', { tenant, service, name }, 'VariableValue');
    return new Uint8Array(reply.value); // a plain copy, not a view of the received frame
  }

  /** The old API: one variable written by the server; resolves once applied and visible to every client. */
  async writeVariable(tenant: string, service: string, name: string, bytes: Uint8Array): Promise<void> {
    checkNames(tenant, service, name);
    if (!(bytes instanceof Uint8Array)) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'writeVariable takes a Uint8Array');
    await this.connection().request('WriteVariable', { tenant, service, name, value: bytes, opId: this.nextOpId() }, 'VariableChangesAcknowledged');
  }

  /** Flushes and closes every service file of this client, then the connection. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.reconnector?.stop();
    await this.connecting?.catch(noop);
    await this.stopFileMonitoring();
    const files = [...this.files];
    this.files.clear();
    await Promise.allSettled(files.map((f) => f.vf.close()));
    this.inbox.end(this.closedError());
    this.setState('closed');
    await this.conn?.close();
  }

  private onPush(message: Message): void {
    if (message.type === 'SyncBatch') this.routes.get(message.body.sid)?.onBatch(message.body);
    else if (message.type === 'SnapshotChunk') this.routes.get(message.body.sid)?.onChunk(message.body);
    else if (message.type === 'Unsubscribed') this.ended(message.body);
    // Names only, for a read-only local file that reads the values from its mapping.
    else if (message.type === 'VariablesUpdated' && message.body.sid !== undefined) this.notices.get(message.body.sid)?.(message.body);
  }

  /** The server ended a subscription (its service file was damaged, say): that service file stops, with why. */
  private ended(body: UnsubscribedBody): void {
    const code = isErrorCode(body.errorCode) ? body.errorCode : ErrorCode.NOT_CONNECTED;
    const reason = new CommyError(code, body.message ?? `the server ended subscription ${body.sid}`);
    const accessor = this.routes.get(body.sid);
    if (accessor === undefined && !this.notices.delete(body.sid)) return;
    accessor?.detach(reason);
    this.options.onError(reason);
  }

  /**
   * The connection went away. With reconnect (the default), every service file is suspended (remote ones keep
   * their buffers and writes; local ones are mappings and need no server) and the client reconnects. Without
   * it, remote files stop (NOT_CONNECTED) and waits end; local files keep working until close().
   */
  private onConnectionLost(conn: Connection | undefined, reason: CommyError): void {
    // A connection being tried by a reconnection attempt: that attempt fails on its own.
    if (conn === undefined || conn !== this.conn || this.stateValue !== 'open') return;
    if (this.closing !== undefined) return;
    this.options.onError(reason);
    if (this.policy === undefined) {
      this.lostForGood(reason);
      return;
    }
    this.suspendAll(reason);
    this.setState('reconnecting');
    void this.reconnect();
  }

  private lostForGood(reason: CommyError): void {
    this.setState('closed');
    for (const accessor of [...this.routes.values()]) accessor.detach(reason);
    this.routes.clear();
    this.notices.clear();
    this.inbox.end(reason);
  }

  /** Every file stops using the connection; a remote file still loading its first snapshot ends. */
  private suspendAll(reason: CommyError): void {
    const routed = [...this.routes.values()];
    this.routes.clear();
    this.notices.clear();
    for (const accessor of routed) accessor.suspend(reason);
    for (const file of this.liveFiles()) if (isReattachable(file.accessor)) file.accessor.suspend(reason);
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
      for (const [tenant, credentials] of this.tenants) await this.authenticateOn(conn, tenant, credentials);
      if (this.closing !== undefined) throw this.closedError();
      // A previous attempt may have resubscribed some files on a connection that then failed.
      if (this.conn !== undefined && this.conn !== conn) this.suspendAll(new CommyError(ErrorCode.NOT_CONNECTED, 'reconnecting'));
      this.conn = conn;
      await Promise.all([...this.liveFiles()].map((file) => this.reattach(file)));
      if (!conn.isOpen || this.closing !== undefined) throw new CommyError(ErrorCode.NOT_CONNECTED, `connection to ${this.url} lost while reconnecting`);
    } catch (err) {
      await conn.close();
      throw err;
    }
    this.setState('open');
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
      this.options.onError(reason);
    }
  }

  private connection(): Connection {
    this.assertUsable();
    const conn = this.conn;
    if (conn === undefined || !conn.isOpen) throw new CommyError(ErrorCode.NOT_CONNECTED, `not connected to ${this.url}: call connect() first`);
    return conn;
  }

  private assertUsable(): void {
    if (this.closing !== undefined) throw this.closedError();
  }

  private closedError(): CommyError {
    return new CommyError(ErrorCode.NOT_CONNECTED, 'the client is closed');
  }

  /** The open files, forgetting those the application closed itself. */
  private liveFiles(): Set<OpenFile> {
    for (const file of this.files) {
      if (file.accessor.closed) {
        file.stopWatch?.();
        this.files.delete(file);
      }
    }
    return this.files;
  }
}

function checkEvent(event: string, fn: unknown): void {
  if (event !== 'state') throw new CommyError(ErrorCode.TYPE_MISMATCH, `unknown event ${JSON.stringify(event)}: a Client emits 'state'`);
  if (typeof fn !== 'function') throw new CommyError(ErrorCode.TYPE_MISMATCH, 'the listener must be a function');
}

function checkUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new CommyError(ErrorCode.TYPE_MISMATCH, `not a URL: ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw new CommyError(ErrorCode.TYPE_MISMATCH, `a Commy server URL is ws:// or wss://, not ${parsed.protocol}`);
  }
  return url;
}

function asCommyError(err: unknown, what: string): CommyError {
  return err instanceof CommyError ? err : new CommyError(ErrorCode.INTERNAL_ERROR, `${what}: ${String(err)}`, { cause: err });
}

function checkNames(tenant: string, service: string, name: string): void {
  assertValidName(tenant, 'tenant name');
  assertValidName(service, 'service name');
  assertValidName(name, 'variable name');
}
