import { frozenFields, structFields, structSize, type StructField, type StructSpec } from './struct-layout.js';
import { VariableType, type VariableTypeId } from './variable-type.js';

/** A variable's place in its service: name, byte offset in the data region, size and type (and a struct's fields). */
export class VariableMetadata {
  readonly name: string;
  /** Byte offset in the service's data region; -1 asks the service to allocate one (8-byte aligned). */
  readonly offset: number;
  readonly size: number;
  readonly typeId: VariableTypeId;
  /** A Struct's fields, in their order in its bytes (frozen); undefined for every other type. */
  readonly fields: readonly StructField[] | undefined;

  constructor(name: string, offset: number, size: number, typeId: VariableTypeId, fields?: readonly StructField[]) {
    this.name = name;
    this.offset = offset;
    this.size = size;
    this.typeId = typeId;
    this.fields = fields === undefined ? undefined : frozenFields(fields);
  }

  /**
   * A Struct variable: `VariableMetadata.struct('pos', { x: VariableType.F64, y: VariableType.F64 })`. Fields are
   * packed in the declared order, little-endian, no padding; the size is their sum. A String or Bytes field gives
   * its size: `{ label: { type: VariableType.String, size: 16 } }`. At most 64 fields, named like variables (not
   * all digits). The offset is -1 (allocated) unless given.
   */
  static struct(name: string, spec: StructSpec, offset = -1): VariableMetadata {
    const fields = structFields(spec);
    return new VariableMetadata(name, offset, structSize(fields), VariableType.Struct, fields);
  }

  /** The half-open byte range [offset, offset + size). */
  get end(): number {
    return this.offset + this.size;
  }
}
