import { CommyError, ErrorCode } from '../core/errors.js';
import { isValidName } from '../core/names.js';
import { codecOf } from '../core/struct-codec.js';
import type { ValueCodec } from '../core/value-codec.js';
import { VariableMetadata } from '../core/variable-metadata.js';
import type { StructField } from '../core/struct-layout.js';
import { definitionProblem } from '../core/variable-rules.js';
import { VariableType, type VariableTypeId } from '../core/variable-type.js';
import { E, ENTRY_LIVE, ENTRY_REMOVED, H, entryOffset } from './file-format.js';
import { I32, I64, type FileMapping } from './file-mapping.js';
import type { LayoutRecords } from './layout-records.js';

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
  readonly stateIdx: number; // Int32Array index
  /** This process has seen the entry's state turn to removed (the file's word is the truth: see assertLive). */
  removed: boolean;
}

/**
 * Every read and write checks, after its seqlock or under its writer lock, that the variable still exists: a
 * handle held across a removal (by any process) gets VARIABLE_NOT_FOUND, never the bytes of whatever reuses
 * the space. One atomic load.
 */
export function assertLive(i32: Int32Array, entry: DirEntry, label: string): void {
  if (Atomics.load(i32, entry.stateIdx) !== ENTRY_LIVE) throw removedError(entry, label);
}

export function removedError(entry: DirEntry, label: string): CommyError {
  return new CommyError(ErrorCode.VARIABLE_NOT_FOUND, `variable ${JSON.stringify(entry.meta.name)} was removed from ${label}`);
}

/**
 * The variable directory as this process has read it. Slots are only ever appended (published by one atomic
 * store of the count) and never reused: a removed variable keeps its slot as a tombstone, so a directory index
 * names one variable for the file's whole life. The cache grows by reading the new slots, and sweeps the
 * states of the known ones whenever the layout generation moved (a removal bumps it). Each slot is checked as
 * it is read, since any process that can write the file can write anything into it.
 */
export class Directory {
  private readonly entries: DirEntry[] = [];
  private readonly byName = new Map<string, DirEntry>();
  private live: DirEntry[] | undefined = [];
  private seenGeneration = -1;

  constructor(
    private readonly file: FileMapping,
    private readonly layouts: LayoutRecords,
  ) {}

  /** Slots cached so far (no refresh): where the next registration goes. */
  get count(): number {
    return this.entries.length;
  }

  /** Picks up what other processes have published since the last look: new slots, and removals. */
  refresh(): void {
    const file = this.file;
    file.assertOpen();
    const count = Atomics.load(file.i32, I32(H.VAR_COUNT)) >>> 0; // a u32: a corrupt one reads as itself, not negative
    // Read after the count: a removal bumps the generation before a later registration publishes its slot.
    const generation = Atomics.load(file.i32, I32(H.LAYOUT_GEN));
    file.assertIntact();
    if (generation !== this.seenGeneration) {
      this.seenGeneration = generation;
      this.sweep();
    }
    if (count === this.entries.length) return;
    // The layout records (read after the count: they are published before the entries that name them).
    if (count < this.entries.length || count > file.info.maxVariables - Math.min(this.layouts.publishedSlots(), file.info.maxVariables)) {
      throw file.corrupt(`directory count ${count} is corrupt`);
    }
    const capacity = file.checkedDataCapacity();
    try {
      for (let i = this.entries.length; i < count; i++) {
        const entry = this.readEntry(i, capacity, count);
        file.assertIntact(); // an entry read from a damaged page is all zeros: say why, not "corrupt"
        this.entries.push(entry);
        if (!entry.removed) this.byName.set(entry.meta.name, entry);
      }
    } catch (err) {
      file.assertIntact();
      throw err;
    } finally {
      this.live = undefined;
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

  /** The cached live entry for `name`, if any (no refresh). */
  cached(name: string): DirEntry | undefined {
    return this.byName.get(name);
  }

  /** Live entries in directory order (refreshed). */
  list(): readonly DirEntry[] {
    this.refresh();
    return (this.live ??= this.entries.filter((e) => !e.removed));
  }

  /** Every slot in directory order, removed ones included: `slots()[i].index === i` (refreshed). */
  slots(): readonly DirEntry[] {
    this.refresh();
    return this.entries;
  }

  /** The live entry at directory `index` (no refresh). */
  entryAt(index: number): DirEntry | undefined {
    const entry = this.entries[index];
    return entry === undefined || entry.removed ? undefined : entry;
  }

  /** The state of every known live slot, from the file: removals other processes made since the last look. */
  private sweep(): void {
    const i32 = this.file.i32;
    for (const e of this.entries) {
      if (e.removed) continue;
      const state = Atomics.load(i32, e.stateIdx);
      if (state === ENTRY_LIVE) continue;
      if (state !== ENTRY_REMOVED) throw this.file.corrupt(`directory entry ${e.index} is corrupt`);
      this.forget(e);
    }
  }

  private forget(e: DirEntry): void {
    e.removed = true;
    if (this.byName.get(e.meta.name) === e) this.byName.delete(e.meta.name);
    this.live = undefined;
  }

  /**
   * Slot `index` as the mapping holds it, checked: INVALID_FILE unless it is a well-formed variable (live or
   * removed) inside `capacity`, a struct's with a well-formed layout record (`count`: the published slots).
   */
  private readEntry(index: number, capacity: number, count: number): DirEntry {
    const file = this.file;
    const base = entryOffset(index);
    const v = file.view;
    const nameLen = v.getUint8(base + E.NAME_LEN);
    const name = Buffer.from(file.buffer, base + E.NAME, Math.min(nameLen, 64)).toString('latin1');
    const typeId = v.getUint8(base + E.TYPE_ID) as VariableTypeId;
    const fields = typeId === VariableType.Struct ? this.layoutOf(index, v.getUint32(base + E.LAYOUT, true), count) : undefined;
    const meta = new VariableMetadata(name, v.getUint32(base + E.OFFSET, true), v.getUint32(base + E.SIZE, true), typeId, fields);
    const state = Atomics.load(file.i32, I32(base + E.STATE));
    const known = state === ENTRY_LIVE ? this.byName.get(name) : undefined;
    // A live name cached from a slot removed since (the sweep has not run): that slot is the tombstone now.
    if (known !== undefined && Atomics.load(file.i32, known.stateIdx) === ENTRY_REMOVED) this.forget(known);
    const ok =
      (state === ENTRY_LIVE || state === ENTRY_REMOVED) &&
      isValidName(name) &&
      definitionProblem(meta) === undefined &&
      meta.end <= capacity &&
      (state === ENTRY_REMOVED || !this.byName.has(name));
    if (!ok) throw file.corrupt(`directory entry ${index} is corrupt`);
    return {
      index,
      meta,
      codec: codecOf(meta),
      at: file.dataStart + meta.offset,
      lockIdx: I32(base + E.LOCK),
      lockStartIdx: I32(base + E.LOCK_START),
      lastWriterIdx: I32(base + E.LAST_WRITER),
      seqIdx: I32(base + E.SEQ),
      flagsIdx: I32(base + E.FLAGS),
      versionIdx: I64(base + E.VERSION),
      stateIdx: I32(base + E.STATE),
      removed: state === ENTRY_REMOVED,
    };
  }

  private layoutOf(index: number, ref: number, count: number): readonly StructField[] {
    const fields = this.layouts.read(ref, count);
    if (fields === undefined) throw this.file.corrupt(`the layout of directory entry ${index} is corrupt`);
    return fields;
  }
}
