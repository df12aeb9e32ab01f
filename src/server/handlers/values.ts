import { assertFits } from '../../core/variable-rules.js';
import { CommyError, ErrorCode } from '../../core/errors.js';
import { BUSY, type DirEntry, type ServiceFile } from '../../local/service-file.js';
import { encodeFrame } from '../../protocol/frame-codec.js';
import type { MessageOf } from '../../protocol/messages.js';
import type { Reply, Session } from '../session.js';

/** Values: the old API's reads and writes, and a subscription's reports. Nothing here waits on another process's lock. */

export async function readVariable(s: Session, m: MessageOf<'ReadVariable'>): Promise<Reply> {
  const { tenant, service, name } = m.body;
  s.check(tenant, service, 'read');
  s.assertName(name, 'variable name');
  const [value, version] = await s.withService(tenant, service, ({ file }) => {
    const entry = file.entry(name);
    return s.whenFree(
      () => file.tryRead(entry, () => [file.u8.slice(entry.at, entry.at + entry.meta.size), file.entryVersion(entry)] as const),
      `${tenant}/${service}/${name}`,
    );
  });
  return encodeFrame('VariableValue', m.id, { name, value, version: Number(version) });
}

export async function writeVariable(s: Session, m: MessageOf<'WriteVariable'>): Promise<Reply> {
  const { tenant, service, name, value } = m.body;
  const perms = s.check(tenant, service, 'write');
  s.assertName(name, 'variable name');
  const version = await s.withService(tenant, service, async (host) => {
    const entry = host.file.entry(name);
    assertFits(entry.meta, value.length);
    const [written] = await s.whenFree(() => writeAll(host.file, [entry], [value]), `${host.serviceId}/${name}`);
    return Number(written);
  });
  s.ctx.audit.record({ event: 'VariablesChanged', clientId: s.clientId, keyId: perms.grants.keyId, tenant, service, variables: [name] });
  return encodeFrame('VariableChangesAcknowledged', m.id, { serviceId: `${tenant}/${service}`, changedVariables: [name], count: 1, version, versions: [version] });
}

/**
 * All changes are checked, and all their locks taken, before any is applied: a bad one rejects the whole
 * report, nothing half-done. The ack carries a version per change and no names, so it stays a few bytes per
 * change whatever the names; a report holds at most maxChangesPerReport changes.
 */
export async function reportChanges(s: Session, m: MessageOf<'ReportVariableChanges'>): Promise<Reply> {
  const max = s.ctx.limits.maxChangesPerReport;
  if (m.body.changes.length > max) {
    throw new CommyError(ErrorCode.MESSAGE_TOO_LARGE, `a report holds at most ${max} changes, this one ${m.body.changes.length}`);
  }
  const sub = s.subscription(m.body.sid, 'write');
  const file = sub.host.file;
  const entries = m.body.changes.map(([index, bytes]) => {
    const entry = file.entryAt(index) ?? (file.refresh(), file.entryAt(index));
    if (entry === undefined) throw new CommyError(ErrorCode.VARIABLE_NOT_FOUND, `no variable at index ${index}`);
    assertFits(entry.meta, bytes.length);
    return entry;
  });
  const values = m.body.changes.map(([, bytes]) => bytes);
  const written = await s.whenFree(() => (sub.closed ? [] : writeAll(file, entries, values)), `variables of ${sub.host.serviceId}`);
  if (sub.closed) throw new CommyError(ErrorCode.SERVICE_NOT_FOUND, `subscription ${sub.sid} ended before its changes were applied`);
  const versions = written.map(Number);
  entries.forEach((e, i) => sub.own.set(e.index, versions[i]!));
  const { tenant, service } = sub.host;
  s.ctx.audit.record({ event: 'VariablesChanged', clientId: s.clientId, keyId: s.keyId(tenant), tenant, service, variables: entries.map((e) => e.meta.name) });
  const version = versions.length > 0 ? versions[versions.length - 1]! : Number(file.version);
  return encodeFrame('VariableChangesAcknowledged', m.id, { serviceId: sub.host.serviceId, count: versions.length, version, versions });
}

/**
 * Takes every entry's writer lock without waiting (BUSY, holding none, if any is held by a live process), then
 * writes each variable's value in order. A variable named twice in one report takes its last value, and both
 * changes get that write's version.
 */
function writeAll(file: ServiceFile, entries: readonly DirEntry[], values: readonly Uint8Array[]): bigint[] | typeof BUSY {
  const locked: DirEntry[] = [];
  for (const e of new Set(entries)) {
    if (!file.tryLock(e)) {
      for (const held of locked) file.unlock(held);
      return BUSY;
    }
    locked.push(e);
  }
  const last = new Map<DirEntry, number>();
  entries.forEach((e, i) => last.set(e, i));
  const versions = new Map<DirEntry, bigint>();
  for (const [e, i] of last) versions.set(e, file.writeLocked(e, values[i]!));
  return entries.map((e) => versions.get(e)!);
}
