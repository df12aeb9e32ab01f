import { randomBytes } from 'node:crypto';
import type { ClusterNode } from '../cluster/cluster-node.js';
import { CommyError, ErrorCode } from '../core/errors.js';
import { assertValidName } from '../core/names.js';
import { DEFAULT_LOCK_POLICY } from '../local/process-lock.js';
import type { BUSY } from '../local/service-file.js';
import { encodeError } from '../protocol/frame-codec.js';
import { CloseCode, PROTOCOL_VERSION, messageName, type Message } from '../protocol/messages.js';
import type { AuditLog } from './audit.js';
import type { Authenticator } from './auth.js';
import { untilNotBusy } from './busy-retry.js';
import { ROUTES, type Handler, type Lane } from './handlers/index.js';
import type { Limits } from './limits.js';
import type { LogBudget } from './log-budget.js';
import type { Logger } from './logger.js';
import type { ServerMetrics } from './metrics.js';
import type { OpRecord } from './op-record.js';
import type { OpAnswer, OpKey, OpLedger } from './op-ledger.js';
import type { Permissions, PermissionsCache, Action } from './permissions.js';
import type { ServiceHost, Subscriber, Outlet } from './service-host.js';
import type { ServiceRegistry } from './service-registry.js';
import type { SubscriptionSpec } from './subscription-spec.js';

export interface SessionContext {
  registry: ServiceRegistry;
  /** Applied writes by client identity and operation id (shared by every connection of the server). */
  ledger: OpLedger;
  authenticator: Authenticator;
  /** Compiled grants, shared by the connections that hold the same ones. */
  permissions: PermissionsCache;
  audit: AuditLog;
  limits: Limits;
  onError(err: unknown): void;
  /** The session's connection is gone (after it let go of everything it held). */
  ended?(session: Session): void;
  /**
   * The server's log: one line per connection lifecycle event (opened, authenticated, closed: debug; failed
   * authentication: info). Never a credential: only the fields named here are logged.
   */
  log?: Logger;
  /** Lines a client can cause at will (failed authentications), rate-limited (log-budget.ts). */
  clientLines?: LogBudget;
  /** The server's metrics (absent: nothing counted). */
  metrics?: ServerMetrics;
  /** This server as a node of a cluster (docs/cluster.md); absent on a single server. */
  cluster?: ClusterNode;
}

/**
 * A connection's admission (admission.ts Ticket): `source` is its address as the per-address limits and the auth
 * throttle count it (taken from the socket); authenticated() moves it out of the unauthenticated pool.
 */
export interface Peer {
  readonly source: string;
  authenticated(): void;
}

/** What a connection authenticated as, per tenant. */
interface Grant {
  readonly perms: Permissions;
  /** The client's own key for its operation ids, if it gave one. */
  readonly clientKey: string | undefined;
  /** Whose operation ids these are (made at the first write that has one, then kept: its hash is cached). */
  identity?: string;
}

/** Shared by every connection that holds nothing yet (idle connections cost no map of their own). */
const NO_SUBSCRIPTIONS: ReadonlyMap<number, Subscriber> = new Map();

/** What a session needs of its connection (connection.ts; a test can give it anything that records frames). */
export interface SessionLink extends Outlet {
  /** Resolves once the connection's output is back under its budget (the socket unread meanwhile, unless `pauseInput` is false). */
  outputRoom(pauseInput?: boolean): Promise<void>;
  /** Aborts the cancellable request `id` (now, or as soon as it starts). */
  cancel(id: number): void;
  close(code: number, reason: string): void;
  /** Requests are queued or running (Server.close waits for them); absent: never. */
  readonly busy?: boolean;
}

const MAX_FAILED_AUTH = 5;
let nextClient = 1;
const CLIENT_SUFFIX = randomBytes(4).toString('hex');

export type Reply = Uint8Array | undefined;

/**
 * What one connection may do and holds: authentication first, then every message checked against the key's
 * grants for its tenant and service. Its Connection hands it messages in the order their lane says (see
 * handlers/index.ts); the handlers in handlers/ answer them, with the checks and holds below.
 */
export class Session {
  /** Numbered in this process; the id adds the process's random suffix (made on demand: an idle session holds no string). */
  private readonly clientNo = nextClient++;
  /** Per tenant authenticated for: most connections have one, so a Map only from the second. */
  private grants: Grant | Map<string, Grant> | undefined;
  private grantTenant = '';
  private subs: Map<number, Subscriber> | undefined;
  /** Services this connection was handed the file of (GetServiceFilePath): held open until it closes. */
  private leases: Set<ServiceHost> | undefined;
  private nextSid = 1;
  private failedAuth = 0;
  private protocolVersion = PROTOCOL_VERSION;
  private authTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly link: SessionLink,
    readonly ctx: SessionContext,
    readonly peer: Peer,
  ) {
    this.authTimer = setTimeout(() => this.authExpired(), ctx.limits.authTimeoutMs);
    ctx.log?.debug({ event: 'connected', conn: this.clientId, ip: peer.source }, 'connection opened');
  }

  /** `c<n>-<hex>`: unique in this process, and (by its random suffix) across its restarts. */
  get clientId(): string {
    return `c${this.clientNo}-${CLIENT_SUFFIX}`;
  }

  get authenticated(): boolean {
    return this.grants !== undefined;
  }

  /** This connection's live subscriptions, by sid. */
  get subscriptions(): ReadonlyMap<number, Subscriber> {
    return this.subs ?? NO_SUBSCRIPTIONS;
  }

  private grantOf(tenant: string): Grant | undefined {
    const g = this.grants;
    if (g instanceof Map) return g.get(tenant);
    return g !== undefined && this.grantTenant === tenant ? g : undefined;
  }

  /** The lane of a message type (by its number, read before decoding). */
  laneOf(type: number): Lane {
    const name = messageName(type);
    if (name === undefined) return 'ordered';
    return ROUTES[name]?.lane ?? 'ordered';
  }

  handle(m: Message, signal: AbortSignal): Promise<Reply> | Reply {
    const route = ROUTES[m.type];
    if (!this.authenticated && route?.open !== true) throw new CommyError(ErrorCode.AUTH_FAILED, 'authenticate first');
    if (route !== undefined) return (route.handle as Handler<typeof m.type>)(this, m as never, signal);
    throw new CommyError(ErrorCode.INVALID_MESSAGE, `${m.type} is a server-to-client message`);
  }

  // ---- authentication ---------------------------------------------------------------------------

  /**
   * A successful authentication for `tenant`: the connection leaves the unauthenticated pool. With a
   * `clientKey`, the client's operation ids outlive this connection (its retries after a reconnect match).
   */
  grant(tenant: string, perms: Permissions, clientKey?: string): void {
    const grant: Grant = { perms, clientKey };
    const g = this.grants;
    if (g === undefined || (!(g instanceof Map) && this.grantTenant === tenant)) {
      this.grants = grant;
      this.grantTenant = perms.grants.tenant === tenant ? perms.grants.tenant : tenant; // the grants' string, shared: not one per connection
    } else if (g instanceof Map) g.set(tenant, grant);
    else this.grants = new Map([[this.grantTenant, g], [tenant, grant]]);
    this.peer.authenticated();
    clearTimeout(this.authTimer);
    this.authTimer = undefined;
    this.ctx.log?.debug({ event: 'authenticated', conn: this.clientId, tenant, key: perms.grants.keyId }, 'authenticated');
  }

  /** The protocol the client speaks: the lowest its Authenticates announced (definitions are written for it). */
  get protocol(): number {
    return this.protocolVersion;
  }

  speaks(protocol: number): void {
    if (protocol < this.protocolVersion) this.protocolVersion = protocol;
  }

  /** A failed one (`code`: why, as answered): after MAX_FAILED_AUTH the connection is closed. */
  authFailed(tenant: string, code: string): void {
    const attempt = ++this.failedAuth;
    this.ctx.metrics?.authFailed(code);
    this.ctx.clientLines?.info({ event: 'auth-failed', conn: this.clientId, ip: this.peer.source, tenant: tenant.slice(0, 64), code, attempt }, 'authentication failed');
    if (attempt >= MAX_FAILED_AUTH) setImmediate(() => this.link.close(CloseCode.AUTH_FAILED, 'too many failed authentications'));
  }

  private authExpired(): void {
    this.authTimer = undefined;
    if (this.grants !== undefined) return;
    this.link.send(encodeError(0, ErrorCode.AUTH_FAILED, `no successful authentication within ${this.ctx.limits.authTimeoutMs} ms`));
    this.link.close(CloseCode.AUTH_TIMEOUT, 'authentication timeout');
  }

  /** The key's grants for this tenant (PERMISSION_DENIED when this connection has not authenticated for it). */
  permissions(tenant: string): Permissions {
    this.assertName(tenant, 'tenant name');
    const perms = this.grantOf(tenant)?.perms;
    if (perms === undefined) throw new CommyError(ErrorCode.PERMISSION_DENIED, `this connection is not authenticated for tenant ${tenant}`);
    return perms;
  }

  /** The key's grants for this tenant, checked for `action` on `service`. */
  check(tenant: string, service: string, action: Action): Permissions {
    this.assertName(service, 'service name');
    const perms = this.permissions(tenant);
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
    return this.grantOf(tenant)?.perms.grants.keyId ?? '';
  }

  // ---- services ---------------------------------------------------------------------------------

  /** Opens the service; creating it needs admin (checked only when it does not exist yet). */
  host(tenant: string, service: string, create: boolean): ServiceHost {
    const registry = this.ctx.registry;
    if (!create || registry.exists(tenant, service)) return registry.get(tenant, service, false);
    this.check(tenant, service, 'admin');
    const host = registry.get(tenant, service, true);
    this.ctx.cluster?.announce(host);
    this.ctx.audit.record({ event: 'ServiceCreated', clientId: this.clientId, keyId: this.keyId(tenant), tenant, service });
    return host;
  }

  /**
   * A local client's connection holds the service open while it lives: the server's watcher then sees (and
   * audits, and forwards) that client's writes. At most maxSubscriptionsPerConnection services per connection.
   */
  lease(host: ServiceHost): void {
    const leases = (this.leases ??= new Set());
    if (leases.has(host)) return;
    this.assertRoom(leases.size, 'mapped services');
    this.ctx.registry.retain(host);
    leases.add(host);
  }

  /** A new subscription to `host`, holding it open until endSubscription (or the connection's end). */
  addSubscription(host: ServiceHost, spec: SubscriptionSpec, readOnly: boolean): Subscriber {
    this.assertRoom(this.subscriptions.size, 'subscriptions');
    const subscriber = host.subscribe(this.nextSid++, this.link, spec, readOnly);
    this.ctx.registry.retain(host);
    (this.subs ??= new Map()).set(subscriber.sid, subscriber);
    return subscriber;
  }

  /** Ends a subscription and lets its service go idle. */
  endSubscription(sub: Subscriber): void {
    if (this.subs?.get(sub.sid) !== sub) return;
    this.subs.delete(sub.sid);
    sub.host.unsubscribe(sub);
    this.ctx.registry.release(sub.host);
  }

  private assertRoom(held: number, what: string): void {
    const max = this.ctx.limits.maxSubscriptionsPerConnection;
    if (held >= max) throw new CommyError(ErrorCode.RATE_LIMITED, `at most ${max} ${what} per connection`);
  }

  /** This connection's live subscription `sid`, checked for `action` on its service. */
  subscription(sid: number, action: Action): Subscriber {
    const sub = this.subscriptions.get(sid);
    if (sub === undefined) throw new CommyError(ErrorCode.SERVICE_NOT_FOUND, `no subscription ${sid} on this connection`);
    if (sub.closed) throw sub.host.broken ?? new CommyError(ErrorCode.SERVICE_NOT_FOUND, `subscription ${sid} has ended`);
    this.check(sub.host.tenant, sub.host.service, action);
    return sub;
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

  /**
   * Runs the write `op` of `service` once per operation id of this client (see op-ledger.ts): a retry gets the
   * first answer, also from a server restarted since (its journal). `what`: the write's kind and target (a retry
   * names the same); `answer`: what the answer costs to remember, and how to make it again from its versions.
   * `op` passes the journal record it gets to ServiceHost.apply.
   */
  once<T>(tenant: string, service: string, opId: number | undefined, what: string, op: (record: OpRecord | undefined, key?: OpKey) => Promise<T>, answer: OpAnswer<T>): Promise<T> {
    const grant = this.grantOf(tenant);
    if (grant === undefined) return op(undefined); // not authenticated for it: op's own checks refuse it
    // Whose operation ids these are: the credential (by kind: key:<id>, jwt:<iss>:<sub>) and the client's
    // clientKey (or this connection alone). Neither tenant nor clientKey holds a '/': the parts never run together.
    grant.identity ??= `${tenant}/${grant.perms.grants.principal}/${grant.clientKey ?? `connection:${this.clientId}`}`;
    const key: OpKey = { tenant, identity: grant.identity, opId, what, service };
    // `key` goes to op too: in a cluster the id is also checked in Redis, so that a retry on another node (or
    // after this one lost its memory) is answered, not applied again.
    return this.ctx.ledger.once(key, (record) => op(record, key), answer);
  }

  /** Retries `attempt` while another process holds what it needs, without blocking the event loop. */
  whenFree<T>(attempt: () => T | typeof BUSY, what: string): Promise<T> {
    return untilNotBusy(attempt, what, DEFAULT_LOCK_POLICY.timeoutMs, () => this.link.open);
  }

  /** The connection is gone: every subscription and lease is let go. */
  closed(code?: number, reason?: string): void {
    this.ctx.log?.debug({ event: 'closed', conn: this.clientId, ip: this.peer.source, code, reason }, 'connection closed');
    clearTimeout(this.authTimer);
    for (const sub of [...this.subscriptions.values()]) this.endSubscription(sub);
    for (const host of this.leases ?? []) this.ctx.registry.release(host);
    this.leases = undefined;
    this.ctx.ended?.(this);
  }
}

