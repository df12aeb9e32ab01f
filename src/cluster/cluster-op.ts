import { createHash } from 'node:crypto';
import type { OpKey } from '../server/op-ledger.js';

/** An operation id as Redis keeps it (cluster-scripts.ts APPEND): whose and which, and a digest of the write. */
export interface ClusterOp {
  /** Digest of the client's identity (op-ledger.ts), then the id: the identity itself (a key id, a clientKey) never reaches Redis. */
  readonly key: string;
  /** Digest of what the write was: the same id for another write is refused, as on a single server. */
  readonly what: string;
}

/** The operation id of a write as Redis keeps it; undefined for a write without one. */
export function clusterOpOf(key: OpKey | undefined): ClusterOp | undefined {
  if (key?.opId === undefined) return undefined;
  return { key: `${digest(key.identity)}:${key.opId}`, what: digest(key.what) };
}

function digest(text: string): string {
  return createHash('sha256').update(text).digest('base64url').slice(0, 22);
}
