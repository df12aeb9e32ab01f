import { CommyError, ErrorCode } from '../../core/errors.js';
import { assertFits } from '../../core/variable-rules.js';
import type { DirEntry, ServiceFile } from '../../local/service-file.js';
import { encodeFrame } from '../../protocol/frame-codec.js';
import type { MessageOf, ReportChange, VariableChangesAcknowledgedBody } from '../../protocol/messages.js';
import { reportFingerprint, writeFingerprint } from '../op-ledger.js';
import type { Reply, Session } from '../session.js';

/**
 * Writes: the old API's WriteVariable, a subscription's reports and mutations, all through ServiceHost.apply()
 * and, with an operation id, applied once however often they are retried (Session.once).
 */

export async function writeVariable(s: Session, m: MessageOf<'WriteVariable'>): Promise<Reply> {
  const start = performance.now();
  const { tenant, service, name, value, opId } = m.body;
  const perms = s.check(tenant, service, 'write');
  s.assertName(name, 'variable name');
  const acked = (serviceId: string, version: number): VariableChangesAcknowledgedBody => ({ serviceId, changedVariables: [name], count: 1, version, versions: [version] });
  const what = writeFingerprint('WriteVariable', `${tenant}/${service}/${name}`, value);
  const ack = await s.once(tenant, service, opId, what, (record, op) =>
    s.withService(tenant, service, async (host): Promise<VariableChangesAcknowledgedBody> => {
      const entry = host.file.entry(name);
      assertFits(entry.meta, value.length);
      const cluster = s.ctx.cluster;
      const [written] =
        cluster !== undefined
          ? await cluster.write(host, { entries: [entry], values: [value], record, op })
          : await s.whenFree(() => host.apply([entry], [value], { record }), `${host.serviceId}/${name}`);
      await host.durable();
      s.ctx.audit.record({ event: 'VariablesChanged', clientId: s.clientId, keyId: perms.grants.keyId, tenant, service, variables: [name] });
      return acked(host.serviceId, Number(written));
    }),
    { weigh: () => 1, revive: ([version]) => acked(`${tenant}/${service}`, version ?? 0) },
  );
  s.ctx.metrics?.writeAcknowledged((performance.now() - start) / 1000);
  return encodeFrame('VariableChangesAcknowledged', m.id, ack);
}

/**
 * All changes are checked, and all their locks taken, before any is applied: a bad one rejects the whole
 * report, nothing half-done. The ack carries a version per change and no names, so it stays a few bytes per
 * change whatever the names; a report holds at most maxChangesPerReport changes.
 */
export async function reportChanges(s: Session, m: MessageOf<'ReportVariableChanges'>): Promise<Reply> {
  const start = performance.now();
  const max = s.ctx.limits.maxChangesPerReport;
  if (m.body.changes.length > max) {
    throw new CommyError(ErrorCode.MESSAGE_TOO_LARGE, `a report holds at most ${max} changes, this one ${m.body.changes.length}`);
  }
  const sub = s.subscription(m.body.sid, 'write');
  const { tenant, service } = sub.host;
  const file = sub.host.file;
  const acked = (versions: number[]): VariableChangesAcknowledgedBody => ({
    serviceId: sub.host.serviceId,
    count: versions.length,
    version: Math.max(0, ...versions) || Number(file.version),
    versions,
  });
  const what = reportFingerprint(sub.host.serviceId, m.body.changes);
  const ack = await s.once(
    tenant,
    service,
    m.body.opId,
    what,
    async (record, op): Promise<VariableChangesAcknowledgedBody> => {
      const entries = m.body.changes.map((change) => entryOf(file, change, true));
      const values = m.body.changes.map(([, bytes]) => bytes);
      const cluster = s.ctx.cluster;
      const apply = () => (sub.closed ? [] : sub.host.apply(entries, values, { origin: sub, skipRemoved: true, record }));
      const written = cluster !== undefined ? await cluster.write(sub.host, { entries, values, origin: sub, record, op }) : await s.whenFree(apply, `variables of ${sub.host.serviceId}`);
      if (sub.closed) throw new CommyError(ErrorCode.SERVICE_NOT_FOUND, `subscription ${sub.sid} ended before its changes were applied`);
      await sub.host.durable();
      const versions = written.map(Number);
      const names = entries.flatMap((e, i) => (versions[i] === 0 ? [] : [e.meta.name]));
      s.ctx.audit.record({ event: 'VariablesChanged', clientId: s.clientId, keyId: s.keyId(tenant), tenant, service, variables: names });
      return acked(versions);
    },
    { weigh: (ack) => 1 + (ack.versions?.length ?? 0), revive: (versions) => acked([...versions]) },
  );
  s.ctx.metrics?.writeAcknowledged((performance.now() - start) / 1000);
  return encodeFrame('VariableChangesAcknowledged', m.id, ack);
}

/**
 * Mutate: one variable's new value through its subscription, acknowledged with the version it committed;
 * with `expectedVersion`, compare-and-set (CONFLICT, nothing written, when the variable has moved on).
 * Linearizable per variable: the server's lock on the variable orders every write to it.
 */
export async function mutate(s: Session, m: MessageOf<'Mutate'>): Promise<Reply> {
  const start = performance.now();
  const { sid, index, value, opId, expectedVersion } = m.body;
  const sub = s.subscription(sid, 'write');
  const { tenant, service } = sub.host;
  const what = writeFingerprint('Mutate', `${sub.host.serviceId} ${index}`, value, expectedVersion);
  const body = await s.once(
    tenant,
    service,
    opId,
    what,
    async (record, op) => {
      const entry = entryOf(sub.host.file, [index, value]);
      const cluster = s.ctx.cluster;
      const apply = () => (sub.closed ? [] : sub.host.apply([entry], [value], { origin: sub, expected: [expectedVersion], record }));
      const [written] =
        cluster !== undefined
          ? await cluster.write(sub.host, { entries: [entry], values: [value], origin: sub, record, expected: expectedVersion, op })
          : await s.whenFree(apply, `${sub.host.serviceId}/${entry.meta.name}`);
      if (written === undefined) throw new CommyError(ErrorCode.SERVICE_NOT_FOUND, `subscription ${sid} ended before the mutation was applied`);
      await sub.host.durable();
      s.ctx.audit.record({ event: 'VariablesChanged', clientId: s.clientId, keyId: s.keyId(tenant), tenant, service, variables: [entry.meta.name] });
      return { sid, index, version: Number(written) };
    },
    // A retry may come on another subscription (a new connection): it is answered on its own.
    { weigh: () => 1, revive: ([version]) => ({ sid, index, version: version ?? 0 }) },
  );
  s.ctx.metrics?.writeAcknowledged((performance.now() - start) / 1000);
  return encodeFrame('MutationResponse', m.id, body);
}

/**
 * The reported variable, by directory index (looking again at the directory once for one just registered).
 * With `removedToo`, a removed variable's slot is given too (a report skips it: see ApplyOptions.skipRemoved).
 */
function entryOf(file: ServiceFile, [index, bytes]: ReportChange, removedToo = false): DirEntry {
  const entry = removedToo ? file.slots()[index] : (file.entryAt(index) ?? (file.refresh(), file.entryAt(index)));
  if (entry === undefined) throw new CommyError(ErrorCode.VARIABLE_NOT_FOUND, `no variable at index ${index}`);
  assertFits(entry.meta, bytes.length);
  return entry;
}
