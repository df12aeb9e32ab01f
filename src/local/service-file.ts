import { closeSync, fstatSync, ftruncateSync, linkSync, openSync, readSync, unlinkSync, writeSync, constants as fsc } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { CommyError, ErrorCode } from '../core/errors.js';
import { assertValidName, isValidName } from '../core/names.js';
import { codecFor, type ValueCodec } from '../core/value-codec.js';
import { fixedSizeOf, isVariableTypeId, typeName, type VariableTypeId } from '../core/variable-type.js';
import { VariableMetadata } from '../core/variable-metadata.js';
import { native } from '../native/addon.js';
import {
  DATA_ALIGN,
  DEFAULT_MAX_FILE_SIZE,
  DEFAULT_MAX_VARIABLES,
  E,
  ENTRY_LIVE,
  FLAG_TORN,
  H,
  HEADER_SIZE,
  INITIAL_DATA_CAPACITY,
  MAX_MAX_FILE_SIZE,
  MAX_MAX_VARIABLES,
  PAGE_SIZE,
  alignUp,
  dataStartFor,
  entryOffset,
  readHeader,
  writeHeader,
  type HeaderInfo,
} from './file-format.js';
import { DEFAULT_LOCK_POLICY, acquire, release, waitOut, OWN_PID, type LockPolicy } from './process-lock.js';

export const DEFAULT_MAX_VARIABLE_SIZE = 64 * 1024;

export interface ServiceFileOptions {
  /** Create the file if it does not exist (mode 0600). */
  create?: boolean;
  /** Directory capacity, fixed at creation. */
  maxVariables?: number;
  /** Maximum file size, fixed at creation: the size of the one mapping every process makes. */
  maxFileSize?: number;
  /** Largest variable this process may register. */
  maxVariableSize?: number;
  /** Recorded in the header at creation; the server names its files' tenant and service. */
  tenant?: string;
  service?: string;
  lock?: Partial<LockPolicy>;
  /**
   * Open O_RDONLY and map PROT_READ: values and the directory can be read, nothing can be changed. Every
   * mutator throws PERMISSION_DENIED before touching memory; reads never take a writer lock nor break a dead
   * writer's; `dataBytes()` returns a copy. Never creates the file (a missing one is FILE_NOT_FOUND).
   */
  readOnly?: boolean;
}

/** One directory entry as this process has cached it, with the indexes its hot paths need. */
export interface DirEntry {
  readonly index: number;
  readonly meta: VariableMetadata;
  readonly codec: ValueCodec;
  /** Absolute byte offset of the value in the mapping. */
  readonly at: number;
  readonly lockIdx: number; // Int32Array index
  readonly seqIdx: number; // Int32Array index
  readonly flagsIdx: number; // Int32Array index
  readonly versionIdx: number; // BigUint64Array index
}

const I32 = (byteOffset: number): number => byteOffset >> 2;
const I64 = (byteOffset: number): number => byteOffset >> 3;
const READ_RETRIES_BEFORE_LOCK = 64;
const RETRY: unique symbol = Symbol('retry');

/**
 * A service file mapped into this process: the format's rules (directory, growth, seqlocks, versions)
 * live here. Every other process that maps the same file follows the same rules, so they never need to talk.
 */
export class ServiceFile {
  readonly path: string;
  readonly info: HeaderInfo;
  readonly dataStart: number;
  /** The whole mapping: maxFileSize bytes, of which only the file's current size may be touched. */
  readonly buffer: ArrayBuffer;
  readonly i32: Int32Array;
  readonly b64: BigUint64Array;
  readonly u8: Uint8Array;
  readonly view: DataView;
  readonly maxVariableSize: number;
  private readonly policy: LockPolicy;
  private readonly readOnlyFlag: boolean;
  private fd: number;
  private closedFlag = false;
  private readonly entries: DirEntry[] = [];
  private readonly byName = new Map<string, DirEntry>();
  private wakePending = false;
  /**
   * Set by this process's ChangeWatcher: its listeners hear about this process's own writes directly at the
   * end of the turn, and `ownWatchBit` leaves its thread out of the futex wake (no self wake-up).
   */
  localChange: (() => void) | undefined;
  /** This process's watcher bit (0 without one): its own thread never needs waking by its own writes. */
  ownWatchBit = 0;
  private readonly wake = (): void => {
    this.wakePending = false;
    if (this.closedFlag) return;
    if (this.othersWaiting()) native.futexWake(this.buffer, H.VERSION, 0x7fffffff, ~this.ownWatchBit >>> 0);
    this.localChange?.();
  };

  private constructor(path: string, fd: number, info: HeaderInfo, options: ServiceFileOptions) {
    this.path = path;
    this.fd = fd;
    this.info = info;
    this.dataStart = info.dataStart;
    this.maxVariableSize = options.maxVariableSize ?? DEFAULT_MAX_VARIABLE_SIZE;
    this.policy = { ...DEFAULT_LOCK_POLICY, ...options.lock };
    this.readOnlyFlag = options.readOnly === true;
    // PROT_READ for a read-only file: a stray write would be SIGSEGV, so no method below ever makes one.
    this.buffer = native.map(fd, info.maxFileSize, !this.readOnlyFlag);
    this.i32 = new Int32Array(this.buffer);
    this.b64 = new BigUint64Array(this.buffer);
    this.u8 = new Uint8Array(this.buffer);
    this.view = new DataView(this.buffer);
  }

  /** Opens (and with `create`, creates) a service file. Throws FILE_NOT_FOUND, INVALID_FILE, INVALID_NAME. */
  static open(path: string, options: ServiceFileOptions = {}): ServiceFile {
    if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) {
      throw new CommyError(ErrorCode.INVALID_NAME, 'a service file path must be a non-empty string without NUL');
    }
    const abs = resolve(path);
    const fd = openOrCreate(abs, options);
    let file: ServiceFile | undefined;
    try {
      const page = Buffer.alloc(HEADER_SIZE);
      const got = readSync(fd, page, 0, HEADER_SIZE, 0);
      const info = readHeader(abs, page.subarray(0, got), fstatSync(fd).size);
      file = new ServiceFile(abs, fd, info, options);
      file.refresh();
      return file;
    } catch (err) {
      if (file !== undefined) file.close();
      else closeQuietly(fd);
      if (err instanceof CommyError) throw err;
      throw new CommyError(ErrorCode.INTERNAL_ERROR, `cannot map ${abs}: ${(err as Error).message}`, { cause: err });
    }
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Mapped PROT_READ (see ServiceFileOptions.readOnly): every mutator throws PERMISSION_DENIED. */
  get readOnly(): boolean {
    return this.readOnlyFlag;
  }

  /**
   * PERMISSION_DENIED on a read-only mapping. Every method that stores into the mapping calls this first:
   * a store into PROT_READ memory is SIGSEGV, a crash of the whole process, never an error we could catch.
   */
  assertWritable(): void {
    if (this.readOnlyFlag) throw new CommyError(ErrorCode.PERMISSION_DENIED, `${this.path} is a read-only mapping: it cannot be changed from here`);
  }

  /** Throws NOT_CONNECTED once the file is closed: use after close must never touch unmapped memory. */
  assertOpen(): void {
    if (this.closedFlag) throw new CommyError(ErrorCode.NOT_CONNECTED, `service file ${this.path} is closed`);
  }

  get version(): bigint {
    this.assertOpen();
    return Atomics.load(this.b64, I64(H.VERSION));
  }

  /** Bytes of data region the file holds now. */
  get dataCapacity(): number {
    return Number(Atomics.load(this.b64, I64(H.DATA_CAPACITY)));
  }

  /** End of the highest variable: the part of the data region worth diffing or sending. */
  get dataEnd(): number {
    return Number(Atomics.load(this.b64, I64(H.DATA_END)));
  }

  /** Is a watcher of another process (or another mapping in this one) asleep on the version word? */
  othersWaiting(): boolean {
    return Atomics.load(this.i32, I32(H.WAITERS)) !== 0 || (Atomics.load(this.i32, I32(H.PARKED)) & ~this.ownWatchBit) !== 0;
  }

  /** Picks up entries other processes have published since the last look. */
  refresh(): void {
    this.assertOpen();
    const count = Atomics.load(this.i32, I32(H.VAR_COUNT));
    if (count === this.entries.length) return;
    if (count < this.entries.length || count > this.info.maxVariables) {
      throw new CommyError(ErrorCode.INVALID_FILE, `${this.path}: directory count ${count} is corrupt`);
    }
    const capacity = this.dataCapacity;
    for (let i = this.entries.length; i < count; i++) {
      const entry = this.readEntry(i, capacity);
      this.entries.push(entry);
      this.byName.set(entry.meta.name, entry);
    }
  }

  private readEntry(index: number, capacity: number): DirEntry {
    const base = entryOffset(index);
    const v = this.view;
    const nameLen = v.getUint8(base + E.NAME_LEN);
    const name = Buffer.from(this.buffer, base + E.NAME, Math.min(nameLen, 64)).toString('latin1');
    const typeId = v.getUint8(base + E.TYPE_ID);
    const offset = v.getUint32(base + E.OFFSET, true);
    const size = v.getUint32(base + E.SIZE, true);
    const fixed = isVariableTypeId(typeId) ? fixedSizeOf(typeId) : undefined;
    const ok =
      Atomics.load(this.i32, I32(base + E.STATE)) === ENTRY_LIVE &&
      isValidName(name) &&
      isVariableTypeId(typeId) &&
      size >= 1 &&
      (fixed === undefined || fixed === size) &&
      offset + size <= capacity &&
      !this.byName.has(name);
    if (!ok) throw new CommyError(ErrorCode.INVALID_FILE, `${this.path}: directory entry ${index} is corrupt`);
    const meta = new VariableMetadata(name, offset, size, typeId as VariableTypeId);
    return {
      index,
      meta,
      codec: codecFor(meta.typeId, size),
      at: this.dataStart + offset,
      lockIdx: I32(base + E.LOCK),
      seqIdx: I32(base + E.SEQ),
      flagsIdx: I32(base + E.FLAGS),
      versionIdx: I64(base + E.VERSION),
    };
  }

  /** The entry for `name`, or VARIABLE_NOT_FOUND (after checking for entries other processes added). */
  entry(name: string): DirEntry {
    const found = this.byName.get(name);
    if (found !== undefined) return found;
    this.refresh();
    const again = this.byName.get(name);
    if (again !== undefined) return again;
    throw new CommyError(ErrorCode.VARIABLE_NOT_FOUND, `no variable ${JSON.stringify(name)} in ${this.path}`);
  }

  /** Entries in directory order (refreshed). */
  list(): readonly DirEntry[] {
    this.refresh();
    return this.entries;
  }

  entryAt(index: number): DirEntry | undefined {
    return this.entries[index];
  }

  entryVersion(entry: DirEntry): bigint {
    return Atomics.load(this.b64, entry.versionIdx);
  }

  isTorn(entry: DirEntry): boolean {
    return (Atomics.load(this.i32, entry.flagsIdx) & FLAG_TORN) !== 0;
  }

  // ---- registration -------------------------------------------------------------------------------

  /** Registers a variable (idempotent for the same layout); returns its entry. */
  register(meta: VariableMetadata): DirEntry {
    this.assertOpen();
    const want = this.validateLayout(meta);
    this.refresh();
    const known = this.byName.get(want.name);
    if (known !== undefined) return this.sameLayout(known, want);
    this.assertWritable(); // a known variable with the same layout is a no-op even read-only; a new one is not
    this.withRegistrationLock(() => {
      this.refresh();
      if (!this.byName.has(want.name)) this.publish(want);
    });
    return this.sameLayout(this.entry(want.name), want);
  }

  private validateLayout(meta: VariableMetadata): VariableMetadata {
    if (!(meta instanceof VariableMetadata)) {
      throw new CommyError(ErrorCode.TYPE_MISMATCH, 'registerVariable takes a VariableMetadata');
    }
    assertValidName(meta.name, 'variable name');
    if (!isVariableTypeId(meta.typeId)) {
      throw new CommyError(ErrorCode.TYPE_MISMATCH, `unknown type id ${String(meta.typeId)}`);
    }
    const fixed = fixedSizeOf(meta.typeId);
    if (!Number.isInteger(meta.size) || meta.size < 1) {
      throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `variable size must be a positive integer, got ${String(meta.size)}`);
    }
    if (fixed !== undefined && meta.size !== fixed) {
      throw new CommyError(ErrorCode.TYPE_MISMATCH, `a ${typeName(meta.typeId)} variable is ${fixed} bytes, not ${meta.size}`);
    }
    if (meta.size > this.maxVariableSize) {
      throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `variable size ${meta.size} exceeds the limit of ${this.maxVariableSize} bytes`);
    }
    if (meta.offset !== -1 && (!Number.isInteger(meta.offset) || meta.offset < 0)) {
      throw new CommyError(ErrorCode.INVALID_OFFSET, `offset must be -1 (allocate) or a non-negative integer, got ${String(meta.offset)}`);
    }
    if (meta.offset !== -1 && this.dataStart + meta.offset + meta.size > this.info.maxFileSize) {
      throw new CommyError(ErrorCode.INVALID_OFFSET, `[${meta.offset}, ${meta.offset + meta.size}) lies past the service file size limit`);
    }
    return meta;
  }

  private sameLayout(entry: DirEntry, want: VariableMetadata): DirEntry {
    const have = entry.meta;
    if (have.typeId !== want.typeId) {
      throw new CommyError(ErrorCode.TYPE_MISMATCH, `${have.name} is registered as ${typeName(have.typeId)}, not ${typeName(want.typeId)}`);
    }
    if (have.size !== want.size || (want.offset !== -1 && want.offset !== have.offset)) {
      throw new CommyError(ErrorCode.INVALID_OFFSET, `${have.name} is registered at [${have.offset}, ${have.end}), not with offset ${want.offset} size ${want.size}`);
    }
    return entry;
  }

  private withRegistrationLock(fn: () => void): void {
    const idx = I32(H.REG_LOCK);
    acquire(this.i32, idx, this.policy, `the directory of ${this.path}`);
    try {
      fn();
    } finally {
      release(this.i32, idx);
    }
  }

  /** Under the registration lock: place, grow, write the entry, then publish it with one atomic store. */
  private publish(want: VariableMetadata): void {
    const index = this.entries.length;
    if (index >= this.info.maxVariables) {
      throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `${this.path} already holds its maximum of ${this.info.maxVariables} variables`);
    }
    const offset = want.offset === -1 ? alignUp(this.dataEnd, DATA_ALIGN) : want.offset;
    const end = offset + want.size;
    if (want.offset !== -1) this.assertNoOverlap(offset, end);
    else if (this.dataStart + end > this.info.maxFileSize) {
      throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `${this.path} is full: ${want.size} more bytes exceed its ${this.info.maxFileSize}-byte limit`);
    }
    this.ensureCapacity(end);
    const base = entryOffset(index);
    this.u8.fill(0, base, base + 128);
    const v = this.view;
    v.setUint32(base + E.OFFSET, offset, true);
    v.setUint32(base + E.SIZE, want.size, true);
    v.setUint8(base + E.TYPE_ID, want.typeId);
    v.setUint8(base + E.NAME_LEN, want.name.length);
    this.u8.set(Buffer.from(want.name, 'latin1'), base + E.NAME);
    // The new variable's region may hold bytes a crashed registration left: start it at zero.
    this.u8.fill(0, this.dataStart + offset, this.dataStart + end);
    const version = Atomics.add(this.b64, I64(H.VERSION), 1n) + 1n;
    Atomics.store(this.b64, I64(base + E.VERSION), version);
    Atomics.store(this.i32, I32(base + E.STATE), ENTRY_LIVE);
    if (end > this.dataEnd) Atomics.store(this.b64, I64(H.DATA_END), BigInt(end));
    Atomics.store(this.i32, I32(H.VAR_COUNT), index + 1);
    Atomics.add(this.i32, I32(H.LAYOUT_GEN), 1);
    this.refresh();
    this.notifyWatchers();
  }

  private assertNoOverlap(start: number, end: number): void {
    for (const e of this.entries) {
      if (start < e.meta.end && e.meta.offset < end) {
        throw new CommyError(ErrorCode.INVALID_OFFSET, `[${start}, ${end}) overlaps ${e.meta.name} at [${e.meta.offset}, ${e.meta.end})`);
      }
    }
  }

  /** Grows the file (never shrinks it) so the data region holds `end` bytes; other processes need no remap. */
  private ensureCapacity(end: number): void {
    const capacity = this.dataCapacity;
    if (end <= capacity) return;
    const maxData = this.info.maxFileSize - this.dataStart;
    const next = Math.min(maxData, Math.max(alignUp(end, PAGE_SIZE), capacity * 2));
    const fileSize = this.dataStart + next;
    if (fstatSync(this.fd).size < fileSize) ftruncateSync(this.fd, fileSize);
    Atomics.store(this.b64, I64(H.DATA_CAPACITY), BigInt(next));
    Atomics.add(this.i32, I32(H.LAYOUT_GEN), 1);
  }

  // ---- values -------------------------------------------------------------------------------------

  /**
   * Takes the entry's writer lock; a write that a dead process left half done marks the value TORN. Every
   * writer comes through here first, so this is where a read-only mapping is refused.
   */
  lock(entry: DirEntry): void {
    this.assertWritable();
    const i32 = this.i32;
    if (Atomics.compareExchange(i32, entry.lockIdx, 0, OWN_PID) === 0) return;
    acquire(i32, entry.lockIdx, this.policy, `variable ${entry.meta.name}`, () => this.markTornIfMidWrite(entry));
  }

  unlock(entry: DirEntry): void {
    this.assertWritable();
    release(this.i32, entry.lockIdx);
  }

  private markTornIfMidWrite(entry: DirEntry): void {
    const seq = Atomics.load(this.i32, entry.seqIdx);
    if ((seq & 1) === 0) return;
    Atomics.or(this.i32, entry.flagsIdx, FLAG_TORN);
    Atomics.store(this.i32, entry.seqIdx, seq + 1);
  }

  /** Writes a checked value under the entry's seqlock and publishes a new version. */
  write(entry: DirEntry, checked: unknown): bigint {
    this.assertOpen();
    this.lock(entry);
    const i32 = this.i32;
    const seq = Atomics.load(i32, entry.seqIdx) + 1;
    Atomics.store(i32, entry.seqIdx, seq);
    entry.codec.store(this.view, entry.at, checked);
    return this.finishWrite(entry, seq);
  }

  /** Read-modify-write under the writer lock; `fn` throwing (or returning a bad value) changes nothing. */
  update<T>(entry: DirEntry, fn: (current: T) => T): T {
    this.assertOpen();
    this.lock(entry);
    let next: T;
    let checked: unknown;
    try {
      next = fn(entry.codec.load(this.view, entry.at) as T);
      checked = entry.codec.check(next);
    } catch (err) {
      this.unlock(entry);
      throw err;
    }
    const seq = Atomics.load(this.i32, entry.seqIdx) + 1;
    Atomics.store(this.i32, entry.seqIdx, seq);
    entry.codec.store(this.view, entry.at, checked);
    this.finishWrite(entry, seq);
    return next;
  }

  /** Writes raw bytes (≤ size, zero-padded) under the seqlock. */
  writeBytes(entry: DirEntry, bytes: Uint8Array): bigint {
    this.assertOpen();
    this.assertWritable();
    if (bytes.length > entry.meta.size) {
      throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `${bytes.length} bytes do not fit ${entry.meta.name} (${entry.meta.size} bytes)`);
    }
    this.lock(entry);
    const seq = Atomics.load(this.i32, entry.seqIdx) + 1;
    Atomics.store(this.i32, entry.seqIdx, seq);
    this.u8.set(bytes, entry.at);
    if (bytes.length < entry.meta.size) this.u8.fill(0, entry.at + bytes.length, entry.at + entry.meta.size);
    return this.finishWrite(entry, seq);
  }

  /** Publishes a change someone made to the entry's bytes without the API (a raw write into bytes()). */
  touch(entry: DirEntry): bigint {
    this.assertOpen();
    this.lock(entry);
    const seq = Atomics.load(this.i32, entry.seqIdx) + 1;
    Atomics.store(this.i32, entry.seqIdx, seq);
    return this.finishWrite(entry, seq);
  }

  private finishWrite(entry: DirEntry, oddSeq: number): bigint {
    const i32 = this.i32;
    const version = Atomics.add(this.b64, I64(H.VERSION), 1n) + 1n;
    Atomics.store(this.b64, entry.versionIdx, version);
    if (i32[entry.flagsIdx] !== 0) Atomics.and(i32, entry.flagsIdx, ~FLAG_TORN);
    Atomics.store(i32, entry.seqIdx, oddSeq + 1);
    Atomics.store(i32, entry.lockIdx, 0);
    if (this.localChange !== undefined || this.othersWaiting()) this.notifyWatchers();
    return version;
  }

  /** Wakes sleeping watchers in every process, at most once per turn of this event loop. */
  notifyWatchers(): void {
    if (this.wakePending) return;
    this.wakePending = true;
    queueMicrotask(this.wake);
  }

  /**
   * Reads a consistent value: retries while a writer is active; after many retries, reads under the lock
   * (a read-only mapping may not take it: it keeps retrying, up to the lock policy's timeoutMs).
   */
  read<T>(entry: DirEntry, readValue: () => T): T {
    this.assertOpen();
    for (let attempt = 0; attempt < READ_RETRIES_BEFORE_LOCK; attempt++) {
      const value = this.attemptRead(entry, readValue);
      if (value !== RETRY) return value;
    }
    if (this.readOnlyFlag) return this.readWithoutLock(entry, readValue);
    // A stream of writes keeps beating us: take the writer lock so the read completes.
    this.lock(entry);
    try {
      return readValue();
    } finally {
      this.unlock(entry);
    }
  }

  /** One seqlock read: the value, or RETRY if a writer was active before or during it. */
  private attemptRead<T>(entry: DirEntry, readValue: () => T): T | typeof RETRY {
    const before = Atomics.load(this.i32, entry.seqIdx);
    if ((before & 1) !== 0) {
      this.waitForWriter(entry, before);
      return RETRY;
    }
    const value = readValue();
    return Atomics.load(this.i32, entry.seqIdx) === before ? value : RETRY;
  }

  /** The read-only reader's fallback: no writer lock to take, so it retries until timeoutMs, then TIMEOUT. */
  private readWithoutLock<T>(entry: DirEntry, readValue: () => T): T {
    const deadline = performance.now() + this.policy.timeoutMs;
    for (let attempt = 1; ; attempt++) {
      const value = this.attemptRead(entry, readValue);
      if (value !== RETRY) return value;
      if (attempt % READ_RETRIES_BEFORE_LOCK === 0 && performance.now() > deadline) {
        throw new CommyError(ErrorCode.TIMEOUT, `variable ${entry.meta.name} kept changing under a read-only reader for ${this.policy.timeoutMs} ms`);
      }
    }
  }

  /**
   * Waits while `seq` stays odd; breaks the lock of a dead writer (marking the value TORN). A read-only
   * mapping never does: it waits on, and a writer that died mid-write ends the wait with TIMEOUT.
   */
  private waitForWriter(entry: DirEntry, oddSeq: number): void {
    const i32 = this.i32;
    waitOut(
      i32,
      entry.lockIdx,
      this.policy,
      () => Atomics.load(i32, entry.seqIdx) === oddSeq,
      (dead) => {
        if (this.readOnlyFlag) return false;
        if (Atomics.compareExchange(i32, entry.lockIdx, dead, OWN_PID) !== dead) return false;
        this.markTornIfMidWrite(entry);
        release(i32, entry.lockIdx);
        return true;
      },
      `variable ${entry.meta.name}`,
    );
  }

  readValue(entry: DirEntry): unknown {
    return this.read(entry, () => entry.codec.load(this.view, entry.at));
  }

  readBytes(entry: DirEntry): Uint8Array {
    return this.read(entry, () => this.u8.slice(entry.at, entry.at + entry.meta.size));
  }

  /**
   * A view of the data region as the file holds it now (it grows; take a new one after registering). On a
   * read-only mapping, a **copy**: a view over PROT_READ memory would turn a user's raw write into SIGSEGV.
   */
  dataBytes(): Uint8Array {
    this.assertOpen();
    const view = new Uint8Array(this.buffer, this.dataStart, this.dataCapacity);
    return this.readOnlyFlag ? view.slice() : view;
  }

  msync(sync: boolean): void {
    this.assertOpen();
    native.msync(this.buffer, 0, this.dataStart + this.dataCapacity, sync);
  }

  /** Unmaps: every view over the mapping becomes empty, and every later call throws NOT_CONNECTED. */
  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    native.unmap(this.buffer);
    closeQuietly(this.fd);
    this.fd = -1;
  }
}

function openOrCreate(abs: string, options: ServiceFileOptions): number {
  if (options.readOnly === true) {
    try {
      return openSync(abs, fsc.O_RDONLY);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'does not exist (a read-only open never creates)' : `cannot be opened: ${code}`;
      throw new CommyError(ErrorCode.FILE_NOT_FOUND, `${abs} ${why}`, { cause: err });
    }
  }
  try {
    return openSync(abs, fsc.O_RDWR);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw new CommyError(ErrorCode.FILE_NOT_FOUND, `cannot open ${abs}: ${code}`, { cause: err });
    if (!options.create) throw new CommyError(ErrorCode.FILE_NOT_FOUND, `${abs} does not exist`, { cause: err });
  }
  return createFile(abs, options);
}

/**
 * Creates the file under a temporary name, writes a complete header, then links it into place:
 * a process that opens the path never sees a half-written header, and of two creators exactly one wins.
 */
function createFile(abs: string, options: ServiceFileOptions): number {
  const maxVariables = options.maxVariables ?? DEFAULT_MAX_VARIABLES;
  const maxFileSize = options.maxFileSize ?? DEFAULT_MAX_FILE_SIZE;
  if (!Number.isInteger(maxVariables) || maxVariables < 1 || maxVariables > MAX_MAX_VARIABLES) {
    throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `maxVariables must be 1..${MAX_MAX_VARIABLES}`);
  }
  const dataStart = dataStartFor(maxVariables);
  if (!Number.isInteger(maxFileSize) || maxFileSize % PAGE_SIZE !== 0 || maxFileSize < dataStart + INITIAL_DATA_CAPACITY || maxFileSize > MAX_MAX_FILE_SIZE) {
    throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `maxFileSize must be a multiple of ${PAGE_SIZE} between ${dataStart + INITIAL_DATA_CAPACITY} and ${MAX_MAX_FILE_SIZE}`);
  }
  const tenant = options.tenant ?? '';
  const service = options.service ?? '';
  if (tenant !== '') assertValidName(tenant, 'tenant name');
  if (service !== '') assertValidName(service, 'service name');
  const tmp = `${abs}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  let fd: number;
  try {
    fd = openSync(tmp, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o600);
  } catch (err) {
    throw new CommyError(ErrorCode.FILE_NOT_FOUND, `cannot create ${abs}: ${(err as NodeJS.ErrnoException).code}`, { cause: err });
  }
  try {
    ftruncateSync(fd, dataStart + INITIAL_DATA_CAPACITY);
    const page = Buffer.alloc(HEADER_SIZE);
    writeHeader(page, { maxVariables, maxFileSize, tenant, service, fileId: randomBytes(16), createdMs: Date.now() });
    writeSync(fd, page, 0, HEADER_SIZE, 0);
    try {
      linkSync(tmp, abs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      closeQuietly(fd);
      fd = openSync(abs, fsc.O_RDWR); // another process created it first: use theirs
    }
    return fd;
  } catch (err) {
    closeQuietly(fd);
    throw err instanceof CommyError ? err : new CommyError(ErrorCode.FILE_NOT_FOUND, `cannot create ${abs}: ${String(err)}`, { cause: err });
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      /* already gone */
    }
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* already closed */
  }
}
