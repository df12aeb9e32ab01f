import { CommyError, ErrorCode } from '../../core/errors.js';
import type { VariableDef } from '../../protocol/messages.js';
import { sameLayoutAs } from '../../protocol/variable-def.js';
import type { ChangeEvents } from './change-events.js';
import type { RemoteDirectory, RemoteEntry } from './directory.js';
import type { Reconciler } from './reconciler.js';
import { dropRemoved } from './removal.js';
import type { RemoteStore } from './store.js';

/** How a subscription whose snapshot arrives in chunks learns that the last one came (or never will). */
export interface Loading {
  /** `version`: the resume point the snapshot gives (its own, or its last chunk's when that is lower). */
  resolve(version: number): void;
  reject(err: CommyError): void;
}

/** What a snapshot is loaded into. */
export interface LoadTarget {
  readonly serviceId: string;
  readonly directory: RemoteDirectory;
  readonly store: RemoteStore;
  readonly reconciler: Reconciler<RemoteEntry>;
  readonly events: ChangeEvents;
}

/**
 * Taking in one Snapshot and its chunks. The first one of a subscription (`floor` undefined) fills fresh
 * buffers as they come. One after a reconnection goes variable by variable through the reconciler, so a
 * local write not yet acknowledged is kept (and the server's value held back, as for any update): with a
 * resume (`floor` = the version resumed from), only variables whose definition is newer than the floor take
 * the snapshot's bytes, the others keep this client's; with a reset (`floor` -1), every variable does.
 */
export class SnapshotLoad {
  /** Definition versions by index: which variables a resume carries. */
  private readonly versions = new Map<number, number>();
  private readonly changed = new Set<RemoteEntry>();
  private problem: CommyError | undefined;

  /** Indexes a full snapshot defined: with `pruned`, the known variables it lacks were removed. */
  private readonly defined = new Set<number>();
  private readonly removed: string[] = [];
  private readonly added: string[] = [];
  private prunedDone = false;

  /**
   * `pruned` (a full snapshot after a reconnection): the filter it covers. A known variable it covers that the
   * snapshot does not define was removed (or the file was replaced by one without it), and a name defined at
   * another index is a new variable.
   */
  constructor(
    private readonly target: LoadTarget,
    private readonly floor: number | undefined,
    private readonly version: number,
    private readonly loading: Loading,
    private readonly pruned?: (name: string) => boolean,
  ) {}

  defs(defs: readonly VariableDef[]): void {
    for (const d of defs) {
      if (this.floor === undefined) this.target.directory.add(d);
      else this.redefine(d);
    }
  }

  /** Bytes of the data region from `offset` (a chunk's run of whole variables, or the snapshot's data). */
  data(offset: number, bytes: Uint8Array): void {
    const { store, directory, reconciler } = this.target;
    if (this.floor === undefined) {
      store.ensure(offset + bytes.length);
      store.putBoth(offset, bytes.length, bytes);
      return;
    }
    if (this.problem !== undefined) return;
    this.pruneOnce(); // every definition came before the data: drop the removed ones before their space is filled again
    if (bytes.length === 0) return;
    const end = offset + bytes.length;
    for (const e of directory.touched([[offset, end]])) {
      const { offset: at, size } = e.meta;
      const version = this.versions.get(e.index);
      // Between a resume's runs lie zeros for variables it does not carry: only whole, carried ones count.
      if (at < offset || at + size > end || version === undefined || version <= this.floor) continue;
      const before = e.version;
      reconciler.update(e, version, bytes.subarray(at - offset, at - offset + size), this.floor === -1);
      if (version !== before) this.changed.add(e);
    }
  }

  /** The last piece came; `version` is the last chunk's resume point when it gave one. */
  finish(version?: number): void {
    if (this.problem !== undefined) {
      this.loading.reject(this.problem);
      return;
    }
    this.pruneOnce();
    const at = version ?? this.version;
    this.target.events.emit([...this.changed], at, { added: this.added, removed: this.removed });
    this.loading.resolve(at);
  }

  fail(err: CommyError): void {
    this.loading.reject(err);
  }

  /** Known variables the full snapshot covers and lacks: removed (docs/protocol.md, Variable lifecycle). */
  private pruneOnce(): void {
    const covers = this.pruned;
    if (covers === undefined || this.prunedDone) return;
    this.prunedDone = true;
    for (const e of this.target.directory.entriesNow()) {
      if (!this.defined.has(e.index) && covers(e.meta.name)) this.drop(e);
    }
  }

  private drop(e: RemoteEntry): void {
    dropRemoved(this.target, e.index);
    this.changed.delete(e);
    this.removed.push(e.meta.name);
  }

  /** A definition after a reconnection: the same variable as before, or a new one; anything else is another file. */
  private redefine(def: VariableDef): void {
    const [index, name, , , , version] = def;
    const { directory } = this.target;
    this.defined.add(index);
    if (this.pruned !== undefined) {
      // A full snapshot: a name at another index, or another name at this index, is a new variable; the one
      // this client knew there was removed (or belonged to the file this one replaced).
      const renamed = directory.named(name);
      if (renamed !== undefined && renamed.index !== index) this.drop(renamed);
      const other = directory.at(index);
      if (other !== undefined && other.meta.name !== name) this.drop(other);
    }
    const known = directory.at(index) ?? directory.named(name);
    if (known === undefined) {
      const added = directory.add(def);
      if (added !== undefined) {
        this.changed.add(added);
        this.added.push(name);
      }
    } else if (known.index !== index || known.meta.name !== name || !sameLayoutAs(known.meta, def)) {
      this.problem ??= new CommyError(
        ErrorCode.INVALID_FILE,
        `${this.target.serviceId} was replaced by a file with another layout (${name} moved or changed): open it again`,
      );
    }
    // A full snapshot states every version afresh: one of a replaced file may be lower than the old file's.
    else if (this.floor === -1) known.version = version;
    this.versions.set(index, version);
  }
}
