import type { FileAccessor } from '../core/file-accessor.js';
import type { FileChangeEvent } from '../core/file-change-event.js';
import { ChangeInbox } from './change-inbox.js';
import type { VirtualVariableFile } from './virtual-variable-file.js';

/** A service file this client opened, and its feed into the client's change queue while monitoring. */
export interface OpenFile {
  readonly vf: VirtualVariableFile;
  readonly accessor: FileAccessor;
  stopWatch: (() => void) | undefined;
}

/**
 * The service files a client opened, and the one change queue they feed while monitoring runs
 * (waitForFileChange, tryGetFileChange).
 */
export class OpenFiles {
  readonly inbox = new ChangeInbox();
  private readonly files = new Set<OpenFile>();
  private monitoringValue = false;
  private readonly forward = (event: FileChangeEvent): void => this.inbox.push(event);

  get monitoring(): boolean {
    return this.monitoringValue;
  }

  add(vf: VirtualVariableFile, accessor: FileAccessor): void {
    const file: OpenFile = { vf, accessor, stopWatch: undefined };
    this.live();
    this.files.add(file);
    if (this.monitoringValue) file.stopWatch = accessor.watch(this.forward);
  }

  /** The open files, forgetting those the application closed itself. */
  live(): ReadonlySet<OpenFile> {
    for (const file of this.files) {
      if (file.accessor.closed) {
        file.stopWatch?.();
        this.files.delete(file);
      }
    }
    return this.files;
  }

  startMonitoring(): void {
    this.monitoringValue = true;
    for (const file of this.live()) file.stopWatch ??= file.accessor.watch(this.forward);
  }

  stopMonitoring(): void {
    this.monitoringValue = false;
    for (const file of this.files) {
      file.stopWatch?.();
      file.stopWatch = undefined;
    }
  }

  /** Forgets every file at once and closes them all; settles when each close has. */
  closeAll(): Promise<unknown> {
    const files = [...this.files];
    this.files.clear();
    return Promise.allSettled(files.map((f) => f.vf.close()));
  }
}
