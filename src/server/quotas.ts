import { closeSync, fstatSync, openSync, readSync, readdirSync, constants as fsc } from 'node:fs';
import { join } from 'node:path';
import { CommyError, ErrorCode } from '../core/errors.js';
import type { VariableMetadata } from '../core/variable-metadata.js';
import { DATA_ALIGN, DEFAULT_MAX_VARIABLES, H, INITIAL_DATA_CAPACITY, MAGIC, alignUp, dataStartFor, grownCapacity } from '../local/file-format.js';
import type { ServiceFile } from '../local/service-file.js';
import { RateLimiter, type Limits } from './limits.js';

/** Service creations per tenant per second (a burst of as many is allowed): RATE_LIMITED past it. */
export const SERVICE_CREATIONS_PER_SECOND = 10;
/** A tenant's usage is read from disk at most this often; our own changes are added in between. */
export const USAGE_REFRESH_MS = 1000;
/** Size of a service file the registry creates (default directory, initial data region). */
export const NEW_SERVICE_BYTES = dataStartFor(DEFAULT_MAX_VARIABLES) + INITIAL_DATA_CAPACITY;

/** What one tenant holds on disk. */
export interface TenantUsage {
  services: number;
  variables: number;
  /** Sum of the service files' sizes (apparent size: what the files may grow into without us). */
  bytes: number;
}

interface CachedUsage {
  usage: TenantUsage;
  readAt: number;
}

/**
 * Per-tenant quotas (services, variables, bytes) and the service creation rate. Usage comes from the
 * tenant's directory, not from our own bookkeeping: local processes register variables and grow files
 * without asking the server. Reading it costs a readdir and an open/fstat/pread per file, so it is cached
 * for USAGE_REFRESH_MS; each check that passes reserves what it allows, so a burst of requests inside one
 * cache period cannot overshoot the quota (a reservation that ends up unused is dropped at the next read).
 */
export class TenantQuotas {
  private readonly cache = new Map<string, CachedUsage>();
  private readonly creations = new Map<string, RateLimiter>();

  constructor(
    private readonly limits: Limits,
    private readonly dirOf: (tenant: string) => string,
    private readonly refreshMs: number = USAGE_REFRESH_MS,
  ) {}

  /** The tenant's usage, from disk unless read less than refreshMs ago. */
  usage(tenant: string): TenantUsage {
    const now = performance.now();
    const cached = this.cache.get(tenant);
    if (cached !== undefined && now - cached.readAt < this.refreshMs) return cached.usage;
    const usage = scanTenantDir(this.dirOf(tenant));
    this.cache.set(tenant, { usage, readAt: now });
    return usage;
  }

  /** QUOTA_EXCEEDED or RATE_LIMITED before a new service file is created; otherwise reserves it. */
  checkCreate(tenant: string, replicated = false): void {
    const usage = this.usage(tenant);
    const { maxServicesPerTenant } = this.limits;
    if (usage.services + 1 > maxServicesPerTenant) {
      throw new CommyError(ErrorCode.QUOTA_EXCEEDED, `tenant ${tenant} already has ${usage.services} services (limit ${maxServicesPerTenant})`);
    }
    this.assertBytes(tenant, usage, NEW_SERVICE_BYTES);
    if (!replicated && !this.creationLimiter(tenant).take()) {
      throw new CommyError(ErrorCode.RATE_LIMITED, `tenant ${tenant} may create at most ${SERVICE_CREATIONS_PER_SECOND} services per second`);
    }
    usage.services += 1;
    usage.bytes += NEW_SERVICE_BYTES;
  }

  /** QUOTA_EXCEEDED before registering a variable that adds `growth` bytes to a file; otherwise reserves it. */
  checkRegistration(tenant: string, growth: number): void {
    const usage = this.usage(tenant);
    const { maxVariablesPerTenant } = this.limits;
    if (usage.variables + 1 > maxVariablesPerTenant) {
      throw new CommyError(ErrorCode.QUOTA_EXCEEDED, `tenant ${tenant} already has ${usage.variables} variables (limit ${maxVariablesPerTenant})`);
    }
    this.assertBytes(tenant, usage, growth);
    usage.variables += 1;
    usage.bytes += growth;
  }

  private assertBytes(tenant: string, usage: TenantUsage, more: number): void {
    const max = this.limits.maxBytesPerTenant;
    if (usage.bytes + more > max) {
      throw new CommyError(ErrorCode.QUOTA_EXCEEDED, `tenant ${tenant} would hold ${usage.bytes + more} bytes of service files (limit ${max})`);
    }
  }

  private creationLimiter(tenant: string): RateLimiter {
    let limiter = this.creations.get(tenant);
    if (limiter === undefined) {
      limiter = new RateLimiter({ messagesPerSecond: SERVICE_CREATIONS_PER_SECOND, burst: SERVICE_CREATIONS_PER_SECOND });
      this.creations.set(tenant, limiter);
    }
    return limiter;
  }
}

/**
 * Bytes registering the new variable `meta` would add to the file: the growth registration makes
 * (src/local/registration.ts, by file-format.ts grownCapacity: the data region doubles, page-aligned, up to the maximum size).
 */
export function registrationGrowth(file: ServiceFile, meta: VariableMetadata): number {
  const offset = meta.offset === -1 ? alignUp(file.dataEnd, DATA_ALIGN) : meta.offset;
  const end = offset + meta.size;
  const capacity = file.dataCapacity;
  return Math.max(0, grownCapacity(capacity, end, file.info.maxFileSize - file.dataStart) - capacity);
}

export function isRegistered(file: ServiceFile, name: string): boolean {
  try {
    file.entry(name);
    return true;
  } catch (err) {
    if (err instanceof CommyError && err.code === ErrorCode.VARIABLE_NOT_FOUND) return false;
    throw err;
  }
}

const HEADER_PREFIX = 128; // magic … VAR_COUNT: all a usage count needs

/** Counts the tenant's `.mem` files, their sizes and their published variables; a missing directory is empty. */
export function scanTenantDir(dir: string): TenantUsage {
  const usage: TenantUsage = { services: 0, variables: 0, bytes: 0 };
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return usage;
    throw new CommyError(ErrorCode.INVALID_FILE, `cannot read tenant directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
  const page = Buffer.alloc(HEADER_PREFIX);
  for (const name of names) {
    if (name.endsWith('.mem')) addFile(join(dir, name), page, usage);
  }
  return usage;
}

function addFile(path: string, page: Buffer, usage: TenantUsage): void {
  let fd: number;
  try {
    // NOFOLLOW and NONBLOCK: a symlink or a FIFO planted in the directory must not redirect or stall us.
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch {
    return; // gone since readdir, or a symlink: not a service file we would open
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return;
    usage.services += 1;
    usage.bytes += st.size;
    const got = readSync(fd, page, 0, HEADER_PREFIX, 0);
    if (got < HEADER_PREFIX || page.toString('ascii', H.MAGIC, H.MAGIC + MAGIC.length) !== MAGIC) return;
    // A corrupt count must not lock the tenant out for good: never more than the directory holds.
    usage.variables += Math.min(page.readUInt32LE(H.VAR_COUNT), page.readUInt32LE(H.MAX_VARIABLES));
  } catch {
    /* unreadable: counted as far as we got */
  } finally {
    closeSync(fd);
  }
}
