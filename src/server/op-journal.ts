import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, ftruncateSync, openSync, readSync } from 'node:fs';
import { basename } from 'node:path';
import { CommyError, ErrorCode } from '../core/errors.js';
import { damageCount, native } from '../native/addon.js';
import { holderGone, OWN_PID, OWN_START } from '../local/process-lock.js';
import { FileSyncer } from './durability.js';
import { RecordState, type JournalChange, type JournalEntry, type OpRecord } from './op-record.js';

/**
 * The operation journal: what a tenant's writes with an operation id did, kept in a memory-mapped file
 * (`<dataDir>/oplog/<tenant>.ops`) so that a retry after the server's death (kill -9, a crash) is answered
 * with the first answer instead of being applied a second time (docs/protocol.md, *Operation ids*).
 *
 * A record is written **before** the write is applied (an intent, naming each variable and its version under
 * the write's locks), then filled in with the versions the write got, then marked done — plain stores into the
 * page cache, no system call, so a process kill never separates a write from its record. A restarted server
 * reads the journal back; an intent it finds unfinished is settled by looking at the variables: one whose
 * version moved past the one recorded under the lock was written (the locks kept every other writer out until
 * then). The journal is a ring: the oldest records are overwritten first (`opJournalBytes`).
 *
 * Layout (little-endian; docs/operations.md, *Operation journal*):
 * header (64 bytes): magic, format, capacity, then two 64-bit words each stored whole: `tail` (the oldest
 * record's position and the low 32 bits of its sequence number) and `head` (the next record's position and
 * the next sequence number), the owner (pid, start time), and a tag of the tenant whose journal it is. Records (8-byte aligned) follow from byte 64: see RECORD below. A record that does
 * not fit before the end starts again at the beginning, after a WRAP mark (when 8 bytes are left for one).
 */

const MAGIC = 0x4a504f43; // 'COPJ'
const FORMAT = 2;
const HEADER = 64;
const RECORD_MAGIC = 0x3152504f; // 'OPR1'
const WRAP_MAGIC = 0x5257504f; // 'OPWR'
/** Record header: magic, state, length, count, seq, at, opId, what, service length, identity, service name. */
const R = { magic: 0, state: 4, length: 8, count: 12, seq: 16, at: 24, opId: 32, what: 40, serviceLen: 44, identity: 48, service: 64, changes: 128 } as const;
const CHANGE = 24; // index u32, flags u32, version under the lock f64, version written f64
const SKIPPED = 1;
const H = { magic: 0, format: 4, capacity: 8, tail: 16, head: 24, owner: 32, ownerStart: 36, tenant: 40 } as const;
/** The header's tenant tag: 16 bytes of SHA-256 of the file's name (`<tenant>.ops`). */
const TAG = 16;

/** INVALID_FILE when another live server owns the journal (two servers on one data directory). */
function assertNotOwned(path: string, owner: number, start: number): void {
  if (owner !== 0 && !(owner === OWN_PID && start === OWN_START) && !holderGone(owner, start, false)) {
    throw new CommyError(ErrorCode.INVALID_FILE, `${path} is in use by another server (pid ${owner}): one server per data directory`);
  }
}

function linked(path: string): CommyError {
  return new CommyError(ErrorCode.INVALID_FILE, `${path} has other names (hard links) and is not this tenant's journal: remove the extra links`);
}

/** One tenant's journal file, mapped. One server writes it (its owner, checked at open). */
export class OpJournal {
  readonly view: DataView;
  private readonly u8: Uint8Array;
  /** The header's 64-bit words (tail, head). */
  private readonly words: BigUint64Array;
  private readonly buffer: ArrayBuffer;
  private readonly capacity: number;
  private readonly syncer: FileSyncer;
  private closed = false;
  /** A fault inside the mapping was repaired (another process truncated the file): the journal is not used again. */
  private broken = false;
  /** The process-wide damage count when the mapping was last known intact (as FileMapping.damageMark). */
  private damageMark = damageCount[0]!;

  private constructor(
    private readonly fd: number,
    size: number,
  ) {
    this.buffer = native.map(fd, size, true);
    this.view = new DataView(this.buffer);
    this.u8 = new Uint8Array(this.buffer);
    this.words = new BigUint64Array(this.buffer, 0, HEADER / 8);
    this.capacity = size - HEADER;
    this.syncer = new FileSyncer(() => this.fd);
  }

  /**
   * Opens (or creates, mode 0600) the journal at `path` with a ring of `capacity` bytes. A journal of another
   * size or format, or a damaged one, is started afresh (its operations are forgotten, as by a restart before).
   * INVALID_FILE when another live server owns it (two servers on one data directory).
   */
  static open(path: string, capacity: number): OpJournal {
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new CommyError(ErrorCode.INVALID_FILE, `${path} is not a regular file`);
      // Whose it is, before anything is resized or reset: another live server's journal is left as it is.
      const header = Buffer.alloc(HEADER);
      readSync(fd, header, 0, HEADER, 0);
      assertNotOwned(path, header.readInt32LE(H.owner), header.readUInt32LE(H.ownerStart));
      const size = HEADER + capacity;
      const tag = createHash('sha256').update(basename(path)).digest().subarray(0, TAG);
      // A file with other names (a hard link planted by a process of the server's user, e.g. `beta.ops` →
      // `acme.ops`) is used only as the journal its header says it is: never resized nor started afresh, since
      // the tenant it names may be using it. Shared, another tenant's records made room for its own and its
      // recovery settled them against its own services: acme's resent writes were applied twice.
      const shared = st.nlink !== 1;
      const fresh = st.size !== size;
      if (shared && fresh) throw linked(path);
      if (fresh) ftruncateSync(fd, size);
      const j = new OpJournal(fd, size);
      try {
        if (fresh || !j.valid(tag)) {
          if (shared) throw linked(path);
          j.reset(tag);
        }
        j.claim(path);
      } catch (err) {
        native.unmap(j.buffer);
        throw err;
      }
      return j;
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  private valid(tag: Uint8Array): boolean {
    const v = this.view;
    return (
      v.getUint32(H.magic, true) === MAGIC &&
      v.getUint32(H.format, true) === FORMAT &&
      v.getUint32(H.capacity, true) === this.capacity &&
      Buffer.from(this.u8.subarray(H.tenant, H.tenant + TAG)).equals(tag)
    );
  }

  private reset(tag: Uint8Array): void {
    this.u8.fill(0, 0, HEADER);
    this.view.setUint32(H.magic, MAGIC, true);
    this.view.setUint32(H.format, FORMAT, true);
    this.view.setUint32(H.capacity, this.capacity, true);
    this.u8.set(tag, H.tenant);
    this.setWord(H.tail, 0, 0);
    this.setWord(H.head, 0, 0);
  }

  private claim(path: string): void {
    assertNotOwned(path, this.view.getInt32(H.owner, true), this.view.getUint32(H.ownerStart, true));
    this.view.setInt32(H.owner, OWN_PID, true);
    this.view.setUint32(H.ownerStart, OWN_START, true);
  }

  /**
   * A position and a sequence number as one 64-bit store (Atomics: one instruction, where a DataView's may be
   * several): a kill never leaves one without the other.
   */
  private setWord(at: number, pos: number, seq: number): void {
    Atomics.store(this.words, at >> 3, (BigInt(seq >>> 0) << 32n) | BigInt(pos));
  }

  private word(at: number): { pos: number; seq: number } {
    const w = Atomics.load(this.words, at >> 3);
    return { pos: Number(w & 0xffffffffn), seq: Number(w >> 32n) };
  }

  /** Is the record with sequence number `seq` still at `at` (not overwritten since)? */
  holds(at: number, seq: number): boolean {
    return this.intact() && this.view.getUint32(HEADER + at + R.magic, true) === RECORD_MAGIC && this.view.getFloat64(HEADER + at + R.seq, true) === seq;
  }

  /** The sequence number of the record at `at`. */
  seqAt(at: number): number {
    return this.view.getFloat64(HEADER + at + R.seq, true);
  }

  /** Stores the version change `i` of the record at `at` got. */
  setVersion(at: number, i: number, version: number): void {
    this.view.setFloat64(HEADER + at + R.changes + i * CHANGE + 16, version, true);
  }

  setState(at: number, state: RecordState): void {
    this.view.setUint32(HEADER + at + R.state, state, true);
  }

  /** Writes a record at the head (the oldest records make room), returns its position, or -1 when it cannot fit. */
  append(rec: OpRecord, changes: readonly JournalChange[]): number {
    const length = R.changes + changes.length * CHANGE;
    if (!this.intact() || length > this.capacity || rec.service.length > 64) return -1;
    const at = this.reserve(length);
    const v = this.view;
    const base = HEADER + at;
    v.setUint32(base + R.magic, RECORD_MAGIC, true);
    v.setUint32(base + R.state, RecordState.Intent, true);
    v.setUint32(base + R.length, length, true);
    v.setUint32(base + R.count, changes.length, true);
    const seq = this.word(H.head).seq;
    v.setFloat64(base + R.seq, seq, true);
    v.setFloat64(base + R.at, Date.now(), true);
    v.setFloat64(base + R.opId, rec.opId, true);
    v.setUint32(base + R.what, rec.what, true);
    v.setUint32(base + R.serviceLen, rec.service.length, true);
    this.u8.set(rec.identity, base + R.identity);
    this.u8.fill(0, base + R.service, base + R.changes);
    for (let i = 0; i < rec.service.length; i++) this.u8[base + R.service + i] = rec.service.charCodeAt(i); // names are ASCII
    changes.forEach((c, i) => {
      const o = base + R.changes + i * CHANGE;
      v.setUint32(o, c.index, true);
      v.setUint32(o + 4, c.skipped ? SKIPPED : 0, true);
      v.setFloat64(o + 8, c.before, true);
      v.setFloat64(o + 16, 0, true);
    });
    // Published last: a record is part of the journal only once the head has moved past it.
    this.setWord(H.head, at + length, seq + 1);
    this.syncer.dirty = true;
    return this.intact() ? at : -1; // stores into a truncated file went to a private page: not recorded
  }

  /**
   * Open and never truncated under us. Another process (the server's own user) may truncate the file: a store
   * past its end is a SIGBUS that native/sigbus.cc turns into a private zero page, and from then on the write
   * ids of this tenant are kept in memory only (the next server starts the journal afresh).
   */
  private intact(): boolean {
    if (this.damageMark !== damageCount[0]) {
      this.damageMark = damageCount[0]!;
      if (!this.broken && native.damaged(this.buffer)) this.broken = true;
    }
    return !this.closed && !this.broken;
  }

  /** Makes room for `length` bytes at the head, dropping the oldest records it needs; returns the position. */
  private reserve(length: number): number {
    let { pos: head, seq } = this.word(H.head);
    let { pos: tail, seq: tailSeq } = this.word(H.tail);
    // The words and records are in a file any process of the server's user can write while we run: positions
    // past the ring, a tail that is not a record, or more drops than the ring holds records (a tail sequence
    // number scribbled ahead of the head's: 2^32 drops of a zero-length "record", the server hung) are damage,
    // and the ring starts afresh, as read() does. Unchecked, they were a hang or a RangeError under the write's locks.
    if (!this.placed(head) || !this.placed(tail)) return this.restart(seq);
    for (let drops = 0; ; drops++) {
      const empty = tailSeq === (seq >>> 0);
      if (empty) {
        tail = head = this.capacity - head < length ? 0 : head;
        this.setWord(H.tail, tail, seq);
        return head;
      }
      if (tail < head) {
        // Free: [head, end) and [0, tail). A record that does not fit before the end starts at 0. (Not empty and
        // tail = head is a full ring: the branch below.)
        if (this.capacity - head >= length) return head;
        if (this.capacity - head >= 8) this.view.setUint32(HEADER + head + R.magic, WRAP_MAGIC, true);
        head = 0;
        this.setWord(H.head, 0, seq);
        if (length <= tail) return 0;
      } else if (head + length <= tail) {
        return head;
      }
      // Drop the oldest record.
      const size = this.capacity - tail >= R.changes ? this.view.getUint32(HEADER + tail + R.length, true) : 0;
      const record = size >= R.changes && size % 8 === 0 && tail + size <= this.capacity && this.view.getUint32(HEADER + tail + R.magic, true) === RECORD_MAGIC;
      if (!record || drops > this.capacity / R.changes) return this.restart(seq);
      const next = this.after(tail + size);
      tailSeq = (tailSeq + 1) >>> 0;
      tail = next;
      this.setWord(H.tail, tail, tailSeq);
    }
  }

  /** A position a ring word may hold: inside the ring, on a record boundary (records are multiples of 8 bytes). */
  private placed(pos: number): boolean {
    return pos <= this.capacity && pos % 8 === 0;
  }

  /** Empties a damaged ring (its records are forgotten, as by a restart): the next record goes at 0. */
  private restart(seq: number): number {
    this.setWord(H.tail, 0, seq);
    this.setWord(H.head, 0, seq);
    return 0;
  }

  /** Where the record after one ending at `pos` starts: at 0 after a WRAP mark, or when no record fits. */
  private after(pos: number): number {
    if (this.capacity - pos < 8) return 0;
    return this.view.getUint32(HEADER + pos + R.magic, true) === WRAP_MAGIC ? 0 : pos;
  }

  /**
   * Every record in the journal, oldest first. A damaged journal (a record that does not follow the one
   * before) is read up to the damage and started afresh after it.
   */
  read(): JournalEntry[] {
    const out: JournalEntry[] = [];
    const { pos: head, seq: headSeq } = this.word(H.head);
    let { pos, seq } = this.word(H.tail);
    for (let n = 0; seq !== (headSeq >>> 0) && n <= this.capacity / R.changes; n++) {
      pos = this.after(pos);
      const entry = this.entryAt(pos, seq);
      if (entry === undefined) {
        this.setWord(H.tail, head, headSeq); // damage: what follows it cannot be trusted
        break;
      }
      out.push(entry);
      pos += this.view.getUint32(HEADER + pos + R.length, true);
      seq = (seq + 1) >>> 0;
    }
    return out;
  }

  private entryAt(pos: number, seq: number): JournalEntry | undefined {
    const v = this.view;
    const base = HEADER + pos;
    if (this.capacity - pos < R.changes || v.getUint32(base + R.magic, true) !== RECORD_MAGIC) return undefined;
    const count = v.getUint32(base + R.count, true);
    const length = v.getUint32(base + R.length, true);
    const serviceLen = v.getUint32(base + R.serviceLen, true);
    if (length !== R.changes + count * CHANGE || pos + length > this.capacity || (v.getFloat64(base + R.seq, true) >>> 0) !== seq || serviceLen > 64) return undefined;
    const changes = [];
    for (let i = 0; i < count; i++) {
      const o = base + R.changes + i * CHANGE;
      changes.push({ index: v.getUint32(o, true), skipped: (v.getUint32(o + 4, true) & SKIPPED) !== 0, before: v.getFloat64(o + 8, true), version: v.getFloat64(o + 16, true) });
    }
    return {
      identity: Buffer.from(this.u8.subarray(base + R.identity, base + R.service)).toString('hex'),
      opId: v.getFloat64(base + R.opId, true),
      what: v.getUint32(base + R.what, true),
      at: v.getFloat64(base + R.at, true),
      service: Buffer.from(this.u8.subarray(base + R.service, base + R.service + serviceLen)).toString('latin1'),
      state: v.getUint32(base + R.state, true) as RecordState,
      changes,
      settle: (versions) => {
        versions?.forEach((version, i) => v.setFloat64(base + R.changes + i * CHANGE + 16, version, true));
        this.setState(pos, versions === undefined ? RecordState.Void : RecordState.Done);
      },
    };
  }

  /** Resolves once every record written so far is on disk (durability `ack`; concurrent callers share one sync). */
  sync(): Promise<void> {
    return this.syncer.sync();
  }

  /** Written since the last sync (periodic syncs skip clean journals). */
  get dirty(): boolean {
    return this.syncer.dirty;
  }

  /** Syncs what was written, gives up ownership and unmaps. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.syncer.dirty || this.syncer.running) await this.syncer.sync().catch(() => undefined);
    this.view.setInt32(H.owner, 0, true);
    native.unmap(this.buffer);
    closeSync(this.fd);
  }
}
