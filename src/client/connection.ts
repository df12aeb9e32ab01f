import { CommyError, ErrorCode } from '../core/errors.js';
import { decodeFrame, encodeFrame, requestIdOf } from '../protocol/frame-codec.js';
import type { Message, MessageBodies, MessageTypeName, SnapshotBody, SubscriptionBody } from '../protocol/messages.js';
import type { Transport, TransportFactory, TransportOptions } from './transport.js';

export type ConnectionState = 'connecting' | 'open' | 'closed';

/** Called synchronously when the reply is decoded, before any later frame: replies and pushes never reorder. */
export interface ReplyHandlers<R> {
  reply(body: R): void;
  fail(err: CommyError): void;
  /** A reply that comes after the request timed out (it did happen at the server): undo it, say. */
  late?(body: R): void;
  /** An Error reply that comes after the request timed out (with `late`: the outcome was unknown until now). */
  lateFail?(err: CommyError): void;
  /** A streamed answer (query pages): true when more replies follow under the same id (each resets the timeout). */
  more?(body: R): boolean;
}

export interface ConnectionOptions {
  requestTimeoutMs: number;
  /** Outgoing frames past this are refused with MESSAGE_TOO_LARGE, never sent. */
  maxFrameBytes: number;
  /** Incoming limit: a snapshot carries a whole service, so it is larger than the outgoing one. */
  maxIncomingBytes: number;
  tls?: TransportOptions['tls'];
  /** Frames with request id 0 (SyncBatch, VariablesUpdated). */
  onPush(message: Message): void;
  /** The connection is gone (after open); `reason` is a NOT_CONNECTED error. Not called after close(). */
  onClosed(reason: CommyError): void;
  /** Connection-level problems that answer no request: Error frames with id 0, undecodable frames. */
  onError(err: CommyError): void;
}

interface Pending {
  expect: MessageTypeName;
  reply(body: unknown): void;
  fail(err: CommyError): void;
  late?(body: unknown): void;
  lateFail?(err: CommyError): void;
  more?(body: unknown): boolean;
  /** The request's type, for its TIMEOUT message. */
  what: MessageTypeName;
  /** performance.now() past which it times out. */
  deadline: number;
}

/** A timed-out request that still wants its answer. */
interface AwaitedLate {
  expect: MessageTypeName;
  late(body: unknown): void;
  lateFail: ((err: CommyError) => void) | undefined;
}

/** Timed-out requests whose late reply is still wanted (bounded: the oldest is given up). */
const MAX_AWAITED_LATE = 1024;

const MAX_REQUEST_ID = 0x7fffffff;

/**
 * One WebSocket to the server: request ids, the requests waiting for their replies (each with a timeout),
 * frame decoding, and dispatch of server pushes. Knows the wire, not what the messages mean.
 */
export class Connection {
  /** Requests waiting for their replies, in the order of their deadlines (every request gets the same timeout). */
  private readonly pending = new Map<number, Pending>();
  /**
   * One timer for all of them, set for the oldest deadline: a request costs no timer of its own (a setTimeout
   * and clearTimeout per request were a visible part of a remote round trip).
   */
  private sweeper: ReturnType<typeof setTimeout> | undefined;
  private readonly sweep = (): void => this.expireDue();
  private sweeping = false;
  /** Requests that timed out but want their late reply (ReplyHandlers.late), by id, oldest first. */
  private readonly lateReplies = new Map<number, AwaitedLate>();
  private nextId = 1;
  private transport: Transport | undefined;
  private stateValue: ConnectionState = 'connecting';

  private constructor(
    readonly url: string,
    private readonly options: ConnectionOptions,
  ) {}

  static async open(url: string, factory: TransportFactory, options: ConnectionOptions): Promise<Connection> {
    const conn = new Connection(url, options);
    try {
      conn.transport = await factory(
        url,
        { frame: (data) => conn.receive(data), closed: (code, reason) => conn.lost(code, reason) },
        { maxIncomingBytes: options.maxIncomingBytes, timeoutMs: options.requestTimeoutMs, ...(options.tls ? { tls: options.tls } : {}) },
      );
    } catch (err) {
      conn.stateValue = 'closed';
      throw err instanceof CommyError ? err : new CommyError(ErrorCode.NOT_CONNECTED, `cannot connect to ${url}: ${String(err)}`, { cause: err });
    }
    conn.stateValue = 'open';
    return conn;
  }

  get state(): ConnectionState {
    return this.stateValue;
  }

  /** Open, and its socket too: a socket already closing (its close event not yet handled) cannot send. */
  get isOpen(): boolean {
    return this.stateValue === 'open' && this.transport?.isOpen === true;
  }

  /**
   * Sends a request; exactly one of the handlers runs, once: on the `expect` reply, on an Error reply (as
   * CommyError with the server's code), on TIMEOUT, on NOT_CONNECTED, or at once when the frame cannot go.
   */
  call<K extends MessageTypeName, R extends MessageTypeName>(type: K, body: MessageBodies[K], expect: R, handlers: ReplyHandlers<MessageBodies[R]>): number | undefined {
    const transport = this.transport;
    if (this.stateValue !== 'open' || transport === undefined || !transport.isOpen) {
      handlers.fail(new CommyError(ErrorCode.NOT_CONNECTED, `not connected to ${this.url}`));
      return undefined;
    }
    const id = this.allocateId();
    let frame: Uint8Array;
    try {
      frame = encodeFrame(type, id, body);
    } catch (cause) {
      handlers.fail(new CommyError(ErrorCode.INVALID_MESSAGE, `cannot encode ${type}: ${(cause as Error).message}`, { cause }));
      return undefined;
    }
    if (frame.length > this.options.maxFrameBytes) {
      handlers.fail(new CommyError(ErrorCode.MESSAGE_TOO_LARGE, `a ${frame.length}-byte ${type} exceeds the ${this.options.maxFrameBytes}-byte frame limit`));
      return undefined;
    }
    this.track(id, {
      expect,
      reply: handlers.reply as (body: unknown) => void,
      fail: handlers.fail,
      late: handlers.late as ((body: unknown) => void) | undefined,
      lateFail: handlers.lateFail,
      more: handlers.more as ((body: unknown) => boolean) | undefined,
      what: type,
      deadline: 0,
    });
    transport.send(frame);
    return id;
  }

  /** Sends a message that wants no reply (request id 0), if connected; false if not. */
  notify<K extends MessageTypeName>(type: K, body: MessageBodies[K]): boolean {
    const transport = this.transport;
    if (this.stateValue !== 'open' || transport === undefined || !transport.isOpen) return false;
    transport.send(encodeFrame(type, 0, body));
    return true;
  }

  /** `call` as a promise. */
  request<K extends MessageTypeName, R extends MessageTypeName>(type: K, body: MessageBodies[K], expect: R): Promise<MessageBodies[R]> {
    return new Promise((resolve, reject) => this.call(type, body, expect, { reply: resolve, fail: reject }));
  }

  /**
   * Subscribes, and runs `start` on the Snapshot before the next frame is decoded (so no push for its sid can
   * arrive unrouted). If `start` throws, the subscription is ended at the server and the promise rejects:
   * never a half subscription. `start` settles the promise itself (a chunked snapshot resolves later).
   */
  subscribe<T>(body: SubscriptionBody, start: (snapshot: SnapshotBody, settle: { resolve(value: T): void; reject(err: unknown): void }) => void): Promise<T> {
    return new Promise((resolve, reject) => {
      this.call('Subscription', body, 'Snapshot', {
        reply: (snapshot) => {
          try {
            start(snapshot, { resolve, reject });
          } catch (err) {
            this.call('Unsubscribe', { sid: snapshot.sid }, 'Unsubscribed', { reply: () => {}, fail: () => {} });
            reject(err);
          }
        },
        fail: reject,
        // Timed out here but done at the server: end it there, or it would hold the service and send updates.
        late: (snapshot) => this.call('Unsubscribe', { sid: snapshot.sid }, 'Unsubscribed', { reply: () => {}, fail: () => {} }),
      });
    });
  }

  /** Closes the socket; every request still waiting rejects with NOT_CONNECTED. */
  async close(): Promise<void> {
    if (this.stateValue === 'closed') return;
    this.stateValue = 'closed';
    this.failAll(new CommyError(ErrorCode.NOT_CONNECTED, 'the client was closed'));
    await this.transport?.close(1000, 'client closed');
  }

  private allocateId(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = id >= MAX_REQUEST_ID ? 1 : id + 1;
      if (!this.pending.has(id) && !this.lateReplies.has(id)) return id;
    }
  }

  private take(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (p === undefined) return undefined;
    this.pending.delete(id);
    return p;
  }

  /** Waits for request `id`'s reply until the request timeout from now. */
  private track(id: number, p: Pending): void {
    p.deadline = performance.now() + this.options.requestTimeoutMs;
    this.pending.set(id, p);
    if (this.sweeper === undefined && !this.sweeping) this.sweeper = setTimeout(this.sweep, this.options.requestTimeoutMs);
  }

  /**
   * Times out every request past its deadline (the oldest come first), then waits for the next one's. A TIMEOUT
   * handler may send a request meanwhile: the one timer is set after the sweep, never beside it.
   */
  private expireDue(): void {
    this.sweeper = undefined;
    this.sweeping = true;
    try {
      const now = performance.now();
      for (const [id, p] of this.pending) {
        if (p.deadline > now) break;
        this.expire(id, p);
      }
    } finally {
      this.sweeping = false;
    }
    const next = this.pending.values().next().value;
    if (next !== undefined && this.sweeper === undefined) {
      this.sweeper = setTimeout(this.sweep, Math.max(1, Math.ceil(next.deadline - performance.now())));
    }
  }

  private expire(id: number, p: Pending): void {
    this.pending.delete(id);
    // A late reply finds no pending request and is dropped, unless the request wants to hear of it.
    if (p.late !== undefined) this.awaitLate(id, { expect: p.expect, late: p.late, lateFail: p.lateFail });
    try {
      p.fail(new CommyError(ErrorCode.TIMEOUT, `${p.what} got no reply within ${this.options.requestTimeoutMs} ms`));
    } catch (err) {
      this.handlerFailed(err);
    }
  }

  private awaitLate(id: number, awaited: AwaitedLate): void {
    this.lateReplies.set(id, awaited);
    if (this.lateReplies.size > MAX_AWAITED_LATE) this.lateReplies.delete(this.lateReplies.keys().next().value as number);
  }

  private lateReply(msg: Message): void {
    const waiting = this.lateReplies.get(msg.id);
    if (waiting === undefined) return;
    this.lateReplies.delete(msg.id);
    if (msg.type === waiting.expect) waiting.late(msg.body);
    else if (msg.type === 'Error') waiting.lateFail?.(serverError(msg.body));
  }

  private receive(data: Uint8Array): void {
    try {
      this.dispatch(data);
    } catch (err) {
      this.handlerFailed(err);
    }
  }

  private dispatch(data: Uint8Array): void {
    let msg: Message;
    try {
      msg = decodeFrame(data, this.options.maxIncomingBytes);
    } catch (err) {
      const error = err instanceof CommyError ? err : new CommyError(ErrorCode.INVALID_MESSAGE, String(err), { cause: err });
      const p = this.take(requestIdOf(err));
      if (p !== undefined) p.fail(error);
      else this.options.onError(error);
      return;
    }
    if (msg.id === 0) {
      if (msg.type === 'Error') this.options.onError(serverError(msg.body));
      else this.options.onPush(msg);
      return;
    }
    const p = this.take(msg.id);
    if (p === undefined) {
      this.lateReply(msg);
      return;
    }
    if (msg.type === 'Error') p.fail(serverError(msg.body));
    else if (msg.type !== p.expect) p.fail(new CommyError(ErrorCode.INVALID_MESSAGE, `expected ${p.expect}, got ${msg.type}`));
    else {
      // A stream's next page is awaited (with its deadline) before this page's handler runs: a handler that
      // throws must not leave the stream waiting forever with no timeout.
      if (p.more?.(msg.body) === true) this.track(msg.id, p); // the same id, a fresh deadline
      p.reply(msg.body);
    }
  }


  private lost(code: number, reason: string): void {
    if (this.stateValue === 'closed') return;
    this.stateValue = 'closed';
    const err = new CommyError(ErrorCode.NOT_CONNECTED, `connection to ${this.url} lost (${code}${reason ? `: ${reason}` : ''})`);
    this.failAll(err);
    try {
      this.options.onClosed(err);
    } catch (e) {
      this.handlerFailed(e);
    }
  }

  private failAll(err: CommyError): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    clearTimeout(this.sweeper);
    this.sweeper = undefined;
    for (const p of all) {
      try {
        p.fail(err);
      } catch (e) {
        this.handlerFailed(e);
      }
    }
  }

  /** A throwing handler is a bug in the client; it must not stop the frames after it. */
  private handlerFailed(err: unknown): void {
    try {
      this.options.onError(err instanceof CommyError ? err : new CommyError(ErrorCode.INTERNAL_ERROR, `client handler failed: ${String(err)}`, { cause: err }));
    } catch {
      /* the error sink itself failed: nothing left to tell */
    }
  }
}

function serverError(body: MessageBodies['Error']): CommyError {
  return new CommyError(body.errorCode as ErrorCode, body.message);
}
