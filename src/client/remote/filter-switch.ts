import { CommyError, ErrorCode } from '../../core/errors.js';
import { assertGlobs, compileGlobs, DEFAULT_GLOB_LIMITS, matchAll } from '../../core/glob.js';
import type { ResumePoint, SnapshotBody, SubscriptionBody } from '../../protocol/messages.js';
import type { RemoteContext } from './context.js';
import { withDeadline } from './deadline.js';
import type { Inbound } from './inbound.js';
import type { Outbox } from './outbox.js';
import { SnapshotLoad, type LoadTarget } from './snapshot-load.js';


const noop = (): void => {};

/** subscribe()/unsubscribe() arguments: TYPE_MISMATCH unless a list of strings, INVALID_MESSAGE past the limits. */
export function checkGlobs(globs: unknown, what: string): string[] {
  if (!Array.isArray(globs) || globs.some((g) => typeof g !== 'string')) {
    throw new CommyError(ErrorCode.TYPE_MISMATCH, `${what} takes an array of glob strings`);
  }
  assertGlobs(globs as string[], DEFAULT_GLOB_LIMITS); // the server's default limits (a lower one answers INVALID_MESSAGE)
  return [...new Set(globs as string[])];
}

/** What subscribing again needs of its remote file. */
export interface LoadSite {
  readonly ctx: RemoteContext;
  readonly serviceId: string;
  readonly target: LoadTarget;
  readonly inbound: Inbound;
  readonly outbox: Outbox;
  /** tenant, service, create: the Subscription without `variables` and `since`. */
  readonly ref: SubscriptionBody;
}

/** What switching needs besides. */
export interface SwitchHooks {
  /** Which attachment to the server is current (it changes at every suspend); undefined while offline or closed. */
  attachment(): number | undefined;
  sid(): number;
  fileId(): string | undefined;
  /** Routes a subscription's pushes to the file (`false`: stops). */
  route(sid: number, on: boolean): void;
  /** The new subscription's snapshot is in: its sid and file id are the file's from now on. */
  switched(sid: number, fileId: string | undefined): void;
}

/** How a second subscription's snapshot is taken in: started (may throw: refused), then loaded. */
export interface Resubscription {
  started(snapshot: SnapshotBody): void;
  /** Loaded; `resumed`: only what changed since `body.since` came. Settles the subscription's promise. */
  done(snapshot: SnapshotBody, version: number, resumed: boolean, settle: { resolve(): void; reject(err: unknown): void }): void;
  /** Not usable: the new subscription is ended at the server (this is called first). */
  failed?(snapshot: SnapshotBody): void;
}

/**
 * Subscribes again on the current connection (after a reconnection, or to switch the filter) and loads the
 * snapshot variable by variable through the reconciler (snapshot-load.ts): pending local writes survive it.
 */
export function resubscribe(site: LoadSite, body: SubscriptionBody, how: Resubscription): Promise<void> {
  const conn = site.ctx.conn;
  return conn.subscribe<void>(body, (snapshot, settle) => {
    how.started(snapshot);
    // A server that cannot resume (or does not know how) sends everything, flagged or not: a reset.
    const resumed = snapshot.resumed === true && body.since !== undefined;
    const failed = (err: CommyError): void => {
      how.failed?.(snapshot);
      // Not usable (another layout): leave the subscription rather than keep receiving its updates.
      if (conn.isOpen) conn.call('Unsubscribe', { sid: snapshot.sid }, 'Unsubscribed', { reply: noop, fail: noop });
      settle.reject(err);
    };
    const floor = resumed && body.since !== undefined ? body.since.version : -1;
    const done = (version: number): void => how.done(snapshot, version, resumed, settle);
    // A full snapshot is the whole directory the filter covers: what it lacks is gone (removed, or not in the
    // file that replaced the one this client knew).
    const pruned = floor === -1 ? (body.variables === undefined ? matchAll : compileGlobs(body.variables)) : undefined;
    const load = new SnapshotLoad(site.target, floor, snapshot.version, { resolve: done, reject: failed }, pruned);
    load.defs(snapshot.variables);
    load.data(0, snapshot.data);
    if (snapshot.more === true) site.inbound.awaitChunks(load);
    else load.finish();
  });
}

/** A change of filter: the globs it leads to, and whether it only narrows (then a resume suffices). */
interface Change {
  readonly next: string[];
  readonly narrowing: boolean;
}

/**
 * The variables a remote file receives (undefined: all, the default), and switching them on a live
 * connection: the outbox is held until no report is in flight (a report names the old sid), a second
 * Subscription with the new `variables` is loaded like a resubscription (through the reconciler: pending
 * local writes are kept), its sid takes over, the old one is unsubscribed, and the outbox goes on. A change
 * that only removes globs resumes from the file's resume point (only what changed comes); one that adds
 * asks for a full snapshot of the filter, so the newly wanted values come whole. Changes run one at a time.
 */
export class FilterSwitch {
  private globs: string[] | undefined;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly site: LoadSite,
    private readonly hooks: SwitchHooks,
  ) {}

  /** The Subscription's `variables` for the current filter (none: all). */
  variables(): { variables?: string[] } {
    return this.globs === undefined ? {} : { variables: [...this.globs] };
  }

  /** Settles once the switches asked for so far are done (or failed). */
  idle(): Promise<void> {
    return this.queue;
  }

  /** subscribe/unsubscribe, as promises: `open` (the file's check) and the glob checks reject, never throw. */
  async change(what: 'subscribe' | 'unsubscribe', globs: unknown, open: () => void): Promise<void> {
    open();
    return what === 'subscribe' ? this.subscribe(globs) : this.unsubscribe(globs);
  }

  /** Adds globs; the first call (the filter is "all") switches to only these. */
  subscribe(globs: unknown): Promise<void> {
    const add = checkGlobs(globs, 'subscribe');
    return this.serialized(() => {
      if (add.length === 0) return undefined;
      const now = this.globs;
      if (now === undefined) return { next: add, narrowing: true };
      const next = [...new Set([...now, ...add])];
      if (next.length === now.length) return undefined;
      if (next.length > DEFAULT_GLOB_LIMITS.maxPatterns) {
        throw new CommyError(ErrorCode.INVALID_MESSAGE, `${next.length} globs in the filter of ${this.site.serviceId}; at most ${DEFAULT_GLOB_LIMITS.maxPatterns}`);
      }
      return { next, narrowing: false };
    });
  }

  /** Removes these exact globs ("all" counts as `['*']`); none left: no variable's updates. */
  unsubscribe(globs: unknown): Promise<void> {
    const drop = new Set(checkGlobs(globs, 'unsubscribe'));
    return this.serialized(() => {
      const now = this.globs ?? ['*'];
      const next = now.filter((g) => !drop.has(g));
      return next.length === now.length ? undefined : { next, narrowing: true };
    });
  }

  private serialized(decide: () => Change | undefined): Promise<void> {
    const run = this.queue.then(() => this.run(decide));
    this.queue = run.catch(noop);
    return run;
  }

  private async run(decide: () => Change | undefined): Promise<void> {
    const { site, hooks } = this;
    const at = hooks.attachment();
    if (at === undefined) throw this.offline();
    const change = decide();
    if (change === undefined) return;
    const current = (): boolean => hooks.attachment() === at && site.ctx.conn.isOpen;
    try {
      await withDeadline(site.outbox.hold(), site.ctx.requestTimeoutMs, current, `changing the filter of ${site.serviceId}`);
      if (!current()) throw this.offline();
      await this.resubscribe(change, at);
      this.globs = change.next;
    } finally {
      // After a suspend the next reattach() resumes the outbox (and sends the filter then in force).
      if (hooks.attachment() === at) site.outbox.resume();
    }
  }

  private resubscribe({ next, narrowing }: Change, at: number): Promise<void> {
    const { site, hooks } = this;
    const oldSid = hooks.sid();
    const fileId = hooks.fileId();
    const since: ResumePoint | undefined = narrowing && fileId !== undefined ? { version: site.inbound.resumePoint, fileId } : undefined;
    const body: SubscriptionBody = { ...site.ref, variables: next, ...(since !== undefined ? { since } : {}) };
    const conn = site.ctx.conn;
    return resubscribe(site, body, {
      // Thrown here, the new subscription is ended at the server (Connection.subscribe).
      started: (snapshot) => {
        if (hooks.attachment() !== at) throw this.offline();
        hooks.route(snapshot.sid, true);
      },
      done: (snapshot, version, _resumed, { resolve, reject }) => {
        if (hooks.attachment() !== at) return reject(this.offline());
        hooks.switched(snapshot.sid, snapshot.fileId);
        site.inbound.loaded(version, snapshot.fileId !== fileId);
        // No push of the old subscription is taken in from here on; its end is awaited before reports go on.
        hooks.route(oldSid, false);
        conn.request('Unsubscribe', { sid: oldSid }, 'Unsubscribed').then(() => resolve(), () => resolve());
      },
      // The old subscription goes on as it was.
      failed: (snapshot) => {
        if (hooks.attachment() === at) hooks.route(snapshot.sid, false);
      },
    });
  }

  private offline(): CommyError {
    return new CommyError(ErrorCode.NOT_CONNECTED, `${this.site.serviceId}: not connected (reconnecting or closed); the filter is unchanged`);
  }
}
