import type { Logger } from 'pino';
import { CommyError, ErrorCode } from '../core/errors.js';
import type { ServiceRegistry } from '../server/service-registry.js';
import { LOCK_WAIT_MS, type EntryApplier } from './entry-apply.js';
import type { Positions } from './positions.js';
import { streamInfo, type CommandConnection } from './redis-connection.js';
import type { ServiceReplica } from './service-replica.js';
import { compareIds, STREAM_START, type StreamId } from './stream-id.js';

/** What loading snapshots needs of the node. */
export interface SnapshotDeps {
  readonly cmd: CommandConnection;
  readonly registry: ServiceRegistry;
  readonly log: Logger;
  readonly positions: Positions;
  /** Registrations and removals wait for local processes' locks as an entry's apply does. */
  readonly applier: Pick<EntryApplier, 'ensureRegistered' | 'busy'>;
}

/** A service's stream trimmed past where this node had read, and the snapshot it is caught up from then. */
export class SnapshotLoader {
  constructor(private readonly deps: SnapshotDeps) {}

  /** Were entries after the replica's position (or `from`) trimmed away (so reading on would skip them)? */
  async trimmedPast(replica: ServiceReplica, from: StreamId = replica.applied): Promise<boolean> {
    const field = await streamInfo(this.deps.cmd, replica.keys.log);
    if (field === undefined) return false;
    if (compareIds(String(field('max-deleted-entry-id') ?? STREAM_START), from) > 0) return true;
    // Trimming (XADD MAXLEN) leaves max-deleted-entry-id alone (Redis 7.0): when entries were trimmed (fewer left
    // than added; unknown before Redis 7) and the first one left is after `from`, the ones between may be gone.
    const first = field('first-entry');
    const trimmed = !(Number(field('entries-added')) <= Number(field('length')));
    return trimmed && Array.isArray(first) && compareIds(String(first[0]), from) > 0;
  }

  /** Loads the service's snapshot from Redis (layout, values, and the stream id they are current at). */
  async load(replica: ServiceReplica, waitMs = LOCK_WAIT_MS): Promise<void> {
    const { cmd, registry, applier } = this.deps;
    const [atBuf, layout, values] = await cmd.commySnapshotBuffer(replica.keys.at, replica.keys.layout, replica.keys.values);
    const at = atBuf.toString('latin1') || STREAM_START;
    const host = registry.acquire(replica.tenant, replica.service, false);
    try {
      const shapes = new Map<string, string>();
      for (let i = 0; i + 1 < layout.length; i += 2) shapes.set(layout[i]!.toString('utf8'), layout[i + 1]!.toString('latin1'));
      for (const e of host.file.list()) if (!shapes.has(e.meta.name)) await applier.busy(() => host.remove(e.meta.name), host, e.meta.name, waitMs);
      for (const [name, code] of shapes) await applier.ensureRegistered(host, name, code, -1, waitMs);
      for (let i = 0; i + 1 < values.length; i += 2) {
        const e = host.file.find(values[i]!.toString('utf8'));
        const bytes = values[i + 1]!;
        if (e !== undefined && bytes.length === e.meta.size) await applier.busy(() => host.apply([e], [bytes], { skipRemoved: true }), host, e.meta.name, waitMs);
      }
    } finally {
      registry.release(host);
    }
    this.deps.log.info({ service: replica.serviceId, at }, 'cluster: loaded a snapshot (the stream was trimmed past this node)');
    replica.start(at);
    this.deps.positions.set(replica.serviceId, at);
    // Writes of this node that waited for entries the snapshot covers: their apply here was skipped, so they end
    // UNAVAILABLE and their clients resend them (answered by their operation id).
    for (const [token, w] of replica.waiters) {
      replica.waiters.delete(token);
      w.reject(new CommyError(ErrorCode.UNAVAILABLE, `${replica.serviceId} was reloaded from a snapshot; resend (the operation id makes it safe)`));
    }
  }
}
