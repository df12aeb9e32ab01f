import type { FileChangeEvent } from './file-change-event.js';
import type { MutateOptions } from './mutate-options.js';
import type { VariableMetadata } from './variable-metadata.js';
import type { StructValue, VariableType, VariableTypeId, VariableValue } from './variable-type.js';

/** The hot path: one variable, resolved once; no name lookup per call. */
export interface VariableHandle<T extends VariableValue = VariableValue> {
  readonly name: string;
  readonly metadata: VariableMetadata;
  get(): T;
  set(value: T): void;
  /**
   * Read-modify-write, for every type (a struct's value included). Local: under the variable's writer lock, so no
   * writer in any process interleaves. Remote: get, `fn`, set, atomic in this process only (across clients:
   * `mutate` with `expectedVersion`).
   */
  update(fn: (current: T) => T): T;
  /** The service version of this variable's last change. */
  version(): bigint;
}

/** See FileAccessor.changeStamp: compared with `!==` only, never ordered. */
export type ChangeStamp = number | bigint;
export const CHANGE_STAMP_MISSING = -1;

/** How far a copy lags the server (vf.staleness): both 0 when it is current. */
export interface Staleness {
  /** The server's latest applied version of the variable this copy has not seen, minus the version it has. */
  readonly versionsBehind: number;
  /** How long this copy has been behind, as far as it knows (from the server's first notice of it). */
  readonly ms: number;
}

type V = typeof VariableType;

/** What typed accessors give for a variable type id: 64-bit integers are bigint, other numbers number. */
export type ValueOfType<Id extends VariableTypeId> = Id extends V['U64'] | V['I64']
  ? bigint
  : Id extends V['F64'] | V['U32'] | V['I32'] | V['F32'] | V['U16'] | V['I16'] | V['U8'] | V['I8']
    ? number
    : Id extends V['Bool']
      ? boolean
      : Id extends V['String']
        ? string
        : Id extends V['Bytes']
          ? Uint8Array
          : Id extends V['Struct']
            ? StructValue
            : VariableValue;

/**
 * What a VirtualVariableFile stands on: a memory-mapped service file (local) or a synced buffer (remote).
 * Application code sees only VirtualVariableFile, so it never knows which.
 */
export interface FileAccessor {
  readonly mode: 'local' | 'remote';
  readonly serviceId: string;
  readonly filePath: string | undefined;
  /** Remote with ClientOptions.mirror: the mirror file other local processes open (docs/client.md, "Mirror files"). */
  readonly mirrorPath?: string | undefined;
  readonly closed: boolean;
  version(): bigint;
  register(meta: VariableMetadata): Promise<VariableMetadata>;
  /** Removes a variable for every client (admin); resolves with the removal's version. */
  removeVariable(name: string): Promise<bigint>;
  /** A hash of every definition this client sees (core/layout-hash.ts). */
  layoutHash(): string;
  variables(): VariableMetadata[];
  handle(name: string): VariableHandle;
  writeBytes(name: string, bytes: Uint8Array): Promise<void>;
  /** One variable, acknowledged with the version it committed; compare-and-set with expectedVersion. */
  mutate?(name: string, value: VariableValue, options: MutateOptions): Promise<bigint>;
  /** Remote: receive only the variables these globs match too; the first call narrows "all" to them. */
  subscribe?(globs: string[]): Promise<void>;
  /** Remote: remove these exact globs from the filter (docs/client.md, "Variable filters"). */
  unsubscribe?(globs: string[]): Promise<void>;
  readBytes(name: string): Promise<Uint8Array>;
  isTorn(name: string): boolean;
  bytes(): Uint8Array;
  shadowBytes(): Uint8Array;
  syncShadow(): void;
  /** Publishes raw changes (current vs shadow) and resolves once they are visible to every other client. */
  flush(): Promise<void>;
  /** Calls `listener` for every change; returns the function that stops it. */
  watch(listener: (event: FileChangeEvent) => void): () => void;
  /**
   * What reactive views (client/reactive.ts) compare instead of decoding, with no listener: a value that changes
   * whenever this copy of the variable `name` (or, without a name, of any variable or the layout) may have changed,
   * by anyone, this client's own writes included. CHANGE_STAMP_MISSING for a name this copy does not have.
   */
  changeStamp?(name?: string): ChangeStamp;
  /**
   * Hears this client's own writes into its copy as they happen (remote: its change events come only with the
   * acknowledgement). Absent where own writes need no hook (local: the version moves at once, the watcher follows).
   */
  watchOwnWrites?(listener: (name: string) => void): () => void;
  /** How far this copy of the variable lags the server's latest applied write (remote; a local copy is the file). */
  staleness?(name: string): Staleness;
  /** Keep the process alive while something waits for changes. */
  hold(): void;
  unhold(): void;
  close(): Promise<void>;
}
