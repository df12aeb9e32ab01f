import { signal, type ReadonlySignal, type Signal } from '@preact/signals-core';
import { CHANGE_STAMP_MISSING, type ChangeStamp } from '../../core/file-accessor.js';
import type { VariableValue } from '../../core/variable-type.js';
import { CheckedComputed } from './checked-computed.js';
import { sameValue } from './same-value.js';

/** What a variable's signal reads through: one per VirtualVariableFile (reactive.ts, ReactiveViews). */
export interface VariableSource {
  /** The file is closed: signals keep the last value they showed. */
  readonly ended: boolean;
  /** FileAccessor.changeStamp() of the whole file. */
  fileStamp(): ChangeStamp;
  /** FileAccessor.changeStamp(name): CHANGE_STAMP_MISSING once the variable is gone. */
  stamp(name: string): ChangeStamp;
  /** Decodes the variable's current value (the only place a signal decodes). */
  read(name: string): VariableValue;
  /** The signal gained its first watcher (an effect or a watched computed), or lost its last. */
  watched(cell: VariableCell): void;
  unwatched(cell: VariableCell): void;
}

/** Decodes done by every signal of this process: tests check that a signal nobody reads costs none. */
export const decodes = { count: 0 };

/**
 * One variable's signal. `tick` counts changes heard of (events, own writes, or a stamp found moved at a read);
 * the computed depends on it and decodes only when read after it moved, and only if the variable's change stamp
 * moved since the value it shows: a signal nobody reads costs a stamp compare per change, never a decode. A
 * decoded value equal to the one shown (sameValue) is dropped, so the value's identity only changes with it.
 */
export class VariableCell<T extends VariableValue = VariableValue> {
  readonly signal: ReadonlySignal<T>;
  private readonly tick: Signal<number> = signal(0);
  /** The tick the shown value answers; another means a recompute is due already (-1: never computed). */
  private computedAt = -1;
  /** The change stamp of the shown value. */
  private stamp: ChangeStamp | undefined;
  /** The file's stamp at the last check: unmoved, nothing in the file changed since. */
  private checkedFile: ChangeStamp | undefined;
  private shown: { value: T } | undefined;

  constructor(
    readonly name: string,
    private readonly source: VariableSource,
  ) {
    this.signal = new CheckedComputed(
      () => this.check(undefined),
      () => this.compute(),
      { watched: () => source.watched(this), unwatched: () => source.unwatched(this) },
    );
  }

  /**
   * Before each read: did anything in the file change since the last look? Then compare this variable's stamp.
   * `file`: the file's stamp, when the caller has just read it (a map checking all its members).
   */
  check(file?: ChangeStamp): void {
    if (this.source.ended) return;
    file ??= this.source.fileStamp();
    if (file === this.checkedFile) return;
    this.checkedFile = file;
    this.changed();
  }

  /** The variable may have changed (an event named it): due for a recompute if its stamp moved. */
  changed(): void {
    if (this.source.ended || this.tick.peek() !== this.computedAt) return;
    if (this.source.stamp(this.name) !== this.stamp) this.tick.value++;
  }

  private compute(): T {
    this.computedAt = this.tick.value; // the dependency
    const shown = this.shown;
    if (this.source.ended) return shown !== undefined ? shown.value : (this.source.read(this.name) as T); // never read: the closed file's error
    const stamp = this.source.stamp(this.name);
    if (shown !== undefined && (stamp === this.stamp || stamp === CHANGE_STAMP_MISSING)) {
      this.stamp = stamp; // removed: the last value stays; registered again, the new variable's stamp differs
      return shown.value;
    }
    const value = this.source.read(this.name) as T; // throws VARIABLE_NOT_FOUND if it was removed before any read
    decodes.count++;
    this.stamp = stamp;
    if (shown !== undefined && sameValue(value, shown.value)) return shown.value;
    this.shown = { value };
    return value;
  }
}
