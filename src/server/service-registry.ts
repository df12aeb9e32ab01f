import { lstatSync, readdirSync, type Stats } from 'node:fs';
import { basename, join, resolve, sep } from 'node:path';
import { CommyError, ErrorCode } from '../core/errors.js';
import { assertValidName, isValidName } from '../core/names.js';
import type { VariableMetadata } from '../core/variable-metadata.js';
import { ServiceFile } from '../local/service-file.js';
import { ensurePrivateDir } from './data-dir.js';
import { applyFilePolicy, openForTraversal, type FilePolicy } from './file-policy.js';
import type { Limits } from './limits.js';
import { TenantQuotas, isRegistered, registrationGrowth, type TenantUsage } from './quotas.js';
import { DEFAULT_DURABILITY, type Durability } from './durability.js';
import { ServiceHost, type BroadcastOptions } from './service-host.js';

/** One open service and who holds it. */
interface OpenService {
  readonly key: string;
  readonly host: ServiceHost;
  /** retain() minus release(): while above 0 the service is never closed. */
  refs: number;
  /** Pending idle close; undefined while retained. */
  timer: NodeJS.Timeout | undefined;
}

/**
 * Tenants' services on disk: `<dataDir>/tenants/<tenant>/<service>.mem`. Names are validated before any
 * path is built, and the result is checked to stay under dataDir: a name from the wire is never a path.
 *
 * Every open service costs an fd, a mapping and a change watcher (a socket, or a thread), so the registry bounds them: a service
 * nobody retains is closed `serviceIdleMs` after its last use, and at `maxOpenServices` the longest-idle
 * one makes room for a new one. Per-tenant quotas (services, variables, bytes) are checked here too.
 */
export class ServiceRegistry {
  private readonly hosts = new Map<string, OpenService>();
  /** Open services with no reference, in the order they became idle: the first is the oldest. */
  private readonly idle = new Map<string, OpenService>();
  /** Tenant directories given their group (files policy) since start; every open checks the directory anyway. */
  private readonly checkedTenants = new Set<string>();
  private readonly quotas: TenantQuotas;
  private readonly broadcast: BroadcastOptions;
  private closed = false;
  /** Files closing after their last sync (ServiceHost.close): close() waits for them. */
  private readonly closing = new Set<Promise<void>>();
  private readonly syncTimer: NodeJS.Timeout | undefined;
  /** Syncs of service files finished (durability.ts), for /metrics and the tests. */
  syncs = 0;
  readonly root: string;

  /** Throws CONFIG_INVALID if dataDir or dataDir/tenants is a symlink, someone else's, or group/other-writable. */
  constructor(
    dataDir: string,
    private readonly limits: Limits,
    broadcast: BroadcastOptions,
    /** Tenants whose files belong to a Unix group (config `tenants.<t>.files`); none by default. */
    private readonly policies: ReadonlyMap<string, FilePolicy> = new Map(),
    /** When the hosts' files are synced (durability.ts); the hosts are told the mode. Default: `none`. */
    durability: Durability = { mode: 'none', intervalMs: DEFAULT_DURABILITY.intervalMs },
  ) {
    this.root = resolve(dataDir);
    this.broadcast = { ...broadcast, durability: durability.mode, onBroken: (host) => this.evict(host), onSynced: () => this.syncs++ };
    if (durability.mode === 'periodic') this.syncTimer = setInterval(() => this.syncWritten(), durability.intervalMs).unref();
    ensurePrivateDir(this.root, ErrorCode.CONFIG_INVALID, 'data directory', true);
    ensurePrivateDir(join(this.root, 'tenants'), ErrorCode.CONFIG_INVALID, 'tenants directory');
    if (policies.size > 0) {
      openForTraversal(this.root);
      openForTraversal(join(this.root, 'tenants'));
    }
    this.quotas = new TenantQuotas(limits, (tenant) => this.tenantDir(tenant));
  }

  /**
   * Open services per tenant: how many, their live variables, and their files' bytes (for the metrics). A file
   * another process has damaged (truncated, a corrupt directory) is left out: its feed or its next request drops
   * it, and one tenant's file never makes the metrics of every other fail.
   */
  openByTenant(): Map<string, { services: number; variables: number; bytes: number }> {
    const out = new Map<string, { services: number; variables: number; bytes: number }>();
    for (const { host } of this.hosts.values()) {
      if (host.file.closed || host.broken !== undefined) continue;
      let variables: number;
      let bytes: number;
      try {
        variables = host.file.list().length;
        bytes = host.file.fileSize();
      } catch {
        continue;
      }
      const t = out.get(host.tenant) ?? { services: 0, variables: 0, bytes: 0 };
      t.services++;
      t.variables += variables;
      t.bytes += bytes;
      out.set(host.tenant, t);
    }
    return out;
  }

  /** Services open now (for tests and metrics). */
  get openCount(): number {
    return this.hosts.size;
  }

  pathOf(tenant: string, service: string): string {
    assertValidName(tenant, 'tenant name');
    assertValidName(service, 'service name');
    const path = join(this.root, 'tenants', tenant, `${service}.mem`);
    if (!path.startsWith(this.root + sep)) throw new CommyError(ErrorCode.INVALID_NAME, 'service path escapes the data directory');
    return path;
  }

  /**
   * The open service, opening its file if it exists; with `create`, creating it (QUOTA_EXCEEDED past the
   * tenant's services or bytes, RATE_LIMITED past SERVICE_CREATIONS_PER_SECOND). SERVICE_NOT_FOUND otherwise.
   * The host stays open for serviceIdleMs after this call unless retain()ed: use it now or retain it.
   * `replicated`: created because the cluster has it (docs/cluster.md): not counted against the creation rate.
   */
  get(tenant: string, service: string, create: boolean, replicated = false): ServiceHost {
    this.assertOpen();
    const path = this.pathOf(tenant, service);
    const key = keyOf(tenant, service);
    let known = this.hosts.get(key);
    if (known !== undefined && known.host.file.damaged) {
      // Another process truncated the file under us: drop this mapping, and judge the file afresh below.
      known.host.fail(new CommyError(ErrorCode.INVALID_FILE, `${tenant}/${service} is damaged: it was truncated or shrunk by another process`));
      known = this.hosts.get(key);
    }
    if (known !== undefined) {
      if (known.refs === 0) this.markIdle(known); // a use: the idle clock starts again
      return known.host;
    }
    const host = this.open(tenant, service, path, create, replicated);
    const entry: OpenService = { key, host, refs: 0, timer: undefined };
    this.hosts.set(key, entry);
    this.markIdle(entry);
    return host;
  }

  /** get() and retain() in one: for a holder (a subscription, a request that awaits) that will release() it. */
  acquire(tenant: string, service: string, create: boolean): ServiceHost {
    const host = this.get(tenant, service, create);
    this.retain(host);
    return host;
  }

  exists(tenant: string, service: string): boolean {
    this.assertOpen();
    const path = this.pathOf(tenant, service);
    return this.hosts.has(keyOf(tenant, service)) || this.fileExists(tenant, path);
  }

  /** The tenant's services on disk, by name, sorted (files whose names are not service names are left out). */
  services(tenant: string): string[] {
    this.assertOpen();
    assertValidName(tenant, 'tenant name');
    if (!this.tenantDirExists(tenant)) return [];
    const names: string[] = [];
    for (const file of readdirSync(this.tenantDir(tenant))) {
      if (!file.endsWith('.mem')) continue;
      const name = file.slice(0, -'.mem'.length);
      if (isValidName(name)) names.push(name);
    }
    return names.sort();
  }

  /** Keeps `host` open until the matching release(). CLOSED if the registry already closed it (get it again). */
  retain(host: ServiceHost): void {
    const entry = this.hosts.get(keyOf(host.tenant, host.service));
    if (entry === undefined || entry.host !== host) {
      throw new CommyError(ErrorCode.CLOSED, `service ${host.serviceId} was closed; open it again`);
    }
    entry.refs += 1;
    if (entry.refs === 1) {
      this.idle.delete(entry.key);
      clearTimeout(entry.timer);
      entry.timer = undefined;
    }
  }

  /** Drops one retain(); at zero the host is closed after serviceIdleMs unless used again. */
  release(host: ServiceHost): void {
    const entry = this.hosts.get(keyOf(host.tenant, host.service));
    // A host the registry no longer holds (closed with the registry) or one released too often: nothing to drop.
    if (entry === undefined || entry.host !== host || entry.refs === 0) return;
    entry.refs -= 1;
    if (entry.refs === 0) this.markIdle(entry);
  }

  /**
   * QUOTA_EXCEEDED if registering `meta` in `host` would take its tenant past maxVariablesPerTenant or
   * maxBytesPerTenant (counting the file growth it causes). Call it right before `host.file.register(meta)`:
   * it changes nothing on disk, and reserves the variable in the tenant's usage so a burst cannot overshoot.
   */
  checkRegistration(host: ServiceHost, meta: VariableMetadata): void {
    if (isRegistered(host.file, meta.name)) return; // the same name again adds nothing (register checks the layout)
    this.quotas.checkRegistration(host.tenant, registrationGrowth(host.file, meta));
  }

  /** The tenant's usage as the quotas see it (read from disk at most once a second). */
  usage(tenant: string): Readonly<TenantUsage> {
    assertValidName(tenant, 'tenant name');
    return { ...this.quotas.usage(tenant) };
  }

  /**
   * Closes every service and cancels every idle timer; later calls to get() throw CLOSED. Resolves once every
   * file written since its last sync has been synced and closed.
   */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.syncTimer);
    for (const entry of this.hosts.values()) {
      clearTimeout(entry.timer);
      this.track(entry.host.close());
    }
    this.hosts.clear();
    this.idle.clear();
    await Promise.all(this.closing);
  }

  /** `periodic` durability: every file written since its last sync is synced, held open meanwhile. */
  private syncWritten(): void {
    for (const { host } of this.hosts.values()) {
      if (!host.syncer.dirty) continue;
      this.retain(host);
      host.syncer
        .sync()
        .catch((err: unknown) => this.broadcast.onError?.(err))
        .finally(() => this.release(host));
    }
  }

  private track(closing: Promise<void>): void {
    this.closing.add(closing);
    void closing.finally(() => this.closing.delete(closing));
  }

  // ---- opening ------------------------------------------------------------------------------------

  private open(tenant: string, service: string, path: string, create: boolean, replicated: boolean): ServiceHost {
    const creating = !this.fileExists(tenant, path);
    if (creating && !create) throw notFound(tenant, service);
    this.makeRoom();
    if (creating) {
      this.quotas.checkCreate(tenant, replicated);
      this.ensureTenantDir(tenant);
    }
    const policy = this.policies.get(tenant);
    let file: ServiceFile;
    try {
      file = ServiceFile.open(path, {
        create: creating, // checked against the quotas above; a file that vanished since is not quietly re-made
        tenant,
        service,
        maxFileSize: this.limits.maxServiceFileBytes,
        maxVariableSize: this.limits.maxVariableBytes,
        // Errors reach clients: they name the service, never the server's data path.
        label: `${tenant}/${service}`,
        expect: { tenant, service },
        // A group-writable tenant (files.mode 0660) trusts its group with its files by configuration.
        requireOwner: policy?.mode !== 0o660,
      });
    } catch (err) {
      if (err instanceof CommyError && err.code === ErrorCode.FILE_NOT_FOUND) throw notFound(tenant, service);
      throw err;
    }
    try {
      if (policy !== undefined) applyFilePolicy(path, policy, false);
    } catch (err) {
      file.close(); // no mapping or descriptor left behind by a file we cannot give its group
      throw err;
    }
    try {
      return new ServiceHost(tenant, service, file, this.broadcast);
    } catch (err) {
      file.close(); // e.g. no watcher to be had: do not leak the fd and the mapping
      throw err;
    }
  }

  /** At maxOpenServices, closes the longest-idle service; QUOTA_EXCEEDED when every open one is in use. */
  private makeRoom(): void {
    if (this.hosts.size < this.limits.maxOpenServices) return;
    for (const entry of this.idle.values()) {
      if (entry.host.subscriberCount > 0) continue; // in use even if nobody retained it: never pulled from under a subscriber
      this.closeEntry(entry);
      return;
    }
    throw new CommyError(ErrorCode.QUOTA_EXCEEDED, `too many open services (limit ${this.limits.maxOpenServices}); try again later`);
  }

  /** Is there a service file at `path`? INVALID_FILE for an unsafe tenant directory or a non-file there. */
  private fileExists(tenant: string, path: string): boolean {
    if (!this.tenantDirExists(tenant)) return false;
    const label = `${tenant}/${basename(path, '.mem')}`;
    let st: Stats;
    try {
      st = lstatSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw new CommyError(ErrorCode.INVALID_FILE, `cannot inspect ${label}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
    }
    // Only a process with the server's uid can plant one in a checked directory; still, never follow it.
    if (!st.isFile()) throw new CommyError(ErrorCode.INVALID_FILE, `${label} is not a regular file`);
    return true;
  }

  // ---- tenant directories -------------------------------------------------------------------------

  private tenantDir(tenant: string): string {
    return join(this.root, 'tenants', tenant);
  }

  /**
   * False if the tenant has no directory yet; checks an existing one every time a service is opened (rare and
   * cheap: one lstat), so a directory swapped for a link after its first use is refused too.
   */
  private tenantDirExists(tenant: string): boolean {
    try {
      lstatSync(this.tenantDir(tenant));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw new CommyError(ErrorCode.INVALID_FILE, `cannot inspect the directory of tenant ${tenant}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
    }
    this.ensureTenantDir(tenant);
    return true;
  }

  private ensureTenantDir(tenant: string): void {
    ensurePrivateDir(this.tenantDir(tenant), ErrorCode.INVALID_FILE, 'tenant directory');
    if (this.checkedTenants.has(tenant)) return;
    const policy = this.policies.get(tenant);
    if (policy !== undefined) applyFilePolicy(this.tenantDir(tenant), policy, true);
    this.checkedTenants.add(tenant);
  }

  // ---- idle close ---------------------------------------------------------------------------------

  /** Puts the entry last in the idle order and (re)starts its idle timer. */
  private markIdle(entry: OpenService): void {
    this.idle.delete(entry.key);
    this.idle.set(entry.key, entry);
    // refresh(): a busy unretained service (a write per message) re-arms its timer without a new one.
    if (entry.timer !== undefined) entry.timer.refresh();
    // unref: an idle timer alone never keeps the process alive.
    else entry.timer = setTimeout(() => this.expire(entry), this.limits.serviceIdleMs).unref();
  }

  private expire(entry: OpenService): void {
    entry.timer = undefined;
    if (this.hosts.get(entry.key) !== entry || entry.refs > 0) return;
    if (entry.host.subscriberCount > 0) {
      this.markIdle(entry); // subscribed without retain(): look again later rather than cut the subscriber off
      return;
    }
    this.closeEntry(entry);
  }

  /** Closes a host that failed (see ServiceHost.fail), retained or not: its holders see it closed. */
  private evict(host: ServiceHost): void {
    const entry = this.hosts.get(keyOf(host.tenant, host.service));
    if (entry?.host === host) this.closeEntry(entry);
  }

  private closeEntry(entry: OpenService): void {
    clearTimeout(entry.timer);
    entry.timer = undefined;
    this.hosts.delete(entry.key);
    this.idle.delete(entry.key);
    this.track(entry.host.close());
  }

  private assertOpen(): void {
    if (this.closed) throw new CommyError(ErrorCode.CLOSED, 'the service registry is closed');
  }
}

function keyOf(tenant: string, service: string): string {
  return `${tenant}/${service}`;
}

function notFound(tenant: string, service: string): CommyError {
  return new CommyError(ErrorCode.SERVICE_NOT_FOUND, `tenant ${tenant} has no service ${service}`);
}
