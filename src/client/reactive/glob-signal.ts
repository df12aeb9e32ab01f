import { signal, type ReadonlySignal, type Signal } from '@preact/signals-core';
import { ErrorCode, isCommyError } from '../../core/errors.js';
import type { ChangeStamp } from '../../core/file-accessor.js';
import type { GlobMatcher } from '../../core/glob.js';
import type { VariableValue } from '../../core/variable-type.js';
import { CheckedComputed } from './checked-computed.js';
import { VariableCell, type VariableSource } from './variable-signal.js';

/** What a glob's signal needs beyond a variable's. */
export interface GlobSource extends VariableSource {
  /** The names of the variables the file has now that `matches` accepts, in the file's order (vf.variables()). */
  namesMatching(matches: GlobMatcher): string[];
  watchedGlob(view: GlobView): void;
  unwatchedGlob(view: GlobView): void;
}

/**
 * vf.signalMap(glob): a Map from each matching variable's name to its value, over one VariableCell per member
 * (so an entity's value is decoded only when it changed, and keeps its object otherwise). `layout` counts
 * changes of membership: a watched view hears them from change events (added and removed names), one nobody
 * watches looks at the membership when a read finds the file changed. The Map is a new object exactly when a
 * member came, went, or changed value.
 */
export class GlobView<T extends VariableValue = VariableValue> {
  readonly signal: ReadonlySignal<ReadonlyMap<string, T>>;
  private readonly layout: Signal<number> = signal(0);
  /** The layout tick the members answer (-1: none yet). */
  private membersAt = -1;
  private members = new Map<string, VariableCell<T>>();
  /** Names found by a check, for the recompute it caused. */
  private found: string[] | undefined;
  private checkedFile: ChangeStamp | undefined;
  private isWatched = false;
  private shown: Map<string, T> | undefined;

  constructor(
    private readonly matches: GlobMatcher,
    private readonly source: GlobSource,
  ) {
    this.signal = new CheckedComputed(
      () => this.check(),
      () => this.compute(),
      {
        watched: () => {
          this.isWatched = true;
          source.watchedGlob(this);
        },
        unwatched: () => {
          this.isWatched = false;
          source.unwatchedGlob(this);
        },
      },
    );
  }

  /** A change event added or removed variables: a recompute is due if any of them is (or was) a member. */
  layoutChanged(added: readonly string[], removed: readonly string[]): void {
    if (added.some(this.matches) || removed.some(this.matches)) this.layout.value++;
  }

  /** Before each read: when the file changed, the membership (unless events keep it) and every member's stamp. */
  private check(): void {
    const source = this.source;
    if (source.ended) return;
    const file = source.fileStamp();
    if (file === this.checkedFile) return;
    this.checkedFile = file;
    if (!this.isWatched && this.membersAt !== -1) {
      const names = source.namesMatching(this.matches);
      if (!sameNames(names, this.members)) {
        this.found = names;
        this.layout.value++;
      }
    }
    for (const cell of this.members.values()) cell.check(file);
  }

  private compute(): ReadonlyMap<string, T> {
    const layout = this.layout.value; // the dependency on membership
    if (layout !== this.membersAt) {
      this.membersAt = layout;
      this.rebuild(this.found ?? (this.source.ended ? [...this.members.keys()] : this.source.namesMatching(this.matches)));
      this.found = undefined;
    }
    const next = new Map<string, T>();
    for (const [name, cell] of this.members) {
      const value = valueOf(cell); // tracks each member
      if (value !== GONE) next.set(name, value);
    }
    if (this.shown !== undefined && sameEntries(next, this.shown)) return this.shown;
    this.shown = next;
    return next;
  }

  /** Members in `names`' order; a name that stays keeps its cell (and so its value object). */
  private rebuild(names: readonly string[]): void {
    const members = new Map<string, VariableCell<T>>();
    for (const name of names) members.set(name, this.members.get(name) ?? new VariableCell<T>(name, this.source));
    this.members = members;
  }
}

const GONE: unique symbol = Symbol('gone');

/** A member removed before its first read has no value to keep: it is left out until the next layout change drops it. */
function valueOf<T extends VariableValue>(cell: VariableCell<T>): T | typeof GONE {
  try {
    return cell.signal.value;
  } catch (err) {
    if (isCommyError(err, ErrorCode.VARIABLE_NOT_FOUND)) return GONE;
    throw err;
  }
}

function sameNames(names: readonly string[], members: ReadonlyMap<string, unknown>): boolean {
  if (names.length !== members.size) return false;
  let i = 0;
  for (const name of members.keys()) if (names[i++] !== name) return false;
  return true;
}

/** The same names in the same order with the same value objects: nothing a reader could tell apart. */
function sameEntries<T>(a: ReadonlyMap<string, T>, b: ReadonlyMap<string, T>): boolean {
  if (a.size !== b.size) return false;
  const other = b.entries();
  for (const [name, value] of a) {
    const [otherName, otherValue] = other.next().value as [string, T];
    if (name !== otherName || value !== otherValue) return false;
  }
  return true;
}
