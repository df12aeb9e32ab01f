import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { CommyError, ErrorCode } from '../core/errors.js';
import { CloseCode } from '../protocol/messages.js';
import { createAuditLog, type AuditLog } from './audit.js';
import { Authenticator } from './auth.js';
import { isServerConfig, loadConfig, type ServerConfig } from './config.js';
import type { Limits } from './limits.js';
import { ServiceRegistry } from './service-registry.js';
import { Session } from './session.js';
import { loadTls, type TlsMaterial } from './tls.js';

export interface ServerOptions {
  host?: string;
  port?: number;
  dataDir?: string;
  /** A config object, a path to a JSON config file, or an already loaded ServerConfig. */
  config?: string | Record<string, unknown> | ServerConfig;
  /** PEM material; overrides config.tls (e.g. from selfSignedTls()). */
  tls?: TlsMaterial;
  limits?: Partial<Limits>;
  tick?: 'immediate' | number;
  /** Called with unexpected internal errors (default: printed to stderr). */
  onError?: (err: unknown) => void;
}

/** Frames past this multiple of the frame limit are cut off by the WebSocket layer (close 1009), unread. */
const HARD_FRAME_FACTOR = 4;

/**
 * The Commy server: one HTTP(S) port for WebSocket clients (and, later, health, metrics and the inspector).
 * Embeddable: `const server = await Server.start(options)`, `server.url`, `await server.close()`.
 */
export class Server {
  readonly config: ServerConfig;
  private readonly sessions = new Set<Session>();
  private closing: Promise<void> | undefined;

  private constructor(
    config: ServerConfig,
    private readonly http: HttpServer,
    private readonly wss: WebSocketServer,
    private readonly registry: ServiceRegistry,
    private readonly audit: AuditLog,
    private readonly secure: boolean,
  ) {
    this.config = config;
  }

  static async start(options: ServerOptions = {}): Promise<Server> {
    const config = resolveConfig(options);
    const tls = options.tls ?? (config.tls !== undefined ? loadTls(config.tls) : undefined);
    const handler = (req: IncomingMessage, res: ServerResponse) => httpRoute(req, res);
    const http = tls ? createHttpsServer({ cert: tls.cert, key: tls.key }, handler) : createHttpServer(handler);
    const wss = new WebSocketServer({ noServer: true, maxPayload: config.limits.maxFrameBytes * HARD_FRAME_FACTOR, perMessageDeflate: false });
    const registry = new ServiceRegistry(config.dataDir, config.limits, {
      tick: config.tick,
      maxBufferedBytes: config.limits.maxBufferedBytes,
      maxFrameBytes: config.limits.maxFrameBytes,
    });
    const audit = createAuditLog({ enabled: config.audit.enabled, file: auditFile(config) });
    const server = new Server(config, http, wss, registry, audit, tls !== undefined);
    const onError = options.onError ?? ((err: unknown) => console.error('commy server:', err));
    const authenticator = new Authenticator(config.tenants);
    http.on('upgrade', (req, socket, head) => server.upgrade(req, socket as Socket, head, { registry, authenticator, audit, limits: config.limits, onError }));
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(config.port, config.host, () => {
        http.off('error', reject);
        resolve();
      });
    });
    return server;
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

  get connectionCount(): number {
    return this.sessions.size;
  }

  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer, ctx: ConstructorParameters<typeof Session>[1]): void {
    if (this.closing !== undefined || this.sessions.size >= this.config.limits.maxConnections) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      const session = new Session(ws, ctx);
      this.sessions.add(session);
      ws.on('close', () => this.sessions.delete(session));
    });
  }

  /** Closes every connection (1001), stops listening, closes every service file. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const s of this.sessions) s.close(CloseCode.GOING_AWAY, 'server closing');
      await new Promise<void>((resolve) => this.wss.close(() => resolve()));
      this.http.closeAllConnections?.();
      await new Promise<void>((resolve) => this.http.close(() => resolve()));
      this.registry.close();
      await this.audit.close();
    })();
    return this.closing;
  }
}

/** The audit file: as configured, `<dataDir>/audit.log` by default; "-" (stdout) becomes undefined. */
function auditFile(config: ServerConfig): string | undefined {
  const file = config.audit.file ?? join(resolve(config.dataDir), 'audit.log');
  return file === '-' ? undefined : file;
}

function resolveConfig(options: ServerOptions): ServerConfig {
  const base = isServerConfig(options.config) ? options.config : loadConfig(options.config);
  const config: ServerConfig = {
    ...base,
    host: options.host ?? base.host,
    port: options.port ?? base.port,
    dataDir: options.dataDir ?? base.dataDir,
    tick: options.tick ?? base.tick,
    limits: { ...base.limits, ...options.limits },
  };
  if (!Number.isInteger(config.port) || config.port < 0 || config.port > 65535) {
    throw new CommyError(ErrorCode.CONFIG_INVALID, `port must be 0..65535, got ${config.port}`);
  }
  return config;
}

/** Plain HTTP on the WebSocket port: health now; metrics and the inspector come later. */
function httpRoute(req: IncomingMessage, res: ServerResponse): void {
  if (req.method === 'GET' && (req.url === '/healthz' || req.url === '/readyz')) {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
}
