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
  /** What the operation was (its kind and target): the same id for another write is refused. */
  readonly what: string;
  readonly result: Promise<unknown>;
  readonly at: number;
  weight: number;
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
  /** By `identity \0 opId`, oldest first (a Map keeps insertion order). */
  private readonly entries = new Map<string, Entry>();
  /** Each identity's keys, oldest first (a Set keeps insertion order). */
  private readonly perClient = new Map<string, Set<string>>();
  private weight = 0;

  constructor(
    private readonly limits: OpLedgerLimits,
    private readonly now: () => number = Date.now,
  ) {}

  /** Operations remembered now (for tests and metrics). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Runs `op` once per (identity, opId). `what` names the write (kind and
   * target; INVALID_MESSAGE when a known id comes with another one). `weigh` tells what its result costs to
   * keep (1 + the versions it holds).
   */
  once<T>(identity: string, opId: number, what: string, op: () => Promise<T>, weigh: (result: T) => number): Promise<T> {
    this.expire();
    const key = `${identity}\u0000${opId}`;
    const known = this.entries.get(key);
    if (known !== undefined) {
      // A retry is the same write; the same id on another one is a client's bug: answering with the first
      // write's result would report as done a write that was never made.
      if (known.what !== what) return Promise.reject(new CommyError(ErrorCode.INVALID_MESSAGE, `operation id ${opId} was used for another write`));
      return known.result as Promise<T>;
    }
    const result = op();
    const entry: Entry = { identity, what, result, at: this.now(), weight: 1 };
    this.add(key, entry);
    result.then(
      (value) => this.weigh(key, entry, weigh(value)),
      () => this.remove(key, entry), // nothing was applied: a retry runs again
    );
    return result;
  }

  private add(key: string, entry: Entry): void {
    this.entries.set(key, entry);
    this.weight += entry.weight;
    let keys = this.perClient.get(entry.identity);
    if (keys === undefined) this.perClient.set(entry.identity, (keys = new Set()));
    keys.add(key);
    if (keys.size > this.limits.maxPerClient) {
      const oldest = keys.values().next().value as string;
      this.remove(oldest, this.entries.get(oldest)!);
    }
    this.trim();
  }

  private weigh(key: string, entry: Entry, weight: number): void {
    if (this.entries.get(key) !== entry) return;
    this.weight += weight - entry.weight;
    entry.weight = weight;
    this.trim();
  }

  private remove(key: string, entry: Entry): void {
    if (this.entries.get(key) !== entry) return;
    this.entries.delete(key);
    this.weight -= entry.weight;
    const keys = this.perClient.get(entry.identity);
    keys?.delete(key);
    if (keys?.size === 0) this.perClient.delete(entry.identity);
  }

  /** Forgets what is older than the time limit (the oldest entries come first). */
  private expire(): void {
    const oldest = this.now() - this.limits.ttlMs;
    for (const [key, entry] of this.entries) {
      if (entry.at > oldest) break;
      this.remove(key, entry);
    }
  }

  /** Forgets the oldest entries while over the total weight. */
  private trim(): void {
    for (const [key, entry] of this.entries) {
      if (this.weight <= this.limits.maxWeight) break;
      this.remove(key, entry);
    }
  }
}
