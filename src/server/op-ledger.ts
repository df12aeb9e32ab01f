import { CommyError, ErrorCode } from '../core/errors.js';
import type { Limits } from './limits.js';

/**
 * Idempotent writes: the server remembers what each write it applied answered, by client identity and
 * operation id, so a retry (a client that never got its acknowledgement, reconnected and sent the same
 * write again) gets the original answer instead of a second application.
 *
 * Only successes are remembered: every write is all or nothing, so a failed one changed nothing and running
 * its retry is safe. A retry that arrives while the first is still running waits for it. Bounded per tenant:
 * at most `maxPerClient` operations per identity and `maxWeight` remembered versions in all, each for `ttlMs`;
 * an operation forgotten since (older, or pushed out) is applied again if retried (docs/protocol.md).
 */
export interface OpLedgerLimits {
  /** How long an applied operation is remembered. */
  readonly ttlMs: number;
  /** Operations remembered per client identity. */
  readonly maxPerClient: number;
  /** Versions remembered over all identities of one tenant (an ack of n changes weighs n + 1). */
  readonly maxWeight: number;
}

/**
 * What a write was, for the ledger's `what`: its kind, target and the parts that decide its outcome (the value
 * bytes, an expected version). A retry must be the same write: the same id with another value or another
 * expected version is refused (INVALID_MESSAGE), never answered with the first write's result as if it were
 * this one's. The bytes count through a 32-bit FNV-1a digest and their length: a change detector for one
 * client's own mistakes, not a security boundary (an id is only ever compared within its own client identity).
 */
export function writeFingerprint(kind: string, target: string, bytes: Uint8Array, expected?: number): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
  return `${kind} ${target} ${bytes.length}:${(h >>> 0).toString(16)}${expected !== undefined ? ` @${expected}` : ''}`;
}

interface Entry {
  readonly identity: string;
  readonly opId: number;
  /** What the operation was (its kind and target): the same id for another write is refused. */
  readonly what: string;
  readonly result: Promise<unknown>;
  readonly at: number;
  weight: number;
  /** False once forgotten: queues drop such entries when they reach them. */
  live: boolean;
}

/**
 * A first-in first-out queue on an array: taking from the front is O(1), and the taken part is dropped in bulk.
 * (A Map used as a queue is not: V8 leaves a hole per deleted entry at its front, and every look at the oldest
 * entry walks over all of them until the next rehash — a hot path walked thousands of holes per write.)
 */
class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  peek(): T | undefined {
    return this.items[this.head];
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head++];
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** Keeps only the items `keep` says (in order): how forgotten entries in the middle are let go in bulk. */
  retain(keep: (item: T) => boolean): void {
    this.items = this.items.slice(this.head).filter(keep);
    this.head = 0;
  }
}

/** Forgotten entries a queue may hold beyond its live ones before it is compacted (amortized O(1) per write). */
const SLACK = 1024;
/** The same for one identity's queue: small, since a tenant may have many identities. */
const CLIENT_SLACK = 8;

function isLive(entry: Entry): boolean {
  return entry.live;
}

/** One client identity's remembered operations: by id, and oldest first. */
interface ClientOps {
  readonly byId: Map<number, Entry>;
  readonly order: Fifo<Entry>;
}

/**
 * The ledger, one part per tenant: each tenant's operations are bounded on their own, so no tenant (however
 * many client identities it makes up) can push another tenant's operations out of memory.
 */
export class OpLedger {
  private readonly tenants = new Map<string, TenantLedger>();

  constructor(
    private readonly limits: OpLedgerLimits,
    private readonly now: () => number = Date.now,
  ) {}

  /** The ledger the server's limits describe (opIdTtlMs, maxOpIdsPerClient, maxOpIdWeight per tenant). */
  static of(limits: Limits): OpLedger {
    return new OpLedger({ ttlMs: limits.opIdTtlMs, maxPerClient: limits.maxOpIdsPerClient, maxWeight: limits.maxOpIdWeight });
  }

  /** Operations remembered now, over all tenants (for tests and metrics). */
  get size(): number {
    let n = 0;
    for (const t of this.tenants.values()) n += t.size;
    return n;
  }

  /** Entries held in the ledger's queues, forgotten ones included (for tests: memory stays near `size`). */
  get queued(): number {
    let n = 0;
    for (const t of this.tenants.values()) n += t.queued;
    return n;
  }

  /** See TenantLedger.once; `tenant` is whose memory the operation counts against. */
  once<T>(tenant: string, identity: string, opId: number | undefined, what: string, op: () => Promise<T>, weigh: (result: T) => number): Promise<T> {
    if (opId === undefined) return op();
    let ledger = this.tenants.get(tenant);
    if (ledger === undefined) this.tenants.set(tenant, (ledger = new TenantLedger(this.limits, this.now)));
    return ledger.once(identity, opId, what, op, weigh);
  }
}

/** One tenant's operations: bounded by time, per client identity and by weight. */
class TenantLedger {
  /** Every remembered operation, oldest first (forgotten ones are skipped when reached). */
  private readonly all = new Fifo<Entry>();
  private readonly clients = new Map<string, ClientOps>();
  private count = 0;
  private weight = 0;

  constructor(
    private readonly limits: OpLedgerLimits,
    private readonly now: () => number = Date.now,
  ) {}

  /** Operations remembered now (for tests and metrics). */
  get size(): number {
    return this.count;
  }

  get queued(): number {
    let n = this.all.length;
    for (const c of this.clients.values()) n += c.order.length;
    return n;
  }

  /**
   * Runs `op` once per (identity, opId). `what` names the write (kind and
   * target; INVALID_MESSAGE when a known id comes with another one). `weigh` tells what its result costs to
   * keep (1 + the versions it holds).
   */
  once<T>(identity: string, opId: number, what: string, op: () => Promise<T>, weigh: (result: T) => number): Promise<T> {
    this.expire();
    const known = this.clients.get(identity)?.byId.get(opId);
    if (known !== undefined) {
      // A retry is the same write; the same id on another one is a client's bug: answering with the first
      // write's result would report as done a write that was never made.
      if (known.what !== what) return Promise.reject(new CommyError(ErrorCode.INVALID_MESSAGE, `operation id ${opId} was used for another write`));
      // A retry that waits for the first attempt: if that one fails (nothing was applied; e.g. its connection died
      // while it waited for a lock), the retry runs on its own rather than inherit the dead attempt's error.
      return (known.result as Promise<T>).catch(() => this.once(identity, opId, what, op, weigh));
    }
    const result = op();
    const entry: Entry = { identity, opId, what, result, at: this.now(), weight: 1, live: true };
    this.add(entry);
    result.then(
      (value) => this.weigh(entry, weigh(value)),
      () => this.remove(entry), // nothing was applied: a retry runs again
    );
    return result;
  }

  private add(entry: Entry): void {
    let client = this.clients.get(entry.identity);
    if (client === undefined) this.clients.set(entry.identity, (client = { byId: new Map(), order: new Fifo() }));
    client.byId.set(entry.opId, entry);
    client.order.push(entry);
    this.all.push(entry);
    this.count++;
    this.weight += entry.weight;
    while (client.byId.size > this.limits.maxPerClient) this.remove(client.order.shift()!);
    // Entries forgotten out of order (pushed out per client, failed) stay in the tenant's queue until compacted:
    // memory stays within a constant factor of what is remembered (remove() does the same per identity).
    if (this.all.length > 2 * this.count + SLACK) this.all.retain(isLive);
    this.trim();
  }

  private weigh(entry: Entry, weight: number): void {
    if (!entry.live) return;
    this.weight += weight - entry.weight;
    entry.weight = weight;
    this.trim();
  }

  private remove(entry: Entry): void {
    if (!entry.live) return;
    entry.live = false;
    this.count--;
    this.weight -= entry.weight;
    const client = this.clients.get(entry.identity);
    if (client === undefined || client.byId.get(entry.opId) !== entry) return;
    client.byId.delete(entry.opId);
    if (client.byId.size === 0) this.clients.delete(entry.identity);
    // Forgotten through the tenant's queue (time, weight): this identity's queue lets go of them too, in bulk,
    // whether or not it writes again (many identities each holding a few live entries must not hold more).
    else if (client.order.length > 2 * client.byId.size + CLIENT_SLACK) client.order.retain(isLive);
  }

  /** Forgets what is older than the time limit (the oldest entries come first). */
  private expire(): void {
    const oldest = this.now() - this.limits.ttlMs;
    for (let e = this.all.peek(); e !== undefined && (!e.live || e.at <= oldest); e = this.all.peek()) this.remove(this.all.shift()!);
  }

  /** Forgets the oldest entries while over the total weight. */
  private trim(): void {
    while (this.weight > this.limits.maxWeight && this.all.length > 0) this.remove(this.all.shift()!);
  }
}
