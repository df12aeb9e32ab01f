import { CommyError, ErrorCode } from './errors.js';
import { isValidName } from './names.js';
import { VariableType, fixedSizeOf, isVariableTypeId, typeName, type VariableTypeId } from './variable-type.js';

/**
 * A struct variable's layout: named fields packed in the declared order, no padding, little-endian. The
 * layout is part of the variable's definition: stored in the service file, sent with every definition on the
 * wire, and checked wherever it comes from (a file or a peer may say anything).
 */

/** One field as stored and sent: its name, its type and its size in bytes. */
export interface StructField {
  readonly name: string;
  readonly typeId: VariableTypeId;
  readonly size: number;
}

/** How a field is declared: a fixed-size type id, or `{ type, size }` (String and Bytes need their size). */
export type StructFieldSpec = VariableTypeId | { readonly type: VariableTypeId; readonly size?: number };

/** The fields of `VariableMetadata.struct(name, spec)`, in declaration order: `{ x: VariableType.F64, … }`. */
export type StructSpec = Readonly<Record<string, StructFieldSpec>>;

/** At most this many fields per struct (a layout is read from files and peers: it must stay small). */
export const MAX_STRUCT_FIELDS = 64;

/** A struct's size never exceeds what a directory entry's u32 can hold. */
const MAX_STRUCT_SIZE = 0xffffffff;

/** All digits: JavaScript orders such keys first in an object, so the declared order could not be kept. */
const INDEX_LIKE = /^[0-9]+$/;

/** The fields a spec declares, in its order; TYPE_MISMATCH, INVALID_NAME or VALUE_TOO_LARGE when it cannot be a layout. */
export function structFields(spec: StructSpec): StructField[] {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    throw new CommyError(ErrorCode.TYPE_MISMATCH, 'a struct is declared as an object of fields: { x: VariableType.F64, name: { type: VariableType.String, size: 16 } }');
  }
  const names = Object.keys(spec);
  if (names.length > MAX_STRUCT_FIELDS) throw tooManyFields(names.length);
  const fields = names.map((name) => fieldOf(name, spec[name]));
  const problem = fieldsProblem(fields);
  if (problem !== undefined) throw problem;
  return fields;
}

function fieldOf(name: string, spec: StructFieldSpec | undefined): StructField {
  if (typeof spec === 'number') return { name, typeId: spec, size: fixedSizeOf(spec) ?? 0 };
  if (typeof spec === 'object' && spec !== null) {
    const { type, size } = spec;
    return { name, typeId: type, size: size ?? (isVariableTypeId(type) ? (fixedSizeOf(type) ?? 0) : 0) };
  }
  throw new CommyError(ErrorCode.TYPE_MISMATCH, `field ${name}: declare a type id or { type, size }`);
}

/** Why `fields` cannot be a struct's layout (count, names, types, sizes), or undefined when they can. */
export function fieldsProblem(fields: readonly StructField[]): CommyError | undefined {
  if (fields.length === 0) return new CommyError(ErrorCode.TYPE_MISMATCH, 'a struct needs at least one field');
  if (fields.length > MAX_STRUCT_FIELDS) return tooManyFields(fields.length);
  const seen = new Set<string>();
  let total = 0;
  for (const field of fields) {
    const problem = fieldProblem(field) ?? (seen.has(field.name) ? new CommyError(ErrorCode.INVALID_NAME, `field ${field.name} is declared twice`) : undefined);
    if (problem !== undefined) return problem;
    seen.add(field.name);
    total += field.size;
    if (total > MAX_STRUCT_SIZE) return new CommyError(ErrorCode.VALUE_TOO_LARGE, `the fields take more than ${MAX_STRUCT_SIZE} bytes`);
  }
  return undefined;
}

function fieldProblem(field: StructField): CommyError | undefined {
  const { name, typeId, size } = field;
  if (!isValidName(name) || INDEX_LIKE.test(name)) {
    const shown = typeof name === 'string' ? JSON.stringify(name.slice(0, 80)) : typeof name;
    return new CommyError(ErrorCode.INVALID_NAME, `invalid field name ${shown}: 1-64 characters of [A-Za-z0-9._-] starting with a letter or digit, not all digits`);
  }
  if (!isVariableTypeId(typeId) || typeId === VariableType.Struct) {
    return new CommyError(ErrorCode.TYPE_MISMATCH, `field ${name}: a struct field is a scalar, String or Bytes, not ${typeName(Number(typeId))}`);
  }
  if (!Number.isInteger(size) || size < 1 || size > MAX_STRUCT_SIZE) {
    return new CommyError(ErrorCode.TYPE_MISMATCH, `field ${name}: a ${typeName(typeId)} field needs a size (a positive integer): { type, size }`);
  }
  const fixed = fixedSizeOf(typeId);
  if (fixed !== undefined && size !== fixed) return new CommyError(ErrorCode.TYPE_MISMATCH, `field ${name}: a ${typeName(typeId)} is ${fixed} bytes, not ${size}`);
  return undefined;
}

function tooManyFields(count: number): CommyError {
  return new CommyError(ErrorCode.VALUE_TOO_LARGE, `a struct has at most ${MAX_STRUCT_FIELDS} fields, not ${count}`);
}

/** The bytes a struct of these fields takes: the sum of their sizes (packed). */
export function structSize(fields: readonly StructField[]): number {
  let total = 0;
  for (const f of fields) total += f.size;
  return total;
}

/** The same layout: the same fields (name, type, size) in the same order. */
export function sameFields(a: readonly StructField[] | undefined, b: readonly StructField[] | undefined): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined || a.length !== b.length) return false;
  return a.every((f, i) => f.name === b[i]!.name && f.typeId === b[i]!.typeId && f.size === b[i]!.size);
}

/** The layout as one line of text, e.g. `{x: F64, name: String(16)}`: for messages, inspect and hashing. */
export function describeFields(fields: readonly StructField[]): string {
  const one = (f: StructField) => `${f.name}: ${typeName(f.typeId)}${fixedSizeOf(f.typeId) === undefined ? `(${f.size})` : ''}`;
  return `{${fields.map(one).join(', ')}}`;
}

/**
 * An immutable copy of what a caller (or a peer) gave as fields: anything that is not a field object becomes an
 * empty one, for fieldsProblem to refuse. A frozen array of frozen fields is shared as it is (entries with one
 * layout share one array).
 */
export function frozenFields(fields: readonly StructField[]): readonly StructField[] {
  if (!Array.isArray(fields)) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'struct fields are an array of { name, typeId, size }');
  if (Object.isFrozen(fields) && fields.every((f) => Object.isFrozen(f))) return fields;
  const copy = (f: unknown): StructField => {
    const { name, typeId, size } = (typeof f === 'object' && f !== null ? f : {}) as StructField;
    return Object.freeze({ name, typeId, size });
  };
  return Object.freeze(fields.map(copy));
}
