import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { randomBytes } from 'node:crypto';
import { CommyError, ErrorCode, isCommyError } from '../core/errors.js';
import { isValidName } from '../core/names.js';
import type { VariableMetadata } from '../core/variable-metadata.js';
import { BUSY, type DirEntry } from '../local/service-file.js';
import { untilNotBusy } from '../server/busy-retry.js';
import type { OpRecord } from '../server/op-record.js';
import type { ServiceHost } from '../server/service-host.js';
import type { ServiceRegistry } from '../server/service-registry.js';
import type { Subscriber } from '../server/subscriber.js';
import { TurnBudget } from '../server/turn-budget.js';
import type { ClusterConfig } from '../server/config.js';
import { parseEntry, type ClusterEntry, type ClusterItem } from './cluster-entry.js';
import { clusterOpOf, type ClusterOp } from './cluster-op.js';
import type { OpKey } from '../server/op-ledger.js';
import { CATALOG_SET, CATALOG_STREAM } from './cluster-keys.js';
import { ANNOUNCE_SCRIPT, APPEND_SCRIPT, SNAPSHOT_SCRIPT } from './cluster-scripts.js';
import { layoutCode, metadataOfCode } from './layout-code.js';
import { ClusterMetrics } from './cluster-metrics.js';
import { Positions } from './positions.js';
import { ServiceReplica, type Applied, type Waiter } from './service-replica.js';
import { compareIds, STREAM_START, type StreamId } from './stream-id.js';

/** A remote client's write, as a handler gives it to the cluster. */
export interface ClusterWrite {
  readonly entries: readonly DirEntry[];
  readonly values: readonly Uint8Array[];
  readonly origin?: Subscriber | undefined;
  readonly record?: OpRecord | undefined;
  /** Compare-and-set of the first entry: the version the client last saw (node-local). */
  readonly expected?: number | undefined;
  /** The write's operation id, as the ledger names it: Redis dedups it cluster-wide. */
  readonly op?: OpKey | undefined;
}

type AppendReply = [string, string, string?];
interface ClusterCommands {
  commyAppend(...args: (string | Buffer | Uint8Array | number)[]): Promise<AppendReply>;
  commySnapshotBuffer(...args: string[]): Promise<[Buffer, Buffer[], Buffer[]]>;
  commyAnnounce(...args: string[]): Promise<number>;
}
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
const RETRY_MS = [50, 100, 250, 500, 1000, 2000];
/** A Redis command unanswered this long has failed (Redis answers in microseconds when it is there). */
const COMMAND_TIMEOUT_MS = 3000;
/** How long applying an entry waits for a local process's lock before it skips the entry (and resyncs: resyncLater). */
const LOCK_WAIT_MS = 10_000;
/** A write Redis took that has not come back after this long is looked for in its stream (sweepLost). */
const LOST_AFTER_MS = 5000;

/**
 * This server as a node of a cluster (docs/cluster.md): every write of a remote client is appended to its
 * service's Redis stream (one script: checks and append), every node reads every service's stream and applies
 * each entry, in order, into its own file, and answers its own clients' writes once its own apply is done.
 * Local processes' writes, seen by the node's watcher, are appended too. Subscribers are fed by the file's
 * watcher as on a single server: the cluster only writes files.
 */
export class ClusterNode {
  private readonly cmd: Redis & ClusterCommands;
  private readonly reader: Redis;
  private readonly replicas = new Map<string, ServiceReplica>();
  private readonly byLog = new Map<string, ServiceReplica>();
  private readonly positions: Positions;
  /** Services created here whose announcement Redis has not taken yet. */
  private readonly unannounced = new Set<string>();
  private readonly wakeKey: string;
  private wakeFrom: StreamId = STREAM_START;
  /** This process's tokens' prefix: random, so that two processes (containers with the same pid) never share one. */
  private readonly boot = randomBytes(6).toString('base64url');
  private seq = 0;
  private closed = false;
  private readonly reading: Promise<void>;
  private readonly sweeper: NodeJS.Timeout;
  private lossSaid = false;
  private failures = 0;
  private readonly turns = new TurnBudget(APPLY_SLICE_MS);
  /** Where each service's stream had been read to when the reader stopped reading for a while (fillGaps). */
  private readonly gapFrom = new Map<ServiceReplica, StreamId>();
  /** Services that skipped an entry (a lock held too long): loaded from their snapshot (resyncLater). */
  private readonly resync = new Set<ServiceReplica>();

  private readonly metrics: ClusterMetrics | undefined;

  constructor(
    readonly config: ClusterConfig,
    private readonly registry: ServiceRegistry,
    private readonly log: Logger,
    /** The server's metrics registry: the node's series go there (absent: none). */
    metricsRegistry?: Registry,
    /** Is this tenant configured on this node? The catalog's others are not replicated here. */
    private readonly serves: (tenant: string) => boolean = () => true,
  ) {
    this.positions = new Positions(registry.root, config.nodeId, (err) => log.error({ err }, 'cluster: cannot save the stream positions'));
    this.wakeKey = `commy:wake:${config.nodeId}`;
    // Writes fail at once while Redis is away (NOT_CONNECTED to the client), never queue behind a reconnect.
    // A command in flight when the connection drops can be left unanswered by ioredis (it is neither resent nor
    // rejected with the offline queue off): commandTimeout makes it fail, and its write is then "outcome unknown".
    this.cmd = new Redis(config.redis, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: COMMAND_TIMEOUT_MS }) as Redis & ClusterCommands;
    this.cmd.defineCommand('commyAppend', { numberOfKeys: 6, lua: APPEND_SCRIPT });
    this.cmd.defineCommand('commySnapshot', { numberOfKeys: 3, lua: SNAPSHOT_SCRIPT });
    this.cmd.defineCommand('commyAnnounce', { numberOfKeys: 2, lua: ANNOUNCE_SCRIPT });
    this.cmd.on('ready', () => {
      this.reconnected();
      void this.checkDataLoss();
    });
    this.cmd.on('error', (err: Error) => this.redisError('commands', err));
    // The reader's offline queue is on: a read in flight when the connection drops is sent again on reconnection.
    // No command timeout: its timer would keep a stopped process alive while Redis is away.
    this.reader = new Redis(config.redis, { maxRetriesPerRequest: null });
    this.reader.on('error', (err: Error) => this.redisError('reader', err));
    this.reader.on('close', () => this.markGaps());
    for (const [serviceId, at] of this.positions.services()) {
      const [tenant, service] = serviceId.split('/');
      if (tenant !== undefined && service !== undefined && this.serves(tenant)) this.track(tenant, service, at);
    }
    this.reading = this.readLoop();
    this.metrics =
      metricsRegistry === undefined
        ? undefined
        : new ClusterMetrics(metricsRegistry, {
            redisUp: () => this.cmd.status === 'ready' && this.reader.status === 'ready',
            services: () => this.replicas.size,
            unapplied: () => [...this.replicas.values()].reduce((n, r) => n + r.queue.length, 0),
          });
    this.sweeper = setInterval(() => void this.sweepLost(), LOST_AFTER_MS).unref();
  }

  // ---- what handlers call -----------------------------------------------------------------------------

  /** A service was created on this node: the cluster hears of it (every node creates it) and this node replicates it. */
  announce(host: ServiceHost): void {
    this.replicaOf(host);
    this.unannounced.add(host.serviceId);
    void this.sendAnnouncements();
  }

  /**
   * Appends a remote client's write; resolves with the versions this node's apply gave it (0: a variable removed
   * meanwhile, skipped). CONFLICT (compare-and-set), UNAVAILABLE (Redis away: nothing appended, or unknown —
   * a resend with the same operation id is safe).
   */
  async write(host: ServiceHost, w: ClusterWrite): Promise<bigint[]> {
    const replica = await this.readyReplica(host);
    let casPos = '';
    if (w.expected !== undefined) {
      const e = w.entries[0]!;
      const have = host.file.entryVersion(e);
      if (have !== BigInt(w.expected)) throw new CommyError(ErrorCode.CONFLICT, `${host.serviceId}/${e.meta.name} is at version ${have}, not ${w.expected}`);
      if (replica.hasLocalPending(e.meta.name)) throw new CommyError(ErrorCode.CONFLICT, `${host.serviceId}/${e.meta.name} has a local write not yet ordered in the cluster`);
      casPos = replica.applied; // the file holds every entry up to here: the variable must not have moved since
    }
    const live = w.entries.flatMap((e, i) => (host.file.isLive(e) ? [i] : []));
    const items = live.map((i) => ({ name: w.entries[i]!.meta.name, value: w.values[i]!, code: layoutCode(w.entries[i]!.meta) }));
    if (items.length === 0) return w.entries.map(() => 0n);
    const cas = w.expected === undefined ? {} : { casVersion: BigInt(w.expected) };
    const applied = await this.append(replica, 'w', items, { origin: w.origin, record: w.record, ...cas }, casPos, clusterOpOf(w.op));
    const versions = Array.isArray(applied) ? applied : [];
    // The apply answers per item appended; the client asked per entry (a removed one: 0).
    const out = w.entries.map(() => 0n);
    live.forEach((i, j) => (out[i] = versions[j] ?? 0n));
    return out;
  }

  /** Registers `meta` cluster-wide; resolves with its entry in this node's file. TYPE_MISMATCH if the cluster has it with another shape. */
  async register(host: ServiceHost, meta: VariableMetadata): Promise<DirEntry> {
    const replica = await this.readyReplica(host);
    const applied = await this.append(replica, 'r', [{ name: meta.name, value: String(meta.offset), code: layoutCode(meta) }], {}, '');
    if (typeof applied === 'object' && !Array.isArray(applied)) return applied;
    throw new CommyError(ErrorCode.INTERNAL_ERROR, `registration of ${host.serviceId}/${meta.name} was not applied`);
  }

  /** Removes a variable cluster-wide; resolves with the version of its removal on this node. */
  async remove(host: ServiceHost, name: string): Promise<bigint> {
    const replica = await this.readyReplica(host);
    const applied = await this.append(replica, 'x', [{ name, value: '', code: '' }], {}, '');
    return typeof applied === 'bigint' ? applied : 0n;
  }

  /** The watcher saw local processes write these variables: they go to the stream (a backlog while Redis is away). */
  localWrites(host: ServiceHost, names: readonly string[]): void {
    const replica = this.replicas.get(host.serviceId);
    if (replica === undefined) return;
    for (const name of names) replica.unsent.add(name);
    void this.sendLocal(replica, host);
  }

  /** Stops reading and appending; waiting writes end with NOT_CONNECTED. Positions are saved. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    for (const r of this.replicas.values()) r.abandon('the server is stopping');
    this.reader.disconnect();
    // A read in flight while Redis is away is only given up at its command timeout: not waited for (the loop
    // sees `closed` and applies nothing more).
    await Promise.race([this.reading.catch(() => {}), sleep(100)]);
    this.cmd.disconnect();
    this.positions.flush();
  }

  // ---- appending ----------------------------------------------------------------------------------------

  private async append(
    replica: ServiceReplica,
    kind: 'w' | 'r' | 'x',
    items: readonly { name: string; value: Uint8Array | string; code: string }[],
    waiter: Pick<Waiter, 'origin' | 'record' | 'localNames' | 'casVersion'>,
    casPos: string,
    op?: ClusterOp,
  ): Promise<Applied> {
    const token = `${this.boot}.${(this.seq++).toString(36)}`;
    const keys = replica.keys;
    const args: (string | Uint8Array)[] = [keys.log, keys.last, keys.values, keys.layout, keys.at, op === undefined ? `${keys.opPrefix}-` : keys.opPrefix + op.key];
    args.push(kind, this.config.nodeId, token, String(this.config.streamLength), casPos, op === undefined ? '0' : String(this.config.opIdTtlMs), op?.what ?? '', String(items.length));
    for (const it of items) args.push(it.name, typeof it.value === 'string' ? it.value : asBuffer(it.value), it.code);
    const seen = replica.applied;
    args.push(seen); // what the file held when the write was taken: a removal after it was not seen
    const done = new Promise<Applied>((resolve, reject) => replica.waiters.set(token, { ...waiter, resolve, reject }));
    done.catch(() => {}); // rejected only through the waiter, when nobody may be awaiting it yet
    let reply: AppendReply;
    try {
      reply = await this.cmd.commyAppend(...args);
    } catch (err) {
      replica.waiters.delete(token);
      this.metrics?.appended('unavailable');
      throw new CommyError(ErrorCode.UNAVAILABLE, `the cluster's Redis did not take the write (${(err as Error).message}); resend it`, { cause: err });
    }
    const [status, detail, previous] = reply;
    this.metrics?.appended(status === 'ok' || status === 'dup' || status === 'conflict' ? status : 'refused');
    if (status === 'ok') {
      const waiting = replica.waiters.get(token);
      if (waiting !== undefined) Object.assign(waiting, { id: detail, since: Date.now() });
      // Only if nothing was applied since the write was taken: the script then appended it as given (see APPEND).
      if (seen === replica.applied) this.applyOwnAtOnce(replica, { id: detail, kind, node: this.config.nodeId, token, items: items.map(entryItem) }, previous);
      return done;
    }
    replica.waiters.delete(token);
    if (status === 'dup') return this.answerOfDup(replica, detail, items.map((it) => it.name));
    throw refusal(status, detail, replica.serviceId);
  }

  /**
   * The entry just appended comes right after everything this node has applied (`previous` is the stream's
   * last id before it): applied now, without waiting for the reader to bring it back (one Redis round trip
   * less for the writer's ack and this node's subscribers). The reader's copy is skipped (drain).
   */
  private applyOwnAtOnce(replica: ServiceReplica, entry: ClusterEntry, previous: string | undefined): void {
    if (previous === undefined || previous !== replica.applied || replica.queue.length > 0 || replica.draining) return;
    replica.queue.push(entry);
    void this.drain(replica);
  }

  /** A resent operation id: answered with the versions its first apply gave, once this node has applied it. */
  private async answerOfDup(replica: ServiceReplica, id: StreamId, names: readonly string[]): Promise<Applied> {
    await replica.reached(id);
    const known = replica.recent.get(id);
    if (known !== undefined) return known;
    // Applied before this process started: its versions here are gone; the variables' current ones are the
    // nearest true answer (the write is in them, or was overwritten by a later one).
    const host = this.registry.get(replica.tenant, replica.service, false);
    return names.map((n) => {
      const e = host.file.find(n);
      return e === undefined ? 0n : host.file.entryVersion(e);
    });
  }

  private async sendLocal(replica: ServiceReplica, host: ServiceHost): Promise<void> {
    if (replica.unsent.size === 0 || this.closed || !replica.live) return;
    const names = [...replica.unsent];
    replica.unsent.clear();
    const items: { name: string; value: Uint8Array; code: string }[] = [];
    for (const name of names) {
      const e = host.file.find(name);
      if (e === undefined) continue; // removed since: its removal is the local process's last word (not replicated)
      items.push({ name, value: host.file.readBytes(e), code: layoutCode(e.meta) });
    }
    if (items.length === 0) return;
    const localNames = items.map((it) => it.name);
    replica.countLocal(localNames, 1);
    try {
      await this.append(replica, 'w', items, { localNames }, '');
    } catch (err) {
      replica.countLocal(localNames, -1);
      if (err instanceof CommyError && err.code === ErrorCode.UNAVAILABLE) {
        for (const n of localNames) replica.unsent.add(n); // sent again once Redis is back
        return;
      }
      this.log.error({ err, service: replica.serviceId, variables: localNames }, 'cluster: a local write could not be replicated');
    }
  }

  private async sendAnnouncements(): Promise<void> {
    for (const serviceId of [...this.unannounced]) {
      const [tenant = '', service = ''] = serviceId.split('/');
      try {
        await this.cmd.commyAnnounce(CATALOG_SET, CATALOG_STREAM, tenant, service);
        this.unannounced.delete(serviceId);
      } catch {
        return; // Redis away: sent again when it is back (reconnected)
      }
    }
  }

  private reconnected(): void {
    this.failures = 0;
    void this.sendAnnouncements();
    for (const replica of this.replicas.values()) {
      if (replica.unsent.size === 0) continue;
      let host: ServiceHost;
      try {
        host = this.registry.get(replica.tenant, replica.service, false);
      } catch {
        continue;
      }
      void this.sendLocal(replica, host);
    }
  }

  /**
   * Redis is back without the cluster's data (restarted empty, flushed): the catalog this node had read is gone.
   * Said once, loudly; this node announces its services again, so that a node that joins later learns them.
   */
  private async checkDataLoss(): Promise<void> {
    if (this.positions.catalog === STREAM_START) return;
    let last = STREAM_START;
    try {
      const info = (await this.cmd.xinfo('STREAM', CATALOG_STREAM)) as unknown[];
      last = String(info[info.indexOf('last-generated-id') + 1]);
    } catch (err) {
      if (!/no such key/i.test((err as Error).message)) return;
    }
    if (compareIds(last, this.positions.catalog) >= 0) return;
    if (!this.lossSaid) {
      this.log.error(
        { catalogRead: this.positions.catalog, catalogNow: last },
        "cluster: the cluster's Redis has lost its data (restarted empty, or flushed): writes it had taken and not yet delivered are lost (answered UNAVAILABLE), operation ids from before are forgotten, and a node that joins now gets only what is written from now on; services are announced again",
      );
    }
    this.lossSaid = true;
    for (const r of this.replicas.values()) if (r.live) this.unannounced.add(r.serviceId);
    await this.sendAnnouncements();
  }

  /**
   * Writes of this node that Redis took and that have not come back for LOST_AFTER_MS: one whose entry is not in
   * its stream was lost (Redis lost its data, or trimmed it unread) and ends with UNAVAILABLE, rather than wait
   * forever (a resend of it to this node would wait behind it): resent, it is appended anew, or answered as a
   * duplicate if Redis still knows its operation id.
   */
  private async sweepLost(): Promise<void> {
    let localLost = false;
    for (const replica of this.replicas.values()) {
      for (const [token, w] of replica.waiters) {
        if (w.id === undefined || Date.now() - (w.since ?? 0) < LOST_AFTER_MS) continue;
        let found: unknown[];
        try {
          found = await this.cmd.xrange(replica.keys.log, w.id, w.id);
        } catch {
          return; // Redis away: looked at again later
        }
        if (found.length > 0 || replica.waiters.get(token) !== w) continue;
        replica.waiters.delete(token);
        localLost ||= w.localNames !== undefined;
        w.reject(new CommyError(ErrorCode.UNAVAILABLE, `${replica.serviceId}: the cluster's Redis lost this write; resend it`));
      }
    }
    if (localLost) setImmediate(() => this.reconnected()); // local writes put back to send (sendLocal) go again
  }

  // ---- replicas -------------------------------------------------------------------------------------------

  private replicaOf(host: ServiceHost): ServiceReplica {
    return this.replicas.get(host.serviceId) ?? this.track(host.tenant, host.service, this.positions.of(host.serviceId) ?? STREAM_START);
  }

  private async readyReplica(host: ServiceHost): Promise<ServiceReplica> {
    const replica = this.replicaOf(host);
    if (!replica.live) await replica.ready;
    return replica;
  }

  /** Starts replicating a service: from `from`, or from a snapshot if the stream was trimmed past it. */
  private track(tenant: string, service: string, from: StreamId): ServiceReplica {
    const replica = new ServiceReplica(tenant, service, from);
    this.replicas.set(replica.serviceId, replica);
    this.byLog.set(replica.keys.log, replica);
    void this.startReplica(replica);
    return replica;
  }

  private async startReplica(replica: ServiceReplica): Promise<void> {
    for (let attempt = 0; !this.closed; attempt++) {
      try {
        this.registry.get(replica.tenant, replica.service, true, true); // every node has a file of every service
        await this.connected();
        if (await this.trimmedPast(replica)) await this.loadSnapshot(replica);
        else replica.start();
        await this.wake();
        return;
      } catch (err) {
        if (attempt === 0) this.log.warn({ err, service: replica.serviceId }, 'cluster: cannot start replicating yet; retrying');
        await sleep(RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]!);
      }
    }
  }

  /** Resolves once the command connection is up (at start, or after Redis was away). */
  private connected(): Promise<void> {
    if (this.cmd.status === 'ready') return Promise.resolve();
    return new Promise((resolve) => this.cmd.once('ready', () => resolve()));
  }

  /** Were entries after the replica's position (or `from`) trimmed away (so reading on would skip them)? */
  private async trimmedPast(replica: ServiceReplica, from = replica.applied): Promise<boolean> {
    let info: unknown[];
    try {
      info = (await this.cmd.xinfo('STREAM', replica.keys.log)) as unknown[];
    } catch (err) {
      if (/no such key/i.test((err as Error).message)) return false;
      throw err;
    }
    const field = (name: string): unknown => (info.includes(name) ? info[info.indexOf(name) + 1] : undefined);
    if (compareIds(String(field('max-deleted-entry-id') ?? STREAM_START), from) > 0) return true;
    // Trimming (XADD MAXLEN) leaves max-deleted-entry-id alone (Redis 7.0): when entries were trimmed (fewer left
    // than added; unknown before Redis 7) and the first one left is after `from`, the ones between may be gone.
    const first = field('first-entry');
    const trimmed = !(Number(field('entries-added')) <= Number(field('length')));
    return trimmed && Array.isArray(first) && compareIds(String(first[0]), from) > 0;
  }

  /** Loads the service's snapshot from Redis (layout, values, and the stream id they are current at). */
  private async loadSnapshot(replica: ServiceReplica, waitMs = LOCK_WAIT_MS): Promise<void> {
    const [atBuf, layout, values] = await this.cmd.commySnapshotBuffer(replica.keys.at, replica.keys.layout, replica.keys.values);
    const at = atBuf.toString('latin1') || STREAM_START;
    const host = this.registry.acquire(replica.tenant, replica.service, false);
    try {
      const shapes = new Map<string, string>();
      for (let i = 0; i + 1 < layout.length; i += 2) shapes.set(layout[i]!.toString('utf8'), layout[i + 1]!.toString('latin1'));
      for (const e of host.file.list()) if (!shapes.has(e.meta.name)) await this.busy(() => host.remove(e.meta.name), host, e.meta.name, waitMs);
      for (const [name, code] of shapes) await this.ensureRegistered(host, name, code, -1, waitMs);
      for (let i = 0; i + 1 < values.length; i += 2) {
        const e = host.file.find(values[i]!.toString('utf8'));
        const bytes = values[i + 1]!;
        if (e !== undefined && bytes.length === e.meta.size) await this.busy(() => host.apply([e], [bytes], { skipRemoved: true }), host, e.meta.name, waitMs);
      }
    } finally {
      this.registry.release(host);
    }
    this.log.info({ service: replica.serviceId, at }, 'cluster: loaded a snapshot (the stream was trimmed past this node)');
    replica.start(at);
    this.positions.set(replica.serviceId, at);
    // Writes of this node that waited for entries the snapshot covers: answered with the current versions.
    for (const [token, w] of replica.waiters) {
      replica.waiters.delete(token);
      w.reject(new CommyError(ErrorCode.UNAVAILABLE, `${replica.serviceId} was reloaded from a snapshot; resend (the operation id makes it safe)`));
    }
  }

  /** Interrupts the reader's blocking XREAD, so that it reads a stream just started. */
  private async wake(): Promise<void> {
    await this.cmd.xadd(this.wakeKey, 'MAXLEN', '~', '100', '*', 'w', '1');
  }

  // ---- reading ------------------------------------------------------------------------------------------

  private async readLoop(): Promise<void> {
    while (!this.closed) {
      if (this.gapFrom.size > 0 && !(await this.fillGaps())) {
        await sleep(RETRY_MS[Math.min(this.failures, RETRY_MS.length - 1)]!);
        continue;
      }
      const live = [...this.replicas.values()].filter((r) => r.live && !this.full(r));
      const keys = [CATALOG_STREAM, this.wakeKey, ...live.map((r) => r.keys.log)];
      const ids = [this.positions.catalog, this.wakeFrom, ...live.map((r) => r.readFrom)];
      let reply: StreamReply;
      try {
        reply = (await this.reader.xreadBuffer('COUNT', Math.ceil(READ_COUNT / keys.length), 'BLOCK', BLOCK_MS, 'STREAMS', ...keys, ...ids)) as StreamReply;
      } catch (err) {
        if (this.closed) return;
        this.markGaps();
        await sleep(RETRY_MS[Math.min(this.failures++, RETRY_MS.length - 1)]!);
        continue;
      }
      for (const [keyBuf, entries] of reply ?? []) this.received(keyBuf.toString('utf8'), entries);
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
        this.positions.catalog = id.toString('latin1');
      }
      return;
    }
    const replica = this.byLog.get(key);
    if (replica === undefined || !replica.live) return;
    for (const [idBuf, fields] of entries) {
      const id = idBuf.toString('latin1');
      replica.readFrom = id;
      const entry = parseEntry(id, fields);
      if (entry === undefined) {
        this.log.error({ service: replica.serviceId, id }, 'cluster: skipped a malformed stream entry');
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
    if (this.replicas.has(serviceId)) return;
    if (!isValidName(tenant) || !isValidName(service)) {
      this.log.error({ service: serviceId }, 'cluster: skipped a catalog entry with an invalid name');
      return;
    }
    if (!this.serves(tenant)) {
      this.log.warn({ service: serviceId }, 'cluster: skipped a catalog entry of a tenant not configured on this node');
      return;
    }
    this.track(tenant, service, this.positions.of(serviceId) ?? STREAM_START);
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

  /** The reader stops reading for a while (its connection dropped, a read failed): streams may be trimmed meanwhile. */
  private markGaps(): void {
    for (const r of this.replicas.values()) if (r.live && !this.gapFrom.has(r)) this.gapFrom.set(r, r.readFrom);
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
        if (this.resync.has(replica)) await this.loadSnapshot(replica, 0);
        else if (await this.trimmedPast(replica, from)) await this.loadSnapshot(replica);
      } catch (err) {
        if (isCommyError(err, ErrorCode.TIMEOUT)) continue;
        return false;
      }
      this.resync.delete(replica);
      this.gapFrom.delete(replica);
    }
    return true;
  }

  // ---- applying -------------------------------------------------------------------------------------------

  /** Applies the replica's queue in order, one entry at a time (an entry may wait for a local process's lock). */
  private async drain(replica: ServiceReplica): Promise<void> {
    if (replica.draining) return;
    replica.draining = true;
    try {
      while (replica.queue.length > 0 && !this.closed) {
        const turn = this.turns.take(); // the other services' entries, and every connection, get their turn too
        if (turn !== undefined) await turn;
        if (this.closed) break;
        const entry = replica.queue.shift()!;
        if (replica.paused && replica.queue.length <= QUEUE_LIMIT / 2) {
          replica.paused = false;
          void this.wake().catch(() => {}); // read it again (the reader may be blocked on the others)
        }
        if (compareIds(entry.id, replica.applied) <= 0) continue; // applied already (applyOwnAtOnce)
        await this.applyEntry(replica, entry);
        this.metrics?.entryApplied();
        replica.moved(entry.id);
        this.positions.set(replica.serviceId, entry.id);
      }
    } finally {
      replica.draining = false;
    }
  }

  private async applyEntry(replica: ServiceReplica, entry: ClusterEntry): Promise<void> {
    const waiter = entry.node === this.config.nodeId ? replica.waiters.get(entry.token) : undefined;
    if (waiter !== undefined) replica.waiters.delete(entry.token);
    if (waiter?.localNames !== undefined) replica.countLocal(waiter.localNames, -1);
    if (entry.items.length === 0) return waiter?.resolve([]);
    let host: ServiceHost;
    try {
      host = this.registry.acquire(replica.tenant, replica.service, false);
    } catch (err) {
      this.log.error({ err, service: replica.serviceId, id: entry.id }, 'cluster: cannot open the service to apply an entry');
      return waiter?.reject(err);
    }
    try {
      const applied = await this.applyTo(host, entry, waiter);
      if (Array.isArray(applied)) replica.remember(entry.id, applied);
      waiter?.resolve(applied);
    } catch (err) {
      if (waiter !== undefined) waiter.reject(err);
      else this.log.error({ err, service: replica.serviceId, id: entry.id, node: entry.node }, 'cluster: an entry could not be applied here');
      if (isCommyError(err, ErrorCode.TIMEOUT)) this.resyncLater(replica);
    } finally {
      this.registry.release(host);
    }
  }

  private async applyTo(host: ServiceHost, entry: ClusterEntry, waiter: Waiter | undefined): Promise<Applied> {
    if (entry.kind === 'r') {
      const [it] = entry.items;
      return this.ensureRegistered(host, it!.name, it!.code ?? '', Number(it!.value.toString('latin1')));
    }
    if (entry.kind === 'x') {
      const [it] = entry.items;
      if (host.file.find(it!.name) === undefined) return 0n;
      return this.busy(() => host.remove(it!.name), host, it!.name);
    }
    return this.applyWrite(host, entry, waiter);
  }

  private async applyWrite(host: ServiceHost, entry: ClusterEntry, waiter: Waiter | undefined): Promise<bigint[]> {
    const entries: DirEntry[] = [];
    const values: Uint8Array[] = [];
    const at: number[] = [];
    for (const [i, it] of entry.items.entries()) {
      const e = it.code === undefined ? host.file.find(it.name) : await this.ensureRegistered(host, it.name, it.code);
      if (e === undefined || e.meta.size !== it.value.length) continue; // not here, or not this shape here: skipped
      entries.push(e);
      values.push(it.value);
      at.push(i);
    }
    const versions = entry.items.map(() => 0n);
    if (entries.length === 0) return versions;
    // A local process's write coming back unchanged: the file already holds it; writing it again would only
    // make a second version of the same value.
    if (waiter?.localNames !== undefined && sameBytes(host, entries, values)) {
      entries.forEach((e, j) => (versions[at[j]!] = host.file.entryVersion(e)));
      return versions;
    }
    if (waiter?.localNames !== undefined) return this.applyEcho(host, entries, values, at, versions);
    // This node's compare-and-set: Redis saw no entry write the variable since the check, but a local process may
    // have (its entry comes later): then it is refused here, and that process's write is not undone.
    const cas = waiter?.casVersion;
    const expected = cas === undefined ? undefined : at.map((i) => (i === 0 ? Number(cas) : undefined));
    const written = await this.busy(() => host.apply(entries, values, { origin: waiter?.origin, record: waiter?.record, skipRemoved: true, ...(expected === undefined ? {} : { expected }) }), host, 'variables');
    written.forEach((v, j) => (versions[at[j]!] = v));
    return versions;
  }

  /**
   * A local process's write coming back (this node appended it). Where a local process wrote the variable last,
   * the file holds this value or a newer one of that process (appended after this entry): writing this one
   * again would undo the newer one, and a local read-modify-write would lose updates. Only a variable that this
   * node's apply wrote since (an entry ordered before this one) gets it again. Checked under the locks: a local
   * write landing in between is a CONFLICT, and the variables are looked at again.
   */
  private async applyEcho(host: ServiceHost, entries: DirEntry[], values: Uint8Array[], at: number[], versions: bigint[]): Promise<bigint[]> {
    for (;;) {
      const keep = entries.flatMap((e, j) => (host.file.lastWriter(e) === process.pid ? [j] : []));
      entries.forEach((e, j) => (versions[at[j]!] = host.file.entryVersion(e)));
      if (keep.length === 0) return versions;
      const expected = keep.map((j) => Number(host.file.entryVersion(entries[j]!)));
      try {
        const written = await this.busy(() => host.apply(keep.map((j) => entries[j]!), keep.map((j) => values[j]!), { expected, skipRemoved: true }), host, 'variables');
        written.forEach((v, k) => (versions[at[keep[k]!]!] = v));
        return versions;
      } catch (err) {
        if (!(err instanceof CommyError && err.code === ErrorCode.CONFLICT)) throw err;
      }
    }
  }

  /** The variable's entry, registered first if this node's file does not have it (with the shape the cluster gave it). */
  private async ensureRegistered(host: ServiceHost, name: string, code: string, offset = -1, waitMs = LOCK_WAIT_MS): Promise<DirEntry> {
    const known = host.file.find(name);
    if (known !== undefined && layoutCode(known.meta) === code) return known;
    const meta = metadataOfCode(name, code, known === undefined ? offset : -1);
    return this.busy(() => host.file.tryRegister(meta), host, name, waitMs);
  }

  /** `attempt` until no local process holds what it needs: TIMEOUT after `waitMs` (0: one attempt). */
  private busy<T>(attempt: () => T | typeof BUSY, host: ServiceHost, what: string, waitMs = LOCK_WAIT_MS): Promise<T> {
    return untilNotBusy(attempt, `${host.serviceId}/${what}`, waitMs, () => !this.closed);
  }

  private redisError(which: string, err: Error): void {
    if (this.closed) return;
    if (this.failures === 0 || this.failures % 50 === 0) this.log.warn({ err: err.message, connection: which }, 'cluster: Redis connection error (reconnecting)');
    this.failures++;
  }
}

/** An appended item as the reader would have parsed it from the stream. */
function entryItem(it: { name: string; value: Uint8Array | string; code: string }): ClusterItem {
  return { name: it.name, value: typeof it.value === 'string' ? Buffer.from(it.value, 'latin1') : asBuffer(it.value), code: it.code === '' ? undefined : it.code };
}

/** ioredis sends a Buffer as bytes, but any other Uint8Array as its String() ("1,2,3"): wrapped, not copied. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function sameBytes(host: ServiceHost, entries: readonly DirEntry[], values: readonly Uint8Array[]): boolean {
  return entries.every((e, i) => Buffer.compare(host.file.readBytes(e), values[i]!) === 0);
}

function refusal(status: string, detail: string, serviceId: string): CommyError {
  switch (status) {
    case 'conflict':
      return new CommyError(ErrorCode.CONFLICT, `${serviceId}/${detail} was written elsewhere in the cluster since the version given`);
    case 'missing':
      return new CommyError(ErrorCode.VARIABLE_NOT_FOUND, `${serviceId} has no variable ${detail} in the cluster`);
    case 'layout':
      return new CommyError(ErrorCode.TYPE_MISMATCH, `${serviceId}/${detail} has another type or size in the cluster`);
    case 'reused':
      return new CommyError(ErrorCode.INVALID_MESSAGE, `the operation id was used for another write`);
    default:
      return new CommyError(ErrorCode.INTERNAL_ERROR, `the cluster's Redis answered ${status}`);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

