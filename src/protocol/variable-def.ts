import { sameFields, type StructField } from '../core/struct-layout.js';
import { VariableMetadata } from '../core/variable-metadata.js';
import { VariableType, type VariableTypeId } from '../core/variable-type.js';
import type { RegisterVariableBody, VariableDef, WireField } from './messages.js';

/**
 * Variable definitions on the wire (docs/protocol.md, "Struct variables"): `[index, name, offset, size, typeId,
 * version]`, and for a Struct a seventh element, its fields as `[name, typeId, size]` triples, from protocol 3 on.
 * A client that speaks an older protocol is sent a struct as what its bytes are to it: Bytes of the same size.
 */
export const STRUCT_PROTOCOL_VERSION = 3;

/** Bytes of MessagePack per definition beyond its name and fields: a 6-array of small integers, generously counted. */
const DEF_OVERHEAD = 40;
/** Per struct field beyond its name: a 3-array, a type id, a size. */
const FIELD_OVERHEAD = 12;

export function wireFields(fields: readonly StructField[]): WireField[] {
  return fields.map((f) => [f.name, f.typeId, f.size]);
}

/** A definition's fields as metadata takes them (unchecked: definitionProblem says whether they make a layout). */
export function fieldsOfWire(wire: readonly WireField[] | undefined): StructField[] | undefined {
  return wire?.map(([name, typeId, size]) => ({ name, typeId: typeId as VariableTypeId, size }));
}

/** The definition of the variable `meta` at directory `index`, for a client speaking `protocol`. */
export function defOf(index: number, meta: VariableMetadata, version: bigint, protocol: number): VariableDef {
  const { name, offset, size, typeId, fields } = meta;
  if (fields === undefined) return [index, name, offset, size, typeId, Number(version)];
  if (protocol < STRUCT_PROTOCOL_VERSION) return [index, name, offset, size, VariableType.Bytes, Number(version)];
  return [index, name, offset, size, typeId, Number(version), wireFields(fields)];
}

/** A RegisterVariable of `meta` through subscription `sid` (a struct's fields included). */
export function registerBody(sid: number, meta: VariableMetadata): RegisterVariableBody {
  const { name, offset, size, typeId, fields } = meta;
  return fields === undefined ? { sid, name, offset, size, typeId } : { sid, name, offset, size, typeId, fields: wireFields(fields) };
}

/** The metadata a definition describes (unchecked: see definitionProblem). */
export function metadataOfDef(def: VariableDef): VariableMetadata {
  const [, name, offset, size, typeId, , fields] = def;
  return new VariableMetadata(name, offset, size, typeId as VariableTypeId, fieldsOfWire(fields));
}

/** Does `def` place and type its variable as `meta` does (offset, size, type, fields)? */
export function sameLayoutAs(meta: VariableMetadata, def: VariableDef): boolean {
  const [, , offset, size, typeId, , fields] = def;
  return meta.offset === offset && meta.size === size && meta.typeId === typeId && sameFields(meta.fields, fieldsOfWire(fields));
}

/** What a definition costs in a frame, generously: for splitting definitions into frames. */
export function defCost(def: VariableDef): number {
  let cost = def[1].length + DEF_OVERHEAD;
  for (const f of def[6] ?? []) cost += f[0].length + FIELD_OVERHEAD;
  return cost;
}
