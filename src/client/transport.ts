/**
 * One binary message channel to the server. The client core only sees this interface: Node plugs in `ws`
 * (ws-transport.ts), other runtimes the global WebSocket (web-socket-transport.ts).
 */
export interface Transport {
  readonly isOpen: boolean;
  /** Sends one binary frame (the bytes must not be changed afterwards). */
  send(frame: Uint8Array): void;
  /** Closes the channel; resolves once it is closed. */
  close(code?: number, reason?: string): Promise<void>;
}

export interface TransportEvents {
  frame(data: Uint8Array): void;
  /** Called once when the channel closes after it opened, whoever closed it. */
  closed(code: number, reason: string): void;
}

export interface TransportOptions {
  /** Incoming frames past this are refused by the transport (the connection closes). */
  maxIncomingBytes: number;
  /** wss:// only, and only where the runtime lets a script choose (Node). */
  tls?: { ca?: string | Uint8Array; rejectUnauthorized?: boolean };
  /** Give up opening after this long. */
  timeoutMs: number;
}

/** Opens a channel; rejects with CommyError NOT_CONNECTED (or TIMEOUT) when it cannot. */
export type TransportFactory = (url: string, events: TransportEvents, options: TransportOptions) => Promise<Transport>;
