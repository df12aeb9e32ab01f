/**
 * The public API, the same on every runtime: what both entries (index.ts for Node, browser.ts for the rest)
 * export. Runtime-neutral: nothing reached from here imports Node (test/client-core.test.ts checks).
 */
export { CommyError, ErrorCode, isCommyError } from './core/errors.js';
export { VariableMetadata } from './core/variable-metadata.js';
export { VariableType, type ScalarValue, type StructValue, type VariableTypeId, type VariableTypeName, type VariableValue } from './core/variable-type.js';
export { MAX_STRUCT_FIELDS, type StructField, type StructFieldSpec, type StructSpec } from './core/struct-layout.js';
export type { FileChangeEvent } from './core/file-change-event.js';
export type { Staleness, ValueOfType, VariableHandle } from './core/file-accessor.js';
// The signal library's own functions, re-exported: a page that imports /client.js (one bundle, with its own copy
// of the library) must react with that copy's effect, not another's.
export { batch, computed, effect, type ReadonlySignal } from '@preact/signals-core';
export type { MutateOptions } from './core/mutate-options.js';
export type { ByteRange } from './core/byte-diff.js';
export type { WaitOptions } from './core/event-queue.js';
export { VirtualVariableFile, type OpenOptions } from './client/virtual-variable-file.js';
export { Client } from './client/client.js';
export type { QueryPage, QuerySpec, QueriedService, QueriedVariable } from './client/query-stream.js';
export { AuthCredentials, type AuthMethod } from './client/auth-credentials.js';
export type { ClientOptions, ClientMode, ClientState, ClientTlsOptions, ReconnectOptions } from './client/client-options.js';
