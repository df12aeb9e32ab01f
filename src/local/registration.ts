import { CommyError, ErrorCode } from '../core/errors.js';
import type { VariableMetadata } from '../core/variable-metadata.js';
import { assertDefinition, sameLayout } from '../core/variable-rules.js';
import { BUSY } from './busy.js';
import type { DirEntry, Directory } from './directory.js';
import { DATA_ALIGN, E, ENTRY_LIVE, ENTRY_REMOVED, ENTRY_SIZE, H, alignUp, entryOffset, grownCapacity } from './file-format.js';
import { freedOffset } from './free-space.js';
import { I32, I64, type FileMapping } from './file-mapping.js';
import { directoryFull, type LayoutRecords } from './layout-records.js';
import { OWN_PID, type LockWord } from './process-lock.js';
import type { WakeUps } from './wake-up.js';
import type { WriterLocks } from './writer-lock.js';

/** The registration lock: its pid word and the start-time word of its holder, in the header. */
const REG_WORD: LockWord = { lockIdx: I32(H.REG_LOCK), lockStartIdx: I32(H.REG_LOCK_START) };

/**
 * Adding a variable to the directory, under the registration lock: re-read the directory (the same layout
 * registered already is a no-op), place the variable (in space a removed one freed, else at the end), grow
 * the file if needed, write the entry, then publish it with one atomic store of the count (docs/file-format.md,
 * Registration). And removing one, under the same lock (Removal).
 */
export class Registrar {
  constructor(
    private readonly file: FileMapping,
    private readonly directory: Directory,
    private readonly layouts: LayoutRecords,
    private readonly locks: WriterLocks,
    private readonly wakeUps: WakeUps,
    private readonly maxVariableSize: number,
  ) {}

  /** Registers a variable (idempotent for the same layout); returns its entry. Waits for the registration lock. */
  register(meta: VariableMetadata): DirEntry {
    const want = this.checkDefinition(meta);
    const known = this.known(want);
    if (known !== undefined) return known;
    this.locks.acquireWord(REG_WORD, `the directory of ${this.file.label}`);
    return this.registerLocked(want);
  }

  /**
   * register() without waiting: BUSY at once if a live process holds the registration lock (a gone holder's
   * lock is taken over after staleMs of holding, counted across calls). For the server's event loop.
   */
  tryRegister(meta: VariableMetadata): DirEntry | typeof BUSY {
    const want = this.checkDefinition(meta);
    const known = this.known(want);
    if (known !== undefined) return known;
    if (!this.locks.tryTake(REG_WORD)) return BUSY;
    return this.registerLocked(want);
  }

  /** Removes a variable (VARIABLE_NOT_FOUND if there is none); returns the removal's version. Waits for the locks. */
  remove(name: string): bigint {
    const entry = this.removable(name);
    this.locks.acquireWord(REG_WORD, `the directory of ${this.file.label}`);
    return this.removeLocked(entry.meta.name, (e) => (this.locks.acquire(e), true)) as bigint;
  }

  /** remove() without waiting: BUSY at once if a live process holds the registration lock or the variable's writer lock. */
  tryRemove(name: string): bigint | typeof BUSY {
    const entry = this.removable(name);
    if (!this.locks.tryTake(REG_WORD)) return BUSY;
    return this.removeLocked(entry.meta.name, (e) => this.locks.tryLock(e));
  }

  private removable(name: string): DirEntry {
    this.file.assertOpen();
    const entry = this.directory.entry(name);
    this.file.assertWritable();
    return entry;
  }

  /**
   * Holding the registration lock: takes the variable's writer lock (so no write is half done, and none that
   * began before can land after), zeroes its bytes under the seqlock, stores `removed` and the removal's
   * version, bumps the layout generation, wakes the watchers. The slot stays a tombstone; its space is freed.
   */
  private removeLocked(name: string, lock: (e: DirEntry) => boolean): bigint | typeof BUSY {
    const file = this.file;
    try {
      this.directory.refresh();
      const entry = this.directory.entry(name);
      if (!lock(entry)) return BUSY;
      const seq = Atomics.load(file.i32, entry.seqIdx) + 1;
      Atomics.store(file.i32, entry.seqIdx, seq);
      file.u8.fill(0, entry.at, entry.at + entry.meta.size);
      Atomics.store(file.i32, entry.stateIdx, ENTRY_REMOVED);
      const version = file.nextVersion();
      Atomics.store(file.b64, entry.versionIdx, version);
      Atomics.store(file.i32, entry.lastWriterIdx, OWN_PID);
      Atomics.store(file.i32, entry.seqIdx, seq + 1);
      this.locks.unlock(entry);
      Atomics.add(file.i32, I32(H.LAYOUT_GEN), 1);
      this.directory.refresh();
      this.wakeUps.schedule();
      return version;
    } finally {
      this.locks.releaseWord(REG_WORD);
    }
  }

  /** The shared definition rules (variable-rules.ts), and the one only this file knows: it must fit the file. */
  private checkDefinition(meta: VariableMetadata): VariableMetadata {
    assertDefinition(meta, this.maxVariableSize);
    if (meta.offset !== -1 && this.file.dataStart + meta.offset + meta.size > this.file.info.maxFileSize) {
      throw new CommyError(ErrorCode.INVALID_OFFSET, `[${meta.offset}, ${meta.offset + meta.size}) lies past the service file size limit`);
    }
    return meta;
  }

  /** The entry if `want` is registered already (same layout, else TYPE_MISMATCH/INVALID_OFFSET); checks writability otherwise. */
  private known(want: VariableMetadata): DirEntry | undefined {
    this.file.assertOpen();
    this.directory.refresh();
    const known = this.directory.cached(want.name);
    if (known !== undefined) return sameEntry(known, want);
    this.file.assertWritable(); // a known variable with the same layout is a no-op even read-only; a new one is not
    return undefined;
  }

  /** Holding the registration lock: publishes `want` unless someone else just did, then lets go of the lock. */
  private registerLocked(want: VariableMetadata): DirEntry {
    try {
      this.directory.refresh();
      if (this.directory.cached(want.name) === undefined) this.publish(want);
    } finally {
      this.locks.releaseWord(REG_WORD);
    }
    return sameEntry(this.directory.entry(want.name), want);
  }

  /** Under the registration lock: place, grow, write the entry, then publish it with one atomic store. */
  private publish(want: VariableMetadata): void {
    const file = this.file;
    const index = this.directory.count;
    if (index >= file.info.maxVariables - this.layouts.publishedSlots()) throw directoryFull(file);
    const dataEnd = file.checkedDataEnd();
    const offset = want.offset !== -1 ? want.offset : (freedOffset(this.directory.slots(), want.size, DATA_ALIGN) ?? alignUp(dataEnd, DATA_ALIGN));
    const end = offset + want.size;
    if (want.offset !== -1) this.assertNoOverlap(offset, end);
    else if (file.dataStart + end > file.info.maxFileSize) {
      throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `${file.label} is full: ${want.size} more bytes exceed its ${file.info.maxFileSize}-byte limit`);
    }
    // A struct's layout record is published (if new) before the entry that names it.
    const layout = want.fields === undefined ? 0 : this.layouts.place(want.fields, index);
    this.ensureCapacity(end);
    const base = entryOffset(index);
    this.writeEntry(base, want, offset, layout);
    // The new variable's region may hold bytes a crashed registration left: start it at zero.
    file.u8.fill(0, file.dataStart + offset, file.dataStart + end);
    Atomics.store(file.b64, I64(base + E.VERSION), file.nextVersion());
    Atomics.store(file.i32, I32(base + E.LAST_WRITER), OWN_PID);
    Atomics.store(file.i32, I32(base + E.STATE), ENTRY_LIVE);
    if (end > dataEnd) Atomics.store(file.b64, I64(H.DATA_END), BigInt(end));
    Atomics.store(file.i32, I32(H.VAR_COUNT), index + 1);
    Atomics.add(file.i32, I32(H.LAYOUT_GEN), 1);
    this.directory.refresh();
    this.wakeUps.schedule();
  }

  /** The entry's fixed fields, into a slot nobody reads yet (the count does not include it). */
  private writeEntry(base: number, want: VariableMetadata, offset: number, layout: number): void {
    const { u8, view } = this.file;
    u8.fill(0, base, base + ENTRY_SIZE);
    view.setUint32(base + E.OFFSET, offset, true);
    view.setUint32(base + E.SIZE, want.size, true);
    view.setUint8(base + E.TYPE_ID, want.typeId);
    view.setUint32(base + E.LAYOUT, layout, true);
    view.setUint8(base + E.NAME_LEN, want.name.length);
    u8.set(Buffer.from(want.name, 'latin1'), base + E.NAME);
  }

  private assertNoOverlap(start: number, end: number): void {
    for (const e of this.directory.list()) {
      if (start < e.meta.end && e.meta.offset < end) {
        throw new CommyError(ErrorCode.INVALID_OFFSET, `[${start}, ${end}) overlaps ${e.meta.name} at [${e.meta.offset}, ${e.meta.end})`);
      }
    }
  }

  /** Grows the file (never shrinks it) so the data region holds `end` bytes; other processes need no remap. */
  private ensureCapacity(end: number): void {
    const file = this.file;
    const capacity = file.checkedDataCapacity();
    if (end <= capacity) return;
    const next = grownCapacity(capacity, end, file.info.maxFileSize - file.dataStart);
    file.extendTo(file.dataStart + next);
    Atomics.store(file.b64, I64(H.DATA_CAPACITY), BigInt(next));
    Atomics.add(file.i32, I32(H.LAYOUT_GEN), 1);
  }
}

/** `want` is the registered entry's layout (variable-rules sameLayout): the entry, else TYPE_MISMATCH/INVALID_OFFSET. */
function sameEntry(entry: DirEntry, want: VariableMetadata): DirEntry {
  sameLayout(entry.meta, want);
  return entry;
}
