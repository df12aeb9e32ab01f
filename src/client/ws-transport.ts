import WebSocket from 'ws';
import { CommyError, ErrorCode } from '../core/errors.js';
import type { Transport, TransportEvents, TransportFactory, TransportOptions } from './transport.js';

/** After asking the server to close, wait this long for its close frame before dropping the socket. */
const CLOSE_GRACE_MS = 2000;

class WsTransport implements Transport {
  private readonly closedPromise: Promise<void>;

  constructor(private readonly ws: WebSocket) {
    this.closedPromise = new Promise((resolve) => ws.once('close', () => resolve()));
  }

  get isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(frame: Uint8Array): void {
    this.ws.send(frame, { binary: true });
  }

  close(code = 1000, reason = ''): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    this.ws.close(code, reason);
    const timer = setTimeout(() => this.ws.terminate(), CLOSE_GRACE_MS);
    return this.closedPromise.finally(() => clearTimeout(timer));
  }
}

/** Node transport: the `ws` package, binary frames, no compression (frames are small and latency-bound). */
export const openWsTransport: TransportFactory = (url: string, events: TransportEvents, options: TransportOptions) =>
  new Promise<Transport>((resolve, reject) => {
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, {
        perMessageDeflate: false,
        maxPayload: options.maxIncomingBytes,
        handshakeTimeout: options.timeoutMs,
        ...(options.tls?.ca !== undefined ? { ca: asPem(options.tls.ca) } : {}),
        ...(options.tls?.rejectUnauthorized !== undefined ? { rejectUnauthorized: options.tls.rejectUnauthorized } : {}),
      });
    } catch (cause) {
      reject(new CommyError(ErrorCode.NOT_CONNECTED, `cannot connect to ${url}: ${(cause as Error).message}`, { cause }));
      return;
    }
    let opened = false;
    ws.on('error', (err) => {
      if (opened) return; // a 'close' follows; the connection reports the loss from there
      const timedOut = /timed? ?out/i.test(err.message);
      reject(new CommyError(timedOut ? ErrorCode.TIMEOUT : ErrorCode.NOT_CONNECTED, `cannot connect to ${url}: ${err.message}`, { cause: err }));
    });
    ws.on('open', () => {
      opened = true;
      resolve(new WsTransport(ws));
    });
    // The protocol is binary; a text frame is handed on as bytes too and refused by the frame decoder.
    ws.on('message', (data) => events.frame(data as Buffer));
    ws.on('close', (code, reason) => {
      if (opened) events.closed(code, reason.toString());
      else reject(new CommyError(ErrorCode.NOT_CONNECTED, `cannot connect to ${url}: closed (${code})`));
    });
  });

/** `ws` types its CA as string or Buffer; the option takes any bytes (a browser-safe type). */
function asPem(ca: string | Uint8Array): string | Buffer {
  return typeof ca === 'string' || Buffer.isBuffer(ca) ? ca : Buffer.from(ca.buffer, ca.byteOffset, ca.byteLength);
}
