import { VariableMetadata } from '../../core/variable-metadata.js';
import { assertDefinition } from '../../core/variable-rules.js';
import type { VariableTypeId } from '../../core/variable-type.js';
import { encodeFrame } from '../../protocol/frame-codec.js';
import type { MessageOf } from '../../protocol/messages.js';
import { fieldsOfWire } from '../../protocol/variable-def.js';
import type { Reply, Session } from '../session.js';
import { entryDef } from '../snapshot.js';

/**
 * RemoveVariable (admin): the variable leaves the directory; every subscriber that knows it is told (SyncBatch
 * removed), a resume from before it is a reset. Its space is reused by later registrations; its slot is not.
 */
export async function removeVariable(s: Session, m: MessageOf<'RemoveVariable'>): Promise<Reply> {
  const sub = s.subscription(m.body.sid, 'admin');
  const { name } = m.body;
  s.assertName(name, 'variable name');
  const host = sub.host;
  const entry = host.file.entry(name); // VARIABLE_NOT_FOUND before waiting for anything
  const cluster = s.ctx.cluster;
  const version = cluster !== undefined ? await cluster.remove(host, name) : await s.whenFree(() => host.remove(name), `${host.serviceId}/${name}`);
  await host.durable();
  const { tenant, service } = host;
  s.ctx.audit.record({ event: 'VariableRemoved', clientId: s.clientId, keyId: s.keyId(tenant), tenant, service, variables: [name] });
  return encodeFrame('VariableRemoved', m.id, { sid: sub.sid, index: entry.index, version: Number(version) });
}

/** RegisterVariable (admin): checked against the tenant's quotas, then published in the file's directory (a struct's layout checked there). */
export async function registerVariable(s: Session, m: MessageOf<'RegisterVariable'>): Promise<Reply> {
  const sub = s.subscription(m.body.sid, 'admin');
  const { name, offset, size, typeId } = m.body;
  s.assertName(name, 'variable name');
  const file = sub.host.file;
  const meta = new VariableMetadata(name, offset, size, typeId as VariableTypeId, fieldsOfWire(m.body.fields));
  assertDefinition(meta, file.maxVariableSize); // a bad layout is refused as such, before any quota is counted
  s.ctx.registry.checkRegistration(sub.host, meta);
  const cluster = s.ctx.cluster;
  const entry = cluster !== undefined ? await cluster.register(sub.host, meta) : await s.whenFree(() => file.tryRegister(meta), `the directory of ${sub.host.serviceId}`);
  await sub.host.durable();
  const { tenant, service } = sub.host;
  s.ctx.audit.record({ event: 'VariableRegistered', clientId: s.clientId, keyId: s.keyId(tenant), tenant, service, variables: [name] });
  return encodeFrame('VariableRegistered', m.id, { sid: sub.sid, def: entryDef(entry, file.entryVersion(entry), s.protocol) });
}
