import { CommyError, ErrorCode } from '../../core/errors.js';
import { splitByCost } from '../../protocol/frame-split.js';
import type { GroupAck, OutboundChange, OutboundGroup, SendGroup } from './outbound-group.js';
import { stopReason, type StopReason } from './outbox-stop.js';

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
  /** A group is about to be sent (once: not again when it is resent). */
  sending(group: OutboundGroup): void;
  acknowledged(group: OutboundGroup, ack: GroupAck): void;
  /** Nothing of the group was applied. `retry`: RATE_LIMITED, so it goes again after a pause. */
  refused(group: OutboundGroup, retry: boolean): void;
  /** A failure nobody awaits. */
  onError(err: CommyError): void;
}

/**
 * One group from its first send to its final answer. Its `promise` is what flush()/writeVariable() callers
 * await; after a TIMEOUT it is rejected and replaced, since the group itself is not done: its answer may
 * still come, or it is resent after a reconnection.
 */
interface Report {
  readonly group: OutboundGroup;
  promise: Promise<void>;
  resolve(): void;
  reject(err: CommyError): void;
  watched: boolean;
  /** Which send of it an answer belongs to: answers to an earlier one are not its answer any more. */
  attempt: number;
  /** Timed out: waiting for a late answer (or for the connection's loss, then a resend). */
  unknown: boolean;
}

/**
 * What a wave did: the reports it sent, or, when the outbox stopped before it could go, the variables whose
 * changes it never sent. Its callers look for their own: a flush fails if any was dropped, a writeVariable()
 * only if its variable was.
 */
interface WaveResult {
  readonly sent: readonly Report[];
  readonly dropped?: DroppedChanges;
}

/** Changes that never left the buffer because the outbox stopped, and what their awaiting callers get. */
interface DroppedChanges {
  readonly indices: ReadonlySet<number>;
  readonly error: CommyError;
}

/** The flush that waits behind the reports in flight (or for the connection); resolves with what it did. */
interface Wave {
  promise: Promise<WaveResult>;
  resolve(result: WaveResult): void;
  /** The variables its callers await ('all' once a flushAll() joined): the others, if dropped, go to onError. */
  awaited: Set<number> | 'all';
}

/** The reports in flight that carry one variable, and the last of them. */
interface Carriers {
  reports: number;
  last: Report;
}

const noop = (): void => {};

/** MessagePack framing around a report's changes: [type, id, {sid, changes: [...], opId}], generously counted. */
const REPORT_OVERHEAD = 80;
/** Per change: a 2-array, the index (up to 5 bytes) and the bin header (up to 5 bytes). */
const CHANGE_OVERHEAD = 12;
/** After RATE_LIMITED: the server's token bucket refills continuously; this is a few hundred messages' worth. */
const RATE_LIMIT_RETRY_MS = 50;

/** Operation ids for an outbox on its own (tests); a Client hands one counter to all its services. */
function counter(): () => number {
  let next = 1;
  return () => next++;
}

/**
 * The outbound pipeline of one remote service: what is collected at a flush goes out in groups that each
 * fit a frame, at most one wave of groups in flight. A flush asked for while a wave is in flight waits for
 * its answers and then sends everything changed meanwhile at once, so a fast writer conflates instead of
 * flooding the server (whose per-connection rate limit would refuse it).
 *
 * A group whose outcome is unknown is never treated as refused: after a TIMEOUT it stays in flight for its
 * late answer; when the connection is lost it is *parked* and resent, with the same operation id, once
 * resume() says the service is subscribed again. While paused nothing is sent; writes wait in the buffer.
 */
export class Outbox {
  private readonly inflight = new Set<Report>();
  /** Sent on a connection that was lost (or never went): resent by resume(), oldest first. */
  private parked: Report[] = [];
  private readonly carriers = new Map<number, Carriers>();
  /** An end-of-turn flush is queued (schedule()). */
  private queued = false;
  /** A flush waits for the wave in flight (or the connection); `wave` is how its callers learn what it sent. */
  private afterAck = false;
  private wave: Wave | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private online = true;
  private stopped = false;
  /** Why stop() was called: what a flush asked for afterwards fails with. */
  private stoppedBy: StopReason | undefined;
  /** hold(): told once no report is in flight. */
  private idle: (() => void) | undefined;
  private readonly endOfTurn = (): void => {
    if (!this.queued) return;
    this.queued = false;
    if (this.retryTimer !== undefined) return; // the RATE_LIMITED pause ends with a flush of everything
    if (this.inflight.size > 0 || !this.online) this.afterAck = true;
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
    private readonly nextOpId: () => number = counter(),
  ) {}

  /** A write happened: flush at the end of the turn (or after the wave in flight, or once reconnected). */
  schedule(): void {
    if (this.queued) return;
    this.queued = true;
    queueMicrotask(this.endOfTurn);
  }

  /**
   * Sends every pending change and resolves once every report pending at the call is acknowledged. Rejects
   * if the outbox stops first with any of them unsent (StopReason.unsent) or unanswered (StopReason.unknown).
   */
  async flushAll(): Promise<void> {
    this.assertRunning();
    const earlier = [...this.inflight, ...this.parked];
    for (const report of earlier) report.watched = true;
    const { sent, dropped } = earlier.length > 0 || !this.online ? await this.nextWave('all') : { sent: this.flushNow() };
    if (dropped !== undefined && dropped.indices.size > 0) throw dropped.error;
    for (const report of sent) report.watched = true;
    await Promise.all([...earlier, ...sent].map((r) => r.promise));
  }

  /** Sends pending changes and resolves once the one to variable `index` is acknowledged (rejects as flushAll()). */
  async deliver(index: number): Promise<void> {
    this.assertRunning();
    // Taken before waiting: if stop() ends this report meanwhile, its carrier is gone but its rejection stays.
    const carried = this.carriers.get(index)?.last;
    const waits = this.inflight.size > 0 || this.parked.length > 0 || !this.online;
    const { sent, dropped } = waits ? await this.nextWave(index) : { sent: this.flushNow() };
    if (dropped?.indices.has(index) === true) throw dropped.error;
    // Not sent: the same bytes are already in flight, or the server already holds them.
    const report = sent.find((r) => r.group.changes.some((c) => c.index === index)) ?? this.carriers.get(index)?.last ?? carried;
    if (report === undefined) return;
    report.watched = true;
    await report.promise;
  }

  /** For closing: sends what is pending; returns the reports not yet answered, whose failures the caller now owns. */
  drain(): Promise<void>[] {
    this.flushNow();
    const waits = [...this.inflight, ...this.parked];
    for (const report of waits) report.watched = true;
    return waits.map((r) => r.promise);
  }

  /** The connection is gone: nothing goes out; every report not answered waits to be resent. */
  pause(): void {
    this.online = false;
    for (const report of [...this.inflight]) this.park(report);
  }

  /**
   * Sends nothing new (writes wait, as while paused) and resolves once no report is in flight; resume() ends
   * it. For switching the subscription: a report carries the sid it was sent under.
   */
  hold(): Promise<void> {
    this.online = false;
    if (this.inflight.size === 0) return Promise.resolve();
    return new Promise((resolve) => (this.idle = resolve));
  }

  /** Subscribed again: the parked reports go first (same operation ids), then everything written meanwhile. */
  resume(): void {
    if (this.stopped) return;
    this.online = true;
    const parked = this.parked.sort((a, b) => (a.group.opId ?? 0) - (b.group.opId ?? 0));
    this.parked = [];
    for (const report of parked) this.transmit(report);
    if (this.inflight.size > 0) this.afterAck = true;
    else if (this.retryTimer === undefined) this.flushNow();
  }

  /**
   * Sends nothing more. Nothing still in the buffer is ever sent: flushes waiting for it reject (`unsent`), and
   * onError hears once of the variables nobody awaits. Reports that can no longer be answered (parked, or timed
   * out) fail with `unknown`; those in flight on a live connection are still answered. Without a `cause` the
   * service was closed; with one (a connection lost for good, the server ending it) that is what they get.
   */
  stop(cause?: CommyError, serviceId?: string): void {
    if (this.stopped) return;
    const why = stopReason(serviceId, cause);
    this.stopped = true;
    this.stoppedBy = why;
    this.queued = false;
    this.afterAck = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.dropUnsent(why);
    this.failOrphans(why.unknown);
  }

  /** A flush asked for after stop() would wait for a wave that never comes: it fails at once instead. */
  private assertRunning(): void {
    if (this.stoppedBy !== undefined) throw this.stoppedBy.unsent;
  }

  /**
   * What is still in the buffer will never be sent: the waiting wave's callers learn which of their variables
   * were dropped (they reject), and the writes nobody awaits are reported once, rather than lost unheard.
   */
  private dropUnsent(why: StopReason): void {
    const wave = this.wave;
    this.wave = undefined;
    const indices = new Set(this.peer.collect().map((c) => c.index));
    this.peer.flushed();
    wave?.resolve({ sent: [], dropped: { indices, error: why.unsent } });
    const awaited = wave?.awaited;
    const unawaited = awaited === 'all' ? 0 : [...indices].filter((i) => awaited?.has(i) !== true).length;
    if (unawaited > 0) this.peer.onError(why.dropped(unawaited));
  }

  /** Reports sent and never to be answered now (parked, or timed out): their watchers get `err`. */
  private failOrphans(err: CommyError): void {
    const orphans = [...this.parked, ...[...this.inflight].filter((r) => r.unknown)];
    this.parked = [];
    for (const report of orphans) {
      this.answered(report);
      report.reject(err);
    }
  }

  /**
   * Joins the flush that goes out when the reports in flight are answered (or the connection is back), as a
   * caller awaiting variable `awaits` (or all of them). Waiting rather than pipelining keeps at most one wave of
   * reports in flight, however many flush() calls pile up.
   */
  private nextWave(awaits: number | 'all'): Promise<WaveResult> {
    this.afterAck = true;
    this.wave ??= newWave();
    const wave = this.wave;
    if (awaits === 'all') wave.awaited = 'all';
    else if (wave.awaited !== 'all') wave.awaited.add(awaits);
    return wave.promise;
  }

  /** Collects what changed and sends it, in as few groups as the frame limit and the server's cap allow. */
  private flushNow(): Report[] {
    this.queued = false;
    if (!this.online && !this.stopped) {
      this.afterAck = true; // resume() flushes; the wave waits for it
      return [];
    }
    this.afterAck = false;
    const wave = this.wave;
    this.wave = undefined;
    const sent: Report[] = [];
    try {
      if (this.stopped) return sent;
      const changes = this.peer.collect();
      if (changes.length > 0) for (const group of this.split(changes)) sent.push(this.dispatch({ changes: group, opId: this.nextOpId() }));
      this.peer.flushed();
      return sent;
    } finally {
      wave?.resolve({ sent });
    }
  }

  private split(changes: OutboundChange[]): OutboundChange[][] {
    const { maxFrameBytes, maxChangesPerReport } = this.limits;
    return splitByCost(changes, (c) => c.bytes.length + CHANGE_OVERHEAD, maxFrameBytes - REPORT_OVERHEAD, maxChangesPerReport);
  }

  private dispatch(group: OutboundGroup): Report {
    const report = newReport(group);
    this.peer.sending(group);
    this.carry(report);
    this.transmit(report);
    return report;
  }

  /** Puts the report on the wire (again, when resent): only this send's answers count. */
  private transmit(report: Report): void {
    const attempt = ++report.attempt;
    report.unknown = false;
    this.inflight.add(report);
    const current = (): boolean => report.attempt === attempt && this.inflight.has(report);
    let sending = true;
    this.send(report.group, {
      reply: (ack) => {
        if (!current()) return;
        this.answered(report);
        try {
          this.peer.acknowledged(report.group, ack);
        } finally {
          // Applied by the server whatever happens here: its callers (and close()) must never wait forever.
          report.resolve();
          this.sendDeferred();
        }
      },
      // A group that cannot go fails inside send(): settle it after this flush, like any other failure,
      // so flush() and writeVariable() callers find the report and get the error.
      fail: (err) => {
        const settle = (): void => {
          if (current()) this.failed(report, err);
        };
        if (sending) queueMicrotask(settle);
        else settle();
      },
    });
    sending = false;
  }

  private failed(report: Report, err: CommyError): void {
    if (err.code === ErrorCode.TIMEOUT) {
      // Not a refusal: the server may well have applied it. Its watchers hear TIMEOUT; the report waits for
      // its late answer, or for a resend with the same operation id if the connection goes.
      report.unknown = true;
      this.tell(report, err);
      return;
    }
    if (err.code === ErrorCode.NOT_CONNECTED && !this.stopped) {
      // Lost with the connection (or never sent): resent after reconnecting. Its callers wait (flush() has
      // its own deadline); a client that does not reconnect stops the outbox, which fails it.
      this.park(report);
      return;
    }
    this.answered(report);
    if (err.code === ErrorCode.RATE_LIMITED || err.code === ErrorCode.UNAVAILABLE) {
      // Nothing is wrong with the values: they go again after a pause; the caller awaiting this report
      // gets the error (RATE_LIMITED, or UNAVAILABLE: a cluster node whose Redis is away).
      this.peer.refused(report.group, true);
      report.reject(err);
      if (this.retryTimer === undefined && !this.stopped) this.retryTimer = setTimeout(this.retry, RATE_LIMIT_RETRY_MS);
      this.sendDeferred();
      return;
    }
    this.peer.refused(report.group, false);
    this.tell(report, err);
    this.sendDeferred();
  }

  /** Rejects the report's watchers; a failure nobody awaits goes to onError (decided after they could await). */
  private tell(report: Report, err: CommyError): void {
    const watched = report.watched;
    report.reject(err);
    if (report.unknown) renew(report);
    queueMicrotask(() => {
      if (!watched && !report.watched && !this.stopped) this.peer.onError(err);
    });
  }

  private park(report: Report): void {
    this.inflight.delete(report);
    if (!this.parked.includes(report)) this.parked.push(report);
    this.settled();
  }

  /** A report left the set in flight: a hold() waiting for none is told when it is empty. */
  private settled(): void {
    if (this.idle === undefined || this.inflight.size > 0) return;
    const idle = this.idle;
    this.idle = undefined;
    idle();
  }

  /** After an answer: sends the flush that waited for it (unless a RATE_LIMITED pause runs; its timer will). */
  private sendDeferred(): void {
    if (this.afterAck && this.inflight.size === 0 && this.retryTimer === undefined && this.online) this.flushNow();
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

  /** The report is done, whatever the answer. */
  private answered(report: Report): void {
    this.inflight.delete(report);
    this.settled();
    for (const { index } of report.group.changes) {
      const c = this.carriers.get(index);
      if (c !== undefined && --c.reports === 0) this.carriers.delete(index);
    }
  }
}

function newWave(): Wave {
  let resolve: (result: WaveResult) => void = noop;
  const promise = new Promise<WaveResult>((r) => (resolve = r));
  return { promise, resolve, awaited: new Set<number>() };
}

function newReport(group: OutboundGroup): Report {
  const report: Report = { group, promise: Promise.resolve(), resolve: noop, reject: noop, watched: false, attempt: 0, unknown: false };
  renew(report);
  return report;
}

/** A fresh promise for the report's next watchers (unawaited ones report through onError instead). */
function renew(report: Report): void {
  report.watched = false;
  report.promise = new Promise<void>((resolve, reject) => {
    report.resolve = resolve;
    report.reject = reject;
  });
  report.promise.catch(noop);
}
