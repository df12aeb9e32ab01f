import { CommyError, ErrorCode } from '../core/errors.js';
import { hostId } from '../core/host-id.js';
import { LocalFileAccessor, fileServiceId } from '../local/local-accessor.js';
import { ServiceFile } from '../local/service-file.js';
import { NotifiedChanges, NotifiedLocalAccessor } from './notified-accessor.js';
import type { LocalAttachRequest } from './platform.js';

export type { LocalAttachRequest } from './platform.js';


/**
 * Maps the server's own service file when the server is on this machine: the fast path, with no network
 * between this process and the data. A key without the write right maps it read-only and hears of changes
 * from the server (a `notify` subscription). Throws (with the reason) when that is not possible; in 'auto'
 * mode the client then falls back to remote.
 */
export async function attachLocal(request: LocalAttachRequest): Promise<LocalFileAccessor> {
  const { conn, tenant, service, serverHostId } = request;
  if (serverHostId === undefined || serverHostId !== hostId()) {
    throw new CommyError(ErrorCode.FILE_NOT_FOUND, `the server at ${conn.url} runs on another machine: its service files cannot be mapped here`);
  }
  const where = await conn.request('GetServiceFilePath', { tenant, service, create: true }, 'ServiceFilePath');
  // Never create: only the server's own file will do. Read-only for a key that may not write: a writable
  // mapping would bypass the missing right.
  const file = ServiceFile.open(where.filePath, { readOnly: where.readOnly });
  try {
    if (file.info.fileId !== where.fileId) {
      // Same path, different file: e.g. a container with its own file system under the same boot id.
      throw new CommyError(ErrorCode.FILE_NOT_FOUND, `${where.filePath} here is not the server's file (file id differs)`);
    }
    return where.readOnly ? await subscribeNotices(request, file) : new LocalFileAccessor(file);
  } catch (err) {
    file.close();
    throw err;
  }
}

/** A read-only mapping cannot run a watcher: the server sends the changed names instead (Subscription notify). */
function subscribeNotices(ctx: LocalAttachRequest, file: ServiceFile): Promise<LocalFileAccessor> {
  const { conn, tenant, service } = ctx;
  // Runs before the next frame is decoded, so no notice for this sid can arrive unrouted.
  return conn.subscribe({ tenant, service, notify: true }, (snapshot, { resolve }) => {
    const notices = new NotifiedChanges(ctx, file, fileServiceId(file), snapshot);
    const accessor = new NotifiedLocalAccessor(file, notices, ctx);
    ctx.route(snapshot.sid, notices.onUpdated);
    resolve(accessor);
  });
}
