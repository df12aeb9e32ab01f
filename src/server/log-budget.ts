import type { Logger } from './logger.js';

/** Lines per second of one event kind before the rest are counted instead of written. */
const LINES_PER_SECOND = 10;

/**
 * Log lines a client can cause at will (a refused connection, a failed authentication): at most
 * LINES_PER_SECOND of each kind a second; past that they are counted, and one line a second later says how many
 * were left out. A client opening and dropping connections in a loop cannot fill the disk or the log pipeline.
 */
export class LogBudget {
  private readonly kinds = new Map<string, { windowStart: number; lines: number; suppressed: number }>();

  constructor(
    private readonly log: Logger,
    private readonly perSecond = LINES_PER_SECOND,
  ) {}

  info(fields: { event: string } & Record<string, unknown>, msg: string): void {
    const now = performance.now();
    let kind = this.kinds.get(fields.event);
    if (kind === undefined) this.kinds.set(fields.event, (kind = { windowStart: now, lines: 0, suppressed: 0 }));
    if (now - kind.windowStart >= 1000) {
      kind.windowStart = now;
      kind.lines = 0;
    }
    if (kind.lines < this.perSecond) {
      kind.lines++;
      this.log.info(fields, msg);
      return;
    }
    if (kind.suppressed++ === 0) setTimeout(() => this.report(fields.event), 1000).unref();
  }

  private report(event: string): void {
    const kind = this.kinds.get(event);
    if (kind === undefined || kind.suppressed === 0) return;
    this.log.info({ event, suppressed: kind.suppressed }, `${kind.suppressed} more "${event}" lines left out in the last second`);
    kind.suppressed = 0;
  }
}
