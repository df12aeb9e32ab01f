import type { VariableTypeId } from './variable-type.js';

/** A variable's place in its service: name, byte offset in the data region, size and type. */
export class VariableMetadata {
  readonly name: string;
  /** Byte offset in the service's data region; -1 asks the service to allocate one (8-byte aligned). */
  readonly offset: number;
  readonly size: number;
  readonly typeId: VariableTypeId;

  constructor(name: string, offset: number, size: number, typeId: VariableTypeId) {
    this.name = name;
    this.offset = offset;
    this.size = size;
    this.typeId = typeId;
  }

  /** The half-open byte range [offset, offset + size). */
  get end(): number {
    return this.offset + this.size;
  }
}
