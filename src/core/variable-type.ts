/** Variable type ids: stable on the wire and in service files. Never renumber. */
export const VariableType = {
  Bytes: 0,
  U64: 1,
  I64: 2,
  F64: 3,
  U32: 4,
  I32: 5,
  F32: 6,
  U16: 7,
  I16: 8,
  U8: 9,
  I8: 10,
  Bool: 11,
  String: 12,
  /** Named fields of the types above, packed in declared order (core/struct-layout.ts). */
  Struct: 13,
} as const;

export type VariableTypeName = keyof typeof VariableType;
export type VariableTypeId = (typeof VariableType)[VariableTypeName];

/** What one field of a struct holds: the scalar values. 64-bit integers are bigint. */
export type ScalarValue = number | bigint | boolean | string | Uint8Array;

/** A Struct variable's value: one property per field, e.g. `{ x: 1.5, y: 2 }`. */
export interface StructValue {
  [field: string]: ScalarValue;
}

/** What typed accessors take and return. 64-bit integers are bigint. */
export type VariableValue = ScalarValue | StructValue;

const FIXED_SIZES: readonly (number | undefined)[] = [
  undefined, // Bytes: any size
  8, 8, 8, // U64 I64 F64
  4, 4, 4, // U32 I32 F32
  2, 2, // U16 I16
  1, 1, // U8 I8
  1, // Bool
  undefined, // String: size is the UTF-8 capacity
  undefined, // Struct: size is the sum of its fields'
];

const TYPE_NAMES = Object.keys(VariableType) as VariableTypeName[];

export function isVariableTypeId(id: unknown): id is VariableTypeId {
  return typeof id === 'number' && Number.isInteger(id) && id >= 0 && id < FIXED_SIZES.length;
}

/** The size a type demands, or undefined for Bytes and String (any size ≥ 1) and Struct (its fields'). */
export function fixedSizeOf(typeId: VariableTypeId): number | undefined {
  return FIXED_SIZES[typeId];
}

export function typeName(typeId: number): string {
  return TYPE_NAMES[typeId] ?? `unknown(${typeId})`;
}
