import { mkdirSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { CommyError, ErrorCode } from '../core/errors.js';
import { assertValidName } from '../core/names.js';
import { ServiceFile } from '../local/service-file.js';
import type { Limits } from './limits.js';
import { ServiceHost, type BroadcastOptions } from './service-host.js';

/**
 * Tenants' services on disk: `<dataDir>/tenants/<tenant>/<service>.mem`. Names are validated before any
 * path is built, and the result is checked to stay under dataDir: a name from the wire is never a path.
 */
export class ServiceRegistry {
  private readonly hosts = new Map<string, ServiceHost>();
  readonly root: string;

  constructor(
    dataDir: string,
    private readonly limits: Limits,
    private readonly broadcast: BroadcastOptions,
  ) {
    this.root = resolve(dataDir);
    mkdirSync(join(this.root, 'tenants'), { recursive: true, mode: 0o700 });
  }

  pathOf(tenant: string, service: string): string {
    assertValidName(tenant, 'tenant name');
    assertValidName(service, 'service name');
    const path = join(this.root, 'tenants', tenant, `${service}.mem`);
    if (!path.startsWith(this.root + sep)) throw new CommyError(ErrorCode.INVALID_NAME, 'service path escapes the data directory');
    return path;
  }

  /** The open service, opening its file if it exists; with `create`, creating it. SERVICE_NOT_FOUND otherwise. */
  get(tenant: string, service: string, create: boolean): ServiceHost {
    const path = this.pathOf(tenant, service);
    const key = `${tenant}/${service}`;
    const open = this.hosts.get(key);
    if (open !== undefined) return open;
    if (create) mkdirSync(join(this.root, 'tenants', tenant), { recursive: true, mode: 0o700 });
    let file: ServiceFile;
    try {
      file = ServiceFile.open(path, {
        create,
        tenant,
        service,
        maxFileSize: this.limits.maxServiceFileBytes,
        maxVariableSize: this.limits.maxVariableBytes,
      });
    } catch (err) {
      if (err instanceof CommyError && err.code === ErrorCode.FILE_NOT_FOUND) {
        throw new CommyError(ErrorCode.SERVICE_NOT_FOUND, `tenant ${tenant} has no service ${service}`);
      }
      throw err;
    }
    const host = new ServiceHost(tenant, service, file, this.broadcast);
    this.hosts.set(key, host);
    return host;
  }

  exists(tenant: string, service: string): boolean {
    try {
      this.get(tenant, service, false);
      return true;
    } catch (err) {
      if (err instanceof CommyError && err.code === ErrorCode.SERVICE_NOT_FOUND) return false;
      throw err;
    }
  }

  close(): void {
    for (const host of this.hosts.values()) host.close();
    this.hosts.clear();
  }
}
