import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { ErrorCode, isCommyError } from '../core/errors.js';
import { isValidName } from '../core/names.js';
import { TurnBudget } from '../server/turn-budget.js';
import { parseEntry } from './cluster-entry.js';
import { CATALOG_STREAM } from './cluster-keys.js';
import type { EntryApplier } from './entry-apply.js';
import type { Positions } from './positions.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { retryDelay, type CommandConnection, type RedisFailures } from './redis-connection.js';
import type { ServiceReplica } from './service-replica.js';
import type { SnapshotLoader } from './snapshot-load.js';
import { compareIds, STREAM_START, type StreamId } from './stream-id.js';

type StreamReply = [Buffer, [Buffer, Buffer[]][]][] | null;

/**
 * Entries one XREAD brings, all services together (shared among the streams read). A service with more than
 * QUEUE_LIMIT entries read and not applied (a file whose lock a stopped process holds, a damaged file) is left
 * out of the reads until it is down to half: one slow service never holds up the others, nor grows the node's memory.
 */
const READ_COUNT = 512;
const QUEUE_LIMIT = 4096;
/** Applying, all services together, takes at most about this much of one event-loop turn (then the next turn goes on). */
const APPLY_SLICE_MS = 10;
/** How long one XREAD blocks: a bound on how long a stop waits, nothing else (new streams wake it). */
const BLOCK_MS = 5000;

/** What the reader needs of the node. */
export interface StreamReaderDeps {
  readonly nodeId: string;
  /** The command connection: the reader's wake-ups are appended through it. */
  readonly cmd: CommandConnection;
  /** The reader's own connection (its XREAD blocks). */
  readonly reader: Redis;
  /** The services this node replicates, by id and by stream key. */
  readonly replicas: ReadonlyMap<string, ServiceReplica>;
  readonly byLog: ReadonlyMap<string, ServiceReplica>;
  readonly positions: Positions;
  readonly applier: Pick<EntryApplier, 'applyEntry'>;
  readonly snapshots: Pick<SnapshotLoader, 'trimmedPast' | 'load'>;
  readonly failures: RedisFailures;
  readonly log: Logger;
  /** Is this tenant configured on this node? The catalog's others are not replicated here. */
  serves(tenant: string): boolean;
  /** Starts replicating a service the catalog names. */
  track(tenant: string, service: string, from: StreamId): void;
  /** An entry was applied (the metrics count it). */
  entryApplied(): void;
  isClosed(): boolean;
}

/**
 * Reads every service's stream (one blocking XREAD over them all, the catalog and this node's wake stream) and
 * applies what it read, service by service, in order. Catches up from a snapshot a stream trimmed past where it
 * had read while it was not reading.
 */
export class StreamReader {
  private readonly wakeKey: string;
  private wakeFrom: StreamId = STREAM_START;
  private readonly turns = new TurnBudget(APPLY_SLICE_MS);
  /** Where each service's stream had been read to when the reader stopped reading for a while (fillGaps). */
  private readonly gapFrom = new Map<ServiceReplica, StreamId>();
  /** Services that skipped an entry (a lock held too long): loaded from their snapshot (resyncLater). */
  private readonly resync = new Set<ServiceReplica>();

  constructor(private readonly deps: StreamReaderDeps) {
    this.wakeKey = `commy:wake:${deps.nodeId}`;
  }

  async readLoop(): Promise<void> {
    const { deps } = this;
    while (!deps.isClosed()) {
      if (this.gapFrom.size > 0 && !(await this.fillGaps())) {
        await sleep(retryDelay(deps.failures.count));
        continue;
      }
      const live = [...deps.replicas.values()].filter((r) => r.live && !this.full(r));
      const keys = [CATALOG_STREAM, this.wakeKey, ...live.map((r) => r.keys.log)];
      const ids = [deps.positions.catalog, this.wakeFrom, ...live.map((r) => r.readFrom)];
      let reply: StreamReply;
      try {
        reply = (await deps.reader.xreadBuffer('COUNT', Math.ceil(READ_COUNT / keys.length), 'BLOCK', BLOCK_MS, 'STREAMS', ...keys, ...ids)) as StreamReply;
      } catch (err) {
        if (deps.isClosed()) return;
        this.markGaps();
        await sleep(retryDelay(deps.failures.count++));
        continue;
      }
      for (const [keyBuf, entries] of reply ?? []) this.received(keyBuf.toString('utf8'), entries);
    }
  }

  /** Interrupts the reader's blocking XREAD, so that it reads a stream just started. */
  async wake(): Promise<void> {
    await this.deps.cmd.xadd(this.wakeKey, 'MAXLEN', '~', '100', '*', 'w', '1');
  }

  /** The reader stops reading for a while (its connection dropped, a read failed): streams may be trimmed meanwhile. */
  markGaps(): void {
    for (const r of this.deps.replicas.values()) if (r.live && !this.gapFrom.has(r)) this.gapFrom.set(r, r.readFrom);
  }

  /** Applies the replica's queue in order, one entry at a time (an entry may wait for a local process's lock). */
  async drain(replica: ServiceReplica): Promise<void> {
    if (replica.draining) return;
    replica.draining = true;
    const { deps } = this;
    try {
      while (replica.queue.length > 0 && !deps.isClosed()) {
        const turn = this.turns.take(); // the other services' entries, and every connection, get their turn too
        if (turn !== undefined) await turn;
        if (deps.isClosed()) break;
        const entry = replica.queue.shift()!;
        if (replica.paused && replica.queue.length <= QUEUE_LIMIT / 2) {
          replica.paused = false;
          void this.wake().catch(() => {}); // read it again (the reader may be blocked on the others)
        }
        if (compareIds(entry.id, replica.applied) <= 0) continue; // applied already (applyOwnAtOnce)
        if (!(await deps.applier.applyEntry(replica, entry))) this.resyncLater(replica);
        deps.entryApplied();
        replica.moved(entry.id);
        deps.positions.set(replica.serviceId, entry.id);
      }
    } finally {
      replica.draining = false;
    }
  }

  private received(key: string, entries: [Buffer, Buffer[]][]): void {
    if (key === this.wakeKey) {
      this.wakeFrom = entries[entries.length - 1]![0].toString('latin1');
      return;
    }
    if (key === CATALOG_STREAM) {
      for (const [id, fields] of entries) {
        this.catalogued(fields);
        this.deps.positions.catalog = id.toString('latin1');
      }
      return;
    }
    const replica = this.deps.byLog.get(key);
    if (replica === undefined || !replica.live) return;
    for (const [idBuf, fields] of entries) {
      const id = idBuf.toString('latin1');
      replica.readFrom = id;
      const entry = parseEntry(id, fields);
      if (entry === undefined) {
        this.deps.log.error({ service: replica.serviceId, id }, 'cluster: skipped a malformed stream entry');
        replica.queue.push({ id, kind: 'w', node: '', token: '', items: [] });
      } else replica.queue.push(entry);
    }
    void this.drain(replica);
  }

  /** A catalog entry: the service exists in the cluster; this node creates its file and replicates it. */
  private catalogued(fields: Buffer[]): void {
    let tenant = '';
    let service = '';
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const k = fields[i]!.toString('latin1');
      if (k === 't') tenant = fields[i + 1]!.toString('utf8');
      else if (k === 's') service = fields[i + 1]!.toString('utf8');
    }
    const serviceId = `${tenant}/${service}`;
    if (this.deps.replicas.has(serviceId)) return;
    if (!isValidName(tenant) || !isValidName(service)) {
      this.deps.log.error({ service: serviceId }, 'cluster: skipped a catalog entry with an invalid name');
      return;
    }
    if (!this.deps.serves(tenant)) {
      this.deps.log.warn({ service: serviceId }, 'cluster: skipped a catalog entry of a tenant not configured on this node');
      return;
    }
    this.deps.track(tenant, service, this.deps.positions.of(serviceId) ?? STREAM_START);
  }

  /** Is the replica's queue over QUEUE_LIMIT (left out of the reads until it is down to half: see drain)? */
  private full(replica: ServiceReplica): boolean {
    if (replica.queue.length > QUEUE_LIMIT) replica.paused = true;
    if (replica.paused && !this.gapFrom.has(replica)) this.gapFrom.set(replica, replica.readFrom); // not read meanwhile
    return replica.paused;
  }

  /**
   * An entry was skipped because a local process held a variable's lock all along (stopped, not dead: a dead
   * holder's lock is recovered): the service is loaded from its snapshot once the lock is free, so this node
   * does not keep the value it missed.
   */
  private resyncLater(replica: ServiceReplica): void {
    this.resync.add(replica);
    if (!this.gapFrom.has(replica)) this.gapFrom.set(replica, replica.readFrom);
  }

  /**
   * After such a pause (or one service's, left out of the reads: full), a stream trimmed past where this node had
   * read (its next entries are gone: reading on would skip them) is caught up from its snapshot, once the entries
   * read before are applied. False while Redis is away (tried again).
   */
  private async fillGaps(): Promise<boolean> {
    for (const [replica, from] of this.gapFrom) {
      if (replica.queue.length > 0 || replica.draining) continue; // looked at once what was read before is applied
      try {
        // A resync (an entry was skipped: a local process held its lock) never waits for a lock here: the reader
        // of every service runs this; still locked, it is tried again at the next read.
        if (this.resync.has(replica)) await this.deps.snapshots.load(replica, 0);
        else if (await this.deps.snapshots.trimmedPast(replica, from)) await this.deps.snapshots.load(replica);
      } catch (err) {
        if (isCommyError(err, ErrorCode.TIMEOUT)) continue;
        return false;
      }
      this.resync.delete(replica);
      this.gapFrom.delete(replica);
    }
    return true;
  }
}
