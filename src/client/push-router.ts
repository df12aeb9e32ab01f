import { CommyError, ErrorCode, isErrorCode } from '../core/errors.js';
import type { Message, UnsubscribedBody, VariablesUpdatedBody } from '../protocol/messages.js';
import type { RemoteFileAccessor } from './remote-accessor.js';

export type NoticeHandler = (body: VariablesUpdatedBody) => void;

/**
 * Where the server's pushes go, by subscription id on the current connection: a remote file's snapshot
 * chunks and batches to it, a read-only local file's notices to its handler.
 */
export class PushRouter {
  private readonly routes = new Map<number, RemoteFileAccessor>();
  /** Notify subscriptions of read-only local files: where their VariablesUpdated pushes go. */
  private readonly notices = new Map<number, NoticeHandler>();

  /** `onError` hears why the server ended a subscription. */
  constructor(private readonly onError: (err: CommyError) => void) {}

  /** RemoteContext.route: `undefined` stops. */
  routeFile(sid: number, accessor: RemoteFileAccessor | undefined): void {
    if (accessor !== undefined) this.routes.set(sid, accessor);
    else this.routes.delete(sid);
  }

  /** LocalAttachRequest.route: `undefined` stops. */
  routeNotices(sid: number, onUpdated: NoticeHandler | undefined): void {
    if (onUpdated !== undefined) this.notices.set(sid, onUpdated);
    else this.notices.delete(sid);
  }

  onPush(message: Message): void {
    if (message.type === 'SyncBatch') this.routes.get(message.body.sid)?.onBatch(message.body);
    else if (message.type === 'SnapshotChunk') this.routes.get(message.body.sid)?.onChunk(message.body);
    else if (message.type === 'SyncPending') this.routes.get(message.body.sid)?.onPending(message.body);
    else if (message.type === 'Unsubscribed') this.ended(message.body);
    // Names only, for a read-only local file that reads the values from its mapping.
    else if (message.type === 'VariablesUpdated' && message.body.sid !== undefined) this.notices.get(message.body.sid)?.(message.body);
  }

  /** The connection is gone for good: every routed remote file stops with `reason`. */
  detachAll(reason: CommyError): void {
    for (const accessor of [...this.routes.values()]) accessor.detach(reason);
    this.routes.clear();
    this.notices.clear();
  }

  /** The connection is gone: every routed remote file suspends; resubscribing routes them again. */
  suspendAll(reason: CommyError): void {
    const routed = [...this.routes.values()];
    this.routes.clear();
    this.notices.clear();
    for (const accessor of routed) accessor.suspend(reason);
  }

  /** The server ended a subscription (its service file was damaged, say): that service file stops, with why. */
  private ended(body: UnsubscribedBody): void {
    const code = isErrorCode(body.errorCode) ? body.errorCode : ErrorCode.NOT_CONNECTED;
    const reason = new CommyError(code, body.message ?? `the server ended subscription ${body.sid}`);
    const accessor = this.routes.get(body.sid);
    if (accessor === undefined && !this.notices.delete(body.sid)) return;
    accessor?.detach(reason);
    this.onError(reason);
  }
}
