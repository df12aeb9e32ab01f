import { CommyError, ErrorCode } from '../../core/errors.js';
import { changeEventOf, deliverChange, type FileChangeEvent } from '../../core/file-change-event.js';
import type { RemoteEntry } from './directory.js';

type Listener = (event: FileChangeEvent) => void;

/** The change listeners of one remote service: one event per batch or acknowledgement, ranges sorted. */
export class ChangeEvents {
  private readonly listeners = new Set<Listener>();

  constructor(
    private readonly serviceId: string,
    private readonly onError: (err: CommyError) => void,
  ) {}

  watch(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(entries: readonly RemoteEntry[], version: number): void {
    if (this.listeners.size === 0 || entries.length === 0) return;
    const event = changeEventOf('', this.serviceId, entries.map((e) => e.meta), BigInt(version));
    deliverChange(this.listeners, event, (err) =>
      this.onError(err instanceof CommyError ? err : new CommyError(ErrorCode.INTERNAL_ERROR, `a change listener threw: ${String(err)}`, { cause: err })),
    );
  }

  clear(): void {
    this.listeners.clear();
  }
}
