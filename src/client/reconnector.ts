import { CommyError, ErrorCode } from '../core/errors.js';
import type { ReconnectPolicy, ReconnectStep } from './reconnect-policy.js';

/** What one reconnection does, and who hears of each step. */
export interface ReconnectHooks {
  /** Opens, authenticates and resubscribes; rejects when any of it fails. */
  attempt(): Promise<void>;
  /** An attempt failed (it is tried again after the policy's delay). */
  failed(err: CommyError, step: ReconnectStep): void;
  /** An attempt is about to wait `step.delayMs`. */
  scheduled?(step: ReconnectStep): void;
}

/**
 * The loop that re-establishes a lost connection: wait as the policy says, attempt, repeat until an attempt
 * succeeds or stop() is called. One loop per outage; the policy (and its breaker) outlives it.
 */
export class Reconnector {
  private stopped = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly policy: ReconnectPolicy,
    private readonly hooks: ReconnectHooks,
  ) {}

  /** Resolves true once reconnected, false when stopped first. */
  async run(): Promise<boolean> {
    while (!this.stopped) {
      const step = this.policy.next();
      this.hooks.scheduled?.(step);
      await this.sleep(step.delayMs);
      if (this.stopped) return false;
      try {
        await this.hooks.attempt();
      } catch (err) {
        if (this.stopped) return false;
        this.policy.failed();
        this.hooks.failed(asCommyError(err), step);
        continue;
      }
      this.policy.succeeded();
      return !this.stopped;
    }
    return false;
  }

  /** Ends the loop at its next step; a wait in progress ends at once. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.wake?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.timer = setTimeout(resolve, ms);
    });
  }
}

function asCommyError(err: unknown): CommyError {
  return err instanceof CommyError ? err : new CommyError(ErrorCode.NOT_CONNECTED, `reconnecting failed: ${String(err)}`, { cause: err });
}
