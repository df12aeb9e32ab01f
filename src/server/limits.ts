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
  /** Per-connection send backlog before conflation holds updates back (only the latest value is sent). */
  maxBufferedBytes: number;
}

const MiB = 1024 * 1024;

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
});

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
