import { fstatSync } from 'node:fs';
import { CommyError, ErrorCode } from '../core/errors.js';
import { damageCount, native } from '../native/addon.js';
import { H, type HeaderInfo } from './file-format.js';
import { closeQuietly, growFile, type OpenedFile } from './file-open.js';

export const I32 = (byteOffset: number): number => byteOffset >> 2;
export const I64 = (byteOffset: number): number => byteOffset >> 3;

/**
 * A service file mapped into this process: the one mapping (maxFileSize bytes, made once, never remapped),
 * typed views over it, and the guards every operation goes through: closed, damaged by a truncation
 * (native/sigbus.cc), read-only. Also the header words read and written as a whole: the service version and
 * the data region's checked capacity and end. The format's rules on top of it are in the modules that
 * ServiceFile composes.
 */
export class FileMapping {
  readonly path: string;
  /** How errors name this file (ServiceFileOptions.label; default the path). */
  readonly label: string;
  readonly info: HeaderInfo;
  readonly dataStart: number;
  /** Mapped PROT_READ (see ServiceFileOptions.readOnly): every mutator throws PERMISSION_DENIED. */
  readonly readOnly: boolean;
  /** The whole mapping: maxFileSize bytes, of which only the file's current size may be touched. */
  readonly buffer: ArrayBuffer;
  readonly i32: Int32Array;
  readonly b64: BigUint64Array;
  readonly u8: Uint8Array;
  readonly view: DataView;
  private fd: number;
  private closedFlag = false;
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

  protected constructor(opened: OpenedFile, info: HeaderInfo, readOnly: boolean) {
    this.path = opened.path;
    this.label = opened.label;
    this.fd = opened.fd;
    this.info = info;
    this.dataStart = info.dataStart;
    this.readOnly = readOnly;
    this.damageMark = this.damage[0]!; // a one-word array
    // PROT_READ for a read-only file: a stray write would be SIGSEGV, so no method ever makes one.
    this.buffer = native.map(opened.fd, info.maxFileSize, !readOnly);
    this.i32 = new Int32Array(this.buffer);
    this.b64 = new BigUint64Array(this.buffer);
    this.u8 = new Uint8Array(this.buffer);
    this.view = new DataView(this.buffer);
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /**
   * PERMISSION_DENIED on a read-only mapping. Every method that stores into the mapping calls this first:
   * a store into PROT_READ memory is SIGSEGV, a crash of the whole process, never an error we could catch.
   */
  assertWritable(): void {
    if (this.readOnly) throw new CommyError(ErrorCode.PERMISSION_DENIED, `${this.label} is a read-only mapping: it cannot be changed from here`);
  }

  /**
   * Throws NOT_CONNECTED once the file is closed (use after close must never touch unmapped memory), and
   * INVALID_FILE once the mapping is known to be damaged. Every operation starts here; those that touch the
   * mapping also call assertIntact after they did, which is what finds out about new damage.
   */
  assertOpen(): void {
    if (this.unusable) this.throwUnusable();
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

  /** The open file's descriptor (for an fdatasync off the event loop: server/durability.ts). CLOSED once closed. */
  get descriptor(): number {
    this.assertOpen();
    return this.fd;
  }

  /** INVALID_FILE naming this file: what another process wrote into it cannot be right. */
  corrupt(why: string): CommyError {
    return new CommyError(ErrorCode.INVALID_FILE, `${this.label}: ${why}`);
  }

  get version(): bigint {
    this.assertOpen();
    const version = Atomics.load(this.b64, I64(H.VERSION));
    this.assertIntact();
    return version;
  }

  /** +1 on the service version, for a change or a registration: the new version, which the entry records. */
  nextVersion(): bigint {
    return Atomics.add(this.b64, I64(H.VERSION), 1n) + 1n;
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
    const size = this.fileSize();
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

  /** The file's length now (fstat): the only bytes of the mapping that may be touched. */
  fileSize(): number {
    return fstatSync(this.fd).size;
  }

  /** Lengthens the file to `fileSize` bytes unless it is that long already (never shrinks it); no remap needed. */
  extendTo(fileSize: number): void {
    if (this.fileSize() < fileSize) growFile(this.fd, this.label, fileSize);
  }

  /**
   * A view of the data region as the file holds it now (it grows; take a new one after registering). On a
   * read-only mapping, a **copy**: a view over PROT_READ memory would turn a user's raw write into SIGSEGV.
   * Its length is checkedDataCapacity().
   */
  dataBytes(): Uint8Array {
    const view = new Uint8Array(this.buffer, this.dataStart, this.checkedDataCapacity());
    if (!this.readOnly) return view;
    const copy = view.slice();
    this.assertIntact();
    return copy;
  }

  /** msync(2) of the header, directory and data region; `sync` waits for the disk (MS_SYNC). */
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
  }

  private throwUnusable(): never {
    if (this.closedFlag) throw new CommyError(ErrorCode.NOT_CONNECTED, `service file ${this.label} is closed`);
    throw this.damagedError();
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
}
