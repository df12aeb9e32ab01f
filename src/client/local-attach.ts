import { CommyError, ErrorCode } from '../core/errors.js';
import { hostId } from '../core/host-id.js';
import { LocalFileAccessor } from '../local/local-accessor.js';
import { ServiceFile } from '../local/service-file.js';
import type { Connection } from './connection.js';

export interface LocalAttachRequest {
  conn: Connection;
  tenant: string;
  service: string;
  /** From Authenticated: the machine the server runs on. */
  serverHostId: string | undefined;
}

/**
 * Maps the server's own service file when the server is on this machine: the fast path, with no network
 * between this process and the data. Throws (with the reason) when that is not possible; in 'auto' mode
 * the client then falls back to remote.
 */
export async function attachLocal({ conn, tenant, service, serverHostId }: LocalAttachRequest): Promise<LocalFileAccessor> {
  if (serverHostId === undefined || serverHostId !== hostId()) {
    throw new CommyError(ErrorCode.FILE_NOT_FOUND, `the server at ${conn.url} runs on another machine: its service files cannot be mapped here`);
  }
  const where = await conn.request('GetServiceFilePath', { tenant, service, create: true }, 'ServiceFilePath');
  if (where.readOnly) {
    // This version maps files read-write only, and a read-write mapping would bypass the key's missing
    // write right: read-only keys use remote mode (the server checks every write) until read-only mappings exist.
    throw new CommyError(ErrorCode.PERMISSION_DENIED, `the key may not write ${tenant}/${service}: read-only keys use remote mode`);
  }
  const file = ServiceFile.open(where.filePath); // never create: only the server's own file will do
  if (file.info.fileId !== where.fileId) {
    // Same path, different file: e.g. a container with its own file system under the same boot id.
    file.close();
    throw new CommyError(ErrorCode.FILE_NOT_FOUND, `${where.filePath} here is not the server's file (file id differs)`);
  }
  return new LocalFileAccessor(file);
}
