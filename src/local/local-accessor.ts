import { CommyError, ErrorCode, isCommyError } from '../core/errors.js';
import { assertValidName } from '../core/names.js';
import { damageCount, native } from '../native/addon.js';
import { pairsFromFlat, variablesTouched } from '../core/byte-diff.js';
import { CHANGE_STAMP_MISSING, type ChangeStamp, type FileAccessor, type VariableHandle } from '../core/file-accessor.js';
import { checkMutateOptions, type MutateOptions } from '../core/mutate-options.js';
import type { FileChangeEvent } from '../core/file-change-event.js';
import type { VariableMetadata } from '../core/variable-metadata.js';
import { layoutHashOf } from '../core/layout-hash.js';
import type { VariableValue } from '../core/variable-type.js';
import { ChangeWatcher } from './change-watcher.js';
import { ENTRY_LIVE } from './file-format.js';
import { orderedLoad } from './memory-order.js';
import { ServiceFile, type DirEntry, type ServiceFileOptions } from './service-file.js';

/** A typed handle over a mapped variable: a seqlock read or a locked write, no lookup, no system call. */
class LocalVariableHandle implements VariableHandle {
  /** native's damage count, as a field: one load cheaper than the module binding on the hot path. */
  private readonly damage: Int32Array = damageCount;
  /** orderedLoad, as a field: reached in one load rather than through the module binding (a read is ~12 ns). */
  private readonly load = orderedLoad;

  constructor(
    private readonly file: ServiceFile,
    private readonly entry: DirEntry,
  ) {}

  get name(): string {
    return this.entry.meta.name;
  }

  get metadata(): VariableMetadata {
    return this.entry.meta;
  }

  get(): VariableValue {
    const file = this.file;
    if (file.closed) file.assertOpen();
    const e = this.entry;
    const i32 = file.i32;
    const seq = this.load(i32, e.seqIdx);
    if ((seq & 1) === 0) {
      const value = e.codec.load(file.view, e.at);
      // The damage count too: a value read from a page repaired after a truncation is zeros, never returned.
      // And the state: a removed variable's space may hold another one's bytes by now.
      if (Atomics.load(i32, e.seqIdx) === seq && this.damage[0] === file.damageMark && this.load(i32, e.stateIdx) === ENTRY_LIVE) return value;
    }
    return file.readValue(this.entry) as VariableValue;
  }

  set(value: VariableValue): void {
    if (this.file.readOnly) this.file.assertWritable(); // PERMISSION_DENIED before the value is even checked
    const checked = this.entry.codec.check(value);
    this.file.write(this.entry, checked);
  }

  update(fn: (current: VariableValue) => VariableValue): VariableValue {
    return this.file.update(this.entry, fn);
  }

  version(): bigint {
    this.file.assertOpen();
    return this.file.entryVersion(this.entry);
  }

  /** False once the variable was removed (by any process): the accessor then makes a new handle for the name. */
  get live(): boolean {
    return Atomics.load(this.file.i32, this.entry.stateIdx) === ENTRY_LIVE;
  }
}

export function fileServiceId(file: ServiceFile): string {
  const { tenant, service, fileId } = file.info;
  return tenant !== '' && service !== '' ? `${tenant}/${service}` : `file:${fileId}`;
}

type Listener = (event: FileChangeEvent) => void;

/**
 * Where a LocalFileAccessor's change events come from. By default its own change watcher
 * (ChangeWatcher); a read-only mapping cannot run one, so a client gives it the server's notices instead.
 */
export interface ChangeSource {
  add(listener: Listener): void;
  remove(listener: Listener): void;
  /** While held, the source keeps the process alive (like fs.watch). */
  hold(): void;
  unhold(): void;
  /** Stops the source; the accessor unmaps the file right after (without waiting for a returned promise). */
  close(): void | Promise<void>;
}

/** A read-only mapping with no server to tell it about changes (an embedded read-only open). */
class NoChangeSource implements ChangeSource {
  constructor(private readonly file: ServiceFile) {}

  add(): void {
    this.file.assertOpen();
    throw new CommyError(
      ErrorCode.PERMISSION_DENIED,
      `${this.file.label} is mapped read-only: it has no change watcher (that would store into the file); a Client with a read-only key gets change events from the server`,
    );
  }

  remove(): void {}
  hold(): void {}
  unhold(): void {}
  close(): void {}
}

/** Local mode: the service file mapped into this process. */
export class LocalFileAccessor implements FileAccessor {
  readonly mode = 'local' as const;
  readonly serviceId: string;
  private readonly watcher: ChangeSource;
  private readonly handles = new Map<string, LocalVariableHandle>();
  private shadow: Uint8Array | undefined;
  /**
   * The service version when the shadow was taken. Entry versions come from the service's one counter, so an
   * entry above it was versioned after the shadow: one number stands for every variable's version.
   */
  private shadowVersion = 0n;
  /** Versions the last flush() gave raw writes, by entry index: a later raw write there is not behind an API write. */
  private published = new Map<number, bigint>();
  /** Read-only: the last copy bytes() handed out, and that copy as handed out (how flush() finds raw writes). */
  private lent: { copy: Uint8Array; pristine: Uint8Array } | undefined;

  /**
   * `changes` replaces the file's own change watcher as the source of change events (a read-only mapping
   * needs one: it cannot run a watcher). Without it, a writable file gets a ChangeWatcher, and a read-only
   * one no change events at all (watch() throws PERMISSION_DENIED).
   */
  constructor(
    readonly file: ServiceFile,
    changes?: ChangeSource,
  ) {
    this.serviceId = fileServiceId(file);
    this.watcher = changes ?? (file.readOnly ? new NoChangeSource(file) : new ChangeWatcher(file, this.serviceId));
  }

  static open(path: string, options?: ServiceFileOptions): LocalFileAccessor {
    return new LocalFileAccessor(ServiceFile.open(path, options));
  }

  get filePath(): string {
    return this.file.path;
  }

  get closed(): boolean {
    return this.file.closed;
  }

  version(): bigint {
    return this.file.version;
  }

  async register(meta: VariableMetadata): Promise<VariableMetadata> {
    return this.file.register(meta).meta;
  }

  /** Local: removed from the file's directory at once (every process that maps it sees it gone). */
  async removeVariable(name: string): Promise<bigint> {
    assertValidName(name, 'variable name');
    return this.file.removeVariable(name);
  }

  layoutHash(): string {
    return layoutHashOf(this.variables());
  }

  variables(): VariableMetadata[] {
    return this.file.list().map((e) => e.meta);
  }

  handle(name: string): VariableHandle {
    this.file.assertOpen();
    let h = this.handles.get(name);
    if (h === undefined || !h.live) {
      assertValidName(name, 'variable name');
      h = new LocalVariableHandle(this.file, this.file.entry(name));
      this.handles.set(name, h);
    }
    return h;
  }

  async writeBytes(name: string, bytes: Uint8Array): Promise<void> {
    if (!(bytes instanceof Uint8Array)) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'writeVariable takes a Uint8Array');
    this.file.writeBytes(this.lookup(name), bytes);
  }

  /** Local: written at once; with an expected version, compare-and-set under the variable's writer lock. */
  async mutate(name: string, value: VariableValue, options: MutateOptions): Promise<bigint> {
    const { expected } = checkMutateOptions(options); // an opId needs no memory here: nothing is ever resent
    const entry = this.lookup(name);
    const checked = entry.codec.check(value);
    return expected === undefined ? this.file.write(entry, checked) : this.file.writeIfAt(entry, checked, expected);
  }

  async readBytes(name: string): Promise<Uint8Array> {
    return this.file.readBytes(this.lookup(name));
  }

  isTorn(name: string): boolean {
    return this.file.isTorn(this.lookup(name));
  }

  private lookup(name: string): DirEntry {
    this.file.assertOpen();
    assertValidName(name, 'variable name');
    return this.file.entry(name);
  }

  /** The data region: a view of the mapping, or on a read-only mapping a copy (writes into it change nothing). */
  bytes(): Uint8Array {
    // Raw writes start from here, so the shadow they are diffed against must exist before them.
    if (this.shadow === undefined) this.shadowBytes();
    const bytes = this.file.dataBytes();
    if (this.file.readOnly) this.lent = { copy: bytes, pristine: bytes.slice() };
    return bytes;
  }

  /** A private copy of the data region as of the last flush() or syncShadow(); raw writes into bytes() show up against it. */
  shadowBytes(): Uint8Array {
    this.file.assertOpen();
    const capacity = this.file.checkedDataCapacity();
    if (this.shadow === undefined) {
      const version = this.file.version; // read before the copy: a write the copy may miss is above it
      this.shadow = this.file.dataBytes().slice();
      this.shadowVersion = version;
    } else if (this.shadow.length > capacity) {
      throw new CommyError(ErrorCode.INVALID_FILE, `${this.file.label}: data capacity ${capacity} shrank below ${this.shadow.length}`);
    } else if (this.shadow.length < capacity) {
      // The file grew: the new part of the shadow starts as the file's bytes (new variables start at zero).
      const grown = this.file.dataBytes().slice();
      grown.set(this.shadow);
      this.shadow = grown;
    }
    this.file.assertIntact(); // the copies above read the mapping
    return this.shadow;
  }

  syncShadow(): void {
    const shadow = this.shadowBytes();
    const version = this.file.version;
    shadow.set(this.file.dataBytes().subarray(0, shadow.length));
    this.file.assertIntact();
    this.shadowVersion = version;
    this.published.clear(); // at or below the new shadow version
  }

  /**
   * Local: publishes the raw writes into bytes() that nothing has versioned. A version names one write, so a
   * range that differs from the shadow is published only if its variable's version has not moved since the
   * shadow was taken (unversioned): a change versioned meanwhile (a set() here or in another process, a remote
   * write the server applied, another process's flush of the same raw write) is not versioned again. A variable
   * changed both ways keeps the API write's version (docs/client.md): that write's value is what it names.
   */
  async flush(): Promise<void> {
    if (this.file.readOnly) return this.flushReadOnly();
    const shadow = this.shadowBytes();
    const since = this.shadowVersion;
    // Read before the diff: every write at or below it has its bytes in what the diff compares.
    const version = this.file.version;
    const current = this.file.dataBytes().subarray(0, shadow.length);
    const ranges = pairsFromFlat(native.diff(current, shadow));
    this.file.assertIntact(); // the diff read the mapping
    const published = new Map<number, bigint>();
    const names = ranges.length > 0 ? variablesTouched(this.variables(), ranges) : [];
    for (const name of names) {
      const entry = this.file.entry(name);
      const version = this.file.touch(entry, () => this.unversioned(entry, since));
      if (version !== undefined) published.set(entry.index, version);
    }
    // Only what differed: the rest equals the shadow already, and a raw write that lands there after the diff
    // stays pending for the next flush instead of being taken into the shadow unpublished.
    for (const [start, end] of ranges) shadow.set(current.subarray(start, end), start);
    this.file.assertIntact();
    this.shadowVersion = version;
    this.published = published;
  }

  /**
   * Is the entry's change since the shadow a raw one that no write has versioned? Yes if its version is not
   * above the shadow's, or is the one the last flush() gave it; or if it was never written (seq 0: registered
   * since the shadow, and registration versions the variable without writing a value). A write under way (odd
   * seq) versions the change itself. Asked by touch() under the entry's writer lock, so no API write lands
   * between the answer and the publication.
   */
  private unversioned(entry: DirEntry, since: bigint): boolean {
    const seq = Atomics.load(this.file.i32, entry.seqIdx); // before the version: a write finishing in between has moved it
    if (seq === 0) return true;
    if ((seq & 1) !== 0) return false;
    const version = this.file.entryVersion(entry);
    return version <= since || version === this.published.get(entry.index);
  }

  /**
   * Read-only: nothing can be published. Raw writes into the last copy bytes() returned are refused with
   * PERMISSION_DENIED (once: the copy is forgotten); with none, flush() only takes the file as the new shadow.
   */
  private flushReadOnly(): void {
    this.file.assertOpen();
    const lent = this.lent;
    this.lent = undefined;
    if (lent !== undefined && native.diff(lent.copy, lent.pristine).length > 0) {
      throw new CommyError(ErrorCode.PERMISSION_DENIED, `${this.file.label} is mapped read-only: raw writes into bytes() (a copy) cannot be published`);
    }
    this.syncShadow();
  }

  /**
   * Versions: every write takes one from the service's counter before anyone can read it, in this process or
   * another, and registrations and removals bump it too; so a variable's version, and the service's, are stamps.
   */
  changeStamp(name?: string): ChangeStamp {
    if (name === undefined) return this.file.version;
    try {
      return this.handle(name).version();
    } catch (err) {
      if (isCommyError(err, ErrorCode.VARIABLE_NOT_FOUND)) return CHANGE_STAMP_MISSING;
      throw err;
    }
  }

  watch(listener: (event: FileChangeEvent) => void): () => void {
    this.watcher.add(listener);
    return () => this.watcher.remove(listener);
  }

  hold(): void {
    this.watcher.hold();
  }

  unhold(): void {
    this.watcher.unhold();
  }

  async close(): Promise<void> {
    if (this.file.closed) return;
    const stopped = this.watcher.close();
    this.file.close();
    this.lent = undefined;
    await stopped;
  }
}
