import { CommyError, ErrorCode } from '../core/errors.js';

/** A failure as the client reports it: a CommyError as it is, anything else wrapped as INTERNAL_ERROR. */
export function asCommyError(err: unknown, what: string): CommyError {
  return err instanceof CommyError ? err : new CommyError(ErrorCode.INTERNAL_ERROR, `${what}: ${String(err)}`, { cause: err });
}

/** What every use of a client after close() gets. */
export function clientClosedError(): CommyError {
  return new CommyError(ErrorCode.NOT_CONNECTED, 'the client is closed');
}
