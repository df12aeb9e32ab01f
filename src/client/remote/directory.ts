import { variablesTouched, type ByteRange } from '../../core/byte-diff.js';
import { CommyError, ErrorCode } from '../../core/errors.js';
import { assertValidName } from '../../core/names.js';
import { codecOf } from '../../core/struct-codec.js';
import type { ValueCodec } from '../../core/value-codec.js';
import type { VariableMetadata } from '../../core/variable-metadata.js';
import { definitionProblem } from '../../core/variable-rules.js';
import { typeName } from '../../core/variable-type.js';
import type { VariableDef } from '../../protocol/messages.js';
import { metadataOfDef } from '../../protocol/variable-def.js';
import type { RemoteStore } from './store.js';

/** A variable as a remote client knows it: the directory index is its identity on the wire. */
export interface RemoteEntry {
  readonly index: number;
  readonly meta: VariableMetadata;
  readonly codec: ValueCodec;
  /** Service version of the last change this client knows of. */
  version: number;
  /** The server removed it: gone from the directory; answers still on their way for it are ignored. */
  removed?: boolean;
  /** ChangeEvents.revision at this variable's last change in `current` (its change stamp; unset: none since the snapshot). */
  rev?: number;
}

/** What a handle held across a removal says: the variable is gone (it may be registered again under a new handle). */
export function removedError(serviceId: string, name: string): CommyError {
  return new CommyError(ErrorCode.VARIABLE_NOT_FOUND, `variable ${JSON.stringify(name)} was removed from ${serviceId}`);
}

/** End of the highest variable the definitions place: how much of the data region a snapshot covers. */
export function definedEnd(defs: readonly VariableDef[]): number {
  let end = 0;
  for (const d of defs) end = Math.max(end, d[2] + d[3]);
  return end;
}

/**
 * The variables of one remote service, by directory index (the wire's identity) and by name, as the server
 * defined them. A removed variable leaves (its index is never reused; its name may come back at a new index).
 */
export class RemoteDirectory {
  private readonly entries: (RemoteEntry | undefined)[] = [];
  private readonly byName = new Map<string, RemoteEntry>();
  /** Sorted by offset, as variablesTouched wants them. */
  private readonly metas: VariableMetadata[] = [];

  constructor(
    private readonly serviceId: string,
    private readonly store: RemoteStore,
    private readonly onError: (err: CommyError) => void,
  ) {}

  /** Adds a definition from the server; returns the new entry, or undefined if known (or unusable). */
  add(def: VariableDef): RemoteEntry | undefined {
    const [index, name, offset, size, typeId, version] = def;
    if (this.entries[index] !== undefined || this.byName.has(name)) return undefined;
    const meta = metadataOfDef(def); // its layout too: checked here like the rest, whatever the server sent
    const problem = offset < 0 ? 'a negative offset' : definitionProblem(meta)?.message;
    if (problem !== undefined) {
      this.onError(new CommyError(ErrorCode.INVALID_MESSAGE, `${this.serviceId}: the server defined ${name} as ${typeName(typeId)} of ${size} bytes (${problem}); ignored`));
      return undefined;
    }
    this.store.ensure(offset + size);
    const entry: RemoteEntry = { index, meta, codec: codecOf(meta), version };
    this.entries[index] = entry;
    this.byName.set(name, entry);
    this.metas.push(meta);
    const n = this.metas.length;
    if (n > 1 && this.metas[n - 2]!.offset > offset) this.metas.sort((a, b) => a.offset - b.offset);
    return entry;
  }

  /** The server removed the variable at `index`: returns its entry, now marked removed, or undefined if unknown. */
  remove(index: number): RemoteEntry | undefined {
    const entry = this.entries[index];
    if (entry === undefined) return undefined;
    this.entries[index] = undefined;
    if (this.byName.get(entry.meta.name) === entry) this.byName.delete(entry.meta.name);
    const at = this.metas.indexOf(entry.meta);
    if (at >= 0) this.metas.splice(at, 1);
    entry.removed = true;
    return entry;
  }

  /** Every entry, in directory order. */
  entriesNow(): RemoteEntry[] {
    return this.entries.filter((e): e is RemoteEntry => e !== undefined);
  }

  at(index: number): RemoteEntry | undefined {
    return this.entries[index];
  }

  named(name: string): RemoteEntry | undefined {
    return this.byName.get(name);
  }

  /** The variable called `name`: INVALID_NAME or VARIABLE_NOT_FOUND otherwise. */
  find(name: string): RemoteEntry {
    assertValidName(name, 'variable name');
    const entry = this.byName.get(name);
    if (entry === undefined) throw new CommyError(ErrorCode.VARIABLE_NOT_FOUND, `no variable ${JSON.stringify(name)} in ${this.serviceId}`);
    return entry;
  }

  /** Every definition, in directory order. */
  list(): VariableMetadata[] {
    const out: VariableMetadata[] = [];
    for (const e of this.entries) if (e !== undefined) out.push(e.meta);
    return out;
  }

  /** The variables overlapping any of the (sorted) ranges of a diff. */
  touched(ranges: readonly ByteRange[]): RemoteEntry[] {
    return variablesTouched(this.metas, ranges).map((name) => this.byName.get(name)!);
  }
}
