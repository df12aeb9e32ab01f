import { CommyError, ErrorCode } from '../core/errors.js';
import type { Transport, TransportEvents, TransportFactory, TransportOptions } from './transport.js';

/** The part of the WHATWG WebSocket this transport uses (browsers, Deno, Bun, Node ≥ 22 have it as a global). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'open' | 'error' | 'message' | 'close', listener: (event: WebSocketEventLike) => void): void;
}

/** The fields read from the events: `data` of a message, `code` and `reason` of a close. */
export interface WebSocketEventLike {
  readonly data?: unknown;
  readonly code?: number;
  readonly reason?: string;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

const OPEN = 1;
const CLOSED = 3;
/** After asking to close, wait this long for the close handshake before giving up on it. */
const CLOSE_GRACE_MS = 2000;
/** Scripts may close with 1000 or 3000–4999 only: a private code for "your frame was over my limit". */
const CLOSE_TOO_LARGE = 4009;

class WebSocketTransport implements Transport {
  constructor(
    private readonly ws: WebSocketLike,
    private readonly closedPromise: Promise<void>,
  ) {}

  get isOpen(): boolean {
    return this.ws.readyState === OPEN;
  }

  send(frame: Uint8Array): void {
    this.ws.send(frame);
  }

  close(code = 1000, reason = ''): Promise<void> {
    if (this.ws.readyState === CLOSED) return Promise.resolve();
    try {
      this.ws.close(code, reason);
    } catch {
      this.ws.close(); // a code this runtime refuses to send: close plainly
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_GRACE_MS)));
    return Promise.race([this.closedPromise, grace]).finally(() => clearTimeout(timer));
  }
}

/**
 * The transport of runtimes without Node: the WHATWG WebSocket (`ctor`, default the global one), binary
 * frames as ArrayBuffers. No TLS options (the runtime's own trust store decides); incoming frames past the
 * limit close the connection, as `ws`'s maxPayload does on Node.
 */
export function webSocketTransport(ctor?: WebSocketConstructor): TransportFactory {
  return (url: string, events: TransportEvents, options: TransportOptions) =>
    new Promise<Transport>((resolve, reject) => {
      const WebSocketClass = ctor ?? globalWebSocket();
      if (WebSocketClass === undefined) {
        reject(new CommyError(ErrorCode.NOT_CONNECTED, `cannot connect to ${url}: this runtime has no global WebSocket`));
        return;
      }
      let ws: WebSocketLike;
      try {
        ws = new WebSocketClass(url);
        ws.binaryType = 'arraybuffer';
      } catch (cause) {
        reject(new CommyError(ErrorCode.NOT_CONNECTED, `cannot connect to ${url}: ${String(cause)}`, { cause }));
        return;
      }
      let opened = false;
      let refused = false;
      const fail = (err: CommyError): void => {
        clearTimeout(timer);
        reject(err);
      };
      const timer = setTimeout(() => {
        fail(new CommyError(ErrorCode.TIMEOUT, `cannot connect to ${url}: no answer within ${options.timeoutMs} ms`));
        ws.close();
      }, options.timeoutMs);
      const closed = new Promise<void>((done) => ws.addEventListener('close', () => done()));
      ws.addEventListener('open', () => {
        opened = true;
        clearTimeout(timer);
        resolve(new WebSocketTransport(ws, closed));
      });
      // The event says nothing more (by design, in browsers); a 'close' follows.
      ws.addEventListener('error', () => {
        if (!opened) fail(new CommyError(ErrorCode.NOT_CONNECTED, `cannot connect to ${url}`));
      });
      ws.addEventListener('message', (event) => {
        if (refused) return;
        const frame = bytesOf(event.data);
        if (frame.byteLength <= options.maxIncomingBytes) {
          events.frame(frame);
          return;
        }
        refused = true; // nothing after a refused frame is read: the connection ends here
        ws.close(CLOSE_TOO_LARGE, 'frame too large');
      });
      ws.addEventListener('close', (event) => {
        if (opened) events.closed(event.code ?? 1006, event.reason ?? '');
        else fail(new CommyError(ErrorCode.NOT_CONNECTED, `cannot connect to ${url}: closed (${event.code ?? 1006})`));
      });
    });
}

function globalWebSocket(): WebSocketConstructor | undefined {
  return (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
}

/** The protocol is binary; a text frame is handed on as bytes too and refused by the frame decoder. */
function bytesOf(data: unknown): Uint8Array {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new TextEncoder().encode(String(data));
}
