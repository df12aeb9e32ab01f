/**
 * The wire protocol's message catalogue, shared by server and clients (docs/protocol.md is its prose).
 * Every WebSocket frame is one binary message: a MessagePack array `[type, requestId, body]`.
 * `requestId` is chosen by the client (1..2^31-1) and echoed in the reply; 0 means "no reply expected"
 * or "not a reply" (broadcasts). Type numbers are stable: never renumber, only add.
 */
export const PROTOCOL_VERSION = 3;
/** The oldest protocol this side still speaks (version 1 lacks RemoveVariable and removals; nothing else changed for it). */
export const MIN_PROTOCOL_VERSION = 1;

export const MessageType = {
  // client → server
  Authenticate: 1,
  GetServiceFilePath: 2,
  Subscription: 3,
  Unsubscribe: 4,
  RegisterVariable: 5,
  ReadVariable: 6,
  WriteVariable: 7,
  ReportVariableChanges: 8,
  Mutate: 9,
  Query: 10,
  QueryCancel: 11,
  RemoveVariable: 12,
  // server → client
  Authenticated: 64,
  ServiceFilePath: 65,
  Snapshot: 66,
  SyncBatch: 67,
  Unsubscribed: 68,
  VariableRegistered: 69,
  VariableValue: 70,
  VariableChangesAcknowledged: 71,
  VariablesUpdated: 72,
  MutationResponse: 73,
  QueryResponse: 74,
  SnapshotChunk: 75,
  VariableRemoved: 76,
  SyncPending: 77,
  Error: 127,
} as const;

export type MessageTypeName = keyof typeof MessageType;
export type MessageTypeId = (typeof MessageType)[MessageTypeName];

/** A struct field on the wire: packed in the order of the list (protocol 3; see variable-def.ts). */
export type WireField = [name: string, typeId: number, size: number];
/**
 * A variable as the wire describes it: its directory index is its identity on this service. A Struct's
 * definition carries its fields (protocol 3); an older client is sent it as Bytes (variable-def.ts).
 */
export type VariableDef = [index: number, name: string, offset: number, size: number, typeId: number, version: number, fields?: WireField[]];

export interface AuthenticateBody {
  tenant: string;
  method: 'apiKey' | 'jwt';
  credential: string;
  protocol: number;
  /**
   * The client's identity for operation ids (random, 16–64 characters of [A-Za-z0-9_-]), the same across its
   * reconnects: a write retried with the same `opId` under the same key and clientKey is applied once.
   */
  clientKey?: string;
}
export interface AuthenticatedBody {
  clientId: string;
  /** Identifies the server's machine (boot id): a client with the same one may map files locally. */
  hostId: string;
  protocol: number;
  keyId: string;
  /** This server's cap on changes per ReportVariableChanges (absent: MAX_CHANGES_PER_REPORT). */
  maxChangesPerReport?: number;
}
export interface ServiceRef {
  tenant: string;
  service: string;
}
export interface GetServiceFilePathBody extends ServiceRef {
  create?: boolean;
}
export interface ServiceFilePathBody {
  serviceId: string;
  filePath: string;
  fileSize: number;
  /** The file's incarnation id (header): a local client checks it after opening the path. */
  fileId: string;
  /** The key may not write: map the file read-only. */
  readOnly: boolean;
}
/** Where a client resumes a service: the file it knew and the version up to which it has every change. */
export interface ResumePoint {
  version: number;
  fileId: string;
}
export interface SubscriptionBody extends ServiceRef {
  create?: boolean;
  /** Resume: send only what changed after this point (SnapshotBody.resumed), or say why not (reset). */
  since?: ResumePoint;
  /** Variable name patterns (`*` wildcard); absent = all. */
  variables?: string[];
  /**
   * Names instead of values: the snapshot carries the definitions and an empty `data`, and changes arrive as
   * `VariablesUpdated` pushes (with this `sid`) instead of `SyncBatch`es. For a client that maps the file
   * read-only and so reads the values itself, but cannot run a watcher on the mapping.
   */
  notify?: boolean;
  /**
   * Ask for SyncPending notices while the server holds updates back (a `tick` in ms): what this subscription is
   * owed, so the client knows how stale its copy is. Servers that predate it ignore it and send none.
   */
  pending?: boolean;
}
export interface SnapshotBody {
  sid: number;
  serviceId: string;
  /** Every change at or below this version is in the snapshot (or owed as an update): a resume point. */
  version: number;
  /** The service file's incarnation: a resume names it (SubscriptionBody.since). */
  fileId?: string;
  /** A resume: `data` carries only variables whose def version is above `since.version`; keep the others. */
  resumed?: boolean;
  /** A resume was asked but could not be served: this is a full snapshot, and why (e.g. the file was replaced). */
  reset?: string;
  variables: VariableDef[];
  /** The data region up to the end of the highest variable (its first part when `more`). */
  data: Uint8Array;
  readOnly: boolean;
  /**
   * The snapshot does not fit one frame: the rest of `variables` and `data` follows in `SnapshotChunk`
   * pushes for this sid, in order, before any SyncBatch or VariablesUpdated of the subscription.
   */
  more?: boolean;
}
/** The continuation of a Snapshot (see SnapshotBody.more): more definitions, and/or data from `offset`. */
export interface SnapshotChunkBody {
  sid: number;
  defs?: VariableDef[];
  offset?: number;
  data?: Uint8Array;
  /** false on the last chunk. */
  more: boolean;
  /** On the last chunk, when lower than the Snapshot's: the resume point (a value read meanwhile was mid-write). */
  version?: number;
}
export type Update = [index: number, version: number, bytes: Uint8Array];
export interface SyncBatchBody {
  sid: number;
  version: number;
  /** Directory indexes of variables removed since (the client drops them), before `defs` and `updates`. */
  removed?: number[];
  /** Variables registered since the last batch or snapshot, before their updates. */
  defs?: VariableDef[];
  updates: Update[];
}
/** An owed variable: its directory index and the server's latest version of it. */
export type PendingVersion = [index: number, version: number];
/**
 * What the server holds back for a subscription that asked (SubscriptionBody.pending): its service version now,
 * and the latest version of each variable owed to it, or no `pending` at all when too many are owed to name.
 */
export interface SyncPendingBody {
  sid: number;
  version: number;
  pending?: PendingVersion[];
}
export interface UnsubscribeBody {
  sid: number;
}
/**
 * The reply to Unsubscribe, or a push (request id 0) when the server ends a subscription itself: then
 * `errorCode`/`message` say why (e.g. INVALID_FILE: another process damaged the service file).
 */
export interface UnsubscribedBody {
  sid: number;
  errorCode?: string;
  message?: string;
}
export interface RegisterVariableBody {
  sid: number;
  name: string;
  offset: number;
  size: number;
  typeId: number;
  /** A Struct's fields, in order (protocol 3). */
  fields?: WireField[];
}
export interface VariableRegisteredBody {
  sid: number;
  def: VariableDef;
}
/** RemoveVariable (admin): the variable leaves the service's directory for every client. */
export interface RemoveVariableBody {
  sid: number;
  name: string;
}
export interface VariableRemovedBody {
  sid: number;
  /** The removed variable's directory index (never reused for another variable). */
  index: number;
  /** The service version of the removal. */
  version: number;
}
export interface ReadVariableBody extends ServiceRef {
  name: string;
}
export interface VariableValueBody {
  name: string;
  value: Uint8Array;
  version: number;
}
/** Which services (globs; absent: all the key may read) and variables (globs; absent: all), with values or not. */
export interface QueryBody {
  tenant: string;
  services?: string[];
  variables?: string[];
  values?: boolean;
}
/** One service's part of a query page: definitions, and with `values` each one's [index, version, bytes]. */
export interface QueriedService {
  service: string;
  version: number;
  variables: VariableDef[];
  values?: Update[];
  /** The key may write this service (what a UI offers to edit); absent from older servers: unknown, read only. */
  writable?: boolean;
}
/** A page of a query's answer, with the Query's request id; `more: false` on the last (a service may span pages). */
export interface QueryResponseBody {
  services: QueriedService[];
  more: boolean;
}
/** Ends the running Query with request id `id` (it answers Error ABORTED). */
export interface QueryCancelBody {
  id: number;
}
/** An operation id: a positive integer, unique per client identity (AuthenticateBody.clientKey). */
export interface OperationRef {
  opId?: number;
}
export interface WriteVariableBody extends ServiceRef, OperationRef {
  name: string;
  value: Uint8Array;
}
/** One variable's new bytes in a report: its directory index and at most its size in bytes. */
export type ReportChange = [index: number, bytes: Uint8Array];
export interface ReportVariableChangesBody extends OperationRef {
  sid: number;
  changes: ReportChange[];
}
/** One variable's new value through its subscription, compare-and-set when `expectedVersion` is given. */
export interface MutateBody extends OperationRef {
  sid: number;
  index: number;
  value: Uint8Array;
  /** The variable's version the writer last saw: CONFLICT unless it is still exactly that. */
  expectedVersion?: number;
}
export interface MutationResponseBody {
  sid: number;
  index: number;
  /** The version the mutation committed. */
  version: number;
}
export interface VariableChangesAcknowledgedBody {
  serviceId: string;
  /** The variable written (WriteVariable only: a report's ack names none, so its size never grows with names). */
  changedVariables?: string[];
  /** How many changes were applied. */
  count?: number;
  /** The service version after the last change. */
  version: number;
  /** The version each change got, in order (other processes may write between two of them). */
  versions?: number[];
}
export interface VariablesUpdatedBody {
  serviceId: string;
  version: number;
  variables: string[];
  /** Variables removed (a notify subscriber drops them), sent before any name registered again. */
  removed?: string[];
  /** The notify subscription it belongs to (see SubscriptionBody.notify). */
  sid?: number;
}
export interface ErrorBody {
  errorCode: string;
  message: string;
}

/** Body type per message type, for typed encode/decode. */
export interface MessageBodies {
  Authenticate: AuthenticateBody;
  GetServiceFilePath: GetServiceFilePathBody;
  Subscription: SubscriptionBody;
  Unsubscribe: UnsubscribeBody;
  RegisterVariable: RegisterVariableBody;
  ReadVariable: ReadVariableBody;
  WriteVariable: WriteVariableBody;
  ReportVariableChanges: ReportVariableChangesBody;
  Mutate: MutateBody;
  Query: QueryBody;
  QueryCancel: QueryCancelBody;
  RemoveVariable: RemoveVariableBody;
  Authenticated: AuthenticatedBody;
  ServiceFilePath: ServiceFilePathBody;
  Snapshot: SnapshotBody;
  SnapshotChunk: SnapshotChunkBody;
  SyncBatch: SyncBatchBody;
  SyncPending: SyncPendingBody;
  Unsubscribed: UnsubscribedBody;
  VariableRegistered: VariableRegisteredBody;
  VariableRemoved: VariableRemovedBody;
  VariableValue: VariableValueBody;
  VariableChangesAcknowledged: VariableChangesAcknowledgedBody;
  VariablesUpdated: VariablesUpdatedBody;
  MutationResponse: MutationResponseBody;
  QueryResponse: QueryResponseBody;
  Error: ErrorBody;
}

export type Message = { [K in MessageTypeName]: { type: K; id: number; body: MessageBodies[K] } }[MessageTypeName];
export type MessageOf<K extends MessageTypeName> = { type: K; id: number; body: MessageBodies[K] };

const NAMES = new Map<number, MessageTypeName>(Object.entries(MessageType).map(([k, v]) => [v, k as MessageTypeName]));

export function messageName(type: number): MessageTypeName | undefined {
  return NAMES.get(type);
}

/** WebSocket close codes the server uses (4000-4999 are the application's). */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  TOO_LARGE: 1009,
  AUTH_FAILED: 4001,
  AUTH_TIMEOUT: 4002,
  TOO_MANY_CONNECTIONS: 4003,
  /** The connection's output stayed over its budget (limits.maxBufferedBytes) for slowConsumerTimeoutMs. */
  SLOW_CONSUMER: 4008,
} as const;

/** Changes in one ReportVariableChanges unless the server says otherwise (Authenticated.maxChangesPerReport). */
export const MAX_CHANGES_PER_REPORT = 4096;
