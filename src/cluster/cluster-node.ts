import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { randomBytes } from 'node:crypto';
import { CommyError, ErrorCode } from '../core/errors.js';
import type { VariableMetadata } from '../core/variable-metadata.js';
import type { DirEntry } from '../local/service-file.js';
import type { OpRecord } from '../server/op-record.js';
import type { ServiceHost } from '../server/service-host.js';
import type { ServiceRegistry } from '../server/service-registry.js';
import type { Subscriber } from '../server/subscriber.js';
import type { ClusterConfig } from '../server/config.js';
import type { ClusterEntry, ClusterItem } from './cluster-entry.js';
import { clusterOpOf, type ClusterOp } from './cluster-op.js';
import type { OpKey } from '../server/op-ledger.js';
import { CATALOG_SET, CATALOG_STREAM } from './cluster-keys.js';
import { layoutCode } from './layout-code.js';
import { ClusterMetrics } from './cluster-metrics.js';
import { EntryApplier } from './entry-apply.js';
import { LostWrites } from './lost-writes.js';
import { Positions } from './positions.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { commandConnection, readerConnection, RedisFailures, retryDelay, type AppendReply, type CommandConnection } from './redis-connection.js';
import { ServiceReplica, type Applied, type Waiter } from './service-replica.js';
import { SnapshotLoader } from './snapshot-load.js';
import { StreamReader } from './stream-reader.js';
import { STREAM_START, type StreamId } from './stream-id.js';

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

/**
 * This server as a node of a cluster (docs/cluster.md): every write of a remote client is appended to its
 * service's Redis stream (one script: checks and append), every node reads every service's stream and applies
 * each entry, in order, into its own file, and answers its own clients' writes once its own apply is done.
 * Local processes' writes, seen by the node's watcher, are appended too. Subscribers are fed by the file's
 * watcher as on a single server: the cluster only writes files.
 */
export class ClusterNode {
  private readonly cmd: CommandConnection;
  private readonly reader: Redis;
  private readonly replicas = new Map<string, ServiceReplica>();
  private readonly byLog = new Map<string, ServiceReplica>();
  private readonly positions: Positions;
  /** Services created here whose announcement Redis has not taken yet. */
  private readonly unannounced = new Set<string>();
  /** This process's tokens' prefix: random, so that two processes (containers with the same pid) never share one. */
  private readonly boot = randomBytes(6).toString('base64url');
  private seq = 0;
  private closed = false;
  private readonly failures: RedisFailures;
  private readonly snapshots: SnapshotLoader;
  private readonly streams: StreamReader;
  private readonly reading: Promise<void>;
  private readonly lost: LostWrites;

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
    const isClosed = (): boolean => this.closed;
    this.failures = new RedisFailures(log, isClosed);
    this.cmd = commandConnection(config.redis);
    this.cmd.on('ready', () => {
      this.reconnected();
      void this.lost.checkDataLoss();
    });
    this.cmd.on('error', (err: Error) => this.failures.said('commands', err));
    this.reader = readerConnection(config.redis);
    this.reader.on('error', (err: Error) => this.failures.said('reader', err));
    this.reader.on('close', () => this.streams.markGaps());
    const applier = new EntryApplier({ nodeId: config.nodeId, registry, log, isClosed });
    this.snapshots = new SnapshotLoader({ cmd: this.cmd, registry, log, positions: this.positions, applier });
    this.streams = new StreamReader({
      nodeId: config.nodeId,
      cmd: this.cmd,
      reader: this.reader,
      replicas: this.replicas,
      byLog: this.byLog,
      positions: this.positions,
      applier,
      snapshots: this.snapshots,
      failures: this.failures,
      log,
      serves,
      track: (tenant, service, from) => {
        this.track(tenant, service, from);
      },
      entryApplied: () => this.metrics?.entryApplied(),
      isClosed,
    });
    for (const [serviceId, at] of this.positions.services()) {
      const [tenant, service] = serviceId.split('/');
      if (tenant !== undefined && service !== undefined && this.serves(tenant)) this.track(tenant, service, at);
    }
    this.reading = this.streams.readLoop();
    this.metrics =
      metricsRegistry === undefined
        ? undefined
        : new ClusterMetrics(metricsRegistry, {
            redisUp: () => this.cmd.status === 'ready' && this.reader.status === 'ready',
            services: () => this.replicas.size,
            unapplied: () => [...this.replicas.values()].reduce((n, r) => n + r.queue.length, 0),
          });
    this.lost = new LostWrites({
      cmd: this.cmd,
      replicas: this.replicas,
      positions: this.positions,
      log,
      announceAgain: () => this.announceAgain(),
      resendLocal: () => this.reconnected(),
    });
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
      const moved = host.conflict([e], [w.expected]);
      if (moved !== undefined) throw moved;
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
    this.lost.stop();
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
      this.applyOwnAtOnce(replica, { id: detail, kind, node: this.config.nodeId, token, items: items.map(entryItem) }, seen, previous);
      return done;
    }
    replica.waiters.delete(token);
    if (status === 'dup') return this.answerOfDup(replica, detail, items.map((it) => it.name));
    throw refusal(status, detail, replica.serviceId);
  }

  /**
   * The entry just appended comes right after everything this node has applied (`previous` is the stream's
   * last id before it): applied now, without waiting for the reader to bring it back (one Redis round trip
   * less for the writer's ack and this node's subscribers). The reader's copy is skipped (drain). Only if
   * nothing was applied since the write was taken (`seen`): the script then appended it as given (see APPEND).
   */
  private applyOwnAtOnce(replica: ServiceReplica, entry: ClusterEntry, seen: StreamId, previous: string | undefined): void {
    if (seen !== replica.applied || previous !== replica.applied || replica.queue.length > 0 || replica.draining) return;
    replica.queue.push(entry);
    void this.streams.drain(replica);
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
    this.failures.count = 0;
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

  /** Redis lost the catalog (LostWrites.checkDataLoss): every live service is announced again. */
  private async announceAgain(): Promise<void> {
    for (const r of this.replicas.values()) if (r.live) this.unannounced.add(r.serviceId);
    await this.sendAnnouncements();
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
        if (await this.snapshots.trimmedPast(replica)) await this.snapshots.load(replica);
        else replica.start();
        await this.streams.wake();
        return;
      } catch (err) {
        if (attempt === 0) this.log.warn({ err, service: replica.serviceId }, 'cluster: cannot start replicating yet; retrying');
        await sleep(retryDelay(attempt));
      }
    }
  }

  /** Resolves once the command connection is up (at start, or after Redis was away). */
  private connected(): Promise<void> {
    if (this.cmd.status === 'ready') return Promise.resolve();
    return new Promise((resolve) => this.cmd.once('ready', () => resolve()));
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
