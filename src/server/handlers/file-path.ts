import { CommyError, ErrorCode } from '../../core/errors.js';
import { encodeFrame } from '../../protocol/frame-codec.js';
import type { MessageOf } from '../../protocol/messages.js';
import type { Reply, Session } from '../session.js';

/**
 * GetServiceFilePath: a local client maps the service's file itself. The connection holds the service open
 * while it lives (a lease), so the server's watcher sees, audits and forwards that client's writes.
 */
export function getServiceFilePath(s: Session, m: MessageOf<'GetServiceFilePath'>): Reply {
  const { tenant, service } = m.body;
  const perms = s.check(tenant, service, 'read');
  if (perms.grants.hybrid === false) {
    throw new CommyError(ErrorCode.HYBRID_ACCESS_DENIED, `key ${perms.grants.keyId} may not map service files; use remote mode`);
  }
  const host = s.host(tenant, service, m.body.create === true);
  s.lease(host);
  const file = host.file;
  s.ctx.audit.record({ event: 'GetServiceFilePath', clientId: s.clientId, keyId: perms.grants.keyId, tenant, service, filePath: file.path });
  return encodeFrame('ServiceFilePath', m.id, {
    serviceId: host.serviceId,
    filePath: file.path,
    fileSize: file.dataStart + file.dataCapacity,
    fileId: file.info.fileId,
    readOnly: !perms.can('write', service),
  });
}
