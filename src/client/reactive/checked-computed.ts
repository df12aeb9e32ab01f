import { Computed, type SignalOptions } from '@preact/signals-core';

/**
 * A computed signal that runs `check` before every read of `value` (and `peek()`, which reads it). The check
 * lets a signal nobody watches see changes no listener told it of: it compares a change stamp and, if it moved,
 * bumps the signal's own counter, so the read that follows recomputes. Runs before the base getter, so the
 * counter moves before the signal is refreshed or tracked.
 */
export class CheckedComputed<T> extends Computed<T> {
  constructor(
    private readonly check: () => void,
    fn: () => T,
    options: SignalOptions<T>,
  ) {
    super(fn, options);
  }

  override get value(): T {
    this.check();
    return super.value;
  }
}
