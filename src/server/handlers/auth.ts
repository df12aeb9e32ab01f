import { hostId } from '../../core/host-id.js';
import { CommyError, ErrorCode } from '../../core/errors.js';
import { encodeFrame } from '../../protocol/frame-codec.js';
import { MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, type MessageOf } from '../../protocol/messages.js';
import type { Permissions } from '../permissions.js';
import type { Reply, Session } from '../session.js';

/** Authenticate: the key's grants for one tenant (a connection may authenticate to several, one at a time). */
export async function authenticate(s: Session, m: MessageOf<'Authenticate'>): Promise<Reply> {
  const { tenant, method, credential, protocol } = m.body;
  if (protocol < MIN_PROTOCOL_VERSION || protocol > PROTOCOL_VERSION) {
    throw new CommyError(ErrorCode.INVALID_MESSAGE, `protocol ${protocol} is not supported; this server speaks ${MIN_PROTOCOL_VERSION} to ${PROTOCOL_VERSION}`);
  }
  let perms: Permissions;
  try {
    const grants = await s.ctx.authenticator.authenticate(tenant, method, credential, s.peer.source);
    // Globs past the pattern limits (a token carrying thousands) are refused like a bad credential.
    perms = s.ctx.permissions.of(grants);
  } catch (err) {
    s.authFailed(tenant, err instanceof CommyError ? err.code : ErrorCode.INTERNAL_ERROR);
    throw err;
  }
  s.grant(tenant, perms, m.body.clientKey);
  s.speaks(protocol);
  return encodeFrame('Authenticated', m.id, {
    clientId: s.clientId,
    hostId: hostId(),
    protocol, // the client's: every later version only adds (docs/protocol.md, Versions)
    keyId: perms.grants.keyId,
    maxChangesPerReport: s.ctx.limits.maxChangesPerReport,
  });
}
