import { randomBytes } from 'node:crypto';
import type { WebSocket } from 'ws';
import { CommyError, ErrorCode } from '../core/errors.js';
import { hostId } from '../core/host-id.js';
import { assertValidName } from '../core/names.js';
import { VariableMetadata } from '../core/variable-metadata.js';
import type { VariableTypeId } from '../core/variable-type.js';
import { encodeError, encodeFrame } from '../protocol/frame-codec.js';
import { compileGlobs } from '../core/glob.js';
import { DEFAULT_LOCK_POLICY } from '../local/process-lock.js';
import { BUSY, type DirEntry, type ServiceFile } from '../local/service-file.js';
import { CloseCode, PROTOCOL_VERSION, type Message, type MessageOf } from '../protocol/messages.js';
import type { AuditLog } from './audit.js';
import type { Authenticator } from './auth.js';
import { Connection, type MessageHandler } from './connection.js';
import type { Limits } from './limits.js';
import { Permissions, type Action } from './permissions.js';
import { untilNotBusy } from './busy-retry.js';
import type { ServiceHost, Subscriber } from './service-host.js';
import { defOf } from './snapshot.js';
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

type Reply = Uint8Array | undefined;

/**
 * What one connection may do and holds: authentication first, then every message checked against the key's
 * grants for its tenant and service. Its Connection hands it messages one at a time, in order (a pipelined
 * request waits for the authentication before it); the handlers below answer them.
 */
export class Session implements MessageHandler {
  readonly clientId = `c${nextClient++}-${randomBytes(4).toString('hex')}`;
  private readonly grants = new Map<string, Permissions>();
  private readonly subscriptions = new Map<number, Subscriber>();
  /** Services this connection was handed the file of (GetServiceFilePath): held open until it closes. */
  private readonly leases = new Set<ServiceHost>();
  private nextSid = 1;
  private failedAuth = 0;
  private authTimer: NodeJS.Timeout | undefined;
  private readonly conn: Connection;

  constructor(ws: WebSocket, private readonly ctx: SessionContext) {
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
    if (this.grants.size === 0) throw new CommyError(ErrorCode.AUTH_FAILED, 'authenticate first');
    switch (m.type) {
      case 'GetServiceFilePath':
        return this.getServiceFilePath(m);
      case 'Subscription':
        return this.subscribe(m);
      case 'Unsubscribe':
        return this.unsubscribe(m);
      case 'RegisterVariable':
        return this.registerVariable(m);
      case 'ReadVariable':
        return this.readVariable(m);
      case 'WriteVariable':
        return this.writeVariable(m);
      case 'ReportVariableChanges':
        return this.reportChanges(m);
      case 'Mutate':
      case 'Query':
      case 'QueryCancel':
        throw new CommyError(ErrorCode.UNKNOWN_MESSAGE, `${m.type} is not supported by this server yet`);
      default:
        throw new CommyError(ErrorCode.INVALID_MESSAGE, `${m.type} is a server-to-client message`);
    }
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
  private check(tenant: string, service: string, action: Action): Permissions {
    this.assertName(tenant, 'tenant name');
    this.assertName(service, 'service name');
    const perms = this.grants.get(tenant);
    if (perms === undefined) throw new CommyError(ErrorCode.PERMISSION_DENIED, `this connection is not authenticated for tenant ${tenant}`);
    if (!perms.can(action, service)) throw new CommyError(ErrorCode.PERMISSION_DENIED, `key ${perms.grants.keyId} may not ${action} ${tenant}/${service}`);
    return perms;
  }

  /** A valid name within the configured length limit (which may be below the format's 64). */
  private assertName(name: string, what: string): void {
    assertValidName(name, what);
    const max = this.ctx.limits.maxNameLength;
    if (name.length > max) throw new CommyError(ErrorCode.INVALID_NAME, `${what} ${JSON.stringify(name)} is longer than ${max} characters`);
  }

  private keyId(tenant: string): string {
    return this.grants.get(tenant)?.grants.keyId ?? '';
  }

  /** Opens the service; creating it needs admin (checked only when it does not exist yet). */
  private host(tenant: string, service: string, create: boolean) {
    const registry = this.ctx.registry;
    if (!create || registry.exists(tenant, service)) return registry.get(tenant, service, false);
    this.check(tenant, service, 'admin');
    const host = registry.get(tenant, service, true);
    this.ctx.audit.record({ event: 'ServiceCreated', clientId: this.clientId, keyId: this.keyId(tenant), tenant, service });
    return host;
  }

  // ---- services ---------------------------------------------------------------------------------

  private getServiceFilePath(m: MessageOf<'GetServiceFilePath'>): Reply {
    const { tenant, service } = m.body;
    const perms = this.check(tenant, service, 'read');
    if (perms.grants.hybrid === false) {
      throw new CommyError(ErrorCode.HYBRID_ACCESS_DENIED, `key ${perms.grants.keyId} may not map service files; use remote mode`);
    }
    const host = this.host(tenant, service, m.body.create === true);
    this.lease(host);
    const file = host.file;
    this.ctx.audit.record({ event: 'GetServiceFilePath', clientId: this.clientId, keyId: perms.grants.keyId, tenant, service, filePath: file.path });
    return encodeFrame('ServiceFilePath', m.id, {
      serviceId: host.serviceId,
      filePath: file.path,
      fileSize: file.dataStart + file.dataCapacity,
      fileId: file.info.fileId,
      readOnly: !perms.can('write', service),
    });
  }

  /** Replies with the Snapshot, then sends its chunks as the socket drains; updates flow after the last. */
  private async subscribe(m: MessageOf<'Subscription'>): Promise<Reply> {
    const { tenant, service } = m.body;
    const perms = this.check(tenant, service, 'read');
    if (this.subscriptions.size >= this.ctx.limits.maxSubscriptionsPerConnection) {
      throw new CommyError(ErrorCode.RATE_LIMITED, `at most ${this.ctx.limits.maxSubscriptionsPerConnection} subscriptions per connection`);
    }
    const wants = m.body.variables === undefined ? undefined : compileGlobs(m.body.variables, this.ctx.limits);
    const host = this.host(tenant, service, m.body.create === true);
    const sid = this.nextSid++;
    const readOnly = !perms.can('write', service);
    const subscriber = host.subscribe(sid, this.conn, { readOnly, notify: m.body.notify === true, ...(wants ? { wants } : {}) });
    this.ctx.registry.retain(host);
    this.subscriptions.set(sid, subscriber);
    this.ctx.audit.record({ event: 'Subscription', clientId: this.clientId, keyId: perms.grants.keyId, tenant, service });
    let sent = false;
    try {
      for (const frame of host.snapshot(subscriber, m.id)) {
        if (sent) await this.conn.outputRoom();
        if (subscriber.closed || !this.conn.open) return undefined;
        this.conn.send(frame);
        sent = true;
      }
    } catch (err) {
      // No half subscription: it ends here. Before the reply, the error is the reply; after it, a push says so.
      this.drop(subscriber);
      this.subscriptions.delete(sid);
      if (!sent || !(err instanceof CommyError)) throw err;
      this.conn.send(encodeFrame('Unsubscribed', 0, { sid, errorCode: err.code, message: err.message }));
      return undefined;
    }
    host.loaded(subscriber);
    return undefined;
  }

  /**
   * A local client's connection holds the service open while it lives: the server's watcher then sees (and
   * audits, and forwards) that client's writes. At most maxSubscriptionsPerConnection services per connection.
   */
  private lease(host: ServiceHost): void {
    if (this.leases.has(host)) return;
    if (this.leases.size >= this.ctx.limits.maxSubscriptionsPerConnection) {
      throw new CommyError(ErrorCode.RATE_LIMITED, `at most ${this.ctx.limits.maxSubscriptionsPerConnection} mapped services per connection`);
    }
    this.ctx.registry.retain(host);
    this.leases.add(host);
  }

  private subscription(sid: number, action: Action): Subscriber {
    const sub = this.subscriptions.get(sid);
    if (sub === undefined) throw new CommyError(ErrorCode.SERVICE_NOT_FOUND, `no subscription ${sid} on this connection`);
    if (sub.closed) throw sub.host.broken ?? new CommyError(ErrorCode.SERVICE_NOT_FOUND, `subscription ${sid} has ended`);
    this.check(sub.host.tenant, sub.host.service, action);
    return sub;
  }

  private unsubscribe(m: MessageOf<'Unsubscribe'>): Reply {
    const sub = this.subscriptions.get(m.body.sid);
    if (sub === undefined) throw new CommyError(ErrorCode.SERVICE_NOT_FOUND, `no subscription ${m.body.sid} on this connection`);
    this.drop(sub);
    this.subscriptions.delete(m.body.sid);
    return encodeFrame('Unsubscribed', m.id, { sid: m.body.sid });
  }

  private async registerVariable(m: MessageOf<'RegisterVariable'>): Promise<Reply> {
    const sub = this.subscription(m.body.sid, 'admin');
    const { name, offset, size, typeId } = m.body;
    this.assertName(name, 'variable name');
    const file = sub.host.file;
    const meta = new VariableMetadata(name, offset, size, typeId as VariableTypeId);
    this.ctx.registry.checkRegistration(sub.host, meta);
    const entry = await this.whenFree(() => file.tryRegister(meta), `the directory of ${sub.host.serviceId}`);
    const { tenant, service } = sub.host;
    this.ctx.audit.record({ event: 'VariableRegistered', clientId: this.clientId, keyId: this.keyId(tenant), tenant, service, variables: [name] });
    return encodeFrame('VariableRegistered', m.id, { sid: sub.sid, def: defOf(entry, file.entryVersion(entry)) });
  }

  // ---- values -----------------------------------------------------------------------------------

  /** Retries `attempt` while another process holds what it needs, without blocking the event loop. */
  private whenFree<T>(attempt: () => T | typeof BUSY, what: string): Promise<T> {
    return untilNotBusy(attempt, what, DEFAULT_LOCK_POLICY.timeoutMs, () => this.conn.open);
  }

  private async readVariable(m: MessageOf<'ReadVariable'>): Promise<Reply> {
    const { tenant, service, name } = m.body;
    this.check(tenant, service, 'read');
    this.assertName(name, 'variable name');
    const [value, version] = await this.withService(tenant, service, ({ file }) => {
      const entry = file.entry(name);
      return this.whenFree(
        () => file.tryRead(entry, () => [file.u8.slice(entry.at, entry.at + entry.meta.size), file.entryVersion(entry)] as const),
        `${tenant}/${service}/${name}`,
      );
    });
    return encodeFrame('VariableValue', m.id, { name, value, version: Number(version) });
  }

  private async writeVariable(m: MessageOf<'WriteVariable'>): Promise<Reply> {
    const { tenant, service, name, value } = m.body;
    const perms = this.check(tenant, service, 'write');
    this.assertName(name, 'variable name');
    const version = await this.withService(tenant, service, async (host) => {
      const entry = host.file.entry(name);
      if (value.length > entry.meta.size) {
        throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `${value.length} bytes do not fit ${name} (${entry.meta.size} bytes)`);
      }
      const [written] = await this.whenFree(() => writeAll(host.file, [entry], [value]), `${host.serviceId}/${name}`);
      return Number(written);
    });
    this.ctx.audit.record({ event: 'VariablesChanged', clientId: this.clientId, keyId: perms.grants.keyId, tenant, service, variables: [name] });
    return encodeFrame('VariableChangesAcknowledged', m.id, { serviceId: `${tenant}/${service}`, changedVariables: [name], count: 1, version, versions: [version] });
  }

  /**
   * All changes are checked, and all their locks taken, before any is applied: a bad one rejects the whole
   * report, nothing half-done. The ack carries a version per change and no names, so it stays a few bytes per
   * change whatever the names; a report holds at most maxChangesPerReport changes.
   */
  private async reportChanges(m: MessageOf<'ReportVariableChanges'>): Promise<Reply> {
    const max = this.ctx.limits.maxChangesPerReport;
    if (m.body.changes.length > max) {
      throw new CommyError(ErrorCode.MESSAGE_TOO_LARGE, `a report holds at most ${max} changes, this one ${m.body.changes.length}`);
    }
    const sub = this.subscription(m.body.sid, 'write');
    const file = sub.host.file;
    const entries = m.body.changes.map(([index, bytes]) => {
      const entry = file.entryAt(index) ?? (file.refresh(), file.entryAt(index));
      if (entry === undefined) throw new CommyError(ErrorCode.VARIABLE_NOT_FOUND, `no variable at index ${index}`);
      if (bytes.length > entry.meta.size) {
        throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `${bytes.length} bytes do not fit ${entry.meta.name} (${entry.meta.size} bytes)`);
      }
      return entry;
    });
    const values = m.body.changes.map(([, bytes]) => bytes);
    const written = await this.whenFree(() => (sub.closed ? [] : writeAll(file, entries, values)), `variables of ${sub.host.serviceId}`);
    if (sub.closed) throw new CommyError(ErrorCode.SERVICE_NOT_FOUND, `subscription ${sub.sid} ended before its changes were applied`);
    const versions = written.map(Number);
    entries.forEach((e, i) => sub.own.set(e.index, versions[i]!));
    const { tenant, service } = sub.host;
    this.ctx.audit.record({ event: 'VariablesChanged', clientId: this.clientId, keyId: this.keyId(tenant), tenant, service, variables: entries.map((e) => e.meta.name) });
    const version = versions.length > 0 ? versions[versions.length - 1]! : Number(file.version);
    return encodeFrame('VariableChangesAcknowledged', m.id, { serviceId: sub.host.serviceId, count: versions.length, version, versions });
  }

  /** Ends a subscription and lets its service go idle. */
  private drop(sub: Subscriber): void {
    sub.host.unsubscribe(sub);
    this.ctx.registry.release(sub.host);
  }

  /** Runs `use` with the service held open (a request that awaits must not see it closed under it). */
  private async withService<T>(tenant: string, service: string, use: (host: ServiceHost) => Promise<T>): Promise<T> {
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

  close(code: number, reason: string): void {
    this.conn.close(code, reason);
  }
}

/**
 * Takes every entry's writer lock without waiting (BUSY, holding none, if any is held by a live process), then
 * writes each variable's value in order. A variable named twice in one report takes its last value, and both
 * changes get that write's version.
 */
function writeAll(file: ServiceFile, entries: readonly DirEntry[], values: readonly Uint8Array[]): bigint[] | typeof BUSY {
  const locked: DirEntry[] = [];
  for (const e of new Set(entries)) {
    if (!file.tryLock(e)) {
      for (const held of locked) file.unlock(held);
      return BUSY;
    }
    locked.push(e);
  }
  const last = new Map<DirEntry, number>();
  entries.forEach((e, i) => last.set(e, i));
  const versions = new Map<DirEntry, bigint>();
  for (const [e, i] of last) versions.set(e, file.writeLocked(e, values[i]!));
  return entries.map((e) => versions.get(e)!);
}
