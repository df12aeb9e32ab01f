/** `cluster` in the server's config (docs/cluster.md): several servers on one Redis. */
export interface ClusterConfig {
  /** The Redis every node shares: `redis://[user:pass@]host:port[/db]` (rediss:// for TLS). */
  readonly redis: string;
  /** This node's name, unique in the cluster, the same across its restarts (its data directory is its own). */
  readonly nodeId: string;
  /** Entries kept per service stream (approximately: XADD MAXLEN ~); a node further behind loads a snapshot. */
  readonly streamLength: number;
  /** How long Redis remembers an operation id (a retry after that is applied again). */
  readonly opIdTtlMs: number;
}

export const DEFAULT_STREAM_LENGTH = 100_000;
export const DEFAULT_OP_ID_TTL_MS = 10 * 60_000;
