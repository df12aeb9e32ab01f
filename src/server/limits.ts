import { DEFAULT_GLOB_LIMITS } from '../core/glob.js';

/**
 * The server's resource limits (docs/operations.md lists them with what happens past each) and the
 * per-connection message rate limiter.
 */
export interface Limits {
  /** Largest WebSocket frame accepted, in bytes. */
  maxFrameBytes: number;
  /** Largest single variable, in bytes. */
  maxVariableBytes: number;
  /** Largest service file, in bytes. */
  maxServiceFileBytes: number;
  /** Longest tenant, service or variable name (at most 64: names are never longer). */
  maxNameLength: number;
  /** Concurrent WebSocket connections, authenticated or not. */
  maxConnections: number;
  /** A connection that has not authenticated this long after connecting is closed. */
  authTimeoutMs: number;
  maxSubscriptionsPerConnection: number;
  /** Token bucket per connection: sustained rate and the burst it may save up. */
  rateLimit: { messagesPerSecond: number; burst: number };
  /**
   * Bytes per second one connection may send on average (a burst of one second's worth or 4 frames, whichever
   * is more, is allowed); past it the server stops reading that socket until the rate is back under. Nothing
   * is dropped: TCP pushes back.
   */
  maxInputBytesPerSecond: number;
  /**
   * Per-connection output budget (like Redis's client-output-buffer-limit): past this many unsent bytes the
   * connection's updates conflate (only the latest value is sent) and its requests wait, unread.
   */
  maxBufferedBytes: number;
  /** A connection whose output stays over maxBufferedBytes this long is closed (4008, slow consumer). */
  slowConsumerTimeoutMs: number;
  /**
   * A connection whose close handshake has begun (from either side) is cut off if its socket is not closed this
   * long after; what it held is let go at once. Without it, a peer that sends a close frame and stops reading
   * keeps its socket (and its place in the connection limits) for ws's close timeout, 30 s.
   */
  closeGraceMs: number;
  /** Connections that have not authenticated yet, over all addresses (a smaller pool than maxConnections). */
  maxUnauthenticatedConnections: number;
  /** Not-yet-authenticated connections from one IP address. */
  maxUnauthenticatedPerIp: number;
  /** Connections from one IP address, authenticated or not. */
  maxConnectionsPerIp: number;
  /** Changes in one ReportVariableChanges (a larger report is refused whole; the client splits its reports). */
  maxChangesPerReport: number;
  /** Globs in one Subscription's `variables`, and in one key's or token's read/write/admin lists. */
  maxPatterns: number;
  /** Characters in one glob. */
  maxPatternLength: number;
  /** Per tenant: services on disk. */
  maxServicesPerTenant: number;
  /** Per tenant: variables, over all its services. */
  maxVariablesPerTenant: number;
  /** Per tenant: bytes of service files on disk. */
  maxBytesPerTenant: number;
  /** Service files the server keeps open at once (each costs an fd, a mapping and a watcher). */
  maxOpenServices: number;
  /** A service nobody uses (no subscription, no local client's connection) is closed after this long. */
  serviceIdleMs: number;
  /** Credential verifications (scrypt) running at once; more wait their turn. */
  maxConcurrentAuth: number;
  /** How long the server remembers an applied write's operation id (a retry within it is not applied twice). */
  opIdTtlMs: number;
  /** Operation ids remembered per client identity (credential + clientKey). */
  maxOpIdsPerClient: number;
  /** Versions remembered with operation ids, per tenant (an acknowledgement of n changes weighs n + 1). */
  maxOpIdWeight: number;
  /**
   * Each tenant's operation journal (`<dataDir>/oplog/<tenant>.ops`), in bytes: the applied operation ids a
   * restarted server still knows are the most recent that fit (a write of n changes takes 128 + 24 n bytes).
   */
  opJournalBytes: number;
}

const MiB = 1024 * 1024;

/**
 * What a frame must hold besides the largest value it carries: the message around one variable (a WriteVariable
 * names a tenant, a service and a variable of up to 64 characters each; an update, a query page or a snapshot
 * chunk carries ids, versions and a definition). About 300 bytes at most, counted generously: a frame limit
 * under maxVariableBytes + this is refused at start (a variable that no frame can carry could be registered but
 * never written, read or sent).
 */
export const FRAME_HEADROOM = 1024;

export const DEFAULT_LIMITS: Limits = Object.freeze({
  maxFrameBytes: 1 * MiB,
  maxVariableBytes: 64 * 1024,
  maxServiceFileBytes: 64 * MiB,
  maxNameLength: 64,
  maxConnections: 10_000,
  authTimeoutMs: 5_000,
  maxSubscriptionsPerConnection: 1_000,
  rateLimit: Object.freeze({ messagesPerSecond: 5_000, burst: 10_000 }),
  maxBufferedBytes: 4 * MiB,
  maxInputBytesPerSecond: 32 * MiB,
  slowConsumerTimeoutMs: 30_000,
  closeGraceMs: 5_000,
  maxUnauthenticatedConnections: 1_000,
  maxUnauthenticatedPerIp: 100,
  maxConnectionsPerIp: 5_000,
  maxChangesPerReport: 4_096,
  maxPatterns: DEFAULT_GLOB_LIMITS.maxPatterns,
  maxPatternLength: DEFAULT_GLOB_LIMITS.maxPatternLength,
  maxServicesPerTenant: 256,
  maxVariablesPerTenant: 262_144,
  maxBytesPerTenant: 4 * 1024 * MiB,
  maxOpenServices: 1_000,
  serviceIdleMs: 10_000,
  maxConcurrentAuth: 4,
  opIdTtlMs: 10 * 60_000,
  maxOpIdsPerClient: 10_000,
  // Each remembered op costs a few hundred bytes: 100,000 is tens of MB at most, and a client only ever resends
  // what was in flight when its connection broke.
  maxOpIdWeight: 100_000,
  // About 26,000 one-variable writes; a sparse file, paged in as it is written.
  opJournalBytes: 4 * MiB,
});

/**
 * A token bucket of bytes that may run into debt: a frame is never refused (it has already arrived), but the
 * debt says how long the reader should stop reading. A few numbers, no timers of its own.
 */
export class ByteRate {
  private readonly perMs: number;
  private tokens: number;
  private last: number;

  constructor(
    bytesPerSecond: number,
    private readonly burst: number,
  ) {
    this.perMs = bytesPerSecond / 1000;
    this.tokens = burst;
    this.last = performance.now();
  }

  /** Spends `bytes`; returns how many ms to wait before reading more (0: go on). `now` as performance.now(). */
  spend(bytes: number, now: number = performance.now()): number {
    const elapsed = now - this.last;
    if (elapsed > 0) {
      this.tokens = Math.min(this.burst, this.tokens + elapsed * this.perMs);
      this.last = now;
    }
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : Math.ceil(-this.tokens / this.perMs);
  }
}

/**
 * A token bucket: starts full (`burst` tokens), refills at `messagesPerSecond`, one token per message.
 * One per connection; a few numbers, no timers, so 10,000 idle connections cost nothing.
 */
export class RateLimiter {
  private readonly perMs: number;
  private readonly burst: number;
  private tokens: number;
  private last: number;

  constructor(limit: Limits['rateLimit']) {
    this.perMs = limit.messagesPerSecond / 1000;
    this.burst = limit.burst;
    this.tokens = limit.burst;
    this.last = performance.now();
  }

  /** Takes one token; false when the bucket is empty (the message is over the limit). `now` in ms, performance.now() clock. */
  take(now: number = performance.now()): boolean {
    const elapsed = now - this.last;
    // A clock that goes backwards (a caller's test clock) must not drain the bucket.
    if (elapsed > 0) {
      this.tokens = Math.min(this.burst, this.tokens + elapsed * this.perMs);
      this.last = now;
    }
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
