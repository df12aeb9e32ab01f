import { CommyError, ErrorCode } from './core/errors.js';
import { pairsFromFlat, variablesTouched, type ByteRange } from './core/byte-diff.js';
import { EventQueue } from './core/event-queue.js';
import { mergeChangeEvents, type FileChangeEvent } from './core/file-change-event.js';
import type { FileAccessor, VariableHandle } from './core/file-accessor.js';
import type { VariableMetadata } from './core/variable-metadata.js';
import type { VariableValue } from './core/variable-type.js';
import { LocalFileAccessor } from './local/local-accessor.js';
import type { ServiceFileOptions } from './local/service-file.js';
import { native } from './native/addon.js';

export type OpenOptions = ServiceFileOptions;

/**
 * One service's variables, the same API whether the bytes are a memory-mapped file shared with other
 * processes (mode 'local') or a buffer kept in sync with a server (mode 'remote').
 */
export class VirtualVariableFile {
  private readonly queues = new Set<EventQueue<FileChangeEvent>>();

  constructor(private readonly accessor: FileAccessor) {}

  /** Embedded mode: map a local service file, no server (like LMDB). */
  static async open(path: string, options: OpenOptions = {}): Promise<VirtualVariableFile> {
    return new VirtualVariableFile(LocalFileAccessor.open(path, options));
  }

  /** Exact [start, end) runs where `current` and `shadow` differ (native SIMD diff). */
  static compareRanges(current: Uint8Array, shadow: Uint8Array): ByteRange[] {
    if (!(current instanceof Uint8Array) || !(shadow instanceof Uint8Array)) {
      throw new CommyError(ErrorCode.TYPE_MISMATCH, 'compareRanges takes two Uint8Arrays');
    }
    return pairsFromFlat(native.diff(current, shadow));
  }

  get mode(): 'local' | 'remote' {
    return this.accessor.mode;
  }

  get serviceId(): string {
    return this.accessor.serviceId;
  }

  /** The mapped file (local mode only). */
  get filePath(): string | undefined {
    return this.accessor.filePath;
  }

  get version(): bigint {
    return this.accessor.version();
  }

  get closed(): boolean {
    return this.accessor.closed;
  }

  /** Registers a variable: offset -1 allocates; the same layout again is a no-op; an overlap is INVALID_OFFSET. */
  registerVariable(meta: VariableMetadata): Promise<VariableMetadata> {
    return this.accessor.register(meta);
  }

  variables(): VariableMetadata[] {
    return this.accessor.variables();
  }

  /** Resolves when the value is applied and visible to every other client of the service. */
  writeVariable(name: string, bytes: Uint8Array): Promise<void> {
    return this.accessor.writeBytes(name, bytes);
  }

  /** A copy of the variable's current bytes (consistent: never torn). */
  readVariableSlice(name: string): Promise<Uint8Array> {
    return this.accessor.readBytes(name);
  }

  get<T extends VariableValue = VariableValue>(name: string): T {
    return this.accessor.handle(name).get() as T;
  }

  set(name: string, value: VariableValue): void {
    this.accessor.handle(name).set(value);
  }

  /** The hot path: resolve the name once, then get()/set() with no lookup. */
  handle<T extends VariableValue = VariableValue>(name: string): VariableHandle<T> {
    return this.accessor.handle(name) as unknown as VariableHandle<T>;
  }

  /** True while a writer that died mid-write has left this variable's value possibly torn. */
  isTorn(name: string): boolean {
    return this.accessor.isTorn(name);
  }

  /** Local: publishes raw writes made into bytes(). Remote: sends pending changes, resolves on acknowledgement. */
  flush(): Promise<void> {
    return this.accessor.flush();
  }

  /** The data region (variable offsets index it). Writes here are raw: flush() publishes them. */
  bytes(): Uint8Array {
    return this.accessor.bytes();
  }

  shadowBytes(): Uint8Array {
    return this.accessor.shadowBytes();
  }

  syncShadow(): void {
    this.accessor.syncShadow();
  }

  /** Names of the variables that overlap the given byte ranges. */
  findChangedVariablesFromDiff(ranges: readonly ByteRange[]): string[] {
    const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
    return variablesTouched(this.accessor.variables(), sorted);
  }

  /**
   * Every change to this service, by anyone (this process included), as FileChangeEvents. While an
   * iteration is open the process stays alive; break out of the loop (or close the file) to end it.
   */
  changes(): AsyncIterableIterator<FileChangeEvent> {
    const accessor = this.accessor;
    let stop: () => void = () => {};
    const queue = new EventQueue<FileChangeEvent>(mergeChangeEvents, () => {
      stop();
      accessor.unhold();
      this.queues.delete(queue);
    });
    stop = accessor.watch((event) => queue.push(event));
    accessor.hold();
    this.queues.add(queue);
    return queue;
  }

  /** Unmaps (local) or leaves the service (remote); later calls throw NOT_CONNECTED. */
  async close(): Promise<void> {
    for (const queue of [...this.queues]) queue.end();
    await this.accessor.close();
  }
}
