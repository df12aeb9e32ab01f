import { batch, type ReadonlySignal } from '@preact/signals-core';
import { CommyError, ErrorCode } from '../core/errors.js';
import type { ChangeStamp, FileAccessor } from '../core/file-accessor.js';
import type { FileChangeEvent } from '../core/file-change-event.js';
import { assertGlobs, compileGlob, DEFAULT_GLOB_LIMITS, type GlobMatcher } from '../core/glob.js';
import type { VariableValue } from '../core/variable-type.js';
import { GlobView, type GlobSource } from './reactive/glob-signal.js';
import { VariableCell } from './reactive/variable-signal.js';

export { decodes } from './reactive/variable-signal.js';

/** What tests look at: listeners this file's signals hold on the accessor, and signals being watched. */
export interface ReactiveStats {
  readonly listeners: number;
  readonly watched: number;
}

/**
 * The reactive views of one VirtualVariableFile (docs/client.md, "Reactive views"): vf.signal() and
 * vf.signalMap(). All of its signals share one change listener on the file (and, remote, one own-write
 * listener), held only while at least one of them is watched (by an effect, or a computed that is). A change
 * event bumps the watched signals it names; a signal nobody watches holds nothing and checks change stamps
 * when read. Closing the file ends them: they keep the last value they showed.
 */
export class ReactiveViews implements GlobSource {
  /** Watched variable signals by name: where a change event goes. */
  private readonly cells = new Map<string, Set<VariableCell>>();
  /** Watched glob signals: where added and removed variables go. */
  private readonly globs = new Set<GlobView>();
  private watchers = 0;
  private stopEvents: (() => void) | undefined;
  private stopOwnWrites: (() => void) | undefined;
  private closed = false;

  constructor(private readonly accessor: FileAccessor) {}

  signal<T extends VariableValue>(name: string): ReadonlySignal<T> {
    this.accessor.handle(name); // VARIABLE_NOT_FOUND (or the closed file's error) now, not at the first read
    return new VariableCell<T>(name, this).signal;
  }

  signalMap<T extends VariableValue>(glob: string): ReadonlySignal<ReadonlyMap<string, T>> {
    if (typeof glob !== 'string') throw new CommyError(ErrorCode.TYPE_MISMATCH, 'signalMap takes a glob string');
    assertGlobs([glob], DEFAULT_GLOB_LIMITS);
    if (this.ended) {
      this.accessor.variables(); // the closed file's own error, where it has one
      throw new CommyError(ErrorCode.NOT_CONNECTED, `${this.accessor.serviceId} is closed`);
    }
    return new GlobView<T>(compileGlob(glob), this).signal;
  }

  get stats(): ReactiveStats {
    return { listeners: (this.stopEvents !== undefined ? 1 : 0) + (this.stopOwnWrites !== undefined ? 1 : 0), watched: this.watchers };
  }

  /** The file is closing: no more listening, and every signal keeps its last value. */
  close(): void {
    this.closed = true;
    this.stopListening();
  }

  // ---- GlobSource: what the signals read through ------------------------------------------------------

  get ended(): boolean {
    return this.closed || this.accessor.closed;
  }

  fileStamp(): ChangeStamp {
    return this.accessor.changeStamp?.() ?? this.accessor.version();
  }

  stamp(name: string): ChangeStamp {
    return this.accessor.changeStamp !== undefined ? this.accessor.changeStamp(name) : this.accessor.handle(name).version();
  }

  read(name: string): VariableValue {
    return this.accessor.handle(name).get();
  }

  namesMatching(matches: GlobMatcher): string[] {
    return this.accessor.variables().flatMap((m) => (matches(m.name) ? [m.name] : []));
  }

  watched(cell: VariableCell): void {
    let named = this.cells.get(cell.name);
    if (named === undefined) this.cells.set(cell.name, (named = new Set()));
    named.add(cell);
    this.retain();
  }

  unwatched(cell: VariableCell): void {
    const named = this.cells.get(cell.name);
    if (named?.delete(cell) === true && named.size === 0) this.cells.delete(cell.name);
    this.release();
  }

  watchedGlob(view: GlobView): void {
    this.globs.add(view);
    this.retain();
  }

  unwatchedGlob(view: GlobView): void {
    this.globs.delete(view);
    this.release();
  }

  // ---- the one subscription ----------------------------------------------------------------------------

  private retain(): void {
    if (this.watchers++ === 0 && !this.ended) this.listen();
  }

  private release(): void {
    if (--this.watchers === 0) this.stopListening();
  }

  private listen(): void {
    try {
      this.stopEvents = this.accessor.watch(this.onEvent);
    } catch (err) {
      // A read-only embedded file has no change events (PERMISSION_DENIED): its signals still read current values.
      if (!(err instanceof CommyError) || err.code !== ErrorCode.PERMISSION_DENIED) throw err;
    }
    this.stopOwnWrites = this.accessor.watchOwnWrites?.(this.onOwnWrite);
  }

  private stopListening(): void {
    this.stopEvents?.();
    this.stopOwnWrites?.();
    this.stopEvents = undefined;
    this.stopOwnWrites = undefined;
  }

  /** One batch per event: effects run once, after every signal it names has moved. */
  private readonly onEvent = (event: FileChangeEvent): void => {
    if (this.ended) return;
    batch(() => {
      for (const name of event.changedVariables) this.changed(name);
      for (const name of event.removedVariables) this.changed(name);
      if (event.addedVariables.length + event.removedVariables.length === 0) return;
      for (const view of this.globs) view.layoutChanged(event.addedVariables, event.removedVariables);
    });
  };

  /** Remote: a set() of this client shows at once, as get() does (its event only comes with the acknowledgement). */
  private readonly onOwnWrite = (name: string): void => {
    if (!this.ended) batch(() => this.changed(name));
  };

  private changed(name: string): void {
    const named = this.cells.get(name);
    if (named !== undefined) for (const cell of named) cell.changed();
  }
}

const views = new WeakMap<object, ReactiveViews>();

/** The reactive views of a VirtualVariableFile (`owner`), made at the first signal. */
export function viewsOf(owner: object, accessor: FileAccessor): ReactiveViews {
  let v = views.get(owner);
  if (v === undefined) views.set(owner, (v = new ReactiveViews(accessor)));
  return v;
}

/** The file is closing: its signals stop listening and keep their last values. */
export function closeViews(owner: object): void {
  views.get(owner)?.close();
}

/** For tests (commy/internal): the file's listeners and watched signals; undefined before its first signal. */
export function reactiveStats(owner: object): ReactiveStats | undefined {
  return views.get(owner)?.stats;
}
