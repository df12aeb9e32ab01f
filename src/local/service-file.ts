import { closeSync, fstatSync, ftruncateSync, linkSync, openSync, readSync, unlinkSync, writeSync, constants as fsc } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { CommyError, ErrorCode } from '../core/errors.js';
import { assertValidName, isValidName } from '../core/names.js';
import { codecFor, type ValueCodec } from '../core/value-codec.js';
import { fixedSizeOf, isVariableTypeId, typeName, type VariableTypeId } from '../core/variable-type.js';
import { VariableMetadata } from '../core/variable-metadata.js';
import { damageCount, native } from '../native/addon.js';
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
  grownCapacity,
  dataStartFor,
  entryOffset,
  readHeader,
  writeHeader,
  type HeaderInfo,
} from './file-format.js';
import {
  DEFAULT_LOCK_POLICY,
  HolderClock,
  OWN_PID,
  OWN_START,
  acquire,
  release,
  takeLock,
  waitOut,
  type LockPolicy,
  type LockWord,
} from './process-lock.js';

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
  /**
   * The file's name in every error message (default: its absolute path). A server passes `tenant/service`, so
   * that no error it forwards to a client reveals where its data lives.
   */
  label?: string;
  /** The header must name this tenant and service (else INVALID_FILE): a planted link or copy of another service's file is refused. */
  expect?: { tenant: string; service: string };
  /** Refuse (INVALID_FILE) a file not owned by this process's effective uid, or writable by group or others. */
  requireOwner?: boolean;
}

/** What tryRead, tryRegister answer (and tryLock means by false) when a live process holds what they need. */
export const BUSY: unique symbol = Symbol('commy.busy');

/** One directory entry as this process has cached it, with the indexes its hot paths need. */
export interface DirEntry {
  readonly index: number;
  readonly meta: VariableMetadata;
  readonly codec: ValueCodec;
  /** Absolute byte offset of the value in the mapping. */
  readonly at: number;
  readonly lockIdx: number; // Int32Array index
  readonly lockStartIdx: number; // Int32Array index: start time of the lock's holder
  readonly lastWriterIdx: number; // Int32Array index: pid of the last completed write
  readonly seqIdx: number; // Int32Array index
  readonly flagsIdx: number; // Int32Array index
  readonly versionIdx: number; // BigUint64Array index
}

const I32 = (byteOffset: number): number => byteOffset >> 2;
const I64 = (byteOffset: number): number => byteOffset >> 3;
const READ_RETRIES_BEFORE_LOCK = 64;
/** tryRead's seqlock attempts before answering BUSY: enough to ride out a write that ends meanwhile, no waiting. */
const TRY_READ_ATTEMPTS = 4;
const RETRY: unique symbol = Symbol('retry');
const REG_WORD: LockWord = { lockIdx: I32(H.REG_LOCK), lockStartIdx: I32(H.REG_LOCK_START) };
/** Open without following a symlink as the last component, and without blocking on a FIFO planted at the path. */
const OPEN_FLAGS = fsc.O_NOFOLLOW | fsc.O_NONBLOCK;

/**
 * Locks this thread holds across code that is not ours (lock() … unlock(), update()'s callback, tryLock() …
 * writeLocked()), by file id: shared by every mapping of one file in this thread. A lock with our own pid and
 * start time that is not in here is a leftover (see holderGone in process-lock.ts).
 */
const heldByFile = new Map<string, { locks: Set<number>; users: number }>();

function heldLocksFor(fileId: string): Set<number> {
  let held = heldByFile.get(fileId);
  if (held === undefined) heldByFile.set(fileId, (held = { locks: new Set(), users: 0 }));
  held.users++;
  return held.locks;
}

function dropHeldLocks(fileId: string): void {
  const held = heldByFile.get(fileId);
  if (held !== undefined && --held.users === 0) heldByFile.delete(fileId);
}

/**
 * A service file mapped into this process: the format's rules (directory, growth, seqlocks, versions)
 * live here. Every other process that maps the same file follows the same rules, so they never need to talk.
 */
export class ServiceFile {
  readonly path: string;
  /** How errors name this file (ServiceFileOptions.label; default the path). */
  readonly label: string;
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
  private readonly held: Set<number>;
  /** Since when each contended lock has had its holder: try* judge a holder gone only after staleMs. */
  private readonly clock: HolderClock;
  private damagedFlag = false;
  /** Closed or damaged: the one field the start of every operation looks at. */
  private unusable = false;
  /** native's damage count (a field, not the module binding: one load cheaper on the hot paths). */
  private readonly damage: Int32Array = damageCount;
  /**
   * The process-wide damage count (native/sigbus.cc) when this mapping was last found intact. While the count
   * still equals it, no fault was repaired anywhere since: the hot paths check that with one load.
   */
  damageMark = 0;
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

  private constructor(path: string, label: string, fd: number, info: HeaderInfo, options: ServiceFileOptions) {
    this.path = path;
    this.label = label;
    this.fd = fd;
    this.info = info;
    this.dataStart = info.dataStart;
    this.maxVariableSize = options.maxVariableSize ?? DEFAULT_MAX_VARIABLE_SIZE;
    this.policy = { ...DEFAULT_LOCK_POLICY, ...options.lock };
    this.clock = new HolderClock(this.policy.staleMs);
    this.readOnlyFlag = options.readOnly === true;
    this.damageMark = this.damage[0]!; // a one-word array
    // PROT_READ for a read-only file: a stray write would be SIGSEGV, so no method below ever makes one.
    this.buffer = native.map(fd, info.maxFileSize, !this.readOnlyFlag);
    this.i32 = new Int32Array(this.buffer);
    this.b64 = new BigUint64Array(this.buffer);
    this.u8 = new Uint8Array(this.buffer);
    this.view = new DataView(this.buffer);
    this.held = heldLocksFor(info.fileId);
  }

  /**
   * Opens (and with `create`, creates) a service file. Throws FILE_NOT_FOUND, INVALID_FILE (a symlink, not a
   * regular file, a bad header, `expect` or `requireOwner` not met), INVALID_NAME.
   */
  static open(path: string, options: ServiceFileOptions = {}): ServiceFile {
    if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) {
      throw new CommyError(ErrorCode.INVALID_NAME, 'a service file path must be a non-empty string without NUL');
    }
    const abs = resolve(path);
    const label = options.label ?? abs;
    const fd = openOrCreate(abs, label, options);
    let file: ServiceFile | undefined;
    try {
      const size = checkOpened(fd, label, options);
      const page = Buffer.alloc(HEADER_SIZE);
      const got = readSync(fd, page, 0, HEADER_SIZE, 0);
      const info = readHeader(label, page.subarray(0, got), size);
      checkExpected(info, label, options);
      file = new ServiceFile(abs, label, fd, info, options);
      file.refresh();
      return file;
    } catch (err) {
      if (file !== undefined) file.close();
      else closeQuietly(fd);
      if (err instanceof CommyError) throw err;
      throw new CommyError(ErrorCode.INTERNAL_ERROR, `cannot map ${label}: ${(err as Error).message}`, { cause: err });
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
    if (this.readOnlyFlag) throw new CommyError(ErrorCode.PERMISSION_DENIED, `${this.label} is a read-only mapping: it cannot be changed from here`);
  }

  /**
   * Throws NOT_CONNECTED once the file is closed (use after close must never touch unmapped memory), and
   * INVALID_FILE once the mapping is known to be damaged. Every operation starts here; those that touch the
   * mapping also call assertIntact after they did, which is what finds out about new damage.
   */
  assertOpen(): void {
    if (this.unusable) this.throwUnusable();
  }

  private throwUnusable(): never {
    if (this.closedFlag) throw new CommyError(ErrorCode.NOT_CONNECTED, `service file ${this.label} is closed`);
    throw this.damagedError();
  }

  /**
   * INVALID_FILE if a SIGBUS inside this mapping was repaired (another process truncated the file: the pages
   * past its end now read as zeros and writes to them are lost). Called *after* touching the mapping, so a
   * value read from a damaged mapping is never handed out, nor a write into one reported done. One load while
   * nothing was repaired anywhere in the process.
   */
  assertIntact(): void {
    if (this.damage[0] !== this.damageMark) this.checkDamage();
  }

  /** Has a fault inside this mapping been repaired? (Sticky: such a mapping never shows the file again.) */
  get damaged(): boolean {
    if (!this.damagedFlag && !this.closedFlag && this.damage[0] !== this.damageMark) {
      try {
        this.checkDamage();
      } catch {
        /* now flagged */
      }
    }
    return this.damagedFlag;
  }

  private checkDamage(): void {
    if (this.closedFlag) this.throwUnusable(); // unmapped: nothing to ask native about
    const mark = this.damage[0]!;
    if (this.damagedFlag || native.damaged(this.buffer)) {
      this.damagedFlag = true;
      this.unusable = true;
      throw this.damagedError();
    }
    this.damageMark = mark; // the repairs were in other mappings
  }

  private damagedError(): CommyError {
    return new CommyError(ErrorCode.INVALID_FILE, `${this.label} is damaged: it was truncated or shrunk by another process`);
  }

  private corrupt(why: string): CommyError {
    return new CommyError(ErrorCode.INVALID_FILE, `${this.label}: ${why}`);
  }

  get version(): bigint {
    this.assertOpen();
    const version = Atomics.load(this.b64, I64(H.VERSION));
    this.assertIntact();
    return version;
  }

  /** Bytes of data region the file holds now: checkedDataCapacity(). */
  get dataCapacity(): number {
    return this.checkedDataCapacity();
  }

  /** End of the highest variable, the part of the data region worth diffing or sending: checkedDataEnd(). */
  get dataEnd(): number {
    return this.checkedDataEnd();
  }

  /**
   * The header's data capacity, checked against the format's limit and the file's real size (fstat): any
   * process can write anything there, and callers size allocations and views by it. INVALID_FILE otherwise.
   */
  checkedDataCapacity(): number {
    this.assertOpen();
    const capacity = Atomics.load(this.b64, I64(H.DATA_CAPACITY));
    this.assertIntact();
    const limit = this.info.maxFileSize - this.dataStart;
    if (capacity > BigInt(limit)) throw this.corrupt(`data capacity ${capacity} exceeds the file's limit of ${limit} bytes`);
    const size = fstatSync(this.fd).size;
    if (this.dataStart + Number(capacity) > size) throw this.corrupt(`data capacity ${capacity} lies past the end of the ${size}-byte file`);
    return Number(capacity);
  }

  /**
   * The header's data end (allocation high-water mark), checked like checkedDataCapacity and against it. Call
   * this before allocating anything by its size (a snapshot): a local writer may have stored 1 GiB there.
   */
  checkedDataEnd(): number {
    this.assertOpen();
    // Read before the capacity: registration raises the capacity first, so an honest end never exceeds it.
    const end = Atomics.load(this.b64, I64(H.DATA_END));
    const capacity = this.checkedDataCapacity();
    if (end > BigInt(capacity)) throw this.corrupt(`data end ${end} lies past the data capacity ${capacity}`);
    return Number(end);
  }

  /** Is a watcher of another process (or another mapping in this one) asleep on the version word? */
  othersWaiting(): boolean {
    return Atomics.load(this.i32, I32(H.WAITERS)) !== 0 || (Atomics.load(this.i32, I32(H.PARKED)) & ~this.ownWatchBit) !== 0;
  }

  /** Picks up entries other processes have published since the last look. */
  refresh(): void {
    this.assertOpen();
    const count = Atomics.load(this.i32, I32(H.VAR_COUNT)) >>> 0; // a u32: a corrupt one reads as itself, not negative
    this.assertIntact();
    if (count === this.entries.length) return;
    if (count < this.entries.length || count > this.info.maxVariables) {
      throw this.corrupt(`directory count ${count} is corrupt`);
    }
    const capacity = this.checkedDataCapacity();
    try {
      for (let i = this.entries.length; i < count; i++) {
        const entry = this.readEntry(i, capacity);
        this.assertIntact(); // an entry read from a damaged page is all zeros: say why, not "corrupt"
        this.entries.push(entry);
        this.byName.set(entry.meta.name, entry);
      }
    } catch (err) {
      this.assertIntact();
      throw err;
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
    if (!ok) throw this.corrupt(`directory entry ${index} is corrupt`);
    const meta = new VariableMetadata(name, offset, size, typeId as VariableTypeId);
    return {
      index,
      meta,
      codec: codecFor(meta.typeId, size),
      at: this.dataStart + offset,
      lockIdx: I32(base + E.LOCK),
      lockStartIdx: I32(base + E.LOCK_START),
      lastWriterIdx: I32(base + E.LAST_WRITER),
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
    throw new CommyError(ErrorCode.VARIABLE_NOT_FOUND, `no variable ${JSON.stringify(name)} in ${this.label}`);
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
    const version = Atomics.load(this.b64, entry.versionIdx);
    this.assertIntact();
    return version;
  }

  isTorn(entry: DirEntry): boolean {
    const flags = Atomics.load(this.i32, entry.flagsIdx);
    this.assertIntact();
    return (flags & FLAG_TORN) !== 0;
  }

  /** Pid of the process that completed the variable's last write (or registered it); 0 if unknown (older files). */
  lastWriter(entry: DirEntry): number {
    this.assertOpen();
    const pid = Atomics.load(this.i32, entry.lastWriterIdx);
    this.assertIntact();
    return pid;
  }

  // ---- registration -------------------------------------------------------------------------------

  /** Registers a variable (idempotent for the same layout); returns its entry. Waits for the registration lock. */
  register(meta: VariableMetadata): DirEntry {
    const want = this.validateLayout(meta);
    const known = this.known(want);
    if (known !== undefined) return known;
    acquire(this.i32, REG_WORD, this.policy, `the directory of ${this.label}`);
    return this.registerLocked(want);
  }

  /**
   * register() without waiting: BUSY at once if a live process holds the registration lock (a gone holder's
   * lock is taken over after staleMs of holding, counted across calls). For the server's event loop.
   */
  tryRegister(meta: VariableMetadata): DirEntry | typeof BUSY {
    const want = this.validateLayout(meta);
    const known = this.known(want);
    if (known !== undefined) return known;
    if (!this.tryTake(REG_WORD)) return BUSY;
    return this.registerLocked(want);
  }

  /** The entry if `want` is registered already (same layout, else TYPE_MISMATCH/INVALID_OFFSET); checks writability otherwise. */
  private known(want: VariableMetadata): DirEntry | undefined {
    this.assertOpen();
    this.refresh();
    const known = this.byName.get(want.name);
    if (known !== undefined) return this.sameLayout(known, want);
    this.assertWritable(); // a known variable with the same layout is a no-op even read-only; a new one is not
    return undefined;
  }

  /** Holding the registration lock: publishes `want` unless someone else just did, then lets go of the lock. */
  private registerLocked(want: VariableMetadata): DirEntry {
    try {
      this.refresh();
      if (!this.byName.has(want.name)) this.publish(want);
    } finally {
      release(this.i32, REG_WORD.lockIdx);
    }
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

  /** Under the registration lock: place, grow, write the entry, then publish it with one atomic store. */
  private publish(want: VariableMetadata): void {
    const index = this.entries.length;
    if (index >= this.info.maxVariables) {
      throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `${this.label} already holds its maximum of ${this.info.maxVariables} variables`);
    }
    const dataEnd = this.checkedDataEnd();
    const offset = want.offset === -1 ? alignUp(dataEnd, DATA_ALIGN) : want.offset;
    const end = offset + want.size;
    if (want.offset !== -1) this.assertNoOverlap(offset, end);
    else if (this.dataStart + end > this.info.maxFileSize) {
      throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `${this.label} is full: ${want.size} more bytes exceed its ${this.info.maxFileSize}-byte limit`);
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
    Atomics.store(this.i32, I32(base + E.LAST_WRITER), OWN_PID);
    Atomics.store(this.i32, I32(base + E.STATE), ENTRY_LIVE);
    if (end > dataEnd) Atomics.store(this.b64, I64(H.DATA_END), BigInt(end));
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
    const capacity = this.checkedDataCapacity();
    if (end <= capacity) return;
    const next = grownCapacity(capacity, end, this.info.maxFileSize - this.dataStart);
    const fileSize = this.dataStart + next;
    if (fstatSync(this.fd).size < fileSize) this.grow(fileSize);
    Atomics.store(this.b64, I64(H.DATA_CAPACITY), BigInt(next));
    Atomics.add(this.i32, I32(H.LAYOUT_GEN), 1);
  }

  /** ftruncate as a CommyError: a full disk (ENOSPC) or a file-size limit (EFBIG) is QUOTA_EXCEEDED, never a raw errno. */
  private grow(fileSize: number): void {
    try {
      ftruncateSync(this.fd, fileSize);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const quota = code === 'ENOSPC' || code === 'EFBIG' || code === 'EDQUOT';
      throw new CommyError(quota ? ErrorCode.QUOTA_EXCEEDED : ErrorCode.INTERNAL_ERROR, `${this.label} cannot grow to ${fileSize} bytes: ${code ?? String(err)}`, { cause: err });
    }
  }

  // ---- values -------------------------------------------------------------------------------------

  /**
   * Takes the entry's writer lock and keeps it until unlock(): while this thread holds it, it is never taken for
   * a leftover. A write that a gone process left half done marks the value TORN. A read-only mapping is refused.
   */
  lock(entry: DirEntry): void {
    this.assertOpen();
    this.acquireWriter(entry);
    this.assertIntact();
    this.held.add(entry.lockIdx);
  }

  unlock(entry: DirEntry): void {
    this.assertWritable();
    this.held.delete(entry.lockIdx);
    release(this.i32, entry.lockIdx);
  }

  /**
   * The writer lock for a critical section of ours (synchronous, released before returning). Every writer comes
   * through here first, so this is where a read-only mapping is refused.
   */
  private acquireWriter(entry: DirEntry): void {
    this.assertWritable();
    const i32 = this.i32;
    if (Atomics.compareExchange(i32, entry.lockIdx, 0, OWN_PID) === 0) {
      i32[entry.lockStartIdx] = OWN_START; // the one store this costs the hot path: lets others tell a reused pid
      return;
    }
    this.acquireContended(entry);
  }

  /** acquireWriter's slow path, kept out of the hot one: waits for the holder, or takes over from a gone one. */
  private acquireContended(entry: DirEntry): void {
    acquire(this.i32, entry, this.policy, `variable ${entry.meta.name}`, () => this.markTornIfMidWrite(entry), this.held.has(entry.lockIdx));
  }

  private markTornIfMidWrite(entry: DirEntry): void {
    const seq = Atomics.load(this.i32, entry.seqIdx);
    if ((seq & 1) === 0) return;
    Atomics.or(this.i32, entry.flagsIdx, FLAG_TORN);
    Atomics.store(this.i32, entry.seqIdx, seq + 1);
  }

  /**
   * Takes `word` without waiting: if free, or if its holder has been there for staleMs (counted across calls)
   * and is gone (holderGone); `onRecovered` then runs holding it. False at once otherwise.
   */
  private tryTake(word: LockWord, onRecovered?: () => void): boolean {
    const i32 = this.i32;
    if (takeLock(i32, word, 0)) return true;
    const gone = this.clock.goneHolder(i32, word, this.held.has(word.lockIdx));
    if (gone === undefined || !takeLock(i32, word, gone)) return false;
    this.clock.forget(word);
    onRecovered?.();
    return true;
  }

  /**
   * lock() without waiting, for an event loop that must never spin on another process: true holding the lock
   * (taken over from a gone holder after staleMs, marking a half-done write TORN), false at once otherwise.
   * Release it with writeLocked() or unlock().
   */
  tryLock(entry: DirEntry): boolean {
    this.assertOpen();
    this.assertWritable();
    if (!this.tryTake(entry, () => this.markTornIfMidWrite(entry))) return false;
    this.assertIntact();
    this.held.add(entry.lockIdx);
    return true;
  }

  /**
   * The caller holds the entry's lock (tryLock or lock): writes raw bytes (≤ size, zero-padded) under the
   * seqlock, publishes a new version and releases the lock, also when the bytes do not fit (VALUE_TOO_LARGE).
   */
  writeLocked(entry: DirEntry, bytes: Uint8Array): bigint {
    this.assertOpen();
    this.assertWritable();
    const i32 = this.i32;
    if (Atomics.load(i32, entry.lockIdx) !== OWN_PID || !this.held.has(entry.lockIdx)) {
      throw new CommyError(ErrorCode.INTERNAL_ERROR, `writeLocked: this thread does not hold the lock of variable ${entry.meta.name}`);
    }
    this.held.delete(entry.lockIdx);
    if (bytes.length > entry.meta.size) {
      release(i32, entry.lockIdx);
      throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `${bytes.length} bytes do not fit ${entry.meta.name} (${entry.meta.size} bytes)`);
    }
    return this.storeBytes(entry, bytes);
  }

  /** Writes a checked value under the entry's seqlock and publishes a new version. */
  write(entry: DirEntry, checked: unknown): bigint {
    this.assertOpen();
    this.acquireWriter(entry);
    const i32 = this.i32;
    const seq = Atomics.load(i32, entry.seqIdx) + 1;
    Atomics.store(i32, entry.seqIdx, seq);
    entry.codec.store(this.view, entry.at, checked);
    return this.finishWrite(entry, seq);
  }

  /** Read-modify-write under the writer lock; `fn` throwing (or returning a bad value) changes nothing. */
  update<T>(entry: DirEntry, fn: (current: T) => T): T {
    this.assertOpen();
    this.acquireWriter(entry);
    let next: T;
    let checked: unknown;
    this.held.add(entry.lockIdx); // fn is not ours: it may run into this same lock, which is not a leftover
    try {
      const current = entry.codec.load(this.view, entry.at) as T;
      this.assertIntact();
      next = fn(current);
      checked = entry.codec.check(next);
    } catch (err) {
      this.held.delete(entry.lockIdx);
      release(this.i32, entry.lockIdx);
      throw err;
    }
    this.held.delete(entry.lockIdx);
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
    this.acquireWriter(entry);
    return this.storeBytes(entry, bytes);
  }

  /** Holding the lock: the seqlock write of `bytes` (checked to fit), zero-padded; releases the lock. */
  private storeBytes(entry: DirEntry, bytes: Uint8Array): bigint {
    const seq = Atomics.load(this.i32, entry.seqIdx) + 1;
    Atomics.store(this.i32, entry.seqIdx, seq);
    this.u8.set(bytes, entry.at);
    if (bytes.length < entry.meta.size) this.u8.fill(0, entry.at + bytes.length, entry.at + entry.meta.size);
    return this.finishWrite(entry, seq);
  }

  /** Publishes a change someone made to the entry's bytes without the API (a raw write into bytes()). */
  touch(entry: DirEntry): bigint {
    this.assertOpen();
    this.acquireWriter(entry);
    const seq = Atomics.load(this.i32, entry.seqIdx) + 1;
    Atomics.store(this.i32, entry.seqIdx, seq);
    return this.finishWrite(entry, seq);
  }

  private finishWrite(entry: DirEntry, oddSeq: number): bigint {
    const i32 = this.i32;
    const version = Atomics.add(this.b64, I64(H.VERSION), 1n) + 1n;
    Atomics.store(this.b64, entry.versionIdx, version);
    i32[entry.lastWriterIdx] = OWN_PID; // who wrote last, for the server's audit of local writes
    if (i32[entry.flagsIdx] !== 0) Atomics.and(i32, entry.flagsIdx, ~FLAG_TORN);
    Atomics.store(i32, entry.seqIdx, oddSeq + 1);
    Atomics.store(i32, entry.lockIdx, 0);
    // A write into a page repaired after a truncation went nowhere: say so rather than report success.
    this.assertIntact();
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
    this.acquireWriter(entry);
    try {
      const value = readValue();
      this.assertIntact();
      return value;
    } finally {
      release(this.i32, entry.lockIdx);
    }
  }

  /**
   * read() without waiting, for an event loop that must never spin on another process: a few seqlock attempts,
   * then BUSY. A writer that left the seqlock odd and is gone (after staleMs, counted across calls) has its lock
   * recovered, the value marked TORN, and the read retried; a read-only mapping never recovers (BUSY).
   */
  tryRead<T>(entry: DirEntry, readValue: () => T): T | typeof BUSY {
    this.assertOpen();
    const i32 = this.i32;
    for (let attempt = 0; attempt < TRY_READ_ATTEMPTS; attempt++) {
      const before = Atomics.load(i32, entry.seqIdx);
      if ((before & 1) !== 0) {
        if (this.readOnlyFlag || !this.recoverGoneWriter(entry)) return BUSY;
        continue;
      }
      const value = readValue();
      if (Atomics.load(i32, entry.seqIdx) !== before) continue;
      this.assertIntact();
      return value;
    }
    return BUSY;
  }

  /** tryRead's recovery: takes a gone writer's lock without waiting, marks a half-done write TORN, lets go. */
  private recoverGoneWriter(entry: DirEntry): boolean {
    if (!this.tryTake(entry, () => this.markTornIfMidWrite(entry))) return false;
    release(this.i32, entry.lockIdx);
    return true;
  }

  /** One seqlock read: the value, or RETRY if a writer was active before or during it. */
  private attemptRead<T>(entry: DirEntry, readValue: () => T): T | typeof RETRY {
    const before = Atomics.load(this.i32, entry.seqIdx);
    if ((before & 1) !== 0) {
      this.waitForWriter(entry, before);
      return RETRY;
    }
    const value = readValue();
    if (Atomics.load(this.i32, entry.seqIdx) !== before) return RETRY;
    this.assertIntact();
    return value;
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
   * Waits while `seq` stays odd; breaks the lock of a gone writer (marking the value TORN). A read-only
   * mapping never does: it waits on, and a writer that died mid-write ends the wait with TIMEOUT.
   */
  private waitForWriter(entry: DirEntry, oddSeq: number): void {
    const i32 = this.i32;
    waitOut(
      i32,
      entry,
      this.policy,
      () => Atomics.load(i32, entry.seqIdx) === oddSeq,
      (dead) => {
        if (this.readOnlyFlag) return false;
        if (!takeLock(i32, entry, dead)) return false;
        this.markTornIfMidWrite(entry);
        release(i32, entry.lockIdx);
        return true;
      },
      `variable ${entry.meta.name}`,
      this.held.has(entry.lockIdx),
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
   * Its length is checkedDataCapacity().
   */
  dataBytes(): Uint8Array {
    const view = new Uint8Array(this.buffer, this.dataStart, this.checkedDataCapacity());
    if (!this.readOnlyFlag) return view;
    const copy = view.slice();
    this.assertIntact();
    return copy;
  }

  msync(sync: boolean): void {
    native.msync(this.buffer, 0, this.dataStart + this.checkedDataCapacity(), sync);
  }

  /** Unmaps: every view over the mapping becomes empty, and every later call throws NOT_CONNECTED. */
  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.unusable = true;
    native.unmap(this.buffer);
    closeQuietly(this.fd);
    this.fd = -1;
    dropHeldLocks(this.info.fileId);
  }
}

/** Opens an existing file without following a symlink; FILE_NOT_FOUND, or INVALID_FILE for a symlink. */
function openExisting(abs: string, label: string, flags: number): number {
  try {
    return openSync(abs, flags | OPEN_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') {
      throw new CommyError(ErrorCode.INVALID_FILE, `${label} is a symbolic link: service files are never opened through one`, { cause: err });
    }
    throw err;
  }
}

function openOrCreate(abs: string, label: string, options: ServiceFileOptions): number {
  if (options.readOnly === true) {
    try {
      return openExisting(abs, label, fsc.O_RDONLY);
    } catch (err) {
      if (err instanceof CommyError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'does not exist (a read-only open never creates)' : `cannot be opened: ${code}`;
      throw new CommyError(ErrorCode.FILE_NOT_FOUND, `${label} ${why}`, { cause: err });
    }
  }
  try {
    return openExisting(abs, label, fsc.O_RDWR);
  } catch (err) {
    if (err instanceof CommyError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw new CommyError(ErrorCode.FILE_NOT_FOUND, `cannot open ${label}: ${code}`, { cause: err });
    if (!options.create) throw new CommyError(ErrorCode.FILE_NOT_FOUND, `${label} does not exist`, { cause: err });
  }
  return createFile(abs, label, options);
}

/**
 * What the open fd must be before anything is read: a regular file (not a directory, FIFO or device), and with
 * `requireOwner` ours and writable by nobody else. Returns its size. INVALID_FILE otherwise.
 */
function checkOpened(fd: number, label: string, options: ServiceFileOptions): number {
  const st = fstatSync(fd);
  if (!st.isFile()) throw new CommyError(ErrorCode.INVALID_FILE, `${label} is not a regular file`);
  if (options.requireOwner === true) {
    const euid = process.geteuid?.();
    if (euid !== undefined && st.uid !== euid) {
      throw new CommyError(ErrorCode.INVALID_FILE, `${label} is owned by uid ${st.uid}, not by this process (uid ${euid})`);
    }
    if ((st.mode & 0o022) !== 0) {
      throw new CommyError(ErrorCode.INVALID_FILE, `${label} is writable by group or others (mode ${(st.mode & 0o777).toString(8)})`);
    }
  }
  return st.size;
}

/** With `expect`, the header must name that tenant and service (which ones it names is not said: not ours to tell). */
function checkExpected(info: HeaderInfo, label: string, options: ServiceFileOptions): void {
  const want = options.expect;
  if (want === undefined || (info.tenant === want.tenant && info.service === want.service)) return;
  throw new CommyError(ErrorCode.INVALID_FILE, `${label} belongs to another service: its header names a different tenant or service`);
}

/**
 * Creates the file under a temporary name, writes a complete header, then links it into place:
 * a process that opens the path never sees a half-written header, and of two creators exactly one wins.
 */
function createFile(abs: string, label: string, options: ServiceFileOptions): number {
  const maxVariables = options.maxVariables ?? DEFAULT_MAX_VARIABLES;
  const maxFileSize = options.maxFileSize ?? DEFAULT_MAX_FILE_SIZE;
  if (!Number.isInteger(maxVariables) || maxVariables < 1 || maxVariables > MAX_MAX_VARIABLES) {
    throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `maxVariables must be 1..${MAX_MAX_VARIABLES}`);
  }
  const dataStart = dataStartFor(maxVariables);
  if (!Number.isInteger(maxFileSize) || maxFileSize % PAGE_SIZE !== 0 || maxFileSize < dataStart + INITIAL_DATA_CAPACITY || maxFileSize > MAX_MAX_FILE_SIZE) {
    throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `maxFileSize must be a multiple of ${PAGE_SIZE} between ${dataStart + INITIAL_DATA_CAPACITY} and ${MAX_MAX_FILE_SIZE}`);
  }
  const tenant = options.tenant ?? options.expect?.tenant ?? '';
  const service = options.service ?? options.expect?.service ?? '';
  if (tenant !== '') assertValidName(tenant, 'tenant name');
  if (service !== '') assertValidName(service, 'service name');
  const tmp = `${abs}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  let fd: number;
  try {
    fd = openSync(tmp, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL | OPEN_FLAGS, 0o600);
  } catch (err) {
    throw new CommyError(ErrorCode.FILE_NOT_FOUND, `cannot create ${label}: ${(err as NodeJS.ErrnoException).code}`, { cause: err });
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
      fd = -1;
      fd = openExisting(abs, label, fsc.O_RDWR); // another process created it first: use theirs
    }
    return fd;
  } catch (err) {
    closeQuietly(fd);
    // The code only: a Node fs error's message holds the paths, and the label is all an error may reveal.
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).name;
    throw err instanceof CommyError ? err : new CommyError(ErrorCode.FILE_NOT_FOUND, `cannot create ${label}: ${why}`, { cause: err });
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
