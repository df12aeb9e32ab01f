import { ErrorCode, isCommyError } from '../core/errors.js';
import { BUSY, type DirEntry, type ServiceFile } from '../local/service-file.js';
import { encodeFrame } from '../protocol/frame-codec.js';
import { SharedSyncBatch } from '../protocol/sync-batch-frame.js';
import { splitByCost } from '../protocol/frame-split.js';
import type { SyncBatchBody, Update } from '../protocol/messages.js';
import { holdsBack, PendingNotices } from './pending-notices.js';
import { entryDef, readOrGone } from './snapshot.js';
import { RETRY_MAX_MS, RETRY_MIN_MS, type Subscriber } from './subscriber.js';

/** What a broadcaster needs from its service host. */
export interface BroadcastSource {
  readonly file: ServiceFile;
  readonly serviceId: string;
  /** Every change at or below this version has been reported by the feed: a subscriber's resume point. */
  settled(): bigint;
  /** 'immediate': a round at the end of the event-loop turn; a number: at most one round per that many ms. */
  readonly tick: 'immediate' | number;
  readonly maxFrameBytes: number;
  /** The file turned out to be damaged while reading it. */
  fail(err: unknown): void;
  /** Any other unexpected failure. */
  report(err: unknown): void;
  /** Updates per SyncBatch sent (for the metrics). */
  batchSent?(updates: number): void;
}

/**
 * A round yields to the event loop after this long, so a writer's report (and its acknowledgement) never waits
 * behind a broadcast to many subscribers: the rest of the round runs in the next turn.
 */
export const ROUND_SLICE_MS = 1;
/** The clock is read once per this many subscribers. */
const CLOCK_EVERY = 16;

/**
 * One service's fan-out. Subscribers that are owed something wait in `due`; one round per event-loop turn (or per
 * tick) sends each of them its dirty set, in slices that yield to incoming requests. Within a round, a value is
 * read once and a batch encoded once for every subscriber owed the same updates (see SharedSyncBatch).
 * Conflation is per subscriber: one that is over its output budget is skipped and looked at again later with
 * its latest values, while the others get every round.
 */
export class Broadcaster {
  private readonly due = new Set<Subscriber>();
  private scheduled = false;
  private readonly runRound = (): void => this.round();
  /** With a tick long enough to hold updates back: what tells subscribers how far behind they are. */
  private readonly notices: PendingNotices | undefined;

  constructor(private readonly source: BroadcastSource) {
    if (holdsBack(source.tick)) this.notices = new PendingNotices(source.file);
  }

  /** The subscriber is owed something: it is flushed in the next round. */
  mark(sub: Subscriber): void {
    if (sub.loading || sub.closed) return;
    this.due.add(sub);
    this.notices?.owed(sub);
    if (!this.scheduled) this.schedule(this.source.tick);
  }

  private schedule(tick: 'immediate' | number): void {
    this.scheduled = true;
    if (tick === 'immediate') setImmediate(this.runRound);
    else setTimeout(this.runRound, tick);
  }

  private round(): void {
    this.scheduled = false;
    const round = new Round(this.source);
    const started = performance.now();
    let n = 0;
    for (const sub of this.due) {
      this.due.delete(sub);
      this.flushSafely(sub, round);
      if (++n % CLOCK_EVERY === 0 && this.due.size > 0 && performance.now() - started >= ROUND_SLICE_MS) {
        this.schedule('immediate'); // the rest after the event loop has read what came in
        return;
      }
    }
  }

  private flushSafely(sub: Subscriber, round: Round): void {
    try {
      this.flush(sub, round);
    } catch (err) {
      // A service file corrupted by a local writer must not take the server down with it.
      if (isCommyError(err, ErrorCode.INVALID_FILE) && this.source.file.damaged) this.source.fail(err);
      else this.source.report(err);
    }
  }

  /** Looks at a held-back subscriber again later, waiting longer each time. */
  private retry(sub: Subscriber): void {
    if (sub.retryTimer !== undefined) return;
    const wait = sub.retryMs;
    sub.retryMs = Math.min(wait * 2, RETRY_MAX_MS);
    sub.retryTimer = setTimeout(() => {
      sub.retryTimer = undefined;
      this.mark(sub);
    }, wait);
  }

  /** Sends the subscriber's dirty set (new wanted definitions first), unless its socket is backed up. */
  private flush(sub: Subscriber, round: Round): void {
    const file = this.source.file;
    if (sub.closed || sub.loading || !sub.outlet.open || file.closed) return;
    if (sub.outlet.overBudget()) {
      this.retry(sub);
      return;
    }
    const entries = file.slots();
    const added = sub.knownDefs < entries.length ? entries.slice(sub.knownDefs).filter((e) => !e.removed && sub.wants(e.index, e.meta.name)) : [];
    sub.knownDefs = entries.length;
    if (sub.spec.mode === 'names') this.flushNames(sub, entries);
    else this.flushValues(sub, entries, added, round);
  }

  /**
   * Updates as SyncBatches; removals and new definitions ride with the first batch, before any update (a name
   * removed and registered again is a new slot: the old index goes first).
   */
  private flushValues(sub: Subscriber, entries: readonly DirEntry[], added: readonly DirEntry[], round: Round): void {
    const updates: Update[] = [];
    /** The lowest version of a variable held mid-write: this batch's resume point must stay below it. */
    let heldFloor: number | undefined;
    for (const index of sub.dirty) {
      const e = entries[index];
      const update = e === undefined || e.removed ? undefined : round.read(e);
      if (update === BUSY) {
        // A writer is mid-write: it stays dirty, sent once it is done. Its last completed write is not sent
        // either, so no resume point may cover it (a writer that dies there leaves no newer version behind).
        const v = Number(this.source.file.entryVersion(e!)) - 1;
        heldFloor = heldFloor === undefined ? v : Math.min(heldFloor, v);
      } else {
        sub.dirty.delete(index);
        if (update !== undefined && !isOwnEcho(sub, update)) updates.push(update);
      }
    }
    if (heldFloor !== undefined) this.retry(sub);
    else sub.retryMs = RETRY_MIN_MS;
    if (added.length === 0 && sub.removed.size === 0 && heldFloor === undefined) {
      if (updates.length > 0) this.sendShared(sub, updates, round);
      return;
    }
    const settled = Number(this.source.settled());
    this.sendOwn(sub, updates, added, heldFloor === undefined ? settled : Math.min(settled, Math.max(heldFloor, 0)));
  }

  /** The common case (values only): the frame bytes are shared with every subscriber owed the same updates. */
  private sendShared(sub: Subscriber, updates: Update[], round: Round): void {
    const batch = round.batch(updates, this.source.maxFrameBytes / 2);
    if (batch === undefined) {
      this.sendOwn(sub, updates, [], round.version);
      return;
    }
    sub.outlet.send(batch.frameFor(sub.sid));
    this.source.batchSent?.(updates.length);
    sub.resumeSent = round.version;
  }

  /**
   * Batches encoded for this subscriber alone: with its removals and new definitions, held-back variables, or
   * too large for one frame. `version` is the resume point this flush may promise: every change at or below it
   * is in these batches or was sent before. Only the last batch says so; the ones before it repeat the resume
   * point already sent (a connection lost between two of them must not resume past the rest).
   */
  private sendOwn(sub: Subscriber, updates: Update[], added: readonly DirEntry[], version: number): void {
    const file = this.source.file;
    const defs = added.map((e) => entryDef(e, file.entryVersion(e), sub.spec.protocol));
    const removed = [...sub.removed];
    sub.removed.clear();
    if (updates.length === 0 && defs.length === 0 && removed.length === 0) return;
    const batches = splitByCost(updates, updateCost, this.source.maxFrameBytes / 2);
    const last = batches.length - 1;
    batches.forEach((batch, i) => {
      const body: SyncBatchBody = { sid: sub.sid, version: i === last ? version : sub.resumeSent, updates: batch };
      if (i === 0 && removed.length > 0) body.removed = removed;
      if (i === 0 && defs.length > 0) body.defs = defs;
      sub.outlet.send(encodeFrame('SyncBatch', 0, body));
      this.source.batchSent?.(batch.length);
    });
    if (version > sub.resumeSent) sub.resumeSent = version;
  }

  /**
   * A 'names' subscriber's dirty set as VariablesUpdated pushes (one per flush unless the names exceed the
   * frame budget). New variables need no definitions: they are in the directory it maps.
   */
  private flushNames(sub: Subscriber, entries: readonly DirEntry[]): void {
    const names = [...sub.dirty].flatMap((index) => entries[index]?.meta.name ?? []);
    const removed = [...sub.removed].flatMap((index) => entries[index]?.meta.name ?? []);
    sub.dirty.clear();
    sub.removed.clear();
    if (names.length === 0 && removed.length === 0) return;
    const { serviceId, file, maxFrameBytes } = this.source;
    const version = Number(file.version);
    // Removals first: a client must drop a name before it hears of a new variable of the same name.
    for (const gone of removed.length === 0 ? [] : splitByCost(removed, nameCost, maxFrameBytes / 2)) {
      sub.outlet.send(encodeFrame('VariablesUpdated', 0, { serviceId, version, variables: [], removed: gone, sid: sub.sid }));
    }
    for (const variables of names.length === 0 ? [] : splitByCost(names, nameCost, maxFrameBytes / 2)) {
      sub.outlet.send(encodeFrame('VariablesUpdated', 0, { serviceId, version, variables, sid: sub.sid }));
    }
  }

  /** Forgets a subscriber that ended (its pending round and retry). */
  drop(sub: Subscriber): void {
    this.due.delete(sub);
    this.notices?.drop(sub);
    clearTimeout(sub.retryTimer);
    sub.retryTimer = undefined;
  }
}

/**
 * What one slice of a round reads and encodes once: each variable's value (one copy, shared by every
 * subscriber's update) and each distinct batch. A later slice starts afresh and reads newer values.
 */
class Round {
  private readonly reads = new Map<number, Update | typeof BUSY>();
  private readonly batches = new Map<string, SharedSyncBatch | undefined>();
  /** The resume point of this slice's shared batches. */
  readonly version: number;

  constructor(private readonly source: BroadcastSource) {
    this.version = Number(source.settled());
  }

  read(e: DirEntry): Update | typeof BUSY | undefined {
    let update = this.reads.get(e.index);
    if (update === undefined) {
      const copy = readOrGone(this.source.file, e);
      if (copy === undefined) return undefined; // removed by another process meanwhile: its removal is passed on
      update = copy === BUSY ? BUSY : [e.index, Number(copy.version), copy.bytes];
      this.reads.set(e.index, update);
    }
    return update;
  }

  /** The shared batch of these updates (read through this round), or undefined if they need more than one frame. */
  batch(updates: readonly Update[], budget: number): SharedSyncBatch | undefined {
    const key = updates.length === 1 ? String(updates[0]![0]) : updates.map((u) => u[0]).join(',');
    if (this.batches.has(key)) return this.batches.get(key);
    let cost = 0;
    for (const u of updates) cost += updateCost(u);
    const batch = cost <= budget ? new SharedSyncBatch(this.version, updates) : undefined;
    this.batches.set(key, batch);
    return batch;
  }
}

/**
 * The client's own acknowledged write, not written since: the ack told it everything, so it is not echoed back
 * (half the frames for a writer). The mark goes either way: a newer version is news to the writer too.
 */
function isOwnEcho(sub: Subscriber, update: Update): boolean {
  const mine = sub.own.get(update[0]);
  if (mine === undefined) return false;
  sub.own.delete(update[0]);
  return update[1] === mine;
}

function updateCost(u: Update): number {
  return u[2].length + 16;
}

function nameCost(n: string): number {
  return n.length + 2;
}
