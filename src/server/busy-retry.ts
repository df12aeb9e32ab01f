import { CommyError, ErrorCode } from '../core/errors.js';
import { BUSY } from '../local/service-file.js';

const FIRST_WAIT_MS = 1;
const MAX_WAIT_MS = 50;

/**
 * Runs `attempt` until it stops answering BUSY: at once, then after waits that double from 1 to 50 ms. The
 * server never spins its event loop on a lock or seqlock another process holds (that process may be stopped
 * mid-write): between attempts every other connection is served. TIMEOUT after `timeoutMs`; `stillWanted`
 * returning false (the connection went away) ends the wait with NOT_CONNECTED.
 */
export async function untilNotBusy<T>(
  attempt: () => T | typeof BUSY,
  what: string,
  timeoutMs: number,
  stillWanted: () => boolean = () => true,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (let wait = FIRST_WAIT_MS; ; wait = Math.min(wait * 2, MAX_WAIT_MS)) {
    const result = attempt();
    if (result !== BUSY) return result;
    if (performance.now() >= deadline) throw new CommyError(ErrorCode.TIMEOUT, `${what} stayed locked by another process for ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, wait));
    if (!stillWanted()) throw new CommyError(ErrorCode.NOT_CONNECTED, 'the connection closed while waiting');
  }
}
