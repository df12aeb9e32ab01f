import { join } from 'node:path';
import { CommyError, ErrorCode } from '../core/errors.js';
import { FNV_BASIS, fnv1a } from '../core/fnv.js';
import type { DurabilityMode } from './durability.js';
import type { Limits } from './limits.js';
import { OpJournal } from './op-journal.js';
import { identityDigest, OpRecord, RecordState, whatDigest, type JournalChange, type JournalEntry } from './op-record.js';

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
 * Where and how the ledger keeps its journal (op-journal.ts): what makes operation ids survive the server.
 * Without one, they are remembered in memory only.
 */
export interface OpJournalOptions {
  /** The directory of the tenants' journals (`<dataDir>/oplog`, made private by the caller). */
  readonly dir: string;
  /** Each tenant's ring, in bytes. */
  readonly bytes: number;
  /** `ack`: an answer waits for its record's sync too; `periodic`: synced every `intervalMs`. */
  readonly durability: DurabilityMode;
  readonly intervalMs: number;
  /**
   * What a write found unfinished in the journal did (a server killed while it applied): the version each change
   * got, or undefined when nothing was written. `changes[i].version` is what the record already knew (0: not yet).
   */
  readonly settle: (tenant: string, service: string, changes: readonly (JournalChange & { readonly version: number })[]) => number[] | undefined;
  /** A journal that cannot be used (the tenant's operation ids are then remembered in memory only). */
  readonly onError?: (tenant: string, err: unknown) => void;
}

/** How a write is named to the ledger: whose it is, what it is, and which service it writes. */
export interface OpKey {
  readonly tenant: string;
  readonly identity: string;
  readonly opId: number | undefined;
  /** What the write is (writeFingerprint): a retry must be the same write. */
  readonly what: string;
  readonly service: string;
}

/** How the ledger keeps and gives back a write's answer. */
export interface OpAnswer<T> {
  /** What the answer costs to remember (1 + the versions it holds). */
  weigh(result: T): number;
  /** The answer again, from the versions a journal kept (a retry that reaches a restarted server). */
  revive(versions: readonly number[]): T;
}

/** A write the journal says a server before this one applied. */
interface Recovered {
  readonly what: number;
  readonly versions: readonly number[];
  readonly at: number;
}

/**
 * What a write was, for the ledger's `what`: its kind, target and the parts that decide its outcome (the value
 * bytes, an expected version). A retry must be the same write: the same id with another value or another
 * expected version is refused (INVALID_MESSAGE), never answered with the first write's result as if it were
 * this one's. The bytes count through a 32-bit FNV-1a digest and their length: a change detector for one
 * client's own mistakes, not a security boundary (an id is only ever compared within its own client identity).
 */
export function writeFingerprint(kind: string, target: string, bytes: Uint8Array, expected?: number): string {
  return `${kind} ${target} ${bytes.length}:${fnv1a(bytes).toString(16)}${expected !== undefined ? ` @${expected}` : ''}`;
}

/**
 * writeFingerprint of a ReportVariableChanges: each change's variable and length, and a digest of all their
 * bytes. Without the bytes, a report resent under a known id with other values was answered with the first
 * report's versions: a success for values never written (a client resends a report with the very bytes it
 * sent: it copies them when it collects them). About 2 ms per MiB of values, once per report.
 */
export function reportFingerprint(serviceId: string, changes: readonly (readonly [number, Uint8Array])[]): string {
  let h = FNV_BASIS;
  for (const [, bytes] of changes) h = fnv1a(bytes, h);
  return `ReportVariableChanges ${serviceId} ${changes.map(([index, bytes]) => `${index}:${bytes.length}`).join(',')} ${h.toString(16)}`;
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

function reused(opId: number): CommyError {
  return new CommyError(ErrorCode.INVALID_MESSAGE, `operation id ${opId} was used for another write`);
}

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
  private readonly journals = new Map<string, OpJournal>();
  private readonly syncTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly limits: OpLedgerLimits,
    private readonly now: () => number = Date.now,
    private readonly journal?: OpJournalOptions,
  ) {
    if (journal?.durability === 'periodic') this.syncTimer = setInterval(() => this.syncWritten(), journal.intervalMs).unref();
  }

  /** The ledger the server's limits describe (opIdTtlMs, maxOpIdsPerClient, maxOpIdWeight per tenant). */
  static of(limits: Limits, journal?: OpJournalOptions): OpLedger {
    return new OpLedger({ ttlMs: limits.opIdTtlMs, maxPerClient: limits.maxOpIdsPerClient, maxWeight: limits.maxOpIdWeight }, Date.now, journal);
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

  /**
   * Runs `op` once per (identity, opId) of `key.tenant` (see TenantLedger.once). `op` gets the journal record
   * its write fills in (ServiceHost.apply), when the ledger keeps a journal and the write has an operation id.
   */
  once<T>(key: OpKey, op: (record: OpRecord | undefined) => Promise<T>, answer: OpAnswer<T>): Promise<T> {
    if (key.opId === undefined) return op(undefined);
    let ledger = this.tenants.get(key.tenant);
    if (ledger === undefined) this.tenants.set(key.tenant, (ledger = this.open(key.tenant)));
    return ledger.once(key, op, answer);
  }

  /** A tenant's part, with what its journal remembers from the servers before this one. */
  private open(tenant: string): TenantLedger {
    const journal = this.openJournal(tenant);
    const ledger = new TenantLedger(this.limits, this.now, journal, this.journal?.durability === 'ack');
    if (journal !== undefined) ledger.recover(journal.read(), (service, changes) => this.journal!.settle(tenant, service, changes));
    return ledger;
  }

  private openJournal(tenant: string): OpJournal | undefined {
    if (this.journal === undefined) return undefined;
    try {
      const journal = OpJournal.open(join(this.journal.dir, `${tenant}.ops`), this.journal.bytes);
      this.journals.set(tenant, journal);
      return journal;
    } catch (err) {
      this.journal.onError?.(tenant, err);
      return undefined;
    }
  }

  private syncWritten(): void {
    for (const j of this.journals.values()) if (j.dirty) j.sync().catch(() => undefined);
  }

  /** Syncs and closes the journals (the server's stop). The ledger keeps answering from memory. */
  async close(): Promise<void> {
    clearInterval(this.syncTimer);
    const journals = [...this.journals.values()];
    this.journals.clear();
    await Promise.all(journals.map((j) => j.close()));
  }
}

/** One tenant's operations: bounded by time, per client identity and by weight. */
class TenantLedger {
  /** Every remembered operation, oldest first (forgotten ones are skipped when reached). */
  private readonly all = new Fifo<Entry>();
  private readonly clients = new Map<string, ClientOps>();
  /** Writes servers before this one applied, by identity digest and operation id (until their time is up). */
  private readonly recovered = new Map<string, Recovered>();
  /** Identities' digests (SHA-256: computed once per identity, not per write). */
  private readonly digests = new Map<string, { readonly bytes: Uint8Array; readonly hex: string }>();
  private count = 0;
  private weight = 0;

  constructor(
    private readonly limits: OpLedgerLimits,
    private readonly now: () => number = Date.now,
    private readonly journal?: OpJournal,
    /** Durability `ack`: an answer waits for its record's sync. */
    private readonly syncEach = false,
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

  /** Takes in what the journal kept, settling the writes a dead server left unfinished. */
  recover(entries: readonly JournalEntry[], settle: (service: string, changes: JournalEntry['changes']) => number[] | undefined): void {
    const oldest = this.now() - this.limits.ttlMs;
    for (const e of entries) {
      if (e.state === RecordState.Void) continue;
      let versions: readonly number[] | undefined = e.changes.map((c) => c.version);
      if (e.state !== RecordState.Done) {
        versions = settle(e.service, e.changes);
        e.settle(versions);
      }
      if (versions !== undefined && e.at > oldest) this.recovered.set(`${e.identity}:${e.opId}`, { what: e.what, versions, at: e.at });
    }
  }

  /**
   * Runs `op` once per (identity, opId). `key.what` names the write (kind and target; INVALID_MESSAGE when a
   * known id comes with another one). `answer.weigh` tells what its result costs to keep (1 + the versions it holds).
   */
  once<T>(key: OpKey, op: (record: OpRecord | undefined) => Promise<T>, answer: OpAnswer<T>): Promise<T> {
    this.expire();
    const { identity, what } = key;
    const opId = key.opId!;
    const known = this.clients.get(identity)?.byId.get(opId);
    if (known !== undefined) {
      // A retry is the same write; the same id on another one is a client's bug: answering with the first
      // write's result would report as done a write that was never made.
      if (known.what !== what) return Promise.reject(reused(opId));
      // A retry that waits for the first attempt: if that one fails (nothing was applied; e.g. its connection died
      // while it waited for a lock), the retry runs on its own rather than inherit the dead attempt's error.
      return (known.result as Promise<T>).catch(() => this.once(key, op, answer));
    }
    const record = this.journal === undefined ? undefined : this.journalled(key);
    if (record instanceof Promise) return record as Promise<never>;
    if (record !== undefined && 'versions' in record) return Promise.resolve(answer.revive(record.versions));
    const result = this.run(op, record);
    const entry: Entry = { identity, opId, what, result, at: this.now(), weight: 1, live: true };
    this.add(entry);
    result.then(
      (value) => this.weigh(entry, answer.weigh(value)),
      () => this.remove(entry), // nothing was applied: a retry runs again
    );
    return result;
  }

  /**
   * What the journal says of this write: a server before this one applied it (its versions), or a record for
   * this attempt to fill in; a rejection when the id was used for another write.
   */
  private journalled(key: OpKey): Recovered | OpRecord | Promise<never> {
    let digest = this.digests.get(key.identity);
    if (digest === undefined) {
      if (this.digests.size >= this.limits.maxPerClient) this.digests.clear(); // a cache: bounded, recomputed at worst
      const bytes = identityDigest(key.identity);
      this.digests.set(key.identity, (digest = { bytes, hex: bytes.toString('hex') }));
    }
    const what = whatDigest(key.what);
    if (this.recovered.size > 0) {
      const before = this.recovered.get(`${digest.hex}:${key.opId}`);
      if (before !== undefined && before.at > this.now() - this.limits.ttlMs) {
        return before.what === what ? before : Promise.reject(reused(key.opId!));
      }
    }
    return new OpRecord(this.journal!, digest.bytes, key.opId!, what, key.service, this.syncEach);
  }

  /** Runs the write; on failure its record (if it got as far as an intent) says nothing was written. */
  private run<T>(op: (record: OpRecord | undefined) => Promise<T>, record: OpRecord | undefined): Promise<T> {
    const result = op(record);
    if (record === undefined) return result;
    return result.then(
      async (value) => {
        await record.synced;
        return value;
      },
      (err: unknown) => {
        record.void();
        throw err;
      },
    );
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
