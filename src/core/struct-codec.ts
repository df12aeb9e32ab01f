import { CommyError, ErrorCode } from './errors.js';
import type { StructField } from './struct-layout.js';
import { codecFor, type ValueCodec } from './value-codec.js';
import type { VariableMetadata } from './variable-metadata.js';
import { VariableType, type ScalarValue, type StructValue } from './variable-type.js';

/** One field of a struct codec: where it starts in the struct's bytes, and its own codec. */
interface PlacedField {
  readonly name: string;
  readonly at: number;
  readonly codec: ValueCodec;
}

/** The codec of any variable: its struct layout's, or its type's. */
export function codecOf(meta: VariableMetadata): ValueCodec {
  return meta.fields !== undefined && meta.typeId === VariableType.Struct ? structCodec(meta.fields) : codecFor(meta.typeId, meta.size);
}

/**
 * Typed access to a struct (fields already validated, core/struct-layout.ts). `check` takes a plain object with
 * exactly the struct's fields and checks every one before anything is stored (a missing or extra field is
 * TYPE_MISMATCH; a field's own check says TYPE_MISMATCH or VALUE_TOO_LARGE, naming the field). `load` decodes
 * every field from the view it is given, so it is consistent whenever the view is: a private buffer (remote), or
 * the mapping inside one seqlock read, whose closing check covers every field's load (a write in between makes
 * the whole read retry). So a struct read is never torn, like any value.
 */
export function structCodec(fields: readonly StructField[]): ValueCodec {
  const placed: PlacedField[] = [];
  let size = 0;
  for (const f of fields) {
    placed.push({ name: f.name, at: size, codec: codecFor(f.typeId, f.size) });
    size += f.size;
  }
  const names = new Set(fields.map((f) => f.name));
  return {
    typeId: VariableType.Struct,
    size,
    check: (value) => checkStruct(placed, names, value),
    store(view, offset, checked) {
      const values = checked as unknown[];
      for (let i = 0; i < placed.length; i++) placed[i]!.codec.store(view, offset + placed[i]!.at, values[i]);
    },
    load(view, offset) {
      const out: StructValue = {};
      for (const f of placed) out[f.name] = f.codec.load(view, offset + f.at) as ScalarValue;
      return out;
    },
  };
}

/** The checked value of every field, in layout order (what store takes); throws before anything is written. */
function checkStruct(placed: readonly PlacedField[], names: ReadonlySet<string>, value: unknown): unknown[] {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || ArrayBuffer.isView(value)) {
    throw new CommyError(ErrorCode.TYPE_MISMATCH, `a Struct variable takes an object of its fields (${[...names].join(', ')}), not ${describe(value)}`);
  }
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (!names.has(key)) throw new CommyError(ErrorCode.TYPE_MISMATCH, `the struct has no field ${JSON.stringify(key)}`);
  }
  return placed.map((f) => {
    // Own properties only: `constructor` must not be found on Object.prototype.
    if (!Object.hasOwn(record, f.name)) throw new CommyError(ErrorCode.TYPE_MISMATCH, `the field ${f.name} is missing`);
    try {
      return f.codec.check(record[f.name]);
    } catch (err) {
      if (!(err instanceof CommyError)) throw err;
      throw new CommyError(err.code, `field ${f.name}: ${err.message}`, { cause: err });
    }
  });
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (ArrayBuffer.isView(value)) return 'a byte array';
  return `a ${typeof value}`;
}
