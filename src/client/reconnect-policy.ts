import type { ResolvedReconnect } from './client-options.js';

/** The next reconnection attempt: how long to wait first, and whether it is the breaker's half-open probe. */
export interface ReconnectStep {
  readonly delayMs: number;
  readonly kind: 'retry' | 'probe';
}

/**
 * When to try again: exponential backoff with full jitter (a random wait up to a cap that doubles per
 * failure, so a crowd of clients does not come back in lockstep) behind a circuit breaker. After
 * `breaker.failures` consecutive failures the breaker opens: the next attempt waits `resetMs` and is a single
 * probe; a failed probe opens it again, a success closes it. Pure: no timers.
 */
export class ReconnectPolicy {
  private failures = 0;

  constructor(
    private readonly options: ResolvedReconnect,
    private readonly random: () => number = Math.random,
  ) {}

  /** Open after enough consecutive failures: attempts are single probes, `resetMs` apart. */
  get breakerOpen(): boolean {
    return this.failures >= this.options.breaker.failures;
  }

  next(): ReconnectStep {
    if (this.breakerOpen) return { delayMs: this.options.breaker.resetMs, kind: 'probe' };
    const { initialDelayMs, maxDelayMs } = this.options;
    const cap = Math.min(maxDelayMs, initialDelayMs * 2 ** this.failures);
    return { delayMs: Math.floor(this.random() * cap), kind: 'retry' };
  }

  failed(): void {
    this.failures++;
  }

  succeeded(): void {
    this.failures = 0;
  }
}
