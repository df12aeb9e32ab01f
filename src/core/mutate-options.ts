import { CommyError, ErrorCode } from './errors.js';

/** vf.mutate's options: an operation id (remote: applied once, even across reconnects) and compare-and-set. */
export interface MutateOptions {
  /** A positive integer unique per client; default: the client picks one. */
  opId?: number;
  /** The variable's version the caller last saw (`vf.handle(name).version()`): CONFLICT when it has moved. */
  expectedVersion?: bigint | number;
}

/** The options checked: TYPE_MISMATCH for anything but a positive integer opId and a non-negative integer version. */
export function checkMutateOptions(options: MutateOptions): { opId?: number; expected?: bigint } {
  if (typeof options !== 'object' || options === null) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'mutate options must be an object');
  const { opId, expectedVersion } = options;
  if (opId !== undefined && !(Number.isSafeInteger(opId) && opId > 0)) {
    throw new CommyError(ErrorCode.TYPE_MISMATCH, `opId must be a positive integer, got ${String(opId)}`);
  }
  let expected: bigint | undefined;
  if (expectedVersion !== undefined) {
    const ok = typeof expectedVersion === 'bigint' ? expectedVersion >= 0n : Number.isSafeInteger(expectedVersion) && expectedVersion >= 0;
    if (!ok) throw new CommyError(ErrorCode.TYPE_MISMATCH, `expectedVersion must be a non-negative integer, got ${String(expectedVersion)}`);
    expected = BigInt(expectedVersion);
  }
  return { ...(opId !== undefined ? { opId } : {}), ...(expected !== undefined ? { expected } : {}) };
}
