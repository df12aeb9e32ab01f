import type { MessageOf, MessageTypeName } from '../../protocol/messages.js';
import type { Reply, Session } from '../session.js';
import { authenticate } from './auth.js';
import { getServiceFilePath } from './file-path.js';
import { cancelQuery, query } from './query.js';
import { readVariable } from './read.js';
import { registerVariable, removeVariable } from './register.js';
import { subscribe, unsubscribe } from './subscribe.js';
import { mutate, reportChanges, writeVariable } from './write.js';

/**
 * How a request is scheduled on its connection:
 * - 'ordered': one at a time, in arrival order (a write is acknowledged before the next request is looked at);
 * - 'cancellable': started in order, then runs beside the ordered ones with an AbortSignal (a query);
 * - 'immediate': handled on arrival, ahead of anything queued (a cancel must not wait behind what it cancels).
 */
export type Lane = 'ordered' | 'cancellable' | 'immediate';

export type Handler<K extends MessageTypeName> = (session: Session, m: MessageOf<K>, signal: AbortSignal) => Promise<Reply> | Reply;

export interface Route<K extends MessageTypeName> {
  readonly handle: Handler<K>;
  readonly lane: Lane;
  /** Answered before authentication (only Authenticate). */
  readonly open?: boolean;
}

/** Each request type's handler, one module per concern; a type not here is not a request a client may send. */
export const ROUTES: { readonly [K in MessageTypeName]?: Route<K> } = {
  Authenticate: { handle: authenticate, lane: 'ordered', open: true },
  GetServiceFilePath: { handle: getServiceFilePath, lane: 'ordered' },
  Subscription: { handle: subscribe, lane: 'ordered' },
  Unsubscribe: { handle: unsubscribe, lane: 'ordered' },
  RegisterVariable: { handle: registerVariable, lane: 'ordered' },
  RemoveVariable: { handle: removeVariable, lane: 'ordered' },
  ReadVariable: { handle: readVariable, lane: 'ordered' },
  WriteVariable: { handle: writeVariable, lane: 'ordered' },
  ReportVariableChanges: { handle: reportChanges, lane: 'ordered' },
  Mutate: { handle: mutate, lane: 'ordered' },
  Query: { handle: query, lane: 'cancellable' },
  QueryCancel: { handle: cancelQuery, lane: 'immediate' },
};
