import { CommyError, ErrorCode } from './errors.js';

/**
 * Operation ids a caller picks are 1 … MAX_CALLER_OP_ID; a client numbers its own writes above it, so the two
 * never collide (an id reused for another write is refused by the server).
 */
export const MAX_CALLER_OP_ID = 2 ** 32 - 1;

/** vf.mutate's options: an operation id (remote: applied once, even across reconnects) and compare-and-set. */
export interface MutateOptions {
  /** An integer 1 … 2³²−1, unique per client for one write; default: the client picks one (above that range). */
  opId?: number;
  /** The variable's version the caller last saw (`vf.handle(name).version()`): CONFLICT when it has moved. */
  expectedVersion?: bigint | number;
}

/** The options checked: TYPE_MISMATCH for anything but an opId in 1 … MAX_CALLER_OP_ID and a non-negative integer version. */
export function checkMutateOptions(options: MutateOptions): { opId?: number; expected?: bigint } {
  if (typeof options !== 'object' || options === null) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'mutate options must be an object');
  const { opId, expectedVersion } = options;
  if (opId !== undefined && !(Number.isSafeInteger(opId) && opId > 0 && opId <= MAX_CALLER_OP_ID)) {
    throw new CommyError(ErrorCode.TYPE_MISMATCH, `opId must be an integer from 1 to ${MAX_CALLER_OP_ID}, got ${String(opId)}`);
  }
  let expected: bigint | undefined;
  if (expectedVersion !== undefined) {
    const ok = typeof expectedVersion === 'bigint' ? expectedVersion >= 0n : Number.isSafeInteger(expectedVersion) && expectedVersion >= 0;
    if (!ok) throw new CommyError(ErrorCode.TYPE_MISMATCH, `expectedVersion must be a non-negative integer, got ${String(expectedVersion)}`);
    expected = BigInt(expectedVersion);
  }
  return { ...(opId !== undefined ? { opId } : {}), ...(expected !== undefined ? { expected } : {}) };
}
