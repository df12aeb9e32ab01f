import { CommyError, ErrorCode } from './errors.js';
import { assertValidName } from './names.js';
import { VariableMetadata } from './variable-metadata.js';
import { describeFields, fieldsProblem, sameFields, structSize } from './struct-layout.js';
import { VariableType, fixedSizeOf, isVariableTypeId, typeName } from './variable-type.js';

/**
 * The rules a variable's definition obeys, in one place for the file, the server and the client:
 * what a definition may say, when a second registration is the same variable, and what fits in it.
 */

/** Why `meta` cannot be a variable of its kind (type, size, offset shape), or undefined when it can. */
export function definitionProblem(meta: VariableMetadata): CommyError | undefined {
  const { typeId, size, offset } = meta;
  if (!isVariableTypeId(typeId)) return new CommyError(ErrorCode.TYPE_MISMATCH, `unknown type id ${String(typeId)}`);
  if (!Number.isInteger(size) || size < 1) {
    return new CommyError(ErrorCode.VALUE_TOO_LARGE, `variable size must be a positive integer, got ${String(size)}`);
  }
  const fixed = fixedSizeOf(typeId);
  if (fixed !== undefined && size !== fixed) {
    return new CommyError(ErrorCode.TYPE_MISMATCH, `a ${typeName(typeId)} variable is ${fixed} bytes, not ${size}`);
  }
  if (offset !== -1 && (!Number.isInteger(offset) || offset < 0)) {
    return new CommyError(ErrorCode.INVALID_OFFSET, `offset must be -1 (allocate) or a non-negative integer, got ${String(offset)}`);
  }
  return layoutProblem(meta);
}

/** A Struct has valid fields whose sizes add up to its size; no other type has fields. */
function layoutProblem(meta: VariableMetadata): CommyError | undefined {
  const { fields } = meta;
  if (meta.typeId !== VariableType.Struct) {
    return fields === undefined ? undefined : new CommyError(ErrorCode.TYPE_MISMATCH, `only a Struct variable has fields, not a ${typeName(meta.typeId)}`);
  }
  if (fields === undefined) return new CommyError(ErrorCode.TYPE_MISMATCH, 'a Struct variable needs its fields: VariableMetadata.struct(name, { … })');
  const problem = fieldsProblem(fields);
  if (problem !== undefined) return problem;
  const sum = structSize(fields);
  if (sum !== meta.size) return new CommyError(ErrorCode.TYPE_MISMATCH, `the fields ${describeFields(fields)} take ${sum} bytes, not ${meta.size}`);
  return undefined;
}

/** Throws unless `meta` is a VariableMetadata with a valid name and definition no larger than `maxSize`. */
export function assertDefinition(meta: VariableMetadata, maxSize: number): VariableMetadata {
  if (!(meta instanceof VariableMetadata)) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'registerVariable takes a VariableMetadata');
  assertValidName(meta.name, 'variable name');
  const problem = definitionProblem(meta);
  if (problem !== undefined) throw problem;
  if (meta.size > maxSize) throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `variable size ${meta.size} exceeds the limit of ${maxSize} bytes`);
  return meta;
}

/**
 * Registering a known name is a no-op when `want` has the registered type, fields and size (and offset, unless
 * it asks for any with -1); otherwise TYPE_MISMATCH or INVALID_OFFSET. Returns the registered definition.
 */
export function sameLayout(have: VariableMetadata, want: VariableMetadata): VariableMetadata {
  if (have.typeId !== want.typeId) {
    throw new CommyError(ErrorCode.TYPE_MISMATCH, `${have.name} is registered as ${typeName(have.typeId)}, not ${typeName(want.typeId)}`);
  }
  if (!sameFields(have.fields, want.fields)) {
    throw new CommyError(ErrorCode.TYPE_MISMATCH, `${have.name} is registered with the fields ${describeFields(have.fields ?? [])}, not ${describeFields(want.fields ?? [])}`);
  }
  if (have.size !== want.size || (want.offset !== -1 && want.offset !== have.offset)) {
    throw new CommyError(ErrorCode.INVALID_OFFSET, `${have.name} is registered at [${have.offset}, ${have.end}), not with offset ${want.offset} size ${want.size}`);
  }
  return have;
}

/** Throws VALUE_TOO_LARGE unless `length` raw bytes fit the variable. */
export function assertFits(meta: VariableMetadata, length: number): void {
  if (length > meta.size) throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `${length} bytes do not fit ${meta.name} (${meta.size} bytes)`);
}
