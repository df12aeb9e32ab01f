import { currentPlatform } from './platform.js';
import { variablesTouched, type ByteRange } from '../core/byte-diff.js';
import { CommyError, ErrorCode } from '../core/errors.js';
import { EventQueue } from '../core/event-queue.js';
import { mergeChangeEvents, type FileChangeEvent } from '../core/file-change-event.js';
import type { FileAccessor, Staleness, ValueOfType, VariableHandle } from '../core/file-accessor.js';
import type { MutateOptions } from '../core/mutate-options.js';
import type { VariableMetadata } from '../core/variable-metadata.js';
import { typeName, type VariableTypeId, type VariableValue } from '../core/variable-type.js';
import { checkGlobs } from './remote/filter-switch.js';
import type { ReadonlySignal } from '@preact/signals-core';
import { closeViews, viewsOf } from './reactive.js';
import { stalenessOf } from './staleness.js';

/** How VirtualVariableFile.open opens (or creates) an embedded service file. */
export interface OpenOptions {
  /** Create the file if it does not exist (mode 0600). */
  create?: boolean;
  /** Directory capacity, fixed at creation. */
  maxVariables?: number;
  /** Maximum file size, fixed at creation: the size of the one mapping every process makes. */
  maxFileSize?: number;
  /** Largest variable this process may register. */
  maxVariableSize?: number;
  /** Map it read-only: reads work, every change throws PERMISSION_DENIED. Never creates the file. */
  readOnly?: boolean;
  /** Recorded in the header at creation: the tenant and service a server would serve this file as. */
  tenant?: string;
  service?: string;
  /** The file's name in error messages (default: its absolute path), e.g. to keep paths out of logs. */
  label?: string;
}

/**
 * One service's variables, the same API whether the bytes are a memory-mapped file shared with other
 * processes (mode 'local') or a buffer kept in sync with a server (mode 'remote').
 */
export class VirtualVariableFile {
  private readonly accessor: FileAccessor;
  private readonly queues = new Set<EventQueue<FileChangeEvent>>();

  /**
   * Not for applications: a VirtualVariableFile comes from Client.getVirtualServiceFile() or
   * VirtualVariableFile.open(). (Tools that build one themselves use `commy/internal`.)
   */
  constructor(source: object) {
    if (!isFileAccessor(source)) {
      throw new CommyError(ErrorCode.TYPE_MISMATCH, 'a VirtualVariableFile comes from client.getVirtualServiceFile() or VirtualVariableFile.open()');
    }
    this.accessor = source;
  }

  /** Embedded mode: map a local service file, no server (like LMDB). Node only. */
  static async open(path: string, options: OpenOptions = {}): Promise<VirtualVariableFile> {
    const openFile = currentPlatform().openFile;
    if (openFile === undefined) {
      throw new CommyError(ErrorCode.FILE_NOT_FOUND, `local service files cannot be opened on this platform (${currentPlatform().name}): use a Client`);
    }
    return new VirtualVariableFile(openFile(path, options));
  }

  /** Exact [start, end) runs where `current` and `shadow` differ (Node: the native SIMD diff). */
  static compareRanges(current: Uint8Array, shadow: Uint8Array): ByteRange[] {
    if (!(current instanceof Uint8Array) || !(shadow instanceof Uint8Array)) {
      throw new CommyError(ErrorCode.TYPE_MISMATCH, 'compareRanges takes two Uint8Arrays');
    }
    return currentPlatform().diff(current, shadow);
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

  /**
   * A remote file of a Client with `mirror` (docs/client.md, "Mirror files"): the service file that mirrors
   * this buffer, for other processes of this machine to open with VirtualVariableFile.open(). Undefined
   * otherwise (a local file is the server's own file: its path is `filePath`), and once the file is closed.
   */
  get mirrorPath(): string | undefined {
    return this.accessor.mirrorPath;
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

  /**
   * Removes a variable for every client (the admin right, remote; a writable mapping, local): its handles fail
   * with VARIABLE_NOT_FOUND from now on, every client's change events list it in `removedVariables`, and its
   * space is reused by later registrations. Resolves with the removal's service version.
   */
  async removeVariable(name: string): Promise<{ version: bigint }> {
    return { version: await this.accessor.removeVariable(name) };
  }

  /**
   * A hash of every definition this client sees (name, offset, size, type): it changes when a variable is
   * added or removed, so a client that sees it change rebuilds its typed views.
   */
  get layoutHash(): string {
    return this.accessor.layoutHash();
  }

  variables(): VariableMetadata[] {
    return this.accessor.variables();
  }

  /** Resolves when the value is applied and visible to every other client of the service. */
  writeVariable(name: string, bytes: Uint8Array): Promise<void> {
    return this.accessor.writeBytes(name, bytes);
  }

  /**
   * Writes one variable and resolves with the version it committed. With `expectedVersion` (the version last
   * seen, `vf.handle(name).version()`), compare-and-set: CONFLICT, nothing written, when the variable has moved
   * on. Linearizable per variable (the server, or locally the variable's writer lock, orders every write to
   * it). Remote: sent at once with an operation id (`opId`, or one the client picks), applied once even when
   * resent after a reconnect.
   */
  async mutate(name: string, value: VariableValue, options: MutateOptions = {}): Promise<{ version: bigint }> {
    if (this.accessor.mutate === undefined) throw new CommyError(ErrorCode.UNKNOWN_MESSAGE, `mutate is not available for ${this.accessor.mode} files yet`);
    return { version: await this.accessor.mutate(name, value, options) };
  }

  /**
   * Remote: receive updates only for variables these globs match too (the filter starts as "all"; the first
   * call narrows it to these). Variables outside it keep their last value; writes to them still go. Local:
   * the mapping always has every variable, so it resolves at once (after checking the globs).
   */
  async subscribe(globs: string[]): Promise<void> {
    if (this.accessor.subscribe === undefined) checkGlobs(globs, 'subscribe');
    else await this.accessor.subscribe(globs);
  }

  /** Remote: removes these exact globs from the filter (none left: no updates at all). Local: as subscribe(). */
  async unsubscribe(globs: string[]): Promise<void> {
    if (this.accessor.unsubscribe === undefined) checkGlobs(globs, 'unsubscribe');
    else await this.accessor.unsubscribe(globs);
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

  /**
   * The hot path: resolve the name once, then get()/set() with no lookup. With the variable's type,
   * `handle('x', VariableType.F64)`, the value type is inferred (number here) and checked: a variable of
   * another type is TYPE_MISMATCH. Without it, `handle<number>('x')` is the caller's word.
   */
  handle<Id extends VariableTypeId>(name: string, type: Id): VariableHandle<ValueOfType<Id>>;
  handle<T extends VariableValue = VariableValue>(name: string): VariableHandle<T>;
  handle(name: string, type?: VariableTypeId): VariableHandle {
    const handle = this.accessor.handle(name);
    if (type !== undefined && handle.metadata.typeId !== type) {
      throw new CommyError(ErrorCode.TYPE_MISMATCH, `${name} is ${typeName(handle.metadata.typeId)}, not ${typeName(type)}`);
    }
    return handle;
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
    const queue = new EventQueue<FileChangeEvent>({
      merge: mergeChangeEvents,
      onEnd: () => {
        stop();
        accessor.unhold();
        this.queues.delete(queue);
      },
    });
    stop = accessor.watch((event) => queue.push(event));
    accessor.hold();
    this.queues.add(queue);
    return queue;
  }

  /**
   * A signal (@preact/signals-core) of the variable's value that follows every change by anyone (docs/client.md,
   * "Reactive views"): decoded only when read, the same object until the value changes. Closing the file ends
   * it: it keeps its last value.
   */
  signal<T extends VariableValue = VariableValue>(name: string): ReadonlySignal<T> {
    return viewsOf(this, this.accessor).signal<T>(name);
  }

  /** A signal of Map<name, value> over the variables a glob matches (entities 'Position.<id>': 'Position.*'), as they come and go. */
  signalMap<T extends VariableValue = VariableValue>(glob: string): ReadonlySignal<ReadonlyMap<string, T>> {
    return viewsOf(this, this.accessor).signalMap<T>(glob);
  }

  /** How far this copy of the variable lags the server's latest applied write ({0, 0} when current; always, locally). */
  staleness(name: string): Staleness {
    return stalenessOf(this.accessor, name);
  }

  /** Unmaps (local) or leaves the service (remote); later calls throw NOT_CONNECTED. */
  async close(): Promise<void> {
    closeViews(this);
    for (const queue of [...this.queues]) queue.end();
    await this.accessor.close();
  }
}

const ACCESSOR_METHODS = ['handle', 'register', 'variables', 'watch', 'close'] as const;

/** The constructor's check that it was given what the package makes (its type is not public). */
function isFileAccessor(source: object | null): source is FileAccessor {
  if (typeof source !== 'object' || source === null) return false;
  const candidate = source as Record<string, unknown>;
  return ACCESSOR_METHODS.every((m) => typeof candidate[m] === 'function');
}
