import type { Duplex } from 'node:stream';
import { WebSocket } from 'ws';

/** What is told when a socket's closing begins (a Connection). */
export interface ClosingWatcher {
  /** `code`: the close frame's (sent or received), or 1006 when the peer ended the TCP connection without one. */
  closing(code: number, reason: string): void;
}

/** The ServerSocket an upgraded TCP socket carries, on the TCP socket itself: its 'end' listener is shared. */
const CARRIED: unique symbol = Symbol('commy.server-socket');
type Carrier = Duplex & { [CARRIED]?: ServerSocket };

function onTcpEnd(this: Duplex): void {
  (this as Carrier)[CARRIED]?.closingBegins(1006, 'the peer ended the connection without a close frame');
}

/**
 * A server-side WebSocket that says when its closing begins. ws emits 'close' only once the TCP socket is gone,
 * which a peer that stops reading can put off until the close timeout; what the connection holds (subscriptions,
 * leases, running requests) is let go at the start instead. The server's WebSocketServer makes these
 * (its `WebSocket` option).
 */
export class ServerSocket extends WebSocket {
  private watcher: ClosingWatcher | undefined;

  /**
   * `watcher` is told once, when the close handshake begins from either side (a close frame sent or received:
   * both go through close()), or when the peer ends its side of `tcp` (the upgraded socket) without one.
   */
  watchClosing(tcp: Duplex, watcher: ClosingWatcher): void {
    this.watcher = watcher;
    (tcp as Carrier)[CARRIED] = this;
    tcp.on('end', onTcpEnd);
  }

  override close(code?: number, data?: string | Buffer): void {
    super.close(code, data);
    this.closingBegins(code ?? 1005, data === undefined ? '' : String(data));
  }

  /** @internal (close, onTcpEnd) */
  closingBegins(code: number, reason: string): void {
    const watcher = this.watcher;
    this.watcher = undefined; // once
    watcher?.closing(code, reason);
  }
}
