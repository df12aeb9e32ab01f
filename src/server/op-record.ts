import { createHash } from 'node:crypto';
import { fnv1a } from '../core/fnv.js';
import type { ServiceFile } from '../local/service-file.js';
import type { OpJournal } from './op-journal.js';

/**
 * A write's record in the operation journal (op-journal.ts holds the ring): what a record says, the handle a
 * write fills in while it applies, the digests that name it, and how recovery settles one left unfinished.
 */

export const enum RecordState {
  Intent = 1,
  Done = 2,
  Void = 3,
}

/** One change of a write, as the record keeps it. */
export interface JournalChange {
  readonly index: number;
  /** Not written (a removed variable a report skips): its answer's version is 0. */
  readonly skipped: boolean;
  /** The variable's version under the write's lock, before the write. */
  readonly before: number;
}

/** A record read back from the journal. */
export interface JournalEntry {
  /** identityDigest() of the write's identity, in hex. */
  readonly identity: string;
  readonly opId: number;
  readonly what: number;
  readonly at: number;
  readonly service: string;
  readonly state: RecordState;
  readonly changes: readonly (JournalChange & { readonly version: number })[];
  /** Marks the record settled (after recovery decided what an unfinished intent did). */
  settle(versions: readonly number[] | undefined): void;
}

/** 128 bits of SHA-256: identities are client-chosen in part (clientKey), so a collision must not be makeable. */
export function identityDigest(identity: string): Buffer {
  return createHash('sha256').update(identity).digest().subarray(0, 16);
}

/** A 32-bit FNV-1a of what a write was: a retry with another `what` is refused (op-ledger.ts). */
export function whatDigest(what: string): number {
  return fnv1a(what);
}

/**
 * What an unfinished write did, from its service file: the version each change got, or undefined when none
 * was written. A change whose record has no version yet was written if its variable's version moved past the
 * one taken under the write's lock (no other writer could take the lock before the write released it).
 */
export function settleWrites(file: ServiceFile, changes: readonly (JournalChange & { readonly version: number })[]): number[] | undefined {
  const slots = file.slots();
  const versions = changes.map((c) => {
    const entry = slots[c.index];
    if (c.skipped || entry === undefined) return 0;
    if (c.version > 0) return c.version;
    const now = Number(file.entryVersion(entry));
    return now > c.before ? now : 0;
  });
  return versions.some((v) => v > 0) ? versions : undefined;
}

/** The handle a write fills in while it applies (ServiceHost.apply): intent, versions, done or void. */
export class OpRecord {
  private at = -1;
  /** The record's sequence number in the ring (to tell it from whatever the ring later puts at `at`). */
  private seq = -1;
  private finished = false;
  /** With `syncOnDone`: the sync of this record, started as soon as it is done (beside the service file's). */
  synced: Promise<void> | undefined;

  constructor(
    private readonly journal: OpJournal,
    /** identityDigest() of the write's identity. */
    readonly identity: Uint8Array,
    readonly opId: number,
    readonly what: number,
    readonly service: string,
    /** Durability `ack`: the answer waits for the record on disk too. */
    private readonly syncOnDone = false,
  ) {}

  /** Called under the write's locks, before anything is written. Without room, the write goes unrecorded. */
  intent(changes: readonly JournalChange[]): void {
    this.at = this.journal.append(this, changes);
    if (this.at >= 0) this.seq = this.journal.seqAt(this.at);
  }

  /** The version change `i` got (stored as soon as it is known: a kill right after still finds it). */
  wrote(i: number, version: number): void {
    if (this.at >= 0) this.journal.setVersion(this.at, i, version);
  }

  done(): void {
    this.finished = true;
    if (this.at < 0) return;
    this.journal.setState(this.at, RecordState.Done);
    if (this.syncOnDone) this.synced = this.journal.sync();
  }

  /**
   * Nothing was written after all (the write threw after its intent). Called when the write's promise rejects,
   * which may be long after: not once the write was done (its values are in the file: a failure after that, a
   * sync that failed, does not unwrite them, and a retry after a restart must be answered, not applied again),
   * and only while the record is still at `at` (the ring may have gone round: marking whatever record is there
   * now would make a server after this one apply that write twice).
   */
  void(): void {
    if (this.at < 0 || this.finished || !this.journal.holds(this.at, this.seq)) return;
    this.journal.setState(this.at, RecordState.Void);
  }
}
