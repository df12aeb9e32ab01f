import { VariableMetadata } from '../core/variable-metadata.js';
import type { VariableTypeId } from '../core/variable-type.js';

/**
 * A variable's shape as the cluster compares it: type, size and a struct's fields, in one canonical string
 * (`<type>:<size>[;<field>,<type>,<size>…]`). The offset is not part of it: each node's file places its variables
 * itself (a file is only ever mapped on its own host), so only names and shapes are the same everywhere.
 */
export function layoutCode(meta: VariableMetadata): string {
  let code = `${meta.typeId}:${meta.size}`;
  for (const f of meta.fields ?? []) code += `;${f.name},${f.typeId},${f.size}`;
  return code;
}

/** The metadata of `name` with the shape `code` describes (offset -1: the node's file allocates it). */
export function metadataOfCode(name: string, code: string, offset = -1): VariableMetadata {
  const [head = '', ...fields] = code.split(';');
  const [typeId, size] = head.split(':').map(Number);
  return new VariableMetadata(
    name,
    offset,
    size ?? 0,
    (typeId ?? 0) as VariableTypeId,
    fields.length === 0
      ? undefined
      : fields.map((f) => {
          const [fname = '', ftype, fsize] = f.split(',');
          return { name: fname, typeId: Number(ftype) as VariableTypeId, size: Number(fsize) };
        }),
  );
}
