import { Counter, Gauge, type Registry } from 'prom-client';

/** What the cluster gauges read at scrape time. */
export interface ClusterMetricsSource {
  /** Both Redis connections (commands, reader) are up. */
  redisUp(): boolean;
  /** Services this node replicates. */
  services(): number;
  /** Entries read and not applied yet, over every service. */
  unapplied(): number;
}

/** A node's series in the server's `/metrics` (docs/operations.md, Metrics; docs/cluster.md). */
export class ClusterMetrics {
  private readonly applied: Counter;
  private readonly appends: Counter<'result'>;

  constructor(registry: Registry, source: ClusterMetricsSource) {
    const registers = [registry];
    this.applied = new Counter({ name: 'commy_cluster_entries_applied_total', help: 'Stream entries this node applied to its files (its own and the other nodes\').', registers });
    this.appends = new Counter({
      name: 'commy_cluster_appends_total',
      help: 'Appends this node made to the service streams, by result (ok, dup: an operation id already done, conflict, refused, unavailable: Redis away).',
      labelNames: ['result'],
      registers,
    });
    new Gauge({ name: 'commy_cluster_redis_up', help: "1 while this node's Redis connections are both up.", registers, collect() { this.set(source.redisUp() ? 1 : 0); } });
    new Gauge({ name: 'commy_cluster_services', help: 'Services this node replicates.', registers, collect() { this.set(source.services()); } });
    new Gauge({ name: 'commy_cluster_unapplied_entries', help: 'Stream entries read and not yet applied (a node falling behind).', registers, collect() { this.set(source.unapplied()); } });
  }

  entryApplied(): void {
    this.applied.inc();
  }

  appended(result: 'ok' | 'dup' | 'conflict' | 'refused' | 'unavailable'): void {
    this.appends.inc({ result });
  }
}
