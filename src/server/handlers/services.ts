import { CommyError, ErrorCode } from '../../core/errors.js';
import { compileGlobs } from '../../core/glob.js';
import { VariableMetadata } from '../../core/variable-metadata.js';
import type { VariableTypeId } from '../../core/variable-type.js';
import { encodeFrame } from '../../protocol/frame-codec.js';
import type { MessageOf } from '../../protocol/messages.js';
import type { Reply, Session } from '../session.js';
import { defOf } from '../snapshot.js';

/** Services: their files (local mode), subscriptions with their snapshots, and new variables. */

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

/** Replies with the Snapshot, then sends its chunks as the socket drains; updates flow after the last. */
export async function subscribe(s: Session, m: MessageOf<'Subscription'>): Promise<Reply> {
  const { tenant, service } = m.body;
  const perms = s.check(tenant, service, 'read');
  if (s.subscriptions.size >= s.ctx.limits.maxSubscriptionsPerConnection) {
    throw new CommyError(ErrorCode.RATE_LIMITED, `at most ${s.ctx.limits.maxSubscriptionsPerConnection} subscriptions per connection`);
  }
  const wants = m.body.variables === undefined ? undefined : compileGlobs(m.body.variables, s.ctx.limits);
  const host = s.host(tenant, service, m.body.create === true);
  const sid = s.newSid();
  const readOnly = !perms.can('write', service);
  const subscriber = host.subscribe(sid, s.conn, { readOnly, notify: m.body.notify === true, ...(wants ? { wants } : {}) });
  s.ctx.registry.retain(host);
  s.subscriptions.set(sid, subscriber);
  s.ctx.audit.record({ event: 'Subscription', clientId: s.clientId, keyId: perms.grants.keyId, tenant, service });
  let sent = false;
  try {
    for (const frame of host.snapshot(subscriber, m.id)) {
      if (sent) await s.conn.outputRoom();
      if (subscriber.closed || !s.conn.open) return undefined;
      s.conn.send(frame);
      sent = true;
    }
  } catch (err) {
    // No half subscription: it ends here. Before the reply, the error is the reply; after it, a push says so.
    s.drop(subscriber);
    s.subscriptions.delete(sid);
    if (!sent || !(err instanceof CommyError)) throw err;
    s.conn.send(encodeFrame('Unsubscribed', 0, { sid, errorCode: err.code, message: err.message }));
    return undefined;
  }
  host.loaded(subscriber);
  return undefined;
}

export function unsubscribe(s: Session, m: MessageOf<'Unsubscribe'>): Reply {
  const sub = s.subscriptions.get(m.body.sid);
  if (sub === undefined) throw new CommyError(ErrorCode.SERVICE_NOT_FOUND, `no subscription ${m.body.sid} on this connection`);
  s.drop(sub);
  s.subscriptions.delete(m.body.sid);
  return encodeFrame('Unsubscribed', m.id, { sid: m.body.sid });
}

export async function registerVariable(s: Session, m: MessageOf<'RegisterVariable'>): Promise<Reply> {
  const sub = s.subscription(m.body.sid, 'admin');
  const { name, offset, size, typeId } = m.body;
  s.assertName(name, 'variable name');
  const file = sub.host.file;
  const meta = new VariableMetadata(name, offset, size, typeId as VariableTypeId);
  s.ctx.registry.checkRegistration(sub.host, meta);
  const entry = await s.whenFree(() => file.tryRegister(meta), `the directory of ${sub.host.serviceId}`);
  const { tenant, service } = sub.host;
  s.ctx.audit.record({ event: 'VariableRegistered', clientId: s.clientId, keyId: s.keyId(tenant), tenant, service, variables: [name] });
  return encodeFrame('VariableRegistered', m.id, { sid: sub.sid, def: defOf(entry, file.entryVersion(entry)) });
}
