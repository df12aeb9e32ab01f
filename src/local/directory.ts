import { CommyError, ErrorCode } from '../core/errors.js';
import { isValidName } from '../core/names.js';
import { codecFor, type ValueCodec } from '../core/value-codec.js';
import { VariableMetadata } from '../core/variable-metadata.js';
import { definitionProblem } from '../core/variable-rules.js';
import type { VariableTypeId } from '../core/variable-type.js';
import { E, ENTRY_LIVE, H, entryOffset } from './file-format.js';
import { I32, I64, type FileMapping } from './file-mapping.js';

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

/**
 * The variable directory as this process has read it. Entries are only ever appended (published by one atomic
 * store of the count), so the cache grows by reading the new ones; each is checked as it is read, since any
 * process that can write the file can write anything into it.
 */
export class Directory {
  private readonly entries: DirEntry[] = [];
  private readonly byName = new Map<string, DirEntry>();

  constructor(private readonly file: FileMapping) {}

  /** Entries cached so far (no refresh): where the next registration goes. */
  get count(): number {
    return this.entries.length;
  }

  /** Picks up entries other processes have published since the last look. */
  refresh(): void {
    const file = this.file;
    file.assertOpen();
    const count = Atomics.load(file.i32, I32(H.VAR_COUNT)) >>> 0; // a u32: a corrupt one reads as itself, not negative
    file.assertIntact();
    if (count === this.entries.length) return;
    if (count < this.entries.length || count > file.info.maxVariables) {
      throw file.corrupt(`directory count ${count} is corrupt`);
    }
    const capacity = file.checkedDataCapacity();
    try {
      for (let i = this.entries.length; i < count; i++) {
        const entry = this.readEntry(i, capacity);
        file.assertIntact(); // an entry read from a damaged page is all zeros: say why, not "corrupt"
        this.entries.push(entry);
        this.byName.set(entry.meta.name, entry);
      }
    } catch (err) {
      file.assertIntact();
      throw err;
    }
  }

  /** The entry for `name`, or VARIABLE_NOT_FOUND (after checking for entries other processes added). */
  entry(name: string): DirEntry {
    const found = this.byName.get(name);
    if (found !== undefined) return found;
    this.refresh();
    const again = this.byName.get(name);
    if (again !== undefined) return again;
    throw new CommyError(ErrorCode.VARIABLE_NOT_FOUND, `no variable ${JSON.stringify(name)} in ${this.file.label}`);
  }

  /** The cached entry for `name`, if any (no refresh). */
  cached(name: string): DirEntry | undefined {
    return this.byName.get(name);
  }

  /** Entries in directory order (refreshed). */
  list(): readonly DirEntry[] {
    this.refresh();
    return this.entries;
  }

  entryAt(index: number): DirEntry | undefined {
    return this.entries[index];
  }

  /** Entry `index` as the mapping holds it, checked: INVALID_FILE unless it is a live, well-formed variable inside `capacity`. */
  private readEntry(index: number, capacity: number): DirEntry {
    const file = this.file;
    const base = entryOffset(index);
    const v = file.view;
    const nameLen = v.getUint8(base + E.NAME_LEN);
    const name = Buffer.from(file.buffer, base + E.NAME, Math.min(nameLen, 64)).toString('latin1');
    const meta = new VariableMetadata(name, v.getUint32(base + E.OFFSET, true), v.getUint32(base + E.SIZE, true), v.getUint8(base + E.TYPE_ID) as VariableTypeId);
    const ok =
      Atomics.load(file.i32, I32(base + E.STATE)) === ENTRY_LIVE &&
      isValidName(name) &&
      definitionProblem(meta) === undefined &&
      meta.end <= capacity &&
      !this.byName.has(name);
    if (!ok) throw file.corrupt(`directory entry ${index} is corrupt`);
    return {
      index,
      meta,
      codec: codecFor(meta.typeId, meta.size),
      at: file.dataStart + meta.offset,
      lockIdx: I32(base + E.LOCK),
      lockStartIdx: I32(base + E.LOCK_START),
      lastWriterIdx: I32(base + E.LAST_WRITER),
      seqIdx: I32(base + E.SEQ),
      flagsIdx: I32(base + E.FLAGS),
      versionIdx: I64(base + E.VERSION),
    };
  }
}
