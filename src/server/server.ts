import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { WebSocketServer, type Server as WsServer, type ServerOptions as WsServerOptions, type WebSocket } from 'ws';
import { CommyError, ErrorCode } from '../core/errors.js';
import { CloseCode } from '../protocol/messages.js';
import { createAuditLog, type AuditLog } from './audit.js';
import { Admission, type AdmissionCounts, type Refusal, type Ticket } from './admission.js';
import { Authenticator, type AuthStats } from './auth.js';
import type { ThrottlePolicy } from './auth-throttle.js';
import { assertLimitsAgree, isServerConfig, readConfig, withLimits, type LimitsInput, type ServerConfig } from './config.js';
import { DEFAULT_DURABILITY, type DurabilityMode } from './durability.js';
import { filePolicyOf } from './file-policy.js';
import { Connection, type ConnectionOptions } from './connection.js';
import { routeHttp, type ServerState } from './http-routes.js';
import { createServerLogger, type Logger } from './logger.js';
import { LogBudget } from './log-budget.js';
import { ServerMetrics } from './metrics.js';
import { ensurePrivateDir } from './data-dir.js';
import { settleWrites } from './op-record.js';
import { OpLedger, type OpJournalOptions } from './op-ledger.js';
import type { ClusterNode } from '../cluster/cluster-node.js';
import type { ServiceHost } from './service-host.js';
import { ServiceRegistry } from './service-registry.js';
import { ServerSocket } from './server-socket.js';
import { Session, type SessionContext } from './session.js';
import { PermissionsCache } from './permissions.js';
import { loadTls, type TlsMaterial } from './tls.js';
import { TurnBudget } from './turn-budget.js';

export interface ServerOptions {
  host?: string;
  port?: number;
  dataDir?: string;
  /** A config object, a path to a JSON config file, or an already loaded ServerConfig. */
  config?: string | Record<string, unknown> | ServerConfig;
  /** PEM material; overrides config.tls (e.g. from selfSignedTls()). */
  tls?: TlsMaterial;
  /** Any subset, `rateLimit` too; checked like the config file's `limits` (CONFIG_INVALID naming the field). */
  limits?: LimitsInput;
  tick?: 'immediate' | number;
  /** Overrides config.durability: when acknowledged writes reach the disk (docs/operations.md, Durability). */
  durability?: DurabilityMode;
  /** Overrides config.syncIntervalMs: the period of `periodic` syncs. */
  syncIntervalMs?: number;
  /** Called with unexpected internal errors (default: logged at error level). */
  onError?: (err: unknown) => void;
  /** The server's log (a pino logger); default: JSON lines on stderr at level info. */
  logger?: Logger;
  /** Overrides of the failed-authentication back-off (auth-throttle.ts DEFAULT_THROTTLE); for tests and tuning. */
  authThrottle?: Partial<ThrottlePolicy>;
}

/** An evicted connection gets its close frame; if it does not answer it, it is cut off after this. */
const EVICT_GRACE_MS = 1000;
/** At close(), requests already queued or running are answered for up to this long before the connections close. */
const SHUTDOWN_DRAIN_MS = 5000;
/** At close(), a client that has not answered its close frame after this is cut off. */
const CLOSE_GRACE_MS = 1000;

/** Frames past this multiple of the frame limit are cut off by the WebSocket layer (close 1009), unread. */
const HARD_FRAME_FACTOR = 4;
/** Request handling per event-loop turn, all connections together, before the loop polls I/O again (turn-budget.ts). */
const TURN_SLICE_MS = 2;

/**
 * The Commy server: one HTTP(S) port for WebSocket clients (and, later, health, metrics and the inspector).
 * Embeddable: `const server = await Server.start(options)`, `server.url`, `await server.close()`.
 */
export class Server implements ServerState {
  readonly config: ServerConfig;
  /** Open connections (until their closing begins): their sessions and sockets. */
  private readonly sockets = new Map<Session, WebSocket>();
  /** Sockets whose closing has begun, until they are gone (close() cuts them off too). */
  private readonly closingSockets = new Set<WebSocket>();
  /** Log lines clients can cause at will (refusals, evictions, failed authentications), rate-limited. */
  private readonly clientLines: LogBudget;
  /** Who holds a connection: counts per pool and per source, checked at every upgrade. */
  private readonly admission: Admission;
  private closingPromise: Promise<void> | undefined;

  private constructor(
    config: ServerConfig,
    private readonly http: HttpServer,
    private readonly wss: WsServer<typeof ServerSocket>,
    private readonly registry: ServiceRegistry,
    private readonly audit: AuditLog,
    private readonly secure: boolean,
    private readonly authenticator: Authenticator,
    private readonly log: Logger,
    /** Prometheus metrics, served at GET /metrics. */
    readonly metrics: ServerMetrics,
    clientLines: LogBudget,
    private readonly ledger: OpLedger,
    /** This server as a cluster node (config `cluster`); undefined on a single server. */
    private readonly cluster: ClusterNode | undefined,
  ) {
    this.config = config;
    this.admission = new Admission(config.limits);
    this.clientLines = clientLines;
  }

  static async start(options: ServerOptions = {}): Promise<Server> {
    const config = resolveConfig(options);
    const tls = options.tls ?? (config.tls !== undefined ? loadTls(config.tls) : undefined);
    // A socket that never finishes its HTTP request (so never reaches the upgrade and its admission) is bounded
    // too: its headers must come within the authentication deadline, and the process holds a fixed number of
    // sockets at most.
    const httpOptions = {
      headersTimeout: config.limits.authTimeoutMs,
      requestTimeout: config.limits.authTimeoutMs * 2,
      connectionsCheckingInterval: Math.min(1000, config.limits.authTimeoutMs),
    };
    const http = tls ? createHttpsServer({ ...httpOptions, cert: tls.cert, key: tls.key }) : createHttpServer(httpOptions);
    http.maxConnections = config.limits.maxConnections + config.limits.maxUnauthenticatedConnections;
    const wss = new WebSocketServer(wsOptions(config));
    const policies = new Map(Object.entries(config.tenants).flatMap(([t, c]) => {
      const policy = filePolicyOf(c.files);
      return policy === undefined ? [] : [[t, policy] as const];
    }));
    const logger = options.logger ?? createServerLogger(config.logLevel);
    const onError = options.onError ?? ((err: unknown) => logger.error({ err }, 'internal error'));
    // Read at scrape time from the server made below.
    let server: Server | undefined;
    let registry: ServiceRegistry | undefined;
    const metrics: ServerMetrics = new ServerMetrics({
      connections: () => {
        const counts = server?.admissionCounts;
        return { all: counts?.connections ?? 0, unauthenticated: counts?.unauthenticated ?? 0 };
      },
      outputBuffered: () => server?.outputBuffered() ?? { max: 0, sum: 0 },
      tenants: () => registry?.openByTenant() ?? new Map(),
      syncs: () => registry?.syncs ?? 0,
    });
    registry = new ServiceRegistry(config.dataDir, config.limits, {
      metrics,
      tick: config.tick,
      maxFrameBytes: config.limits.maxFrameBytes,
      onError,
      onLocalWrite: (host, pid, variables) => {
        audit.record({ event: 'LocalVariablesChanged', clientId: '', keyId: '', tenant: host.tenant, service: host.service, variables, pid });
        cluster?.localWrites(host, variables); // a local process's write reaches the other nodes through the stream
      },
    }, policies, { mode: config.durability, intervalMs: config.syncIntervalMs });
    const audit = createAuditLog({
      enabled: config.audit.enabled,
      file: auditFile(config),
      ...(config.audit.maxBytes !== undefined ? { maxBytes: config.audit.maxBytes } : {}),
      ...(config.audit.maxFiles !== undefined ? { maxFiles: config.audit.maxFiles } : {}),
      logger,
    });
    const authenticator = new Authenticator(config.tenants, {
      maxConcurrentAuth: config.limits.maxConcurrentAuth,
      ...(options.authThrottle !== undefined ? { throttle: options.authThrottle } : {}),
    });
    const ledger = OpLedger.of(config.limits, opJournal(config, registry, logger));
    // Loaded only for a cluster: a single server never loads the Redis client.
    const cluster = config.cluster === undefined ? undefined : new (await import('../cluster/cluster-node.js')).ClusterNode(config.cluster, registry, logger, metrics.registry, (t) => Object.hasOwn(config.tenants, t));
    const clientLines = new LogBudget(logger);
    const made = (server = new Server(config, http, wss, registry, audit, tls !== undefined, authenticator, logger, metrics, clientLines, ledger, cluster));
    http.on('request', (req: IncomingMessage, res: ServerResponse) => routeHttp(req, res, made));
    // Admission at the TCP connection, not the upgrade: a socket that never sends a request is counted too.
    http.on('connection', (socket: Socket) => made.admit(socket));
    // Made once and shared by every connection: per-connection objects are what an idle connection costs.
    const permissions = new PermissionsCache(config.limits);
    const ctx: SessionContext = { registry, authenticator, permissions, audit, ledger, limits: config.limits, onError, ended: (s) => made.ended(s), log: logger, clientLines, metrics, ...(cluster !== undefined ? { cluster } : {}) };
    const wire: ConnectionOptions = { limits: config.limits, redact: registry.root, onError, turns: new TurnBudget(TURN_SLICE_MS), metrics };
    http.on('upgrade', (req, socket, head) => made.upgrade(req, socket as Socket, head, ctx, wire));
    try {
      await new Promise<void>((resolve, reject) => {
        http.once('error', reject);
        http.listen(config.port, config.host, () => {
          http.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      await cluster?.close(); // its Redis connections would keep the process alive, reconnecting
      throw err;
    }
    return made;
  }

  get closing(): boolean {
    return this.closingPromise !== undefined;
  }

  /** Subscriptions held by all connections. */
  get subscriptionCount(): number {
    let n = 0;
    for (const session of this.sockets.keys()) n += session.subscriptions.size;
    return n;
  }

  /**
   * What the subscriptions of all connections hold between two broadcasts: variables owed an update, marks of
   * their own acknowledged writes (not echoed back), removals to pass on. For tests and metrics: each is bounded
   * by the variables a subscription covers.
   */
  get subscriptionMarks(): { dirty: number; own: number; removed: number } {
    const marks = { dirty: 0, own: 0, removed: 0 };
    for (const session of this.sockets.keys()) {
      for (const sub of session.subscriptions.values()) {
        marks.dirty += sub.dirty.size;
        marks.own += sub.own.size;
        marks.removed += sub.removed.size;
      }
    }
    return marks;
  }

  get openServices(): number {
    return this.registry.openCount;
  }

  /** `ws://host:port` or `wss://host:port`. */
  get url(): string {
    const addr = this.http.address() as AddressInfo;
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    return `${this.secure ? 'wss' : 'ws'}://${host}:${addr.port}`;
  }

  get port(): number {
    return (this.http.address() as AddressInfo).port;
  }

  /** Connections open and not closing. */
  /** Does `req` carry the configured metrics token? Never, when none is configured. Compared in constant time. */
  metricsTokenOf(req: IncomingMessage): boolean {
    const token = this.config.metricsToken;
    const given = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (token === undefined || given === undefined) return false;
    const a = createHash('sha256').update(token).digest();
    const b = createHash('sha256').update(given).digest();
    return timingSafeEqual(a, b);
  }

  /** Bytes queued unsent on the connections' sockets: the largest and the total (for the metrics). */
  outputBuffered(): { max: number; sum: number } {
    let max = 0;
    let sum = 0;
    for (const ws of this.sockets.values()) {
      const n = ws.bufferedAmount;
      sum += n;
      if (n > max) max = n;
    }
    return { max, sum };
  }

  /** Service files synced to disk so far (docs/operations.md, Durability). */
  get syncCount(): number {
    return this.registry.syncs;
  }

  get connectionCount(): number {
    return this.sockets.size;
  }

  /** Connections held (from the upgrade until the socket closes), how many are unauthenticated, from how many sources. */
  get admissionCounts(): AdmissionCounts {
    return this.admission.counts;
  }

  /** scrypt runs and the verification queue (auth.ts AuthStats). */
  get authStats(): AuthStats {
    return this.authenticator.stats;
  }

  /**
   * Admission happens when the TCP connection arrives, before any byte of it is read: a refused one costs a 503
   * (plain HTTP) or a reset (TLS) and nothing else, and a socket that never sends a request holds a place in
   * the unauthenticated pool like any other. An admitted one holds its ticket until its socket closes, however
   * that happens (request never sent, handshake aborted, error, eviction, normal close), so the counts always
   * return to zero.
   */
  private admit(socket: Socket): void {
    // The address comes from the socket, never from a header a client could write.
    const address = socket.remoteAddress;
    if (this.closingPromise !== undefined || socket.destroyed || address === undefined) {
      socket.destroy();
      return;
    }
    const ticket = this.admission.admit(address);
    if (!isTicket(ticket)) {
      this.clientLines.info({ event: 'refused', ip: address, limit: ticket.limit }, 'connection refused');
      // Under TLS nothing readable can be said before the handshake: the refusal is the reset.
      if (this.secure) socket.destroy();
      else refuseUpgrade(socket, ticket.limit, ticket.message);
      return;
    }
    // The upgrade sees the TLS socket, not this one: the remote address and port name the connection.
    if (!this.admission.park(socketKey(socket), ticket)) {
      // The same remote address and port to another of our addresses at once (a client binding its source port
      // on purpose): one of the two could get the other's ticket, so the newcomer is refused.
      ticket.release();
      socket.destroy();
      return;
    }
    ticket.onEvict = () => socket.destroy();
    (socket as Admitted)[TICKET] = ticket;
    socket.on('close', releaseTicket);
  }

  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer, ctx: SessionContext, wire: ConnectionOptions): void {
    const ticket = this.admission.claim(socketKey(socket)); // the connection holds its ticket from here on
    if (this.closingPromise !== undefined || ticket === undefined) {
      refuseUpgrade(socket, 'closing', 'server closing');
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws: ServerSocket) => {
      const conn = new Connection(ws, wire);
      const session = new Session(conn, ctx, ticket);
      conn.attach(session);
      ws.watchClosing(socket, conn);
      ticket.onEvict = () => {
        this.clientLines.info({ event: 'evicted', conn: session.clientId, ip: ticket.source }, 'unauthenticated connection evicted for a newcomer');
        evict(ws);
      };
      this.sockets.set(session, ws); // until Session.closed() calls ctx.ended (the ticket goes with the TCP socket)
    });
  }

  /** A session's connection began closing (whatever closed it): its socket is kept for close() until it is gone. */
  private ended(session: Session): void {
    const ws = this.sockets.get(session);
    this.sockets.delete(session);
    if (ws === undefined || ws.readyState === ws.CLOSED) return;
    this.closingSockets.add(ws);
    ws.once('close', () => this.closingSockets.delete(ws));
  }

  /**
   * A graceful stop (SIGTERM, SIGINT): stops accepting connections, answers the requests already queued or running
   * (for up to SHUTDOWN_DRAIN_MS), lets pending broadcasts go out, closes every connection (1001: clients
   * reconnect to the next server by themselves), then syncs and closes every service file and the audit log.
   * Idempotent.
   */
  close(): Promise<void> {
    this.closingPromise ??= (async () => {
      this.http.close(); // no new connection (admit() refuses them too); existing ones go on below
      await this.drain();
      await this.closeSockets();
      await new Promise<void>((resolve) => this.wss.close(() => resolve()));
      this.http.closeAllConnections?.();
      await new Promise<void>((resolve) => this.http.close(() => resolve()));
      await this.cluster?.close(); // before the files: no entry is applied into a closed one
      await this.registry.close(); // every file written since its last sync is synced first
      await this.ledger.close();
      await this.audit.close();
    })();
    return this.closingPromise;
  }

  /** Waits (at most SHUTDOWN_DRAIN_MS) until no connection has a request queued or running, then a turn for the broadcasts. */
  private async drain(): Promise<void> {
    const deadline = performance.now() + SHUTDOWN_DRAIN_MS;
    while ([...this.sockets.keys()].some((s) => s.link.busy === true) && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    for (let turn = 0; turn < 2; turn++) await new Promise((resolve) => setImmediate(resolve)); // the broadcasters' rounds
  }

  /** Every connection gets its close frame (1001); one that has not answered within the grace is cut off. */
  private async closeSockets(): Promise<void> {
    const open = [...this.sockets.values(), ...this.closingSockets];
    const closed = open.map((ws) => new Promise<void>((resolve) => (ws.readyState === ws.CLOSED ? resolve() : ws.once('close', () => resolve()))));
    for (const ws of open) ws.close(CloseCode.GOING_AWAY, 'server closing');
    const grace = setTimeout(() => {
      for (const ws of open) ws.terminate();
    }, CLOSE_GRACE_MS);
    await Promise.all(closed);
    clearTimeout(grace);
  }
}

/**
 * The WebSocket layer's options: frames past HARD_FRAME_FACTOR × the limit are cut off unread, sockets are
 * ServerSockets (closing is seen as it begins) and ws's own close timeout is closeGraceMs too (for a closing
 * the connection does not see begin, e.g. a failed write).
 */
function wsOptions(config: ServerConfig): WsServerOptions<typeof ServerSocket> & { closeTimeout: number } {
  return {
    noServer: true,
    clientTracking: false,
    maxPayload: config.limits.maxFrameBytes * HARD_FRAME_FACTOR,
    perMessageDeflate: false,
    WebSocket: ServerSocket,
    closeTimeout: config.limits.closeGraceMs, // in ws 8.23, not yet in @types/ws
  };
}

/**
 * The remote address and port: with one listening port, they name a connection. (Not the local port: reading it
 * makes Node keep the local address on every socket, ~90 bytes per idle connection.)
 */
function socketKey(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
}

/** An admitted TCP socket carries its ticket: the close listener that gives it back is one shared function. */
const TICKET: unique symbol = Symbol('commy.ticket');
type Admitted = Socket & { [TICKET]?: Ticket };

function releaseTicket(this: Socket): void {
  (this as Admitted)[TICKET]?.release();
}

function isTicket(admitted: Ticket | Refusal): admitted is Ticket {
  return !('limit' in admitted);
}

/**
 * HTTP 503 before any WebSocket exists; `X-Commy-Refused` names the limit (or `closing`). The socket is
 * destroyed once the answer is flushed, as ws does, so a client that never reads cannot hold it.
 */
function refuseUpgrade(socket: Socket, limit: string, message: string): void {
  const body = `${message}\n`;
  socket.once('finish', () => socket.destroy());
  socket.end(
    'HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n' +
      `X-Commy-Refused: ${limit}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/** Closes an evicted unauthenticated connection (4003), cut off if it does not answer the close frame in time. */
function evict(ws: WebSocket): void {
  ws.close(CloseCode.TOO_MANY_CONNECTIONS, 'too many unauthenticated connections');
  setTimeout(() => ws.terminate(), EVICT_GRACE_MS).unref();
}

/**
 * The operation journals (op-journal.ts) in `<dataDir>/oplog`, synced as the service files are; a write a dead
 * server left unfinished is settled by its service file (settleWrites).
 */
function opJournal(config: ServerConfig, registry: ServiceRegistry, log: Logger): OpJournalOptions {
  const dir = join(resolve(config.dataDir), 'oplog');
  ensurePrivateDir(dir, ErrorCode.CONFIG_INVALID, 'operation journal directory');
  const settle: OpJournalOptions['settle'] = (tenant, service, changes) => {
    let host: ServiceHost;
    try {
      host = registry.acquire(tenant, service, false);
    } catch {
      return undefined; // the service is gone: nothing of it can be answered for
    }
    try {
      return settleWrites(host.file, changes);
    } finally {
      registry.release(host);
    }
  };
  return {
    dir,
    bytes: config.limits.opJournalBytes,
    durability: config.durability,
    intervalMs: config.syncIntervalMs,
    settle,
    onError: (tenant, err) => log.warn({ event: 'journal-unusable', tenant, err: String(err) }, 'operation journal unusable: operation ids are remembered in memory only'),
  };
}

/** The audit file: as configured, `<dataDir>/audit.log` by default; "-" (stdout) becomes undefined. */
function auditFile(config: ServerConfig): string | undefined {
  const file = config.audit.file ?? join(resolve(config.dataDir), 'audit.log');
  return file === '-' ? undefined : file;
}

function resolveConfig(options: ServerOptions): ServerConfig {
  // The limits are judged together once the options' own are applied: they may fix what the file alone gets wrong.
  const base = isServerConfig(options.config) ? options.config : readConfig(options.config);
  const config: ServerConfig = {
    ...base,
    host: options.host ?? base.host,
    port: options.port ?? base.port,
    dataDir: options.dataDir ?? base.dataDir,
    tick: options.tick ?? base.tick,
    logLevel: base.logLevel ?? 'info',
    durability: options.durability ?? base.durability ?? DEFAULT_DURABILITY.mode,
    syncIntervalMs: options.syncIntervalMs ?? base.syncIntervalMs ?? DEFAULT_DURABILITY.intervalMs,
    limits: options.limits === undefined ? base.limits : withLimits(base.limits, options.limits),
  };
  if (!Number.isInteger(config.port) || config.port < 0 || config.port > 65535) {
    throw new CommyError(ErrorCode.CONFIG_INVALID, `port must be 0..65535, got ${config.port}`);
  }
  assertLimitsAgree(config.limits);
  return config;
}
