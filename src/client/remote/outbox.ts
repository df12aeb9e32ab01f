import { ErrorCode, type CommyError } from '../../core/errors.js';
import { splitByCost } from '../../protocol/frame-split.js';
import type { GroupAck, OutboundChange, OutboundGroup, SendGroup } from './outbound-group.js';

/** Read at every flush: the client learns maxChangesPerReport when it authenticates. */
export interface ReportLimits {
  readonly maxFrameBytes: number;
  readonly maxChangesPerReport: number;
}

/** The side that knows what the changes mean (the reconciler, the variables, the change events). */
export interface OutboxPeer {
  /** What to send now; called once per flush. */
  collect(): OutboundChange[];
  /** A flush's groups are all sent (also when it had nothing to send). */
  flushed(): void;
  /** A group is about to be sent. */
  sending(group: OutboundGroup): void;
  acknowledged(group: OutboundGroup, ack: GroupAck): void;
  /** Nothing of the group was applied. `retry`: RATE_LIMITED, so it goes again after a pause. */
  refused(group: OutboundGroup, retry: boolean): void;
  /** A failure nobody awaits. */
  onError(err: CommyError): void;
}

/** One group in flight; `watched` once a flush()/writeVariable() caller awaits it. */
interface Report {
  readonly group: OutboundGroup;
  promise: Promise<void>;
  watched: boolean;
}

/** The flush that waits behind the reports in flight; resolves with what it sent, once sent. */
interface Wave {
  promise: Promise<Report[]>;
  resolve(sent: Report[]): void;
}

/** The reports in flight that carry one variable, and the last of them. */
interface Carriers {
  reports: number;
  last: Report;
}

const noop = (): void => {};

/** MessagePack framing around a report's changes: [type, id, {sid, changes: [...]}], generously counted. */
const REPORT_OVERHEAD = 64;
/** Per change: a 2-array, the index (up to 5 bytes) and the bin header (up to 5 bytes). */
const CHANGE_OVERHEAD = 12;
/** After RATE_LIMITED: the server's token bucket refills continuously; this is a few hundred messages' worth. */
const RATE_LIMIT_RETRY_MS = 50;

/**
 * The outbound pipeline of one remote service: what is collected at a flush goes out in groups that each
 * fit a frame, at most one wave of groups in flight. A flush asked for while a wave is in flight waits for
 * its answers and then sends everything changed meanwhile at once, so a fast writer conflates instead of
 * flooding the server (whose per-connection rate limit would refuse it).
 */
export class Outbox {
  private readonly inflight = new Set<Report>();
  private readonly carriers = new Map<number, Carriers>();
  /** An end-of-turn flush is queued (schedule()). */
  private queued = false;
  /** A flush waits for the wave in flight; `wave` is how its callers learn what it sent. */
  private afterAck = false;
  private wave: Wave | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  private readonly endOfTurn = (): void => {
    if (!this.queued) return;
    this.queued = false;
    if (this.retryTimer !== undefined) return; // the RATE_LIMITED pause ends with a flush of everything
    if (this.inflight.size > 0) this.afterAck = true;
    else this.flushNow();
  };
  /** The RATE_LIMITED pause is over: everything pending goes. */
  private readonly retry = (): void => {
    this.retryTimer = undefined;
    this.flushNow();
  };

  constructor(
    private readonly send: SendGroup,
    private readonly peer: OutboxPeer,
    private readonly limits: ReportLimits,
  ) {}

  /** A write happened: flush at the end of the turn (or after the wave in flight). */
  schedule(): void {
    if (this.queued) return;
    this.queued = true;
    queueMicrotask(this.endOfTurn);
  }

  /** Sends every pending change and resolves once every report in flight is acknowledged. */
  async flushAll(): Promise<void> {
    const earlier = [...this.inflight];
    for (const report of earlier) report.watched = true;
    const sent = earlier.length > 0 ? await this.afterInflight() : this.flushNow();
    for (const report of sent) report.watched = true;
    await Promise.all([...earlier, ...sent].map((r) => r.promise));
  }

  /** Sends pending changes and resolves once the one to variable `index` is acknowledged. */
  async deliver(index: number): Promise<void> {
    const sent = this.inflight.size > 0 ? await this.afterInflight() : this.flushNow();
    // Not sent: the same bytes are already in flight, or the server already holds them.
    const report = sent.find((r) => r.group.changes.some((c) => c.index === index)) ?? this.carriers.get(index)?.last;
    if (report === undefined) return;
    report.watched = true;
    await report.promise;
  }

  /** For closing: sends what is pending; returns the reports in flight, whose failures the caller now owns. */
  drain(): Promise<void>[] {
    this.flushNow();
    const waits = [...this.inflight];
    for (const report of waits) report.watched = true;
    return waits.map((r) => r.promise);
  }

  /** Sends nothing more; flushes waiting for a wave resolve with nothing sent. */
  stop(): void {
    this.stopped = true;
    this.queued = false;
    this.afterAck = false;
    this.wave?.resolve([]);
    this.wave = undefined;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /**
   * Joins the flush that goes out when the reports in flight are answered. Waiting rather than pipelining
   * keeps at most one wave of reports in flight, however many flush() calls pile up.
   */
  private afterInflight(): Promise<Report[]> {
    this.afterAck = true;
    if (this.wave === undefined) {
      let resolve: (sent: Report[]) => void = noop;
      const promise = new Promise<Report[]>((r) => (resolve = r));
      this.wave = { promise, resolve };
    }
    return this.wave.promise;
  }

  /** Collects what changed and sends it, in as few groups as the frame limit and the server's cap allow. */
  private flushNow(): Report[] {
    this.queued = false;
    this.afterAck = false;
    const wave = this.wave;
    this.wave = undefined;
    const sent: Report[] = [];
    try {
      if (this.stopped) return sent;
      const changes = this.peer.collect();
      if (changes.length > 0) for (const group of this.split(changes)) sent.push(this.dispatch({ changes: group }));
      this.peer.flushed();
      return sent;
    } finally {
      wave?.resolve(sent);
    }
  }

  private split(changes: OutboundChange[]): OutboundChange[][] {
    const { maxFrameBytes, maxChangesPerReport } = this.limits;
    return splitByCost(changes, (c) => c.bytes.length + CHANGE_OVERHEAD, maxFrameBytes - REPORT_OVERHEAD, maxChangesPerReport);
  }

  private dispatch(group: OutboundGroup): Report {
    const report: Report = { group, promise: Promise.resolve(), watched: false };
    this.peer.sending(group);
    this.carry(report);
    this.inflight.add(report);
    report.promise = new Promise<void>((resolve, reject) => {
      const failed = (err: CommyError): void => {
        this.answered(report);
        this.failed(report, err);
        reject(err);
        this.sendDeferred();
      };
      let sending = true;
      this.send(group, {
        reply: (ack) => {
          this.answered(report);
          this.peer.acknowledged(group, ack);
          resolve();
          this.sendDeferred();
        },
        // A group that cannot go fails inside send(): settle it after this flush, like any other failure,
        // so flush() and writeVariable() callers find the report and get the error.
        fail: (err) => (sending ? queueMicrotask(() => failed(err)) : failed(err)),
      });
      sending = false;
    });
    report.promise.catch(noop); // unawaited background flushes report through onError instead
    return report;
  }

  private failed(report: Report, err: CommyError): void {
    if (err.code === ErrorCode.RATE_LIMITED) {
      // Nothing is wrong with the values: they go again after a pause; the caller awaiting this report
      // gets RATE_LIMITED.
      this.peer.refused(report.group, true);
      if (this.retryTimer === undefined && !this.stopped) this.retryTimer = setTimeout(this.retry, RATE_LIMIT_RETRY_MS);
      return;
    }
    this.peer.refused(report.group, false);
    // Decided after the caller had its chance to await: only failures nobody awaits go to onError.
    queueMicrotask(() => {
      if (!report.watched && !this.stopped) this.peer.onError(err);
    });
  }

  /** After an answer: sends the flush that waited for it (unless a RATE_LIMITED pause runs; its timer will). */
  private sendDeferred(): void {
    if (this.afterAck && this.inflight.size === 0 && this.retryTimer === undefined) this.flushNow();
  }

  private carry(report: Report): void {
    for (const { index } of report.group.changes) {
      const c = this.carriers.get(index);
      if (c === undefined) this.carriers.set(index, { reports: 1, last: report });
      else {
        c.reports++;
        c.last = report;
      }
    }
  }

  /** The report is out of flight, whatever the answer. */
  private answered(report: Report): void {
    this.inflight.delete(report);
    for (const { index } of report.group.changes) {
      const c = this.carriers.get(index);
      if (c !== undefined && --c.reports === 0) this.carriers.delete(index);
    }
  }
}
