import { CommyError, ErrorCode } from '../core/errors.js';
import { describeFields, fieldsProblem, MAX_STRUCT_FIELDS, type StructField } from '../core/struct-layout.js';
import type { VariableTypeId } from '../core/variable-type.js';
import { ENTRY_SIZE, FORMAT_VERSION, H, STRUCT_FORMAT_VERSION, entryOffset } from './file-format.js';
import { I32, type FileMapping } from './file-mapping.js';

/**
 * Struct layouts in a service file (docs/file-format.md, "Struct layouts"). A 128-byte directory entry cannot
 * hold a layout, so layouts live in *layout records* at the top of the directory, stacked downward from slot
 * maxVariables − 1 while variables are appended upward from slot 0; the header's LAYOUT_SLOTS counts the slots
 * they take, and a Struct entry names the first slot of its record (E.LAYOUT). A record is written once, before
 * the entry that names it is published, and never changes, moves or is freed (a removed struct's tombstone
 * still names it). Entries with the same layout share one record: 10,000 `Position.<entity>` cost one.
 *
 *   u32 record length in bytes (this header included) · u16 field count · u16 0
 *   per field: u8 type id · u8 name length · u32 size · name (ASCII)
 *
 * Like everything in the file, a record is checked when read: inside the published area, above the variables,
 * a well-formed layout (struct-layout.ts rules).
 */
const RECORD_HEAD = 8;
const FIELD_HEAD = 6;
/** The longest record: 64 fields of 64-character names. */
const MAX_RECORD_BYTES = RECORD_HEAD + MAX_STRUCT_FIELDS * (FIELD_HEAD + 64);

export function encodeLayout(fields: readonly StructField[]): Buffer {
  const length = fields.reduce((n, f) => n + FIELD_HEAD + f.name.length, RECORD_HEAD);
  const out = Buffer.alloc(length);
  out.writeUInt32LE(length, 0);
  out.writeUInt16LE(fields.length, 4);
  let at = RECORD_HEAD;
  for (const f of fields) {
    out.writeUInt8(f.typeId, at);
    out.writeUInt8(f.name.length, at + 1);
    out.writeUInt32LE(f.size, at + 2);
    at += FIELD_HEAD + out.write(f.name, at + FIELD_HEAD, 'latin1');
  }
  return out;
}

/** The fields a record holds, or undefined when it is not a well-formed layout. */
export function decodeLayout(record: Buffer): StructField[] | undefined {
  if (record.length < RECORD_HEAD || record.readUInt32LE(0) !== record.length || record.readUInt16LE(6) !== 0) return undefined;
  const count = record.readUInt16LE(4);
  if (count > MAX_STRUCT_FIELDS) return undefined;
  const fields: StructField[] = [];
  let at = RECORD_HEAD;
  for (let i = 0; i < count; i++) {
    if (at + FIELD_HEAD > record.length) return undefined;
    const nameLength = record.readUInt8(at + 1);
    const end = at + FIELD_HEAD + nameLength;
    if (end > record.length) return undefined;
    const typeId = record.readUInt8(at) as VariableTypeId;
    fields.push({ name: record.toString('latin1', at + FIELD_HEAD, end), typeId, size: record.readUInt32LE(at + 2) });
    at = end;
  }
  return at === record.length && fieldsProblem(fields) === undefined ? fields : undefined;
}

function slotsFor(bytes: number): number {
  return Math.ceil(bytes / ENTRY_SIZE);
}

/** One key per layout, for finding a record to share. */
function keyOf(fields: readonly StructField[]): string {
  return describeFields(fields);
}

/** The layout records of one mapping: those read (checked, cached by slot), and placing new ones. */
export class LayoutRecords {
  private readonly byRef = new Map<number, readonly StructField[]>();
  private readonly byKey = new Map<string, number>();

  constructor(private readonly file: FileMapping) {}

  /** Directory slots the published records take (at the top of the directory). */
  publishedSlots(): number {
    return Atomics.load(this.file.i32, I32(H.LAYOUT_SLOTS)) >>> 0;
  }

  /**
   * The fields of the record starting at slot `ref`, or undefined unless it is a well-formed record inside the
   * published area and above the `varCount` variable slots. Read the count before calling: the area is
   * published before any entry that names a record in it.
   */
  read(ref: number, varCount: number): readonly StructField[] | undefined {
    const known = this.byRef.get(ref);
    if (known !== undefined) return known;
    const { maxVariables } = this.file.info;
    const lowest = maxVariables - Math.min(this.publishedSlots(), maxVariables);
    if (ref < lowest || ref < varCount || ref >= maxVariables) return undefined;
    const base = entryOffset(ref);
    const limit = entryOffset(maxVariables);
    const length = this.file.view.getUint32(base, true);
    if (length > MAX_RECORD_BYTES || base + length > limit) return undefined;
    // One private copy, then decoded: the mapping may change under a decode (any process can write it).
    const fields = decodeLayout(Buffer.from(this.file.u8.slice(base, base + length)));
    if (fields === undefined) return undefined;
    const frozen = Object.freeze(fields.map((f) => Object.freeze(f)));
    this.remember(ref, frozen);
    return frozen;
  }

  /**
   * Under the registration lock, with the directory refreshed: the first slot of a record of `fields`, one this
   * process has read, or a new one written below the published area and published (the file becomes version
   * 3). The variable's own slot, `index`, must stay below it: VALUE_TOO_LARGE when the directory is full.
   */
  place(fields: readonly StructField[], index: number): number {
    const found = this.byKey.get(keyOf(fields));
    if (found !== undefined) return found;
    const file = this.file;
    const record = encodeLayout(fields);
    const used = this.publishedSlots();
    const start = file.info.maxVariables - used - slotsFor(record.length);
    if (start <= index) throw directoryFull(file);
    if (file.view.getUint32(H.FORMAT_VERSION, true) === FORMAT_VERSION) file.view.setUint32(H.FORMAT_VERSION, STRUCT_FORMAT_VERSION, true);
    const base = entryOffset(start);
    file.u8.fill(0, base, base + slotsFor(record.length) * ENTRY_SIZE);
    file.u8.set(record, base);
    Atomics.store(file.i32, I32(H.LAYOUT_SLOTS), used + slotsFor(record.length));
    this.remember(start, Object.freeze(fields.map((f) => Object.freeze({ ...f }))));
    return start;
  }

  private remember(ref: number, fields: readonly StructField[]): void {
    this.byRef.set(ref, fields);
    const key = keyOf(fields);
    if (!this.byKey.has(key)) this.byKey.set(key, ref);
  }
}

/** No slot left for a variable (or its layout) between the variables and the layout records. */
export function directoryFull(file: FileMapping): CommyError {
  return new CommyError(ErrorCode.VALUE_TOO_LARGE, `${file.label} already holds its maximum of ${file.info.maxVariables} variables (struct layouts included)`);
}
