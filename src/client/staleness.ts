import type { FileAccessor, Staleness } from '../core/file-accessor.js';
import type { SyncPendingBody, SyncBatchBody } from '../protocol/messages.js';

/** A copy that is current: nothing owed. */
export const CURRENT: Staleness = Object.freeze({ versionsBehind: 0, ms: 0 });

/**
 * vf.staleness(name): the accessor's answer (remote), or none behind for a local copy, which is the file itself.
 * An unknown name is VARIABLE_NOT_FOUND either way, as for get().
 */
export function stalenessOf(accessor: FileAccessor, name: string): Staleness {
  if (accessor.staleness !== undefined) return accessor.staleness(name);
  accessor.handle(name);
  return CURRENT;
}

/** A version the server has and this client does not yet, and since when (this client's clock) it knows. */
interface Owed {
  version: number;
  readonly since: number;
}

/**
 * How far a remote copy lags the server, per variable (vf.staleness; docs/client.md, "Staleness"). The server
 * says what it holds back for this subscription (SyncPending: its version, and each owed variable's latest
 * version, or none when there are too many to name); batches and snapshots deliver. A variable is behind while
 * the server has named a version of it above the one this copy has and above the resume point (every change
 * at or below that point has arrived). Without names, every variable is behind by at most the server's version.
 */
export class StalenessTracker {
  private readonly owed = new Map<number, Owed>();
  /** A notice that named no variables: all of them may be behind, up to this version. */
  private bulk: Owed | undefined;

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** A SyncPending notice: the versions the server holds back for this subscription. */
  noticed(body: SyncPendingBody): void {
    const at = this.now();
    if (body.pending === undefined) {
      this.bulk = { version: Math.max(body.version, this.bulk?.version ?? 0), since: this.bulk?.since ?? at };
      return;
    }
    for (const [index, version] of body.pending) {
      const known = this.owed.get(index);
      if (known === undefined) this.owed.set(index, { version, since: at });
      else if (version > known.version) known.version = version;
    }
  }

  /** A batch arrived: its updates, and every change up to its resume point, are here. */
  delivered(batch: SyncBatchBody, resumePoint: number): void {
    if (this.owed.size === 0 && this.bulk === undefined) return;
    for (const [index, version] of batch.updates) {
      const known = this.owed.get(index);
      if (known !== undefined && version >= known.version) this.owed.delete(index);
    }
    this.caughtUp(resumePoint);
  }

  /** Everything at or below `resumePoint` has arrived (a batch, a snapshot). */
  caughtUp(resumePoint: number): void {
    for (const [index, owed] of this.owed) if (owed.version <= resumePoint) this.owed.delete(index);
    if (this.bulk !== undefined && this.bulk.version <= resumePoint) this.bulk = undefined;
  }

  /** The variable at directory `index`, whose version here is `have`. */
  of(index: number, have: number, resumePoint: number): Staleness {
    const owed = this.owed.get(index);
    if (owed !== undefined && owed.version > have && owed.version > resumePoint) return this.behind(owed, have);
    const bulk = this.bulk;
    const floor = Math.max(have, resumePoint);
    if (bulk !== undefined && bulk.version > floor) return this.behind(bulk, floor);
    return CURRENT;
  }

  /** A reset snapshot (another file): what was owed of the old one means nothing now. */
  clear(): void {
    this.owed.clear();
    this.bulk = undefined;
  }

  private behind(owed: Owed, have: number): Staleness {
    return { versionsBehind: owed.version - have, ms: Math.max(0, this.now() - owed.since) };
  }
}
