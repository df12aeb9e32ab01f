import { changeEventOf, deliverChange, type FileChangeEvent } from '../core/file-change-event.js';
import type { VariableMetadata } from '../core/variable-metadata.js';
import { native, type NativeWakeChannel, type NativeWatcher } from '../native/addon.js';
import { ALL_WATCH_BITS, H } from './file-format.js';
import { I32 } from './file-mapping.js';
import { SeenVersions } from './seen-versions.js';
import type { DirEntry, ServiceFile } from './service-file.js';
import { claimSlot, randomToken, releaseSlot } from './watch-slots.js';

/** A safety net only: no wake is ever lost (docs/file-format.md, Change notification), so nothing waits on this. */
const WATCH_TIMEOUT_MS = 1000;
/** Rescans for a change still in flight run on the next turn this many times in a row, then back off: a stopped or dead writer must not make us spin. */
const QUICK_RETRIES = 8;
/** Scans in a row for one wake while writes keep landing under them; then the next waits a turn, so a writer as fast as our scans cannot hold the event loop. */
const MAX_ROUNDS = 4;

const VERSION_LO = I32(H.VERSION);
const PARKED = I32(H.PARKED);
const REG_LOCK = I32(H.REG_LOCK);

type Listener = (event: FileChangeEvent) => void;

export interface ChangeWatcherOptions {
  /**
   * The safety-net rescan's period (default 1000 ms); Infinity for none. Only tests turn it off: with it off, a
   * lost wake would hang them instead of being hidden by the rescan.
   */
  safetyNetMs?: number;
}

/** What one scan found; made at its first find, so a scan that finds nothing allocates nothing. */
class Found {
  readonly changed: VariableMetadata[] = [];
  readonly added: string[] = [];
  readonly removed: string[] = [];
}

/**
 * Turns changes to the service version into FileChangeEvents, for every listener in this process. It finds what
 * changed by comparing each directory entry's version with the one it saw last: writes through the API need no
 * diff. How it hears of a change (docs/file-format.md, Change notification):
 *
 * - with a watcher slot, on its **wake channel**: a datagram socket polled by this thread's event loop, to which
 *   a writer in another process sends one byte after taking this watcher's PARKED bit. No thread: the byte
 *   wakes the loop, and the loop calls the scan;
 * - without one (32 watchers already, or no socket to be had), on a native thread asleep on the futex word,
 *   which other writers wake (the fallback);
 * - this process's own writes, directly (ServiceFile.attachWatcher), with no system call;
 * - and a rescan every second as a safety net, which costs one load when nothing changed.
 */
export class ChangeWatcher {
  private channel: NativeWakeChannel | undefined;
  private thread: NativeWatcher | undefined;
  private safetyNet: NodeJS.Timeout | undefined;
  private active = false;
  private readonly listeners = new Set<Listener>();
  private readonly seen = new SeenVersions();
  /** The highest entry version seen: versions only grow, so this is every entry's maximum, kept without a full pass. */
  private top = 0n;
  private settled = 0n;
  /** Low word of the service version the last scan started from. */
  private scannedLo = 0;
  /** The last scan saw every change up to that version: nothing was in flight. A wake that finds the version unmoved then has nothing to scan. */
  private clean = false;
  private retries = 0;
  private retryQueued = false;
  private deferred = false;
  private keepAlive = 0;
  private slot = -1;
  private detach: (() => void) | undefined;

  /**
   * `onError`: what to do when the file turns out to be unusable while watching (a corrupt directory, a
   * damaged mapping); by default a process warning. A server drops the service instead.
   */
  constructor(
    private readonly file: ServiceFile,
    private readonly serviceId: string,
    private readonly onError: (err: unknown) => void = warn,
    private readonly options: ChangeWatcherOptions = {},
  ) {}

  /** Adds a listener; the first one starts watching. */
  add(listener: Listener): void {
    this.file.assertOpen();
    // The slot claim, the PARKED bit and the token store into the header: on a PROT_READ mapping that would be SIGSEGV.
    this.file.assertWritable();
    if (!this.active) this.start();
    this.listeners.add(listener);
  }

  remove(listener: Listener): void {
    this.listeners.delete(listener);
  }

  /** While held, the watcher keeps the event loop alive (like fs.watch). */
  hold(): void {
    if (this.keepAlive++ === 0) this.ref(true);
  }

  unhold(): void {
    if (this.keepAlive > 0 && --this.keepAlive === 0) this.ref(false);
  }

  close(): void {
    this.stopWatching();
    this.listeners.clear();
    this.detach?.();
    this.detach = undefined;
    if (this.slot >= 0) releaseSlot(this.file, this.slot);
    this.slot = -1;
  }

  /**
   * Every change at or below this version has been reported (a low watermark: a resume point). A write takes
   * its version before it stores it, so a scan cannot vouch for the service version it sees: only for the one
   * it read before looking at the entries, and only below the old version of any entry still mid-write.
   */
  get settledVersion(): bigint {
    return this.settled;
  }

  private get bit(): number {
    return this.channel !== undefined ? (1 << this.slot) | 0 : 0;
  }

  private start(): void {
    this.active = true;
    try {
      this.scan(false); // everything before now is not a change to report
      this.slot = claimSlot(this.file);
      if (this.slot >= 0) this.channel = this.openChannel(this.slot);
      if (this.channel === undefined) this.startThread();
    } catch (err) {
      this.close(); // the next add() tries again
      throw err;
    }
    const period = this.options.safetyNetMs ?? WATCH_TIMEOUT_MS;
    // Always unref'd: while held, the channel (or the thread) is what keeps the loop alive.
    if (period !== Infinity) this.safetyNet = setInterval(this.onWake, period).unref();
    if (this.keepAlive > 0) this.ref(true);
    this.detach = this.file.attachWatcher({ bit: this.bit, onLocalChange: this.onWake });
    // Parked from here on (the thread parks itself); a change since the first look is scanned on the next turn,
    // once the listener is in.
    if (!this.parked() || Atomics.load(this.file.i32, VERSION_LO) !== this.scannedLo) this.defer();
  }

  /** The wake channel of our slot, or undefined (then the slot is given back): no socket to be had (EMFILE, an address taken). */
  private openChannel(slot: number): NativeWakeChannel | undefined {
    try {
      return native.wakeChannel(this.file.buffer, H.WATCH_TOKENS + 8 * slot, randomToken(), this.onWake);
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'ERR_COMMY_WAKE') throw err;
      releaseSlot(this.file, slot);
      this.slot = -1;
      return undefined;
    }
  }

  /** The fallback: a thread asleep on the futex word with all bits, counted in WAITERS. */
  private startThread(): void {
    const timeout = this.options.safetyNetMs ?? WATCH_TIMEOUT_MS; // Infinity: none
    this.thread = native.watch(this.file.buffer, H.VERSION, H.WAITERS, timeout, this.onWake, ALL_WATCH_BITS);
  }

  private ref(on: boolean): void {
    const source = this.channel ?? this.thread;
    if (on) source?.ref();
    else source?.unref();
  }

  /** Closes the channel or thread and the safety net; listeners stay (they hear nothing more). */
  private stopWatching(): void {
    this.active = false;
    this.channel?.close();
    this.channel = undefined;
    // After this callback returns, if we are in one of its callbacks: closing joins the thread.
    const thread = this.thread;
    this.thread = undefined;
    if (thread !== undefined) setImmediate(() => thread.close());
    clearInterval(this.safetyNet);
    this.safetyNet = undefined;
  }

  /**
   * Every way a change is heard ends here: a byte on the channel, the fallback thread, this process's own write,
   * the safety net, a rescan. Scans (unless nothing can have changed), then parks; if the version moved while
   * we scanned, scans again.
   */
  private readonly onWake = (): void => {
    this.deferred = false;
    // Unmapped under us (its owner should have closed us first): nothing to watch, and a socket to give back.
    if (this.file.closed) return this.close();
    for (let round = 0; round < MAX_ROUNDS; round++) {
      if (!this.active) return;
      if (!this.quiet()) this.safeScan();
      if (this.parked()) return;
    }
    this.defer();
  };

  /**
   * Nothing can have changed since the last scan: it was clean and the version has not moved. (Its low word is
   * enough: 2^32 changes between two looks would take far longer than any scan.) What a spurious wake costs:
   * anyone on the host may send bytes to the channel.
   */
  private quiet(): boolean {
    return this.clean && Atomics.load(this.file.i32, VERSION_LO) === this.scannedLo;
  }

  /**
   * Sets our PARKED bit, then reads the version again, both sequentially consistent. A writer bumps the version,
   * then takes the bits: so either it finds our bit (and sends us a byte), or we find its version here (false:
   * scan again). See docs/file-format.md, Change notification. The fallback thread parks itself.
   */
  private parked(): boolean {
    if (!this.active || this.file.closed || this.channel === undefined) return true;
    Atomics.or(this.file.i32, PARKED, this.bit);
    return Atomics.load(this.file.i32, VERSION_LO) === this.scannedLo;
  }

  private defer(): void {
    if (this.deferred) return;
    this.deferred = true;
    setImmediate(this.onWake);
  }

  /** A change in flight: look again on the next turns, then less and less often (bounded by the safety net). */
  private retryLater(): void {
    if (this.retryQueued) return;
    this.retryQueued = true;
    const n = this.retries++;
    if (n < QUICK_RETRIES) setImmediate(this.retry);
    else setTimeout(this.retry, Math.min(2 ** (n - QUICK_RETRIES), WATCH_TIMEOUT_MS)).unref();
  }

  private readonly retry = (): void => {
    this.retryQueued = false;
    this.onWake();
  };

  /**
   * Another process can write anything into a shared file, a corrupt directory included: that must not
   * throw out of a native callback (which would end this process). It is reported, and watching goes on.
   */
  private safeScan(): void {
    let event: FileChangeEvent | undefined;
    try {
      event = this.scan(true);
    } catch (err) {
      // Scanning again before the version moves would only meet the same error (the fallback thread, too, only
      // calls again on a change).
      this.clean = true;
      this.onError(err);
      // A damaged mapping (the file was truncated under it) never shows the file again: stop.
      if (this.file.damaged) this.stopWatching();
    }
    if (event !== undefined) deliverChange(this.listeners, event, warn);
  }

  /**
   * Compares every slot's version with the last one seen: one event for the differences, if any (never with
   * `report` false: that is the first look). A slot not seen before is an added variable; a slot whose variable
   * was removed since is a removed one.
   */
  private scan(report: boolean): FileChangeEvent | undefined {
    const file = this.file;
    if (file.closed || !this.active) return undefined;
    this.clean = false;
    let settled = file.version; // read before the entries: any write at or below it has begun by now
    this.scannedLo = Number(BigInt.asIntN(32, settled));
    // A registration or removal holds this lock from its version bump until it is published: it may not show yet.
    let inFlight = Atomics.load(file.i32, REG_LOCK) !== 0;
    const slots = file.slots();
    const seen = this.seen;
    const i32 = file.i32;
    seen.grow(slots.length);
    let found: Found | undefined;
    for (let i = 0; i < slots.length; i++) {
      const e = slots[i]!;
      if (e.removed) {
        if (!seen.isGone(i)) found = this.gone(i, e, report, found);
        continue;
      }
      // The seqlock before the version: even here, any write that took its version before `settled` was read
      // has stored it too, so the loads below see it.
      if ((Atomics.load(i32, e.seqIdx) & 1) !== 0) {
        inFlight = true;
        const old = Atomics.load(file.b64, e.versionIdx);
        if (old < settled) settled = old;
      }
      // The version's two words by plain loads (Atomics.load is a call, ~9 ns, and this runs per entry): they come
      // after the atomic load above, which neither V8 nor the CPU moves them across (an acquire, on any CPU).
      // They may tear against a concurrent store; any difference is re-read whole, atomically, by changed(), and
      // a torn pair equal to the last seen one is as if read before that store, which the wake protocol covers.
      const vi = 2 * e.versionIdx;
      if (seen.isSame(i, i32[vi]!, i32[vi + 1]!)) continue;
      found = this.changed(i, e, report, found);
    }
    file.assertIntact(); // what was read from a page repaired after a truncation is zeros: say so instead
    this.clean = !inFlight;
    if (inFlight) this.retryLater();
    else this.retries = 0;
    if (settled > this.settled) this.settled = settled;
    if (found === undefined) return undefined;
    return changeEventOf(file.path, this.serviceId, found.changed, this.top, { added: found.added, removed: found.removed });
  }

  private changed(i: number, e: DirEntry, report: boolean, found: Found | undefined): Found | undefined {
    const version = Atomics.load(this.file.b64, e.versionIdx);
    if (version > this.top) this.top = version;
    const added = this.seen.recordLive(i, version);
    if (!report) return found;
    found ??= new Found();
    if (added) found.added.push(e.meta.name);
    found.changed.push(e.meta);
    return found;
  }

  private gone(i: number, e: DirEntry, report: boolean, found: Found | undefined): Found | undefined {
    const version = Atomics.load(this.file.b64, e.versionIdx); // the removal's
    if (version > this.top) this.top = version;
    if (!this.seen.markGone(i) || !report) return found;
    found ??= new Found();
    found.removed.push(e.meta.name);
    return found;
  }
}

/** Reported as a process warning: the error itself (a CommyError keeps its code), or one wrapping it. */
function warn(err: unknown): void {
  if (err instanceof Error) process.emitWarning(err);
  else process.emitWarning(String(err), { code: 'COMMY_WATCH' });
}
