import { CommyError, ErrorCode } from '../../core/errors.js';
import { changeEventOf, deliverChange, type FileChangeEvent, type LayoutChange } from '../../core/file-change-event.js';
import type { RemoteEntry } from './directory.js';

type Listener = (event: FileChangeEvent) => void;

/**
 * Sees every change of the service's `current` buffer, listeners or not, and the file's end: what keeps a
 * mirror file in step (client/mirror-file.ts; docs/client.md, "Mirror files").
 */
export interface ChangeTap {
  /** Where the changes go: the mirror file's path. */
  readonly path: string;
  /**
   * These variables' bytes in `current` may have changed (a server update, an answer, a registration, a write
   * of this client); the `removed` ones (names) are gone.
   */
  changed(entries: readonly RemoteEntry[], removed: readonly string[]): void;
  /** close() began: the last moment to put writes into the buffer before its final flush. */
  closing(): void;
  /** The file is closed (or ended): nothing more comes. */
  closed(): void;
}

/** The change listeners of one remote service: one event per batch or acknowledgement, ranges sorted. */
export class ChangeEvents {
  private readonly listeners = new Set<Listener>();
  /** Hear this client's own writes at once (reactive views); `listeners` hear them with the acknowledgement. */
  private readonly writers = new Set<(name: string) => void>();
  /** A mirror file's bridge, when the client mirrors this service. */
  tap: ChangeTap | undefined;
  /** Moves with every change of `current` (FileAccessor.changeStamp): each changed entry's `rev` takes the new value. */
  revision = 0;

  constructor(
    private readonly serviceId: string,
    private readonly onError: (err: CommyError) => void,
  ) {}

  watch(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** `layout`: names of variables added (also among `entries`) and removed (not among them) by the change. */
  emit(entries: readonly RemoteEntry[], version: number, layout: LayoutChange = {}): void {
    const removals = layout.removed?.length ?? 0;
    if (entries.length + removals > 0) this.stamp(entries);
    if (this.tap !== undefined && entries.length + removals > 0) this.tell((tap) => tap.changed(entries, layout.removed ?? []));
    if (this.listeners.size === 0 || entries.length + removals === 0) return;
    const event = changeEventOf('', this.serviceId, entries.map((e) => e.meta), BigInt(version), layout);
    deliverChange(this.listeners, event, (err) => this.listenerThrew(err));
  }

  /** Own writes as they happen (FileAccessor.watchOwnWrites). */
  watchWrites(listener: (name: string) => void): () => void {
    this.writers.add(listener);
    return () => this.writers.delete(listener);
  }

  clear(): void {
    this.listeners.clear();
    this.writers.clear();
    const tap = this.tap;
    this.tap = undefined;
    if (tap !== undefined) this.tell(() => tap.closed(), tap);
  }

  /** A typed write of this client into `current` (listeners hear of it when the server acknowledges it). */
  wrote(entry: RemoteEntry): void {
    entry.rev = ++this.revision; // the hot path: no array for one entry
    if (this.tap !== undefined) this.tell((tap) => tap.changed([entry], []));
    if (this.writers.size > 0) this.tellWriters(entry.meta.name);
  }

  private stamp(entries: readonly RemoteEntry[]): void {
    const revision = ++this.revision;
    for (const e of entries) e.rev = revision;
  }

  /** A listener that throws is reported and does not starve the others (as deliverChange does for events). */
  private tellWriters(name: string): void {
    for (const writer of this.writers) {
      try {
        writer(name);
      } catch (err) {
        this.listenerThrew(err);
      }
    }
  }

  private listenerThrew(err: unknown): void {
    this.onError(err instanceof CommyError ? err : new CommyError(ErrorCode.INTERNAL_ERROR, `a change listener threw: ${String(err)}`, { cause: err }));
  }

  /** close() began (ChangeTap.closing). */
  closing(): void {
    if (this.tap !== undefined) this.tell((tap) => tap.closing());
  }

  /** A tap that throws is reported, never thrown into the write or receive path. */
  private tell(call: (tap: ChangeTap) => void, tap = this.tap): void {
    try {
      if (tap !== undefined) call(tap);
    } catch (err) {
      this.onError(err instanceof CommyError ? err : new CommyError(ErrorCode.INTERNAL_ERROR, `the mirror file failed: ${String(err)}`, { cause: err }));
    }
  }
}
