import { CommyError, ErrorCode } from '../core/errors.js';
import type { FileAccessor } from '../core/file-accessor.js';
import { asCommyError } from './client-errors.js';
import type { ResolvedClientOptions } from './client-options.js';
import type { Connection } from './connection.js';
import type { ClientPlatform, LocalAttachRequest } from './platform.js';
import type { PushRouter } from './push-router.js';
import { RemoteFileAccessor, type RemoteContext } from './remote-accessor.js';

/** What opening a file needs of the client's connection (client-link.ts). */
export interface OpenerLink {
  /** The connection now: a new one after each reconnection. */
  readonly current: Connection | undefined;
  /** From the last Authenticated: the machine the server runs on. */
  readonly serverHostId: string | undefined;
  /** Remote files' context, made with the first connection. */
  readonly remote: RemoteContext | undefined;
}

/**
 * Opens a service file as ClientOptions.mode says: the server's file mapped here (local), or a subscription
 * over the WebSocket (remote); in 'auto', remote whenever mapping fails, and onFallback hears why.
 */
export class FileOpener {
  constructor(
    private readonly options: ResolvedClientOptions,
    private readonly platform: ClientPlatform,
    private readonly router: PushRouter,
    private readonly link: OpenerLink,
  ) {
    if (options.mirror !== undefined && platform.openMirror === undefined) {
      throw new CommyError(ErrorCode.FILE_NOT_FOUND, `options.mirror: mirror files are not available on this platform (${platform.name})`);
    }
  }

  async open(conn: Connection, tenant: string, service: string): Promise<FileAccessor> {
    const mode = this.options.mode;
    const attach = this.platform.attachLocal;
    if (mode === 'local' && attach === undefined) {
      throw new CommyError(ErrorCode.FILE_NOT_FOUND, `local mode is not available on this platform (${this.platform.name})`);
    }
    if (mode !== 'remote' && attach !== undefined) {
      const request = this.attachRequest(conn, tenant, service);
      try {
        return await attach(request);
      } catch (err) {
        const reason = asCommyError(err, `${tenant}/${service}: the service file could not be mapped`);
        if (mode === 'local') throw reason;
        // 'auto': any reason not to map (another machine, another container, a file that will not open) means remote.
        this.fellBack(reason, tenant, service);
      }
    }
    const remote = await RemoteFileAccessor.subscribe(this.link.remote!, tenant, service);
    if (this.options.mirror !== undefined) await this.mirror(remote, tenant, service, this.options.mirror.dir);
    return remote;
  }

  /** ClientOptions.mirror: the remote file's mirror file, or the file closed again and why not. */
  private async mirror(accessor: RemoteFileAccessor, tenant: string, service: string, dir: string | undefined): Promise<void> {
    try {
      this.platform.openMirror!({ accessor, tenant, service, dir, onError: this.options.onError });
    } catch (err) {
      await accessor.close().catch(() => {});
      throw asCommyError(err, `${tenant}/${service}: its mirror file could not be created`);
    }
  }

  private attachRequest(conn: Connection, tenant: string, service: string): LocalAttachRequest {
    const link = this.link;
    return {
      // Read at each use: a read-only file's notices follow the client to its next connection.
      get conn(): Connection {
        return link.current ?? conn;
      },
      tenant,
      service,
      serverHostId: link.serverHostId,
      route: (sid, onUpdated) => this.router.routeNotices(sid, onUpdated),
      onError: this.options.onError,
    };
  }

  /** Tells the application why 'auto' went remote; a throwing callback is reported, not thrown. */
  private fellBack(reason: CommyError, tenant: string, service: string): void {
    try {
      this.options.onFallback?.(reason, { tenant, service });
    } catch (err) {
      this.options.onError(asCommyError(err, 'the onFallback callback threw'));
    }
  }
}
