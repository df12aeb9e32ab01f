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
  /** A mirror file's bridge, when the client mirrors this service. */
  tap: ChangeTap | undefined;

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
    if (this.tap !== undefined && entries.length + removals > 0) this.tell((tap) => tap.changed(entries, layout.removed ?? []));
    if (this.listeners.size === 0 || entries.length + removals === 0) return;
    const event = changeEventOf('', this.serviceId, entries.map((e) => e.meta), BigInt(version), layout);
    deliverChange(this.listeners, event, (err) =>
      this.onError(err instanceof CommyError ? err : new CommyError(ErrorCode.INTERNAL_ERROR, `a change listener threw: ${String(err)}`, { cause: err })),
    );
  }

  clear(): void {
    this.listeners.clear();
    const tap = this.tap;
    this.tap = undefined;
    if (tap !== undefined) this.tell(() => tap.closed(), tap);
  }

  /** A typed write of this client into `current` (listeners hear of it when the server acknowledges it). */
  wrote(entry: RemoteEntry): void {
    if (this.tap !== undefined) this.tell((tap) => tap.changed([entry], []));
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
