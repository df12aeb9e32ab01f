import type { Logger } from 'pino';
import { CommyError, ErrorCode } from '../core/errors.js';
import { CATALOG_STREAM } from './cluster-keys.js';
import type { Positions } from './positions.js';
import { streamInfo, type CommandConnection } from './redis-connection.js';
import type { ServiceReplica } from './service-replica.js';
import { compareIds, STREAM_START } from './stream-id.js';

/** A write Redis took that has not come back after this long is looked for in its stream (sweep). */
const LOST_AFTER_MS = 5000;

/** What finding lost writes needs of the node. */
export interface LostWritesDeps {
  readonly cmd: CommandConnection;
  readonly replicas: ReadonlyMap<string, ServiceReplica>;
  readonly positions: Positions;
  readonly log: Logger;
  /** Announces every live service again (Redis lost the catalog). */
  announceAgain(): Promise<void>;
  /** Local writes put back to send (sendLocal) go again. */
  resendLocal(): void;
}

/** Redis losing what it had taken: its data as a whole (restarted empty, flushed), or one write's entry. */
export class LostWrites {
  private lossSaid = false;
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly deps: LostWritesDeps) {
    this.sweeper = setInterval(() => void this.sweep(), LOST_AFTER_MS).unref();
  }

  stop(): void {
    clearInterval(this.sweeper);
  }

  /**
   * Redis is back without the cluster's data (restarted empty, flushed): the catalog this node had read is gone.
   * Said once, loudly; this node announces its services again, so that a node that joins later learns them.
   */
  async checkDataLoss(): Promise<void> {
    const { positions } = this.deps;
    if (positions.catalog === STREAM_START) return;
    let last = STREAM_START;
    try {
      const field = await streamInfo(this.deps.cmd, CATALOG_STREAM);
      if (field !== undefined) last = String(field('last-generated-id'));
    } catch {
      return; // Redis away again: looked at at its next 'ready'
    }
    if (compareIds(last, positions.catalog) >= 0) return;
    if (!this.lossSaid) {
      this.deps.log.error(
        { catalogRead: positions.catalog, catalogNow: last },
        "cluster: the cluster's Redis has lost its data (restarted empty, or flushed): writes it had taken and not yet delivered are lost (answered UNAVAILABLE), operation ids from before are forgotten, and a node that joins now gets only what is written from now on; services are announced again",
      );
    }
    this.lossSaid = true;
    await this.deps.announceAgain();
  }

  /**
   * Writes of this node that Redis took and that have not come back for LOST_AFTER_MS: one whose entry is not in
   * its stream was lost (Redis lost its data, or trimmed it unread) and ends with UNAVAILABLE, rather than wait
   * forever (a resend of it to this node would wait behind it): resent, it is appended anew, or answered as a
   * duplicate if Redis still knows its operation id.
   */
  private async sweep(): Promise<void> {
    let localLost = false;
    for (const replica of this.deps.replicas.values()) {
      for (const [token, w] of replica.waiters) {
        if (w.id === undefined || Date.now() - (w.since ?? 0) < LOST_AFTER_MS) continue;
        let found: unknown[];
        try {
          found = await this.deps.cmd.xrange(replica.keys.log, w.id, w.id);
        } catch {
          return; // Redis away: looked at again later
        }
        if (found.length > 0 || replica.waiters.get(token) !== w) continue;
        replica.waiters.delete(token);
        localLost ||= w.localNames !== undefined;
        w.reject(new CommyError(ErrorCode.UNAVAILABLE, `${replica.serviceId}: the cluster's Redis lost this write; resend it`));
      }
    }
    if (localLost) setImmediate(() => this.deps.resendLocal()); // local writes put back to send (sendLocal) go again
  }
}
