import { CommyError, ErrorCode, isErrorCode } from '../core/errors.js';
import type { FileAccessor } from '../core/file-accessor.js';
import type { FileChangeEvent } from '../core/file-change-event.js';
import { assertValidName } from '../core/names.js';
import { MAX_CHANGES_PER_REPORT, PROTOCOL_VERSION, type Message, type UnsubscribedBody, type VariablesUpdatedBody } from '../protocol/messages.js';
import { VirtualVariableFile } from './virtual-variable-file.js';
import { credentialOf, type AuthCredentials } from './auth-credentials.js';
import { ChangeInbox, type WaitOptions } from './change-inbox.js';
import { resolveClientOptions, type ClientOptions, type ClientState, type ResolvedClientOptions } from './client-options.js';
import { Connection } from './connection.js';
import { currentPlatform, type ClientPlatform } from './platform.js';
import { RemoteFileAccessor, type RemoteContext } from './remote-accessor.js';

/** A service file this client opened, and its feed into the client's change queue while monitoring. */
interface OpenFile {
  readonly vf: VirtualVariableFile;
  readonly accessor: FileAccessor;
  stopWatch: (() => void) | undefined;
}

const noop = (): void => {};

/**
 * A connection to a Commy server, authenticated to one or more tenants. Its service files are local
 * (the server's file mapped into this process, when on the same machine) or remote (a buffer synced over
 * the WebSocket); the application sees the same VirtualVariableFile either way.
 */
export class Client {
  readonly url: string;
  private readonly options: ResolvedClientOptions;
  private conn: Connection | undefined;
  private remote: RemoteContext | undefined;
  private connecting: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private stateValue: ClientState = 'connecting';
  private serverHostId: string | undefined;
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

  /** 'connecting' until connect() succeeds, 'open', then 'closed' after close() or a lost connection. */
  get state(): ClientState {
    return this.stateValue;
  }

  /** Opens the WebSocket (NOT_CONNECTED or TIMEOUT when it cannot). */
  connect(): Promise<void> {
    if (this.closing !== undefined) return Promise.reject(this.closedError());
    this.connecting ??= this.open().catch((err: unknown) => {
      this.stateValue = 'closed';
      throw err;
    });
    return this.connecting;
  }

  private async open(): Promise<void> {
    const o = this.options;
    const conn = await Connection.open(this.url, this.platform.openTransport, {
      requestTimeoutMs: o.requestTimeoutMs,
      maxFrameBytes: o.maxFrameBytes,
      maxIncomingBytes: o.maxIncomingBytes,
      ...(o.tls !== undefined ? { tls: o.tls } : {}),
      onPush: (m) => this.onPush(m),
      onClosed: (reason) => this.onConnectionLost(reason),
      onError: o.onError,
    });
    this.conn = conn;
    this.remote = {
      conn,
      maxFrameBytes: o.maxFrameBytes,
      maxChangesPerReport: MAX_CHANGES_PER_REPORT,
      diff: this.platform.diff,
      onError: o.onError,
      route: (sid, accessor) => (accessor !== undefined ? this.routes.set(sid, accessor) : this.routes.delete(sid)),
    };
    this.stateValue = 'open';
  }

  /** Authenticates this connection to a tenant (once per tenant; a connection may hold several). */
  async authenticate(tenant: string, credentials: AuthCredentials): Promise<void> {
    assertValidName(tenant, 'tenant name');
    const credential = credentialOf(credentials);
    const reply = await this.connection().request(
      'Authenticate',
      { tenant, method: credentials.method, credential, protocol: PROTOCOL_VERSION },
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
      try {
        return await attach({
          conn,
          tenant,
          service,
          serverHostId: this.serverHostId,
          route: (sid, onUpdated) => (onUpdated !== undefined ? this.notices.set(sid, onUpdated) : this.notices.delete(sid)),
          onError: this.options.onError,
        });
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
    await this.connection().request('WriteVariable', { tenant, service, name, value: bytes }, 'VariableChangesAcknowledged');
  }

  /** Flushes and closes every service file of this client, then the connection. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    await this.connecting?.catch(noop);
    await this.stopFileMonitoring();
    const files = [...this.files];
    this.files.clear();
    await Promise.allSettled(files.map((f) => f.vf.close()));
    this.inbox.end(this.closedError());
    this.stateValue = 'closed';
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
   * The server went away: remote service files stop (NOT_CONNECTED), waits end. Local service files are
   * the server's files mapped here and keep working until close() (read-only ones without change events:
   * those came from the server). Reconnection comes in a later version.
   */
  private onConnectionLost(reason: CommyError): void {
    this.stateValue = 'closed';
    for (const accessor of [...this.routes.values()]) accessor.detach(reason);
    this.routes.clear();
    this.notices.clear();
    this.inbox.end(reason);
    if (this.closing === undefined) this.options.onError(reason);
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
