import { CommyError, ErrorCode } from '../../core/errors.js';

/**
 * Why an outbox stopped, as the errors of what it can no longer deliver. A write that never reached the server
 * must not look acknowledged, nor vanish unheard: its awaiting caller rejects, and if nobody awaits it, onError
 * hears of it once.
 */
export interface StopReason {
  /** For callers awaiting a write that was never sent (it was still in the buffer, or waited for the connection). */
  readonly unsent: CommyError;
  /** For reports that were sent and never answered: applied once or not at all, nobody can tell. */
  readonly unknown: CommyError;
  /** The one error onError hears for `count` variables whose unsent writes nobody awaited. */
  dropped(count: number): CommyError;
}

/**
 * The reasons for a service's outbox: closed (no `cause`: NOT_CONNECTED, saying it was closed before the write
 * was sent), or ended by `cause` (a connection lost for good, the server ending the subscription): then awaiting
 * callers get the cause itself.
 */
export function stopReason(serviceId: string | undefined, cause?: CommyError): StopReason {
  const service = serviceId === undefined ? 'the service' : `service ${serviceId}`;
  if (cause !== undefined) {
    return {
      unsent: cause,
      unknown: cause,
      dropped: (count) => new CommyError(cause.code, `${service} ended before the writes of ${variables(count)} were sent: they are lost (${cause.message})`),
    };
  }
  const closed = `${service} was closed before`;
  return {
    unsent: new CommyError(ErrorCode.NOT_CONNECTED, `${closed} the write was sent`),
    unknown: new CommyError(ErrorCode.NOT_CONNECTED, `${closed} the server answered the report: outcome unknown (applied once or not at all)`),
    dropped: (count) => new CommyError(ErrorCode.NOT_CONNECTED, `${closed} the writes of ${variables(count)} were sent: they are lost`),
  };
}

function variables(count: number): string {
  return count === 1 ? '1 variable' : `${count} variables`;
}
