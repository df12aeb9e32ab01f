import { CommyError, ErrorCode } from '../../core/errors.js';
import { encodeFrame } from '../../protocol/frame-codec.js';
import type { MessageOf } from '../../protocol/messages.js';
import type { Reply, Session } from '../session.js';
import { resumeFrom, specOf, type Resume } from '../subscription-spec.js';

/**
 * Subscription: replies with the Snapshot, then sends its chunks as the socket drains; updates flow after the last.
 * With `since`, a resume: only what changed after that point, or a full snapshot that says why not.
 */
export async function subscribe(s: Session, m: MessageOf<'Subscription'>): Promise<Reply> {
  const { tenant, service } = m.body;
  const perms = s.check(tenant, service, 'read');
  const host = s.host(tenant, service, m.body.create === true);
  const resume: Resume | undefined = m.body.since && resumeFrom(m.body.since, host.file.info.fileId, host.file.version, host.lastRemoval());
  const spec = specOf(m.body, s.ctx.limits, s.protocol, resume !== undefined && 'since' in resume ? resume.since : undefined);
  const subscriber = s.addSubscription(host, spec, !perms.can('write', service));
  s.ctx.audit.record({ event: 'Subscription', clientId: s.clientId, keyId: perms.grants.keyId, tenant, service });
  let sent = false;
  try {
    for (const frame of host.snapshot(subscriber, m.id, resume !== undefined && 'reset' in resume ? resume.reset : undefined)) {
      if (sent) await s.link.outputRoom();
      if (subscriber.closed || !s.link.open) return undefined;
      s.link.send(frame);
      sent = true;
    }
  } catch (err) {
    // No half subscription: it ends here. Before the reply, the error is the reply; after it, a push says so.
    s.endSubscription(subscriber);
    if (!sent || !(err instanceof CommyError)) throw err;
    s.link.send(encodeFrame('Unsubscribed', 0, { sid: subscriber.sid, errorCode: err.code, message: err.message }));
    return undefined;
  }
  host.loaded(subscriber);
  return undefined;
}

export function unsubscribe(s: Session, m: MessageOf<'Unsubscribe'>): Reply {
  const sub = s.subscriptions.get(m.body.sid);
  if (sub === undefined) throw new CommyError(ErrorCode.SERVICE_NOT_FOUND, `no subscription ${m.body.sid} on this connection`);
  s.endSubscription(sub);
  return encodeFrame('Unsubscribed', m.id, { sid: m.body.sid });
}
