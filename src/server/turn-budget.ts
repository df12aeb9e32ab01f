/**
 * One event-loop turn's share of request handling, for all connections together. Handlers run as promise
 * continuations, and microtasks never yield: a burst of thousands of frames read from one socket at once would
 * otherwise run to the end before the loop reads any other socket (the soak measured a correct client's write
 * waiting 0.7 s behind a flood of one kind of frame). Past `sliceMs` of handling in one turn, the next
 * handler waits for the next turn (setImmediate, after the loop has polled I/O), in arrival order.
 */
export class TurnBudget {
  /** When this turn's handling began (performance.now()), or -1 if it has not. */
  private sliceStart = -1;
  private nextTurn: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly sliceMs: number) {}

  /** Undefined: go on now. A promise: wait for it (the next turn), then go on. */
  take(): Promise<void> | undefined {
    const now = performance.now();
    if (this.sliceStart < 0) {
      this.sliceStart = now;
      setImmediate(this.endTurn);
      return undefined;
    }
    if (now - this.sliceStart <= this.sliceMs) return undefined;
    return (this.nextTurn ??= new Promise<void>((resolve) => (this.wake = resolve)));
  }

  private readonly endTurn = (): void => {
    this.sliceStart = -1;
    const wake = this.wake;
    this.nextTurn = undefined;
    this.wake = undefined;
    wake?.();
  };
}
