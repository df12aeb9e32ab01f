import type { WebSocket } from 'ws';
import { CommyError, ErrorCode } from '../core/errors.js';
import { decodeFrame, encodeError, requestIdOf } from '../protocol/frame-codec.js';
import { CloseCode, MessageType, type Message } from '../protocol/messages.js';
import { ByteRate, RateLimiter, type Limits } from './limits.js';
import type { Lane } from './handlers/index.js';
import type { Outlet } from './service-host.js';
import type { ServerMetrics } from './metrics.js';
import type { TurnBudget } from './turn-budget.js';

/** What a connection hands its messages to (a Session), each in its lane's order. */
export interface MessageHandler {
  /** Before this turns true, only Authenticate frames are decoded; others are refused from their first bytes. */
  readonly authenticated: boolean;
  /** The lane of a message type, from the frame's type byte (before decoding). */
  laneOf(type: number): Lane;
  /** The reply to send, if any; a thrown CommyError is sent as an Error with the request's id. */
  handle(message: Message, signal: AbortSignal): Promise<Uint8Array | undefined> | Uint8Array | undefined;
  /** The socket is closed (whatever closed it), with the close code and reason if known; called once. */
  closed(code?: number, reason?: string): void;
}

export interface ConnectionOptions {
  limits: Limits;
  /** Never sent to a client: error messages have it replaced (the server's data directory). */
  redact: string;
  /** Unexpected failures (not CommyErrors): logged by the server, answered INTERNAL_ERROR. */
  onError(err: unknown): void;
  /** Shared by every connection of the server: no burst of one connection holds the event loop (turn-budget.ts). */
  turns: TurnBudget;
  /** Frames and bytes in and out by type, errors by code (absent: not counted). */
  metrics?: ServerMetrics;
}

/** What an ordered or immediate request is given as its signal: only cancellable ones can be aborted. */
const NEVER_ABORTED: AbortSignal = new AbortController().signal;

/** The start of every connection's queues (one shared promise: an idle connection holds none of its own). */
const SETTLED: Promise<void> = Promise.resolve();

/** While the output is over budget, requests wait unread: look again after this long (doubling to the max). */
const ROOM_FIRST_WAIT_MS = 2;
const ROOM_MAX_WAIT_MS = 100;
/** A slow consumer gets its close frame queued; if it does not read that either, it is cut off after this. */
const SLOW_CONSUMER_GRACE_MS = 1000;
/** What a queued frame costs beyond its bytes (the decoded message, closures), counted against the budget. */
const QUEUED_OVERHEAD = 256;
/** Cancellable requests (queries) running at once on one connection (past it, RATE_LIMITED); also immediate ones handled ahead of the queue. */
export const MAX_RUNNING_REQUESTS = 16;

/** The Connection a WebSocket belongs to, on the socket itself: its listeners are shared, not closures per connection. */
const OWNER: unique symbol = Symbol('commy.connection');
type Owned = WebSocket & { [OWNER]: Connection };

function onMessage(this: WebSocket, data: unknown, isBinary: boolean): void {
  (this as Owned)[OWNER].receive(data as Buffer, isBinary);
}

/** ws's 'close' (code, reason) and 'error' (err): the connection is gone. */
function onEnd(this: WebSocket, code?: unknown, reason?: unknown): void {
  (this as Owned)[OWNER].end(typeof code === 'number' ? code : 1006, Buffer.isBuffer(reason) ? reason.toString() : '');
}

function onClose(this: WebSocket): void {
  (this as Owned)[OWNER].gone();
}

/**
 * The wire side of one WebSocket: reading (message and byte rates, a bounded queue of frames not yet handled,
 * decoding with bounded work), writing (the output budget and slow consumers) and error replies. Knows
 * frames, not what they mean: the handler does. Two lanes: ordered frames are handled one at a time, in
 * arrival order; a cancellable request is started in that order and then runs beside them, with an
 * AbortController under its request id; an immediate frame (a cancel) is handled on arrival.
 */
export class Connection implements Outlet {
  private readonly rate: RateLimiter;
  private readonly inputRate: ByteRate;
  private inputRateTimer: NodeJS.Timeout | undefined;
  private slowConsumerTimer: NodeJS.Timeout | undefined;
  /** Set once closing began: cuts the socket off if it is not closed within closeGraceMs. */
  private graceTimer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = SETTLED;
  /** Answers of immediate frames waiting for output room (in their own queue: never behind a request). */
  private deferred: Promise<void> = SETTLED;
  /** Bytes of frames received and not yet handled (see receive). */
  private queuedBytes = 0;
  private inputPaused = false;
  private pauses = 0;
  /** No request needs more MessagePack elements than a full report: decoding work per frame is bounded. */
  private readonly maxElements: number;
  private handler: MessageHandler | undefined;
  /** Immediate frames being handled now (ahead of the queue). */
  private immediate = 0;
  /**
   * Cancellable requests queued and not started yet, by request id (ids come from the frames' first bytes):
   * how many cancels each got meanwhile.
   */
  private queuedCancellable: Map<number, number> | undefined;
  /** Cancellable requests running now, by request id (both maps made on first use: most connections run none). */
  private running: Map<number, AbortController> | undefined;
  private ended = false;

  constructor(
    private readonly ws: WebSocket,
    private readonly options: ConnectionOptions,
  ) {
    const limits = options.limits;
    this.rate = new RateLimiter(limits.rateLimit);
    this.inputRate = new ByteRate(limits.maxInputBytesPerSecond, Math.max(limits.maxInputBytesPerSecond, 4 * limits.maxFrameBytes));
    this.maxElements = 3 * limits.maxChangesPerReport + 2 * limits.maxPatterns + 64;
    (ws as Owned)[OWNER] = this;
    ws.on('message', onMessage);
  }

  /** Where decoded messages go; call before the first event-loop turn ends (no frame is read before). */
  attach(handler: MessageHandler): void {
    this.handler = handler;
    this.ws.on('close', onClose);
    this.ws.on('error', onEnd);
  }

  /**
   * The close handshake has begun, from either side, or the peer ended its side of the socket: everything the
   * connection holds is let go now, not when the socket is gone (a peer that stops reading would keep it until
   * ws's close timeout, 30 s), and the socket is cut off if it is not closed within closeGraceMs. Its place in
   * the connection limits goes with the socket, so an address never holds more sockets than its cap.
   */
  closing(code: number, reason: string): void {
    this.end(code, reason);
    if (this.ws.readyState === this.ws.CLOSED || this.graceTimer !== undefined) return;
    this.graceTimer = setTimeout(() => this.ws.terminate(), this.options.limits.closeGraceMs);
    this.graceTimer.unref();
  }

  close(code: number, reason: string): void {
    this.ws.close(code, reason);
  }

  /** Requests are queued or running (the server's shutdown waits for them to be answered: Server.close). */
  get busy(): boolean {
    return this.chain !== SETTLED || this.immediate > 0 || (this.running?.size ?? 0) > 0;
  }

  /** Aborts the running request `id` (a cancellable one); false if none runs under that id. */
  cancel(id: number): boolean {
    const controller = this.running?.get(id);
    if (controller !== undefined) {
      controller.abort(cancelled(id));
      return true;
    }
    // Still queued behind ordered requests: it is aborted the moment it starts (a cancel never misses it).
    const queued = this.queuedCancellable?.get(id);
    if (queued !== undefined) this.queuedCancellable!.set(id, queued + 1);
    return queued !== undefined;
  }

  /** The socket is gone (closed, or cut off). @internal (onClose) */
  gone(): void {
    clearTimeout(this.graceTimer);
    this.end();
  }

  /** Closing or gone: timers stop, running requests are aborted, the handler lets go of what it holds. Once. @internal (onEnd) */
  end(code = 1006, reason = ''): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.slowConsumerTimer);
    clearTimeout(this.inputRateTimer);
    for (const controller of this.running?.values() ?? []) controller.abort(new CommyError(ErrorCode.CLOSED, 'connection closed'));
    this.running = undefined;
    this.handler?.closed(code, reason);
  }

  get open(): boolean {
    return this.ws.readyState === this.ws.OPEN;
  }

  /**
   * The output budget (like Redis's client-output-buffer-limit): over `maxBufferedBytes` unsent, updates
   * conflate and requests wait unread. A connection that stays over it for `slowConsumerTimeoutMs` is closed
   * (4008), so a client that never reads costs a bounded amount of memory for a bounded time.
   */
  overBudget(): boolean {
    if (this.ws.bufferedAmount <= this.options.limits.maxBufferedBytes) return false;
    this.slowConsumerTimer ??= setTimeout(() => this.checkSlowConsumer(), this.options.limits.slowConsumerTimeoutMs);
    return true;
  }

  private checkSlowConsumer(): void {
    this.slowConsumerTimer = undefined;
    if (!this.open || this.ws.bufferedAmount <= this.options.limits.maxBufferedBytes) return;
    this.ws.close(CloseCode.SLOW_CONSUMER, 'output budget exceeded: the client does not read');
    setTimeout(() => this.ws.terminate(), SLOW_CONSUMER_GRACE_MS).unref();
  }

  /**
   * Waits until the output is back under budget. With `pauseInput` (the default: a request of the ordered
   * lane), the socket is not read meanwhile: requests wait unread. A cancellable request passes false: it
   * runs beside the ordered lane, and its cancel must still be read while it waits.
   */
  async outputRoom(pauseInput = true): Promise<void> {
    if (!this.overBudget()) return;
    if (pauseInput) this.pause();
    try {
      for (let wait = ROOM_FIRST_WAIT_MS; this.open && this.overBudget(); wait = Math.min(wait * 2, ROOM_MAX_WAIT_MS)) {
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    } finally {
      if (pauseInput) this.resume();
    }
  }

  send(frame: Uint8Array): void {
    if (!this.open) return;
    this.options.metrics?.sentFrame(frame[1]!, frame.length);
    this.ws.send(frame, { binary: true });
  }

  /**
   * Every frame, even one only answered with an error, goes through the same ordered queue behind the output
   * budget: a client that sends garbage and never reads grows nothing. The rate is counted on arrival.
   * An immediate frame (a cancel) takes effect on arrival instead, a few at a time and once authenticated (never
   * ahead of a pipelined Authenticate); what it answers still waits its turn in that queue (see defer).
   * Called by onMessage. @internal
   */
  receive(data: Buffer, isBinary: boolean): void {
    if (this.ended) return; // closing: nothing more is handled
    this.options.metrics?.receivedFrame(isBinary && data[0] === 0x93 ? data[1]! : 0, data.length);
    // Unsubscribe and QueryCancel only release what the server holds: refusing them for rate would keep it
    // working for a client that asked it to stop (their cost is a decode and a lookup, like a refusal's).
    const allowed = this.rate.take() || releasesOnly(data);
    this.limitInput(data.length);
    const lane = this.laneOf(data, isBinary);
    if (lane === 'immediate' && this.handler!.authenticated && this.immediate < MAX_RUNNING_REQUESTS) {
      this.immediate++;
      void this.handleNow(data, isBinary, allowed).finally(() => this.immediate--);
      return;
    }
    const queuedLane = lane === 'immediate' ? 'ordered' : lane; // an immediate frame that had to wait is ordered now
    const id = lane === 'cancellable' ? peekRequestId(data) : 0;
    if (id !== 0) (this.queuedCancellable ??= new Map()).set(id, this.queuedCancellable.get(id) ?? 0);
    this.enqueue(data.length, () => this.handle(data, isBinary, allowed, queuedLane)).finally(() => {
      if (id !== 0) this.queuedCancellable?.delete(id);
    });
  }

  /**
   * Runs `work` in the ordered queue. What waits there is bounded: past the budget (counting `bytes` and an
   * overhead per item), the socket is not read until half of it has drained.
   */
  private enqueue(bytes: number, work: () => Promise<void>): Promise<void> {
    this.count(bytes);
    const chain = this.chain.then(work).finally(() => {
      this.dequeued(bytes);
      if (this.chain === chain) this.chain = SETTLED; // drained: an idle connection keeps no promise of its own
    });
    this.chain = chain;
    return chain;
  }

  /** Counts what waits (frames not handled, answers not sent) against the budget: past it, stop reading. */
  private count(bytes: number): void {
    this.queuedBytes += bytes + QUEUED_OVERHEAD;
    if (!this.inputPaused && this.queuedBytes > this.options.limits.maxBufferedBytes) {
      this.inputPaused = true;
      this.pause();
    }
  }

  /** An immediate frame: its effect now, its answer (if any) in the ordered queue, behind the output budget. */
  private async handleNow(data: Buffer, isBinary: boolean, allowed: boolean): Promise<void> {
    const out: Uint8Array[] = [];
    const message = this.admit(data, isBinary, allowed, (frame) => out.push(frame));
    if (message !== undefined) await this.run(message, NEVER_ABORTED, (frame) => out.push(frame));
    for (const frame of out) this.defer(frame);
  }

  /** Sends an immediate frame's answer once the output has room, in order with the others, never behind a request. */
  private defer(frame: Uint8Array): void {
    this.count(frame.length);
    this.deferred = this.deferred
      .then(async () => {
        await this.outputRoom();
        this.send(frame);
      })
      .finally(() => this.dequeued(frame.length));
  }

  /** A frame's lane from its type byte; anything unreadable is ordered (and answered with an error in order). */
  private laneOf(data: Buffer, isBinary: boolean): Lane {
    if (!isBinary || data.length < 2 || data[0] !== 0x93 || data[1]! > 0x7f) return 'ordered';
    return this.handler!.laneOf(data[1]!);
  }

  /** Past maxInputBytesPerSecond, the socket is not read until the byte budget has refilled. */
  private limitInput(bytes: number): void {
    const waitMs = this.inputRate.spend(bytes);
    if (waitMs === 0 || this.inputRateTimer !== undefined) return;
    this.pause();
    this.inputRateTimer = setTimeout(() => {
      this.inputRateTimer = undefined;
      this.resume();
    }, waitMs);
  }

  private dequeued(bytes: number): void {
    this.queuedBytes -= bytes + QUEUED_OVERHEAD;
    if (this.inputPaused && this.queuedBytes <= this.options.limits.maxBufferedBytes / 2) {
      this.inputPaused = false;
      this.resume();
    }
  }

  /** The socket is read only while no reason to stop (output over budget, too much queued input) holds. */
  private pause(): void {
    if (this.pauses++ === 0) this.ws.pause();
  }

  private resume(): void {
    if (--this.pauses === 0 && this.open) this.ws.resume();
  }

  private async handle(data: Buffer, isBinary: boolean, allowed: boolean, lane: Exclude<Lane, 'immediate'>): Promise<void> {
    const turn = this.options.turns.take();
    if (turn !== undefined) await turn;
    await this.outputRoom();
    if (!this.open) return;
    const send = (frame: Uint8Array): void => this.send(frame);
    const message = this.admit(data, isBinary, allowed, send);
    if (message === undefined) return;
    if (lane === 'cancellable') this.start(message);
    else await this.run(message, NEVER_ABORTED, send);
  }

  /** The decoded message, or undefined after answering (`out`) why it is refused: not binary, over the rate, unauthenticated, malformed. */
  private admit(data: Buffer, isBinary: boolean, allowed: boolean, out: (frame: Uint8Array) => void): Message | undefined {
    if (!isBinary) {
      out(this.refusal(0, ErrorCode.INVALID_MESSAGE, 'frames must be binary'));
      return undefined;
    }
    if (!allowed) {
      out(this.refusal(peekRequestId(data), ErrorCode.RATE_LIMITED, 'message rate limit exceeded; message dropped'));
      return undefined;
    }
    if (!this.handler!.authenticated && data.length > 1 && data[1] !== MessageType.Authenticate) {
      // Before authentication only Authenticate is read: anything else is refused without decoding it.
      out(this.refusal(peekRequestId(data), ErrorCode.AUTH_FAILED, 'authenticate first'));
      return undefined;
    }
    try {
      return decodeFrame(data, this.options.limits.maxFrameBytes, this.maxElements);
    } catch (err) {
      out(this.errorFrame(requestIdOf(err) || peekRequestId(data), err));
      return undefined;
    }
  }

  /** Handles the message and answers (`out`) with its reply or its error. */
  private async run(message: Message, signal: AbortSignal, out: (frame: Uint8Array) => void): Promise<void> {
    try {
      const reply = await this.handler!.handle(message, signal);
      if (reply !== undefined) out(reply);
    } catch (err) {
      out(this.errorFrame(message.id, err));
    }
  }

  /** Starts a cancellable request beside the ordered lane; its id names it for cancel() until it ends. */
  private start(message: Message): void {
    const id = message.id;
    const running = (this.running ??= new Map());
    if (running.size >= MAX_RUNNING_REQUESTS || running.has(id)) {
      const why = running.has(id) ? `request ${id} is already running` : `at most ${MAX_RUNNING_REQUESTS} cancellable requests at once`;
      this.send(this.errorFrame(id, new CommyError(running.has(id) ? ErrorCode.INVALID_MESSAGE : ErrorCode.RATE_LIMITED, why)));
      return;
    }
    const controller = new AbortController();
    if ((this.queuedCancellable?.get(id) ?? 0) > 0) controller.abort(cancelled(id));
    running.set(id, controller);
    void this.run(message, controller.signal, (frame) => this.send(frame)).finally(() => {
      if (running.get(id) === controller) running.delete(id);
    });
  }

  /** The Error frame answering `err`: a CommyError as it is (never naming the data path), anything else logged. */
  private errorFrame(id: number, err: unknown): Uint8Array {
    if (err instanceof CommyError) {
      // Defence in depth: whatever produced the message, the server's data path never reaches a client.
      return this.refusal(id, err.code, err.message.split(this.options.redact).join('<dataDir>'));
    }
    this.options.onError(err);
    return this.refusal(id, ErrorCode.INTERNAL_ERROR, 'internal error');
  }

  /** Every Error frame this connection sends is made here, and counted by its code. */
  private refusal(id: number, code: string, message: string): Uint8Array {
    this.options.metrics?.error(code);
    return encodeError(id, code as ErrorCode, message);
  }
}

function cancelled(id: number): CommyError {
  return new CommyError(ErrorCode.ABORTED, `request ${id} was cancelled`);
}

/** The request id of a frame we could not decode, if its first bytes still say it (fixarray, type, id). */
function peekRequestId(data: Buffer): number {
  if (data.length < 3 || data[0] !== 0x93) return 0;
  const at = 2; // after fixarray header and a positive-fixint type (types are < 128)
  if (data[1]! > 0x7f) return 0;
  const b = data[at]!;
  if (b <= 0x7f) return b;
  if (b === 0xcc && data.length > at + 1) return data[at + 1]!;
  if (b === 0xcd && data.length > at + 2) return data.readUInt16BE(at + 1);
  if (b === 0xce && data.length > at + 4) {
    const id = data.readUInt32BE(at + 1);
    return id <= 0x7fffffff ? id : 0; // not a valid id: answering it as another one could settle the wrong request
  }
  return 0;
}

/** A frame that can only make the server do less (its type byte, read without decoding). */
function releasesOnly(data: Buffer): boolean {
  return data.length > 1 && (data[1] === MessageType.Unsubscribe || data[1] === MessageType.QueryCancel);
}
