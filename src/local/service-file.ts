import type { VariableMetadata } from '../core/variable-metadata.js';
import type { BUSY } from './busy.js';
import { Directory, type DirEntry } from './directory.js';
import { ENTRY_LIVE, type HeaderInfo } from './file-format.js';
import { FileMapping } from './file-mapping.js';
import { LayoutRecords } from './layout-records.js';
import { closeQuietly, openFailure, openServiceFile, readCheckedHeader, type OpenedFile, type ServiceFileOptions } from './file-open.js';
import { DEFAULT_LOCK_POLICY } from './process-lock.js';
import { Registrar } from './registration.js';
import { ValueReader, type ValueCopy } from './value-read.js';
import { ValueWriter } from './value-write.js';
import { WakeUps, type WatcherHooks } from './wake-up.js';
import { WriterLocks } from './writer-lock.js';

export { BUSY } from './busy.js';
export type { DirEntry } from './directory.js';
export type { ServiceFileOptions } from './file-open.js';
export type { ValueCopy } from './value-read.js';
export type { WatcherHooks } from './wake-up.js';

export const DEFAULT_MAX_VARIABLE_SIZE = 64 * 1024;

/**
 * A service file mapped into this process, and the format's rules (docs/file-format.md) as one object. Every
 * other process that maps the same file follows the same rules, so they never need to talk. The rules live in
 * the modules this facade composes:
 *
 * | file-open.ts    | opening, creating (temp file + link), header checks, growing the file |
 * | file-mapping.ts | the mapping, its views, closed/damaged/read-only guards, checked data capacity and end |
 * | directory.ts    | the cached directory: refresh, lookup, each entry checked |
 * | layout-records.ts | struct layouts: records at the top of the directory, read checked, placed once and shared |
 * | registration.ts | adding and removing a variable: registration lock, placement (free-space.ts), growth, publication |
 * | value-write.ts  | where a local write goes: beginWrite/finishWrite around every write |
 * | value-read.ts   | seqlock reads, waiting or not (tryRead, tryReadCopy) |
 * | writer-lock.ts  | writer locks: waiting, taking without waiting, recovering a gone holder's |
 * | wake-up.ts      | the microtask-batched wake of watchers (parked bits taken, a byte each), and this process's watcher hook |
 */
export class ServiceFile extends FileMapping {
  readonly maxVariableSize: number;
  private readonly directory: Directory;
  private readonly locks: WriterLocks;
  private readonly wakeUps: WakeUps;
  private readonly registrar: Registrar;
  private readonly reader: ValueReader;
  private readonly writer: ValueWriter;

  private constructor(opened: OpenedFile, info: HeaderInfo, options: ServiceFileOptions) {
    super(opened, info, options.readOnly === true);
    this.maxVariableSize = options.maxVariableSize ?? DEFAULT_MAX_VARIABLE_SIZE;
    const layouts = new LayoutRecords(this);
    this.directory = new Directory(this, layouts);
    this.locks = new WriterLocks(this, { ...DEFAULT_LOCK_POLICY, ...options.lock });
    this.wakeUps = new WakeUps(this);
    this.registrar = new Registrar(this, this.directory, layouts, this.locks, this.wakeUps, this.maxVariableSize);
    this.reader = new ValueReader(this, this.locks);
    this.writer = new ValueWriter(this, this.locks, this.wakeUps);
  }

  /**
   * Opens (and with `create`, creates) a service file. Throws FILE_NOT_FOUND, INVALID_FILE (a symlink, not a
   * regular file, a bad header, `expect` or `requireOwner` not met), INVALID_NAME.
   */
  static open(path: string, options: ServiceFileOptions = {}): ServiceFile {
    const opened = openServiceFile(path, options);
    let file: ServiceFile | undefined;
    try {
      file = new ServiceFile(opened, readCheckedHeader(opened, options), options);
      file.refresh();
      return file;
    } catch (err) {
      if (file !== undefined) file.close();
      else closeQuietly(opened.fd);
      throw openFailure(err, opened.label);
    }
  }

  /** Unmaps: every view over the mapping becomes empty, and every later call throws NOT_CONNECTED. */
  override close(): void {
    if (this.closed) return;
    super.close();
    this.locks.dispose();
  }

  // ---- watchers (change-watcher.ts) ---------------------------------------------------------------------

  /**
   * Hooks this process's ChangeWatcher in: its listeners hear this process's own writes directly (in the wake's
   * microtask), and its bit is left out of the wake (no self wake-up). Returns the unhook.
   */
  attachWatcher(hooks: WatcherHooks): () => void {
    return this.wakeUps.attach(hooks);
  }

  /** This process's watcher bit (0 without one): its own writes never take it, nor send it a byte. */
  get ownWatchBit(): number {
    return this.wakeUps.ownWatchBit;
  }

  // ---- directory ----------------------------------------------------------------------------------------

  /** Picks up entries other processes have published since the last look. */
  refresh(): void {
    this.directory.refresh();
  }

  /** The entry for `name`, or VARIABLE_NOT_FOUND (after checking for entries other processes added). */
  entry(name: string): DirEntry {
    return this.directory.entry(name);
  }

  /** The live entry for `name`, or undefined (after checking for entries other processes added). */
  find(name: string): DirEntry | undefined {
    const found = this.directory.cached(name);
    if (found !== undefined && !found.removed) return found;
    this.directory.refresh();
    return this.directory.cached(name);
  }

  /** Live entries in directory order (refreshed). */
  list(): readonly DirEntry[] {
    return this.directory.list();
  }

  /** Every slot in directory order, removed variables' included (`slots()[i].index === i`; see DirEntry.removed). */
  slots(): readonly DirEntry[] {
    return this.directory.slots();
  }

  /** Whether the entry's variable still exists, from the file itself (a removal by any process shows at once). */
  isLive(entry: DirEntry): boolean {
    return Atomics.load(this.i32, entry.stateIdx) === ENTRY_LIVE;
  }

  /** The live entry at directory `index` (no refresh). */
  entryAt(index: number): DirEntry | undefined {
    return this.directory.entryAt(index);
  }

  /** Removes a variable (VARIABLE_NOT_FOUND if none); returns the removal's version. Waits for its locks. */
  removeVariable(name: string): bigint {
    return this.registrar.remove(name);
  }

  /** removeVariable() without waiting: BUSY while a live process holds the registration lock or the variable's lock. */
  tryRemoveVariable(name: string): bigint | typeof BUSY {
    return this.registrar.tryRemove(name);
  }

  /** Registers a variable (idempotent for the same layout); returns its entry. Waits for the registration lock. */
  register(meta: VariableMetadata): DirEntry {
    return this.registrar.register(meta);
  }

  /** register() without waiting: BUSY while a live process holds the registration lock. For the server's event loop. */
  tryRegister(meta: VariableMetadata): DirEntry | typeof BUSY {
    return this.registrar.tryRegister(meta);
  }

  // ---- locks --------------------------------------------------------------------------------------------

  /** Takes the entry's writer lock until unlock() (marking a half-done write of a gone holder TORN). */
  lock(entry: DirEntry): void {
    this.locks.lock(entry);
  }

  unlock(entry: DirEntry): void {
    this.locks.unlock(entry);
  }

  /** lock() without waiting: true holding the lock, false at once. Release it with writeLocked() or unlock(). */
  tryLock(entry: DirEntry): boolean {
    return this.locks.tryLock(entry);
  }

  // ---- writes (value-write.ts) --------------------------------------------------------------------------

  /** Writes a checked value (entry.codec.check) under the entry's seqlock and publishes a new version. */
  write(entry: DirEntry, checked: unknown): bigint {
    return this.writer.write(entry, checked);
  }

  /** Read-modify-write under the writer lock; `fn` throwing (or returning a bad value) changes nothing. */
  update<T>(entry: DirEntry, fn: (current: T) => T): T {
    return this.writer.update(entry, fn);
  }

  /** Writes raw bytes (≤ size, zero-padded) under the seqlock. */
  writeBytes(entry: DirEntry, bytes: Uint8Array): bigint {
    return this.writer.writeBytes(entry, bytes);
  }

  /** Compare-and-set (see ValueWriter.writeIfAt): CONFLICT unless the entry is still at `expected`. */
  writeIfAt(entry: DirEntry, checked: unknown, expected: bigint): bigint {
    return this.writer.writeIfAt(entry, checked, expected);
  }

  /** Holding the lock (tryLock or lock): writes raw bytes, publishes a new version, releases the lock (also on VALUE_TOO_LARGE). */
  writeLocked(entry: DirEntry, bytes: Uint8Array): bigint {
    return this.writer.writeLocked(entry, bytes);
  }

  /** Publishes a raw change to the entry's bytes (a write into bytes()); `stillRaw` is asked under the lock (see ValueWriter.touch). */
  touch(entry: DirEntry, stillRaw?: () => boolean): bigint | undefined {
    return this.writer.touch(entry, stillRaw);
  }

  // ---- reads (value-read.ts) ----------------------------------------------------------------------------

  /** A consistent value: waits for a writer, and after many attempts reads under the lock (read-only: TIMEOUT). */
  read<T>(entry: DirEntry, readValue: () => T): T {
    return this.reader.read(entry, readValue);
  }

  /** read() without waiting: the value, or BUSY (a gone writer's lock recovered after staleMs, the value TORN). */
  tryRead<T>(entry: DirEntry, readValue: () => T): T | typeof BUSY {
    return this.reader.tryRead(entry, readValue);
  }

  /**
   * tryRead() of the variable's bytes together with their version: a new copy, or with `into` a view of `into`
   * at `at` where the value was copied. BUSY as tryRead (then `into`'s range is zeroed).
   */
  tryReadCopy(entry: DirEntry, into?: Uint8Array, at?: number): ValueCopy | typeof BUSY {
    return this.reader.tryReadCopy(entry, into, at);
  }

  readValue(entry: DirEntry): unknown {
    return this.reader.readValue(entry);
  }

  readBytes(entry: DirEntry): Uint8Array {
    return this.reader.readBytes(entry);
  }

  entryVersion(entry: DirEntry): bigint {
    return this.reader.entryVersion(entry);
  }

  isTorn(entry: DirEntry): boolean {
    return this.reader.isTorn(entry);
  }

  /** Pid of the process that completed the variable's last write (or registered it); 0 if unknown (older files). */
  lastWriter(entry: DirEntry): number {
    return this.reader.lastWriter(entry);
  }
}
