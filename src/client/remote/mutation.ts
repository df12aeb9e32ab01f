import { CommyError, ErrorCode, isCommyError } from '../../core/errors.js';
import { checkMutateOptions, type MutateOptions } from '../../core/mutate-options.js';
import type { VariableValue } from '../../core/variable-type.js';
import type { MutateBody } from '../../protocol/messages.js';
import type { RemoteContext } from './context.js';
import { withDeadline } from './deadline.js';
import type { RemoteEntry } from './directory.js';

/** What a mutation needs of its remote file. */
export interface MutationSite {
  readonly ctx: RemoteContext;
  readonly serviceId: string;
  /** The subscription id on the current connection (a new one after each reconnection). */
  sid(): number;
  /** Subscribed on a live connection now. */
  online(): boolean;
  closed(): boolean;
  /** Sends the variable's pending write first (a mutation never overtakes an earlier set()). */
  deliver(index: number): Promise<void>;
  /** The committed value: into both buffers (as the server has it), and the change told to listeners. */
  committed(entry: RemoteEntry, version: number, bytes: Uint8Array): void;
}

/** While offline, look again for the connection this often (the deadline bounds the whole wait). */
const OFFLINE_POLL_MS = 20;
/** After UNAVAILABLE, asked again this much later. */
const UNAVAILABLE_PAUSE_MS = 100;

/**
 * A Mutate round trip under one operation id: resent with the same id when the connection is lost before
 * its answer (the server applies an id once, so the outcome is never doubled), until `requestTimeoutMs`:
 * then NOT_CONNECTED (offline) or TIMEOUT (outcome unknown: it may still be applied, once).
 */
/**
 * One Mutate. The committed value goes into the buffers in the reply handler itself, before any later frame
 * is decoded: a promise continuation would run after a SyncBatch decoded from the same chunk, and put back
 * an older value over a newer one (a client then stuck behind the server). A reply that comes after the
 * request timed out is applied too: the server applied it, and does not echo a client's own writes.
 */
function send(site: MutationSite, entry: RemoteEntry, body: MutateBody, bytes: Uint8Array): Promise<bigint> {
  return new Promise((resolve, reject) => {
    site.ctx.conn.call('Mutate', body, 'MutationResponse', {
      reply: (r) => {
        site.committed(entry, r.version, bytes);
        resolve(BigInt(r.version));
      },
      fail: reject,
      late: (r) => site.committed(entry, r.version, bytes),
    });
  });
}

export async function mutateRemote(site: MutationSite, entry: RemoteEntry, value: VariableValue, options: MutateOptions): Promise<bigint> {
  const { opId = site.ctx.nextOpId(), expected } = checkMutateOptions(options);
  const bytes = new Uint8Array(entry.meta.size);
  entry.codec.store(new DataView(bytes.buffer), 0, entry.codec.check(value));
  let gaveUp = false;
  const work = (async () => {
    await site.deliver(entry.index);
    for (;;) {
      // Past the deadline (or once the file is closed) it is not sent again: one already sent may still apply.
      if (gaveUp || site.closed()) throw new CommyError(ErrorCode.NOT_CONNECTED, `mutate of ${site.serviceId}/${entry.meta.name}: given up`);
      if (!site.online() || !site.ctx.conn.isOpen) {
        await new Promise((resolve) => setTimeout(resolve, OFFLINE_POLL_MS));
        continue;
      }
      const body: MutateBody = { sid: site.sid(), index: entry.index, value: bytes, opId, ...(expected !== undefined ? { expectedVersion: Number(expected) } : {}) };
      try {
        return await send(site, entry, body, bytes);
      } catch (err) {
        // Lost with the connection: its outcome is unknown, and asking again under the same id is safe. Never
        // at once: a send refused on the spot would otherwise loop in microtasks, and the event loop would never
        // get to the socket's close event that ends the wait.
        // UNAVAILABLE (a cluster node without its Redis) is the same for the caller: resent, under the same id,
        // after a longer pause, until the deadline.
        if (isCommyError(err, ErrorCode.UNAVAILABLE)) await new Promise((resolve) => setTimeout(resolve, UNAVAILABLE_PAUSE_MS));
        else if (!isCommyError(err, ErrorCode.NOT_CONNECTED)) throw err;
        else await new Promise((resolve) => setTimeout(resolve, OFFLINE_POLL_MS));
      }
    }
  })();
  const online = () => site.online() && site.ctx.conn.isOpen;
  work.catch(() => {}); // its failure is the deadline's answer's, or already reported through it
  return withDeadline(work, site.ctx.requestTimeoutMs, online, `mutate of ${site.serviceId}/${entry.meta.name}`).catch((err: unknown) => {
    gaveUp = true;
    throw err instanceof CommyError ? err : new CommyError(ErrorCode.INTERNAL_ERROR, String(err), { cause: err });
  });
}
