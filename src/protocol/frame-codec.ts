import { Packr, Unpackr } from 'msgpackr';
import { CommyError, ErrorCode } from '../core/errors.js';
import { MAX_STRUCT_FIELDS } from '../core/struct-layout.js';
import { elementCountExceeds } from './frame-shape.js';
import { MessageType, messageName, type Message, type MessageBodies, type MessageTypeName } from './messages.js';

/** Default frame limit; the server and client may set their own. */
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;

const packr = new Packr({ useRecords: false, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/** Encodes one message as one binary frame. */
export function encodeFrame<K extends MessageTypeName>(type: K, id: number, body: MessageBodies[K]): Uint8Array {
  return packr.pack([MessageType[type], id, body]);
}

export function encodeError(id: number, code: ErrorCode, message: string): Uint8Array {
  return encodeFrame('Error', id, { errorCode: code, message });
}

function bad(why: string): CommyError {
  return new CommyError(ErrorCode.INVALID_MESSAGE, why);
}

type Obj = Record<string, unknown>;
const MAX_ID = 0x7fffffff;

function str(o: Obj, k: string, max = 4096): string {
  const v = o[k];
  if (typeof v !== 'string' || v.length > max) throw bad(`field ${k} must be a string of at most ${max} characters`);
  return v;
}
function num(o: Obj, k: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw bad(`field ${k} must be an integer in [${min}, ${max}]`);
  return v;
}
function bin(v: unknown, what: string): Uint8Array {
  if (!(v instanceof Uint8Array)) throw bad(`${what} must be binary`);
  return v;
}
const CLIENT_KEY = /^[A-Za-z0-9_-]{16,64}$/;

/** An operation id, when present: a positive safe integer. */
function optOpId(o: Obj): void {
  if (o.opId !== undefined) num(o, 'opId', 1);
}

function update(u: unknown): void {
  if (!Array.isArray(u) || u.length !== 3 || typeof u[0] !== 'number' || typeof u[1] !== 'number') throw bad('an update is [index, version, bytes]');
  bin(u[2], 'an updated value');
}

function optBool(o: Obj, k: string): void {
  if (o[k] !== undefined && typeof o[k] !== 'boolean') throw bad(`field ${k} must be a boolean`);
}
function arr(o: Obj, k: string, max: number): unknown[] {
  const v = o[k];
  if (!Array.isArray(v) || v.length > max) throw bad(`field ${k} must be an array of at most ${max} items`);
  return v;
}
function strArray(o: Obj, k: string, max: number): void {
  for (const s of arr(o, k, max)) if (typeof s !== 'string' || s.length > 256) throw bad(`field ${k} must hold strings`);
}
function def(v: unknown): void {
  if (!Array.isArray(v) || (v.length !== 6 && v.length !== 7) || typeof v[1] !== 'string') {
    throw bad('a variable definition must be [index, name, offset, size, typeId, version, fields?]');
  }
  for (const i of [0, 2, 3, 4, 5]) if (typeof v[i] !== 'number' || !Number.isInteger(v[i]) || (v[i] as number) < 0) throw bad('a variable definition holds non-negative integers');
  if (v.length === 7) fields(v[6]);
}
/** A struct's fields: at most MAX_STRUCT_FIELDS [name, typeId, size] triples (what they mean is checked where they are used). */
function fields(v: unknown): void {
  if (!Array.isArray(v) || v.length > MAX_STRUCT_FIELDS) throw bad(`struct fields are at most ${MAX_STRUCT_FIELDS} [name, typeId, size] triples`);
  for (const f of v) {
    const ok = Array.isArray(f) && f.length === 3 && typeof f[0] === 'string' && f[0].length <= 64 && isUint(f[1], 255) && isUint(f[2], 0xffffffff);
    if (!ok) throw bad('a struct field is [name (at most 64 characters), typeId (0-255), size (u32)]');
  }
}
function isUint(v: unknown, max: number): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
}
function indexes(o: Obj, k: string): void {
  for (const i of arr(o, k, 1 << 22)) if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i > MAX_ID) throw bad(`field ${k} must hold directory indexes`);
}
function serviceRef(o: Obj): void {
  str(o, 'tenant', 256);
  str(o, 'service', 256);
}

/** Field checks per message type: after this, handlers may trust the shape (not the values' meaning). */
const validators: { [K in MessageTypeName]: (body: Obj) => void } = {
  Authenticate(b) {
    str(b, 'tenant', 256);
    if (b.method !== 'apiKey' && b.method !== 'jwt') throw bad('method must be apiKey or jwt');
    str(b, 'credential', 16384);
    num(b, 'protocol', 0, 1 << 16);
    if (b.clientKey !== undefined && (typeof b.clientKey !== 'string' || !CLIENT_KEY.test(b.clientKey))) {
      throw bad('clientKey must be 16-64 characters of [A-Za-z0-9_-]');
    }
  },
  GetServiceFilePath(b) {
    serviceRef(b);
    optBool(b, 'create');
  },
  Subscription(b) {
    serviceRef(b);
    optBool(b, 'create');
    if (b.variables !== undefined) strArray(b, 'variables', 1000);
    optBool(b, 'notify');
    optBool(b, 'pending');
    if (b.since !== undefined) {
      if (typeof b.since !== 'object' || b.since === null || Array.isArray(b.since)) throw bad('since must be {version, fileId}');
      num(b.since as Obj, 'version');
      str(b.since as Obj, 'fileId', 64);
    }
  },
  Unsubscribe: (b) => void num(b, 'sid', 1, MAX_ID),
  RegisterVariable(b) {
    num(b, 'sid', 1, MAX_ID);
    str(b, 'name', 256);
    num(b, 'offset', -1, 0xffffffff);
    num(b, 'size', 0, 0xffffffff);
    num(b, 'typeId', 0, 255);
    if (b.fields !== undefined) fields(b.fields);
  },
  ReadVariable(b) {
    serviceRef(b);
    str(b, 'name', 256);
  },
  WriteVariable(b) {
    serviceRef(b);
    str(b, 'name', 256);
    bin(b.value, 'value');
    optOpId(b);
  },
  ReportVariableChanges(b) {
    num(b, 'sid', 1, MAX_ID);
    optOpId(b);
    for (const c of arr(b, 'changes', 1 << 20)) {
      if (!Array.isArray(c) || c.length !== 2 || typeof c[0] !== 'number' || !Number.isInteger(c[0]) || c[0] < 0) throw bad('a change is [index, bytes]');
      bin(c[1], 'a changed value');
    }
  },
  Mutate(b) {
    num(b, 'sid', 1, MAX_ID);
    num(b, 'index', 0, MAX_ID);
    bin(b.value, 'value');
    optOpId(b);
    if (b.expectedVersion !== undefined) num(b, 'expectedVersion');
  },
  Query(b) {
    str(b, 'tenant', 256);
    if (b.services !== undefined) strArray(b, 'services', 1000);
    if (b.variables !== undefined) strArray(b, 'variables', 1000);
    optBool(b, 'values');
  },
  QueryCancel: (b) => void num(b, 'id', 1, MAX_ID),
  RemoveVariable(b) {
    num(b, 'sid', 1, MAX_ID);
    str(b, 'name', 256);
  },
  Authenticated(b) {
    str(b, 'clientId');
    str(b, 'hostId');
    num(b, 'protocol');
    str(b, 'keyId');
    if (b.maxChangesPerReport !== undefined) num(b, 'maxChangesPerReport', 1, MAX_ID);
  },
  ServiceFilePath(b) {
    str(b, 'serviceId');
    str(b, 'filePath');
    num(b, 'fileSize');
    str(b, 'fileId');
    optBool(b, 'readOnly');
  },
  Snapshot(b) {
    num(b, 'sid', 1, MAX_ID);
    str(b, 'serviceId');
    num(b, 'version');
    for (const d of arr(b, 'variables', 1 << 22)) def(d);
    bin(b.data, 'data');
    optBool(b, 'readOnly');
    optBool(b, 'more');
    if (b.fileId !== undefined) str(b, 'fileId', 64);
    optBool(b, 'resumed');
    if (b.reset !== undefined) str(b, 'reset', 1024);
  },
  SnapshotChunk(b) {
    num(b, 'sid', 1, MAX_ID);
    if (b.defs !== undefined) for (const d of arr(b, 'defs', 1 << 22)) def(d);
    if (b.data !== undefined) {
      num(b, 'offset', 0, 0xffffffff);
      bin(b.data, 'data');
    }
    if (typeof b.more !== 'boolean') throw bad('field more must be a boolean');
    if (b.version !== undefined) num(b, 'version');
  },
  SyncBatch(b) {
    num(b, 'sid', 1, MAX_ID);
    num(b, 'version');
    if (b.removed !== undefined) indexes(b, 'removed');
    if (b.defs !== undefined) for (const d of arr(b, 'defs', 1 << 22)) def(d);
    for (const u of arr(b, 'updates', 1 << 22)) update(u);
  },
  SyncPending(b) {
    num(b, 'sid', 1, MAX_ID);
    num(b, 'version');
    if (b.pending === undefined) return;
    for (const p of arr(b, 'pending', 1 << 22)) {
      if (!Array.isArray(p) || p.length !== 2 || !p.every((n) => typeof n === 'number' && Number.isInteger(n) && n >= 0)) throw bad('a pending entry is [index, version]');
    }
  },
  Unsubscribed(b) {
    num(b, 'sid', 1, MAX_ID);
    if (b.errorCode !== undefined) str(b, 'errorCode', 64);
    if (b.message !== undefined) str(b, 'message', 65536);
  },
  VariableRegistered(b) {
    num(b, 'sid', 1, MAX_ID);
    def(b.def);
  },
  VariableRemoved(b) {
    num(b, 'sid', 1, MAX_ID);
    num(b, 'index', 0, MAX_ID);
    num(b, 'version');
  },
  VariableValue(b) {
    str(b, 'name', 256);
    bin(b.value, 'value');
    num(b, 'version');
  },
  VariableChangesAcknowledged(b) {
    str(b, 'serviceId');
    if (b.changedVariables !== undefined) strArray(b, 'changedVariables', 1 << 22);
    if (b.count !== undefined) num(b, 'count');
    num(b, 'version');
    if (b.versions !== undefined) {
      for (const v of arr(b, 'versions', 1 << 22)) if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw bad('versions must hold non-negative integers');
    }
  },
  VariablesUpdated(b) {
    str(b, 'serviceId');
    num(b, 'version');
    strArray(b, 'variables', 1 << 22);
    if (b.removed !== undefined) strArray(b, 'removed', 1 << 22);
    if (b.sid !== undefined) num(b, 'sid', 1, MAX_ID);
  },
  MutationResponse(b) {
    num(b, 'sid', 1, MAX_ID);
    num(b, 'index', 0, MAX_ID);
    num(b, 'version');
  },
  QueryResponse(b) {
    for (const q of arr(b, 'services', 1 << 22)) {
      if (typeof q !== 'object' || q === null || Array.isArray(q)) throw bad('a queried service is a map');
      const o = q as Obj;
      str(o, 'service', 256);
      num(o, 'version');
      for (const d of arr(o, 'variables', 1 << 22)) def(d);
      if (o.values !== undefined) for (const u of arr(o, 'values', 1 << 22)) update(u);
    }
    if (typeof b.more !== 'boolean') throw bad('field more must be a boolean');
  },
  Error(b) {
    str(b, 'errorCode', 64);
    str(b, 'message', 65536);
  },
};

/**
 * Decodes and checks one frame. Throws CommyError: MESSAGE_TOO_LARGE past `maxBytes`, INVALID_MESSAGE for
 * anything malformed, UNKNOWN_MESSAGE for a well-formed frame of a type this side does not know, and
 * MESSAGE_TOO_LARGE past `maxElements` elements, counted before decoding (see elementCountExceeds). The
 * request id is recovered whenever possible (`err.requestId`) so the error can answer the right request.
 */
export function decodeFrame(frame: Uint8Array, maxBytes = DEFAULT_MAX_FRAME_BYTES, maxElements = Infinity): Message {
  if (frame.length > maxBytes) throw new CommyError(ErrorCode.MESSAGE_TOO_LARGE, `a ${frame.length}-byte frame exceeds the ${maxBytes}-byte limit`);
  if (maxElements !== Infinity && elementCountExceeds(frame, maxElements)) {
    throw new CommyError(ErrorCode.MESSAGE_TOO_LARGE, `the frame holds more than ${maxElements} MessagePack elements`);
  }
  let raw: unknown;
  try {
    raw = unpackr.unpack(frame);
  } catch (cause) {
    throw new CommyError(ErrorCode.INVALID_MESSAGE, 'the frame is not valid MessagePack', { cause });
  }
  if (!Array.isArray(raw) || raw.length !== 3 || typeof raw[0] !== 'number' || typeof raw[1] !== 'number') {
    throw bad('a frame is [type, requestId, body]');
  }
  const [type, id, body] = raw as [number, number, unknown];
  if (!Number.isInteger(id) || id < 0 || id > MAX_ID) throw bad('requestId must be an integer in [0, 2^31)');
  const name = messageName(type);
  if (name === undefined) throw withRequestId(new CommyError(ErrorCode.UNKNOWN_MESSAGE, `unknown message type ${type}`), id);
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw withRequestId(bad(`${name}: the body must be a map`), id);
  try {
    validators[name](body as Obj);
  } catch (err) {
    if (err instanceof CommyError) err.message = `${name}: ${err.message}`;
    throw withRequestId(err, id);
  }
  return { type: name, id, body } as Message;
}

export function withRequestId(err: unknown, id: number): unknown {
  if (err instanceof CommyError) (err as CommyError & { requestId?: number }).requestId = id;
  return err;
}

export function requestIdOf(err: unknown): number {
  return (err as { requestId?: number }).requestId ?? 0;
}

/** A message body alone, encoded as in a frame (see sync-batch-frame.ts, which splices bodies into frames). */
export function encodeBody(body: object): Uint8Array {
  return packr.pack(body);
}
