import type { StreamId } from './stream-id.js';

/** One change of a service as its stream holds it (cluster-scripts.ts APPEND writes it). */
export interface ClusterEntry {
  readonly id: StreamId;
  /** 'w' values written, 'r' variables registered, 'x' variables removed. */
  readonly kind: 'w' | 'r' | 'x';
  /** The node that appended it. */
  readonly node: string;
  /** The appending node's token for it (its waiter, if it still waits: see ServiceReplica). */
  readonly token: string;
  /** Per variable: its name, its bytes (a write), its offset as text (a registration), or nothing (a removal). */
  readonly items: readonly ClusterItem[];
}

export interface ClusterItem {
  readonly name: string;
  readonly value: Buffer;
  /** Its shape (layout-code.ts), given with a registration, and with the first write of a variable a local process registered. */
  readonly code: string | undefined;
}

/**
 * An entry from XREAD's flat field list (Buffers: values are bytes). A malformed entry (a hand-made XADD
 * into our stream) is undefined: the caller skips it and says so, the rest of the stream goes on.
 */
export function parseEntry(id: string, fields: readonly Buffer[]): ClusterEntry | undefined {
  let kind: string | undefined;
  let node = '';
  let token = '';
  const codes = new Map<string, string>();
  const items: { name: string; value: Buffer }[] = [];
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const key = fields[i]!.toString('latin1');
    const value = fields[i + 1]!;
    if (key === 'k') kind = value.toString('latin1');
    else if (key === 'n') node = value.toString('utf8');
    else if (key === 't') token = value.toString('latin1');
    else if (key.length > 1 && key[0] === 'm') codes.set(key.slice(1), value.toString('latin1'));
    else if (key.length > 1 && (key[0] === 'w' || key[0] === 'r' || key[0] === 'x')) items.push({ name: key.slice(1), value });
    else return undefined;
  }
  if (kind !== 'w' && kind !== 'r' && kind !== 'x') return undefined;
  return { id, kind, node, token, items: items.map((it) => ({ ...it, code: codes.get(it.name) })) };
}
