import { CommyError, ErrorCode } from '../core/errors.js';
import { BUSY } from './busy.js';
import { FLAG_TORN } from './file-format.js';
import { assertLive, type DirEntry } from './directory.js';
import type { FileMapping } from './file-mapping.js';
import type { WriterLocks } from './writer-lock.js';
import { orderedLoad } from './memory-order.js';

const READ_RETRIES_BEFORE_LOCK = 64;
/** tryRead's seqlock attempts before answering BUSY: enough to ride out a write that ends meanwhile, no waiting. */
const TRY_READ_ATTEMPTS = 4;
const RETRY: unique symbol = Symbol('retry');

/** A variable's bytes and the version they belong to, read together (tryReadCopy). */
export interface ValueCopy {
  readonly bytes: Uint8Array;
  readonly version: bigint;
}

/**
 * Reading a value: a seqlock read (seq even and unchanged around the copy), never torn. read() waits for a
 * writer and, after many failed attempts, takes the writer lock for one copy so it cannot starve; tryRead()
 * never waits (the server's event loop). Also the entry's other words: version, TORN flag, last writer.
 */
export class ValueReader {
  private readonly i32: Int32Array;
  private readonly b64: BigUint64Array;
  private readonly u8: Uint8Array;

  constructor(
    private readonly file: FileMapping,
    private readonly locks: WriterLocks,
  ) {
    this.i32 = file.i32;
    this.b64 = file.b64;
    this.u8 = file.u8;
  }

  /**
   * Reads a consistent value: retries while a writer is active; after many retries, reads under the lock
   * (a read-only mapping may not take it: it keeps retrying, up to the lock policy's timeoutMs).
   */
  read<T>(entry: DirEntry, readValue: () => T): T {
    this.file.assertOpen();
    for (let attempt = 0; attempt < READ_RETRIES_BEFORE_LOCK; attempt++) {
      const value = this.attemptRead(entry, readValue);
      if (value !== RETRY) return value;
    }
    if (this.file.readOnly) return this.readWithoutLock(entry, readValue);
    // A stream of writes keeps beating us: take the writer lock so the read completes.
    this.locks.acquire(entry);
    try {
      const value = readValue();
      this.file.assertIntact();
      assertLive(this.i32, entry, this.file.label);
      return value;
    } finally {
      this.locks.release(entry);
    }
  }

  /**
   * read() without waiting, for an event loop that must never spin on another process: a few seqlock attempts,
   * then BUSY. A writer that left the seqlock odd and is gone (after staleMs, counted across calls) has its lock
   * recovered, the value marked TORN, and the read retried; a read-only mapping never recovers (BUSY).
   */
  tryRead<T>(entry: DirEntry, readValue: () => T): T | typeof BUSY {
    this.file.assertOpen();
    const i32 = this.i32;
    for (let attempt = 0; attempt < TRY_READ_ATTEMPTS; attempt++) {
      const before = Atomics.load(i32, entry.seqIdx);
      if ((before & 1) !== 0) {
        if (this.file.readOnly || !this.locks.recoverGoneWriter(entry)) return BUSY;
        continue;
      }
      const value = readValue();
      if (Atomics.load(i32, entry.seqIdx) !== before) continue;
      this.file.assertIntact();
      assertLive(i32, entry, this.file.label);
      return value;
    }
    return BUSY;
  }

  /**
   * tryRead() of the variable's bytes and their version, as one consistent pair. The bytes are a new copy, or
   * with `into` a view of `into` at `at` (the value copied there). BUSY as tryRead; `into`'s range is then zeroed,
   * so no torn copy is left behind.
   */
  tryReadCopy(entry: DirEntry, into?: Uint8Array, at = 0): ValueCopy | typeof BUSY {
    const { at: from, meta } = entry;
    const b64 = this.b64;
    const u8 = this.u8;
    const read =
      into === undefined
        ? () => ({ bytes: u8.slice(from, from + meta.size), version: Atomics.load(b64, entry.versionIdx) })
        : () => {
            into.set(u8.subarray(from, from + meta.size), at);
            return { bytes: into.subarray(at, at + meta.size), version: Atomics.load(b64, entry.versionIdx) };
          };
    const copy = this.tryRead(entry, read);
    if (copy === BUSY) into?.fill(0, at, at + meta.size);
    return copy;
  }

  readValue(entry: DirEntry): unknown {
    return this.read(entry, () => entry.codec.load(this.file.view, entry.at));
  }

  readBytes(entry: DirEntry): Uint8Array {
    return this.read(entry, () => this.u8.slice(entry.at, entry.at + entry.meta.size));
  }

  entryVersion(entry: DirEntry): bigint {
    const version = Atomics.load(this.b64, entry.versionIdx);
    this.file.assertIntact();
    return version;
  }

  isTorn(entry: DirEntry): boolean {
    const flags = Atomics.load(this.i32, entry.flagsIdx);
    this.file.assertIntact();
    return (flags & FLAG_TORN) !== 0;
  }

  /** Pid of the process that completed the variable's last write (or registered it); 0 if unknown (older files). */
  lastWriter(entry: DirEntry): number {
    this.file.assertOpen();
    const pid = Atomics.load(this.i32, entry.lastWriterIdx);
    this.file.assertIntact();
    return pid;
  }

  /** One seqlock read: the value, or RETRY if a writer was active before or during it. */
  private attemptRead<T>(entry: DirEntry, readValue: () => T): T | typeof RETRY {
    const before = orderedLoad(this.i32, entry.seqIdx);
    if ((before & 1) !== 0) {
      this.locks.waitForWriter(entry, before);
      return RETRY;
    }
    const value = readValue();
    if (Atomics.load(this.i32, entry.seqIdx) !== before) return RETRY;
    this.file.assertIntact();
    assertLive(this.i32, entry, this.file.label);
    return value;
  }

  /** The read-only reader's fallback: no writer lock to take, so it retries until timeoutMs, then TIMEOUT. */
  private readWithoutLock<T>(entry: DirEntry, readValue: () => T): T {
    const { timeoutMs } = this.locks.policy;
    const deadline = performance.now() + timeoutMs;
    for (let attempt = 1; ; attempt++) {
      const value = this.attemptRead(entry, readValue);
      if (value !== RETRY) return value;
      if (attempt % READ_RETRIES_BEFORE_LOCK === 0 && performance.now() > deadline) {
        throw new CommyError(ErrorCode.TIMEOUT, `variable ${entry.meta.name} kept changing under a read-only reader for ${timeoutMs} ms`);
      }
    }
  }
}
