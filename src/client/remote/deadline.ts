import { CommyError, ErrorCode } from '../../core/errors.js';

/**
 * `work`, or a rejection after `ms`: NOT_CONNECTED if the connection is down by then (the write stays in the
 * buffer and is still sent once it is back), TIMEOUT otherwise. The work itself goes on either way.
 */
export function withDeadline<T>(work: Promise<T>, ms: number, online: () => boolean, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(
        online()
          ? new CommyError(ErrorCode.TIMEOUT, `${what}: not acknowledged within ${ms} ms (still pending, not undone)`)
          : new CommyError(ErrorCode.NOT_CONNECTED, `${what}: not connected within ${ms} ms (kept, and sent once reconnected)`),
      );
    }, ms);
  });
  return Promise.race([work, expired]).finally(() => clearTimeout(timer));
}
