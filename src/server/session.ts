import { randomBytes } from 'node:crypto';
import type { WebSocket } from 'ws';
import { CommyError, ErrorCode } from '../core/errors.js';
import { hostId } from '../core/host-id.js';
import { assertValidName } from '../core/names.js';
import { encodeError, encodeFrame } from '../protocol/frame-codec.js';
import { DEFAULT_LOCK_POLICY } from '../local/process-lock.js';
import type { BUSY } from '../local/service-file.js';
import { CloseCode, PROTOCOL_VERSION, type Message, type MessageOf, type MessageTypeName } from '../protocol/messages.js';
import { getServiceFilePath, registerVariable, subscribe, unsubscribe } from './handlers/services.js';
import { readVariable, reportChanges, writeVariable } from './handlers/values.js';
import type { AuditLog } from './audit.js';
import type { Authenticator } from './auth.js';
import { Connection, type MessageHandler } from './connection.js';
import type { Limits } from './limits.js';
import { Permissions, type Action } from './permissions.js';
import { untilNotBusy } from './busy-retry.js';
import type { ServiceHost, Subscriber } from './service-host.js';
import type { ServiceRegistry } from './service-registry.js';

export interface SessionContext {
  registry: ServiceRegistry;
  authenticator: Authenticator;
  audit: AuditLog;
  limits: Limits;
  onError(err: unknown): void;
  /**
   * This connection's admission (admission.ts Ticket): `source` is its address as the per-address limits and
   * the auth throttle count it (taken from the socket); authenticated() moves it out of the unauthenticated pool.
   */
  peer: { readonly source: string; authenticated(): void };
}

const MAX_FAILED_AUTH = 5;
let nextClient = 1;

export type Reply = Uint8Array | undefined;
type Handler<K extends MessageTypeName> = (session: Session, m: MessageOf<K>) => Promise<Reply> | Reply;

/** Each request type's handler (handlers/, one module per concern); Authenticate is the session's own. */
const HANDLERS: { [K in MessageTypeName]?: Handler<K> } = {
  GetServiceFilePath: getServiceFilePath,
  Subscription: subscribe,
  Unsubscribe: unsubscribe,
  RegisterVariable: registerVariable,
  ReadVariable: readVariable,
  WriteVariable: writeVariable,
  ReportVariableChanges: reportChanges,
};

/**
 * What one connection may do and holds: authentication first, then every message checked against the key's
 * grants for its tenant and service. Its Connection hands it messages one at a time, in order (a pipelined
 * request waits for the authentication before it); the handlers in handlers/ answer them, with the checks below.
 */
export class Session implements MessageHandler {
  readonly clientId = `c${nextClient++}-${randomBytes(4).toString('hex')}`;
  private readonly grants = new Map<string, Permissions>();
  readonly subscriptions = new Map<number, Subscriber>();
  /** Services this connection was handed the file of (GetServiceFilePath): held open until it closes. */
  private readonly leases = new Set<ServiceHost>();
  private nextSid = 1;
  private failedAuth = 0;
  private authTimer: NodeJS.Timeout | undefined;
  readonly conn: Connection;

  constructor(ws: WebSocket, readonly ctx: SessionContext) {
    this.conn = new Connection(ws, { limits: ctx.limits, redact: ctx.registry.root, onError: ctx.onError });
    this.conn.attach(this);
    this.conn.onClose(() => this.cleanup());
    this.authTimer = setTimeout(() => this.authExpired(), ctx.limits.authTimeoutMs);
  }

  get authenticated(): boolean {
    return this.grants.size > 0;
  }

  handle(m: Message): Promise<Reply> | Reply {
    if (m.type === 'Authenticate') return this.authenticate(m);
    if (!this.authenticated) throw new CommyError(ErrorCode.AUTH_FAILED, 'authenticate first');
    const handler = HANDLERS[m.type] as Handler<typeof m.type> | undefined;
    if (handler !== undefined) return handler(this, m as never);
    if (m.type === 'Mutate' || m.type === 'Query' || m.type === 'QueryCancel') {
      throw new CommyError(ErrorCode.UNKNOWN_MESSAGE, `${m.type} is not supported by this server yet`);
    }
    throw new CommyError(ErrorCode.INVALID_MESSAGE, `${m.type} is a server-to-client message`);
  }

  // ---- authentication ---------------------------------------------------------------------------

  private async authenticate(m: MessageOf<'Authenticate'>): Promise<Reply> {
    const { tenant, method, credential, protocol } = m.body;
    if (protocol !== PROTOCOL_VERSION) {
      throw new CommyError(ErrorCode.INVALID_MESSAGE, `protocol ${protocol} is not supported; this server speaks ${PROTOCOL_VERSION}`);
    }
    let perms: Permissions;
    try {
      const grants = await this.ctx.authenticator.authenticate(tenant, method, credential, this.ctx.peer.source);
      // Globs past the pattern limits (a token carrying thousands) are refused like a bad credential.
      perms = new Permissions(grants, this.ctx.limits);
    } catch (err) {
      if (++this.failedAuth >= MAX_FAILED_AUTH) setImmediate(() => this.conn.close(CloseCode.AUTH_FAILED, 'too many failed authentications'));
      throw err;
    }
    this.grants.set(tenant, perms);
    this.ctx.peer.authenticated();
    clearTimeout(this.authTimer);
    this.authTimer = undefined;
    return encodeFrame('Authenticated', m.id, {
      clientId: this.clientId,
      hostId: hostId(),
      protocol: PROTOCOL_VERSION,
      keyId: perms.grants.keyId,
      maxChangesPerReport: this.ctx.limits.maxChangesPerReport,
    });
  }

  private authExpired(): void {
    this.authTimer = undefined;
    if (this.grants.size > 0) return;
    this.conn.send(encodeError(0, ErrorCode.AUTH_FAILED, `no successful authentication within ${this.ctx.limits.authTimeoutMs} ms`));
    this.conn.close(CloseCode.AUTH_TIMEOUT, 'authentication timeout');
  }

  /** The key's grants for this tenant, checked for `action` on `service`. */
  check(tenant: string, service: string, action: Action): Permissions {
    this.assertName(tenant, 'tenant name');
    this.assertName(service, 'service name');
    const perms = this.grants.get(tenant);
    if (perms === undefined) throw new CommyError(ErrorCode.PERMISSION_DENIED, `this connection is not authenticated for tenant ${tenant}`);
    if (!perms.can(action, service)) throw new CommyError(ErrorCode.PERMISSION_DENIED, `key ${perms.grants.keyId} may not ${action} ${tenant}/${service}`);
    return perms;
  }

  /** A valid name within the configured length limit (which may be below the format's 64). */
  assertName(name: string, what: string): void {
    assertValidName(name, what);
    const max = this.ctx.limits.maxNameLength;
    if (name.length > max) throw new CommyError(ErrorCode.INVALID_NAME, `${what} ${JSON.stringify(name)} is longer than ${max} characters`);
  }

  keyId(tenant: string): string {
    return this.grants.get(tenant)?.grants.keyId ?? '';
  }

  /** Opens the service; creating it needs admin (checked only when it does not exist yet). */
  host(tenant: string, service: string, create: boolean) {
    const registry = this.ctx.registry;
    if (!create || registry.exists(tenant, service)) return registry.get(tenant, service, false);
    this.check(tenant, service, 'admin');
    const host = registry.get(tenant, service, true);
    this.ctx.audit.record({ event: 'ServiceCreated', clientId: this.clientId, keyId: this.keyId(tenant), tenant, service });
    return host;
  }

  // ---- services ---------------------------------------------------------------------------------

  /**
   * A local client's connection holds the service open while it lives: the server's watcher then sees (and
   * audits, and forwards) that client's writes. At most maxSubscriptionsPerConnection services per connection.
   */
  lease(host: ServiceHost): void {
    if (this.leases.has(host)) return;
    if (this.leases.size >= this.ctx.limits.maxSubscriptionsPerConnection) {
      throw new CommyError(ErrorCode.RATE_LIMITED, `at most ${this.ctx.limits.maxSubscriptionsPerConnection} mapped services per connection`);
    }
    this.ctx.registry.retain(host);
    this.leases.add(host);
  }

  subscription(sid: number, action: Action): Subscriber {
    const sub = this.subscriptions.get(sid);
    if (sub === undefined) throw new CommyError(ErrorCode.SERVICE_NOT_FOUND, `no subscription ${sid} on this connection`);
    if (sub.closed) throw sub.host.broken ?? new CommyError(ErrorCode.SERVICE_NOT_FOUND, `subscription ${sid} has ended`);
    this.check(sub.host.tenant, sub.host.service, action);
    return sub;
  }

  // ---- values -----------------------------------------------------------------------------------

  /** Retries `attempt` while another process holds what it needs, without blocking the event loop. */
  whenFree<T>(attempt: () => T | typeof BUSY, what: string): Promise<T> {
    return untilNotBusy(attempt, what, DEFAULT_LOCK_POLICY.timeoutMs, () => this.conn.open);
  }

  /** Ends a subscription and lets its service go idle. */
  drop(sub: Subscriber): void {
    sub.host.unsubscribe(sub);
    this.ctx.registry.release(sub.host);
  }

  /** Runs `use` with the service held open (a request that awaits must not see it closed under it). */
  async withService<T>(tenant: string, service: string, use: (host: ServiceHost) => Promise<T>): Promise<T> {
    const host = this.ctx.registry.acquire(tenant, service, false);
    try {
      return await use(host);
    } finally {
      this.ctx.registry.release(host);
    }
  }

  private cleanup(): void {
    clearTimeout(this.authTimer);
    this.conn.dispose();
    for (const sub of this.subscriptions.values()) this.drop(sub);
    this.subscriptions.clear();
    for (const host of this.leases) this.ctx.registry.release(host);
    this.leases.clear();
  }

  /** The next subscription id of this connection. */
  newSid(): number {
    return this.nextSid++;
  }

  close(code: number, reason: string): void {
    this.conn.close(code, reason);
  }
}
