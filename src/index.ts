export { CommyError, ErrorCode, isCommyError } from './core/errors.js';
export { VariableMetadata } from './core/variable-metadata.js';
export { VariableType, type VariableTypeId, type VariableTypeName, type VariableValue } from './core/variable-type.js';
export type { FileChangeEvent } from './core/file-change-event.js';
export type { VariableHandle } from './core/file-accessor.js';
export type { ByteRange } from './core/byte-diff.js';
export { VirtualVariableFile, type OpenOptions } from './virtual-variable-file.js';
