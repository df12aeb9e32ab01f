import { randomBytes } from 'node:crypto';
import type { WebSocket } from 'ws';
import { CommyError, ErrorCode } from '../core/errors.js';
import { hostId } from '../core/host-id.js';
import { assertValidName } from '../core/names.js';
import { VariableMetadata } from '../core/variable-metadata.js';
import type { VariableTypeId } from '../core/variable-type.js';
import { decodeFrame, encodeError, encodeFrame, requestIdOf } from '../protocol/frame-codec.js';
import { CloseCode, PROTOCOL_VERSION, type Message, type MessageOf } from '../protocol/messages.js';
import type { AuditLog } from './audit.js';
import type { Authenticator } from './auth.js';
import { RateLimiter, type Limits } from './limits.js';
import { Permissions, type Action } from './permissions.js';
import { defOf, type Outlet, type Subscriber } from './service-host.js';
import type { ServiceRegistry } from './service-registry.js';

export interface SessionContext {
  registry: ServiceRegistry;
  authenticator: Authenticator;
  audit: AuditLog;
  limits: Limits;
  onError(err: unknown): void;
}

const MAX_FAILED_AUTH = 5;
let nextClient = 1;

type Reply = Uint8Array | undefined;

/**
 * One WebSocket connection: authentication first, then every message checked against the key's grants for
 * its tenant and service. Messages are handled one at a time, in order (a pipelined request waits for the
 * authentication before it).
 */
export class Session implements Outlet {
  readonly clientId = `c${nextClient++}-${randomBytes(4).toString('hex')}`;
  private readonly grants = new Map<string, Permissions>();
  private readonly subscriptions = new Map<number, Subscriber>();
  private readonly rate: RateLimiter;
  private nextSid = 1;
  private failedAuth = 0;
  private authTimer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly ws: WebSocket,
    private readonly ctx: SessionContext,
  ) {
    this.rate = new RateLimiter(ctx.limits.rateLimit);
    this.authTimer = setTimeout(() => this.authExpired(), ctx.limits.authTimeoutMs);
    ws.on('message', (data, isBinary) => this.receive(data as Buffer, isBinary));
    ws.on('close', () => this.cleanup());
    ws.on('error', () => this.cleanup());
  }

  get open(): boolean {
    return this.ws.readyState === this.ws.OPEN;
  }

  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  send(frame: Uint8Array): void {
    if (this.open) this.ws.send(frame, { binary: true });
  }

  private receive(data: Buffer, isBinary: boolean): void {
    if (!isBinary) {
      this.send(encodeError(0, ErrorCode.INVALID_MESSAGE, 'frames must be binary'));
      return;
    }
    if (!this.rate.take()) {
      this.send(encodeError(peekRequestId(data), ErrorCode.RATE_LIMITED, 'message rate limit exceeded; message dropped'));
      return;
    }
    let message: Message;
    try {
      message = decodeFrame(data, this.ctx.limits.maxFrameBytes);
    } catch (err) {
      this.fail(requestIdOf(err) || peekRequestId(data), err);
      return;
    }
    this.chain = this.chain.then(() => this.handle(message));
  }

  private async handle(message: Message): Promise<void> {
    try {
      const reply = await this.dispatch(message);
      if (reply !== undefined) this.send(reply);
    } catch (err) {
      this.fail(message.id, err);
    }
  }

  private fail(id: number, err: unknown): void {
    if (err instanceof CommyError) {
      this.send(encodeError(id, err.code, err.message));
      return;
    }
    this.ctx.onError(err);
    this.send(encodeError(id, ErrorCode.INTERNAL_ERROR, 'internal error'));
  }

  private dispatch(m: Message): Promise<Reply> | Reply {
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
    let grants;
    try {
      grants = await this.ctx.authenticator.authenticate(tenant, method, credential);
    } catch (err) {
      if (++this.failedAuth >= MAX_FAILED_AUTH) setImmediate(() => this.ws.close(CloseCode.AUTH_FAILED, 'too many failed authentications'));
      throw err;
    }
    this.grants.set(tenant, new Permissions(grants));
    clearTimeout(this.authTimer);
    this.authTimer = undefined;
    return encodeFrame('Authenticated', m.id, { clientId: this.clientId, hostId: hostId(), protocol: PROTOCOL_VERSION, keyId: grants.keyId });
  }

  private authExpired(): void {
    this.authTimer = undefined;
    if (this.grants.size > 0) return;
    this.send(encodeError(0, ErrorCode.AUTH_FAILED, `no successful authentication within ${this.ctx.limits.authTimeoutMs} ms`));
    this.ws.close(CloseCode.AUTH_TIMEOUT, 'authentication timeout');
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
    const host = this.host(tenant, service, m.body.create === true);
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

  private subscribe(m: MessageOf<'Subscription'>): Reply {
    const { tenant, service } = m.body;
    const perms = this.check(tenant, service, 'read');
    if (this.subscriptions.size >= this.ctx.limits.maxSubscriptionsPerConnection) {
      throw new CommyError(ErrorCode.RATE_LIMITED, `at most ${this.ctx.limits.maxSubscriptionsPerConnection} subscriptions per connection`);
    }
    const host = this.host(tenant, service, m.body.create === true);
    const sid = this.nextSid++;
    const { subscriber, snapshot } = host.subscribe(sid, this, m.body.variables, !perms.can('write', service), m.body.notify === true);
    this.subscriptions.set(sid, subscriber);
    this.ctx.audit.record({ event: 'Subscription', clientId: this.clientId, keyId: perms.grants.keyId, tenant, service });
    return encodeFrame('Snapshot', m.id, snapshot);
  }

  private subscription(sid: number, action: Action): Subscriber {
    const sub = this.subscriptions.get(sid);
    if (sub === undefined) throw new CommyError(ErrorCode.SERVICE_NOT_FOUND, `no subscription ${sid} on this connection`);
    this.check(sub.host.tenant, sub.host.service, action);
    return sub;
  }

  private unsubscribe(m: MessageOf<'Unsubscribe'>): Reply {
    const sub = this.subscriptions.get(m.body.sid);
    if (sub === undefined) throw new CommyError(ErrorCode.SERVICE_NOT_FOUND, `no subscription ${m.body.sid} on this connection`);
    sub.host.unsubscribe(sub);
    this.subscriptions.delete(m.body.sid);
    return encodeFrame('Unsubscribed', m.id, { sid: m.body.sid });
  }

  private registerVariable(m: MessageOf<'RegisterVariable'>): Reply {
    const sub = this.subscription(m.body.sid, 'admin');
    const { name, offset, size, typeId } = m.body;
    this.assertName(name, 'variable name');
    const file = sub.host.file;
    const entry = file.register(new VariableMetadata(name, offset, size, typeId as VariableTypeId));
    const { tenant, service } = sub.host;
    this.ctx.audit.record({ event: 'VariableRegistered', clientId: this.clientId, keyId: this.keyId(tenant), tenant, service, variables: [name] });
    return encodeFrame('VariableRegistered', m.id, { sid: sub.sid, def: defOf(entry, file.entryVersion(entry)) });
  }

  // ---- values -----------------------------------------------------------------------------------

  private readVariable(m: MessageOf<'ReadVariable'>): Reply {
    const { tenant, service, name } = m.body;
    this.check(tenant, service, 'read');
    this.assertName(name, 'variable name');
    const file = this.ctx.registry.get(tenant, service, false).file;
    const entry = file.entry(name);
    const [value, version] = file.read(entry, () => [file.u8.slice(entry.at, entry.at + entry.meta.size), file.entryVersion(entry)] as const);
    return encodeFrame('VariableValue', m.id, { name, value, version: Number(version) });
  }

  private writeVariable(m: MessageOf<'WriteVariable'>): Reply {
    const { tenant, service, name, value } = m.body;
    const perms = this.check(tenant, service, 'write');
    this.assertName(name, 'variable name');
    const host = this.ctx.registry.get(tenant, service, false);
    const version = host.file.writeBytes(host.file.entry(name), value);
    this.ctx.audit.record({ event: 'VariablesChanged', clientId: this.clientId, keyId: perms.grants.keyId, tenant, service, variables: [name] });
    return encodeFrame('VariableChangesAcknowledged', m.id, { serviceId: host.serviceId, changedVariables: [name], version: Number(version), versions: [Number(version)] });
  }

  /** All changes are checked before any is applied: a bad one rejects the whole report, nothing half-done. */
  private reportChanges(m: MessageOf<'ReportVariableChanges'>): Reply {
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
    const versions = m.body.changes.map(([, bytes], i) => Number(file.writeBytes(entries[i]!, bytes)));
    entries.forEach((e, i) => sub.own.set(e.index, versions[i]!));
    const names = entries.map((e) => e.meta.name);
    const { tenant, service } = sub.host;
    this.ctx.audit.record({ event: 'VariablesChanged', clientId: this.clientId, keyId: this.keyId(tenant), tenant, service, variables: names });
    const version = versions.length > 0 ? versions[versions.length - 1]! : Number(file.version);
    return encodeFrame('VariableChangesAcknowledged', m.id, { serviceId: sub.host.serviceId, changedVariables: names, version, versions });
  }

  private cleanup(): void {
    clearTimeout(this.authTimer);
    for (const sub of this.subscriptions.values()) sub.host.unsubscribe(sub);
    this.subscriptions.clear();
  }

  close(code: number, reason: string): void {
    this.ws.close(code, reason);
  }
}

/** The request id of a frame we could not decode, if its first bytes still say it (fixarray, type, id). */
function peekRequestId(data: Buffer): number {
  if (data.length < 3 || data[0] !== 0x93) return 0;
  const at = 2; // after fixarray header and a positive-fixint type (types are < 128)
  if (data[1]! > 0x7f) return 0;
  const b = data[at]!;
  if (b <= 0x7f) return b;
  if (b === 0xcc && data.length > at + 1) return data[at + 1]!;
  if (b === 0xcd && data.length > at + 2) return data.readUInt16BE(at + 1);
  if (b === 0xce && data.length > at + 4) return data.readUInt32BE(at + 1) & 0x7fffffff;
  return 0;
}
