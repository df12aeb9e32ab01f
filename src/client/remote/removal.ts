import type { RemoteDirectory, RemoteEntry } from './directory.js';
import type { Reconciler } from './reconciler.js';

/** Where a removal is applied: the directory and the buffers' reconciler of one remote file. */
export interface RemovalTarget {
  readonly directory: RemoteDirectory;
  readonly reconciler: Reconciler<RemoteEntry>;
}

/**
 * The one rule for a variable the server removed, however the client learns it (the RemoveVariable answer, a
 * SyncBatch's `removed`, a reset snapshot that lacks it): out of the directory (its handles fail from now
 * on), nothing of ours pending for it, its bytes zeroed in both buffers as the server zeroed them. Returns
 * the entry, or undefined when this client did not know it (or dropped it already).
 */
export function dropRemoved(target: RemovalTarget, index: number): RemoteEntry | undefined {
  const gone = target.directory.remove(index);
  if (gone !== undefined) target.reconciler.removed(gone);
  return gone;
}
