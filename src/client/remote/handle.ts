import type { VariableHandle } from '../../core/file-accessor.js';
import type { ValueCodec } from '../../core/value-codec.js';
import type { VariableMetadata } from '../../core/variable-metadata.js';
import type { VariableValue } from '../../core/variable-type.js';
import type { RemoteEntry } from './directory.js';
import type { RemoteStore } from './store.js';

/** What a handle needs from its accessor (an interface, so the two files do not import each other). */
export interface HandleOwner {
  readonly store: RemoteStore;
  readonly closed: boolean;
  assertOpen(): void;
  /** VARIABLE_NOT_FOUND for a removed variable (after assertOpen). */
  assertLive(entry: RemoteEntry): void;
  setValue(entry: RemoteEntry, value: VariableValue): void;
}

/** The remote hot path: get() is one codec load from the local buffer; set() writes it and queues a flush. */
export class RemoteVariableHandle implements VariableHandle {
  private readonly offset: number;
  private readonly codec: ValueCodec;

  constructor(
    private readonly owner: HandleOwner,
    private readonly entry: RemoteEntry,
  ) {
    this.offset = entry.meta.offset;
    this.codec = entry.codec;
  }

  get name(): string {
    return this.entry.meta.name;
  }

  get metadata(): VariableMetadata {
    return this.entry.meta;
  }

  get(): VariableValue {
    const owner = this.owner;
    if (owner.closed || this.entry.removed === true) owner.assertLive(this.entry);
    return this.codec.load(owner.store.view, this.offset);
  }

  set(value: VariableValue): void {
    this.owner.setValue(this.entry, value);
  }

  /**
   * Remote mode: get, apply, set — atomic within this process, not across clients (another client's write
   * may land between this client's read and its write; the server's order decides). A later version brings
   * mutate() with expectedVersion for compare-and-set.
   */
  update(fn: (current: VariableValue) => VariableValue): VariableValue {
    const next = fn(this.get());
    this.set(next);
    return next;
  }

  version(): bigint {
    this.owner.assertLive(this.entry);
    return BigInt(this.entry.version);
  }

  /** False once the server removed the variable: the accessor then makes a new handle for the name. */
  get live(): boolean {
    return this.entry.removed !== true;
  }
}
