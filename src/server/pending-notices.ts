import type { ServiceFile } from '../local/service-file.js';
import { encodeFrame } from '../protocol/frame-codec.js';
import type { PendingVersion, SyncPendingBody } from '../protocol/messages.js';
import type { Subscriber } from './subscriber.js';

/** A held-back subscription hears again at most this often, and only when the service has moved on. */
export const PENDING_NOTICE_MS = 250;
/** A `tick` shorter than this holds updates back too briefly for a notice to be worth its frame. */
export const PENDING_MIN_TICK_MS = 100;
/** At most this many owed variables are named in one notice; past it, only the service version goes. */
export const MAX_PENDING_NAMED = 512;

/** Whether a broadcaster with this tick holds updates back long enough to send notices. */
export function holdsBack(tick: 'immediate' | number): boolean {
  return tick !== 'immediate' && tick >= PENDING_MIN_TICK_MS;
}

/**
 * SyncPending notices (docs/protocol.md, "Staleness"): while a `tick` holds a subscription's updates back, the
 * subscriber hears what it is owed — the service version, and each owed variable's latest version — at the end
 * of the turn it fell behind in, then every PENDING_NOTICE_MS while it stays behind and the service moves. Only
 * subscriptions that asked (Subscription.pending) hear them; a connection over its output budget does not (a
 * notice would wait behind the very backlog it describes). With `tick: 'immediate'` nothing runs here.
 */
export class PendingNotices {
  private readonly waiting = new Set<Subscriber>();
  private timer: NodeJS.Timeout | undefined;
  private soon: NodeJS.Immediate | undefined;

  constructor(private readonly file: ServiceFile) {}

  /** The subscriber is owed updates that wait for the next round. */
  owed(sub: Subscriber): void {
    if (sub.spec.pending !== true || this.waiting.has(sub)) return;
    this.waiting.add(sub);
    this.soon ??= setImmediate(this.run);
  }

  drop(sub: Subscriber): void {
    this.waiting.delete(sub);
  }

  private readonly run = (): void => {
    this.soon = undefined;
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const sub of this.waiting) {
      if (sub.closed || !sub.outlet.open || sub.dirty.size === 0) this.waiting.delete(sub);
      else this.notify(sub);
    }
    if (this.waiting.size > 0) this.timer = setTimeout(this.run, PENDING_NOTICE_MS).unref();
  };

  private notify(sub: Subscriber): void {
    if (this.file.closed) return;
    const version = Number(this.file.version);
    if (version <= sub.noticedVersion || sub.outlet.overBudget()) return;
    sub.noticedVersion = version;
    const body: SyncPendingBody = { sid: sub.sid, version };
    if (sub.dirty.size <= MAX_PENDING_NAMED) body.pending = this.owedVersions(sub);
    sub.outlet.send(encodeFrame('SyncPending', 0, body));
  }

  /** Each owed variable's latest version (one removed meanwhile is not owed: its removal is). */
  private owedVersions(sub: Subscriber): PendingVersion[] {
    const slots = this.file.slots();
    const owed: PendingVersion[] = [];
    for (const index of sub.dirty) {
      const e = slots[index];
      if (e !== undefined && !e.removed) owed.push([index, Number(this.file.entryVersion(e))]);
    }
    return owed;
  }
}
