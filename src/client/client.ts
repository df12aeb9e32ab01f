import { CommyError, ErrorCode } from '../core/errors.js';
import type { FileChangeEvent } from '../core/file-change-event.js';
import { assertValidName } from '../core/names.js';
import { queryPages, type QueryPage, type QuerySpec } from './query-stream.js';
import { VirtualVariableFile } from './virtual-variable-file.js';
import { credentialOf, type AuthCredentials } from './auth-credentials.js';
import type { WaitOptions } from './change-inbox.js';
import { clientClosedError } from './client-errors.js';
import { ClientLink } from './client-link.js';
import { resolveClientOptions, type ClientOptions, type ClientState } from './client-options.js';
import { checkEvent, ClientStateCell, type StateListener } from './client-state.js';
import { FileOpener } from './file-opener.js';
import { OpenFiles } from './open-files.js';
import { currentPlatform } from './platform.js';
import { PushRouter } from './push-router.js';

/**
 * A connection to a Commy server, authenticated to one or more tenants. Its service files are local
 * (the server's file mapped into this process, when on the same machine) or remote (a buffer synced over
 * the WebSocket); the application sees the same VirtualVariableFile either way.
 */
export class Client {
  readonly url: string;
  private readonly stateCell: ClientStateCell;
  private readonly files = new OpenFiles();
  private readonly link: ClientLink;
  private readonly opener: FileOpener;
  private closing: Promise<void> | undefined;

  constructor(url: string, options: ClientOptions = {}) {
    this.url = checkUrl(url);
    // The runtime (Node, a browser) comes from the package entry that was imported (platform.ts).
    const platform = currentPlatform();
    const resolved = resolveClientOptions(options, platform.warn);
    const router = new PushRouter(resolved.onError);
    this.stateCell = new ClientStateCell(resolved.onError);
    this.link = new ClientLink({
      url,
      options: resolved,
      platform,
      state: this.stateCell,
      router,
      files: this.files,
      isClosing: () => this.closing !== undefined,
    });
    this.opener = new FileOpener(resolved, platform, router, this.link);
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
    return this.stateCell.value;
  }

  /** `fn` hears every change of `state`, with the new state. */
  on(event: 'state', fn: StateListener): this {
    checkEvent(event, fn);
    this.stateCell.add(fn);
    return this;
  }

  off(event: 'state', fn: StateListener): this {
    checkEvent(event, fn);
    this.stateCell.remove(fn);
    return this;
  }

  /** Opens the WebSocket (NOT_CONNECTED or TIMEOUT when it cannot). */
  connect(): Promise<void> {
    return this.link.connect();
  }

  /** Authenticates this connection to a tenant (once per tenant; a connection may hold several). */
  async authenticate(tenant: string, credentials: AuthCredentials): Promise<void> {
    assertValidName(tenant, 'tenant name');
    credentialOf(credentials); // checked before anything goes out
    const auth = this.link.auth;
    await auth.authenticateOn(this.link.connection(), tenant, credentials);
    auth.remember(tenant, credentials);
  }

  /** Prepares the change queue; startFileMonitoring() starts filling it. */
  async initFileWatcher(): Promise<void> {
    this.assertUsable();
  }

  /** From now on, every change to any service file of this client is queued for waitForFileChange(). */
  async startFileMonitoring(): Promise<void> {
    this.assertUsable();
    this.files.startMonitoring();
  }

  /** Stops queueing changes; events already queued stay available to tryGetFileChange(). */
  async stopFileMonitoring(): Promise<void> {
    this.files.stopMonitoring();
  }

  /**
   * The service's variables, local when the server's file can be mapped here (see ClientOptions.mode),
   * remote otherwise. Creates the service if it does not exist and the key has the admin right.
   */
  async getVirtualServiceFile(tenant: string, service: string): Promise<VirtualVariableFile> {
    assertValidName(tenant, 'tenant name');
    assertValidName(service, 'service name');
    const conn = this.link.connection();
    const accessor = await this.opener.open(conn, tenant, service);
    if (this.closing !== undefined) {
      await accessor.close();
      throw clientClosedError();
    }
    const vf = new VirtualVariableFile(accessor);
    this.files.add(vf, accessor);
    return vf;
  }

  /**
   * The next change to any of this client's service files; null after `timeoutMs` without one. Aborting
   * `signal` rejects with ABORTED; a wait that ends either way consumes nothing.
   */
  waitForFileChange(options: WaitOptions = {}): Promise<FileChangeEvent | null> {
    if (this.closing === undefined && this.stateCell.value !== 'closed' && !this.files.monitoring) {
      return Promise.reject(new CommyError(ErrorCode.NOT_CONNECTED, 'file monitoring is not running: call startFileMonitoring() first'));
    }
    return this.files.inbox.take(options);
  }

  /** The next queued change, or null; never waits. */
  tryGetFileChange(): FileChangeEvent | null {
    return this.files.inbox.poll();
  }

  /** The old API: one variable's bytes, read by the server (a round trip each time). */
  async readVariable(tenant: string, service: string, name: string): Promise<Uint8Array> {
    checkNames(tenant, service, name);
    const reply = await this.link.connection().request('ReadVariable', { tenant, service, name }, 'VariableValue');
    return new Uint8Array(reply.value); // a plain copy, not a view of the received frame
  }

  /**
   * The tenant's services this key may read (filtered by `services` globs), with their variables (filtered by
   * `variables` globs) and, with `values: true`, their values, as pages streamed by the server:
   * `for await (const page of client.query({ tenant }, { signal })) {}`. Aborting `signal`, or leaving the
   * loop, sends QueryCancel and ends the iteration at once, even mid-stream.
   */
  query(spec: QuerySpec, options: { signal?: AbortSignal } = {}): AsyncIterableIterator<QueryPage> {
    return queryPages(this.link.connection(), spec, options.signal);
  }

  /** The old API: one variable written by the server; resolves once applied and visible to every client. */
  async writeVariable(tenant: string, service: string, name: string, bytes: Uint8Array): Promise<void> {
    checkNames(tenant, service, name);
    if (!(bytes instanceof Uint8Array)) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'writeVariable takes a Uint8Array');
    await this.link.connection().request('WriteVariable', { tenant, service, name, value: bytes, opId: this.link.nextOpId() }, 'VariableChangesAcknowledged');
  }

  /** Flushes and closes every service file of this client, then the connection. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.link.stopReconnecting();
    await this.link.settled();
    await this.stopFileMonitoring();
    await this.files.closeAll();
    this.files.inbox.end(clientClosedError());
    this.stateCell.set('closed');
    await this.link.close();
  }

  private assertUsable(): void {
    if (this.closing !== undefined) throw clientClosedError();
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

function checkNames(tenant: string, service: string, name: string): void {
  assertValidName(tenant, 'tenant name');
  assertValidName(service, 'service name');
  assertValidName(name, 'variable name');
}
