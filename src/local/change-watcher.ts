import { changeEventOf, deliverChange, type FileChangeEvent } from '../core/file-change-event.js';
import type { VariableMetadata } from '../core/variable-metadata.js';
import { native, type NativeWatcher } from '../native/addon.js';
import { ALL_WATCH_BITS, H, WATCH_SLOT_COUNT } from './file-format.js';
import { OWN_PID, slotHolderGone, takeLock, type LockWord } from './process-lock.js';
import type { ServiceFile } from './service-file.js';

/** What `seen` holds for a removed variable's slot (versions are never negative). */
const GONE = -1n;

/** A safety net only: no wake is ever lost (docs/file-format.md, Change notification), so nothing waits on this. */
const WATCH_TIMEOUT_MS = 1000;

type Listener = (event: FileChangeEvent) => void;

/** Watcher slots the watchers of this thread own, by file id: a slot with our pid and start not in here is a leftover. */
const ownedSlots = new Map<string, Set<number>>();

function slotsOwnedHere(fileId: string): Set<number> {
  let owned = ownedSlots.get(fileId);
  if (owned === undefined) ownedSlots.set(fileId, (owned = new Set()));
  return owned;
}

/** Watcher slot `i`: its pid word and the start-time word of its owner. */
function slotWord(i: number): LockWord {
  return { lockIdx: (H.WATCH_SLOTS >> 2) + i, lockStartIdx: (H.WATCH_STARTS >> 2) + i };
}

/**
 * Turns futex wake-ups on the service version into FileChangeEvents. One native thread per mapped file,
 * shared by every listener in this process. It finds what changed by comparing each directory entry's
 * version with the one it saw last: writes through the API need no diff.
 */
export class ChangeWatcher {
  private watcher: NativeWatcher | undefined;
  private readonly listeners = new Set<Listener>();
  private seen: bigint[] = [];
  private settled = 0n;
  private keepAlive = 0;
  private rescanQueued = false;
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
  ) {}

  /** Adds a listener; the first one starts the native thread. */
  add(listener: Listener): void {
    this.file.assertOpen();
    // The thread and the slot claim store into the header: on a PROT_READ mapping that would be SIGSEGV.
    this.file.assertWritable();
    if (this.watcher === undefined) this.start();
    this.listeners.add(listener);
  }

  remove(listener: Listener): void {
    this.listeners.delete(listener);
  }

  /** While held, the watcher keeps the event loop alive (like fs.watch). */
  hold(): void {
    if (this.keepAlive++ === 0) this.watcher?.ref();
  }

  unhold(): void {
    if (this.keepAlive > 0 && --this.keepAlive === 0) this.watcher?.unref();
  }

  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
    this.listeners.clear();
    this.detach?.();
    this.detach = undefined;
    if (this.slot >= 0) this.releaseSlot(this.slot);
    this.slot = -1;
  }

  private start(): void {
    // Everything before now is not a change to report.
    this.seen = this.file.slots().map((e) => (e.removed ? GONE : this.file.entryVersion(e)));
    this.slot = this.claimSlot();
    const bit = this.slot >= 0 ? (1 << this.slot) >>> 0 : ALL_WATCH_BITS;
    const waitersWord = this.slot >= 0 ? H.PARKED : H.WAITERS;
    this.watcher = native.watch(this.file.buffer, H.VERSION, waitersWord, WATCH_TIMEOUT_MS, () => this.safeScan(), bit);
    if (this.keepAlive > 0) this.watcher.ref();
    // Without a slot this watcher hears every wake, its own process's included: no bit to leave out.
    this.detach = this.file.attachWatcher({ bit: this.slot >= 0 ? bit : 0, onLocalChange: () => this.safeScan() });
  }

  /**
   * Claims a free watcher bit, or one whose owner is gone (dead, its pid reused, or a leftover of this very
   * process: see holderGone). Without one (32 watchers already), this watcher simply listens to every wake,
   * its own process's included.
   */
  private claimSlot(): number {
    const i32 = this.file.i32;
    const owned = slotsOwnedHere(this.file.info.fileId);
    for (let i = 0; i < WATCH_SLOT_COUNT; i++) {
      const word = slotWord(i);
      const owner = Atomics.load(i32, word.lockIdx);
      if (owner === 0 && takeLock(i32, word, 0)) {
        owned.add(i);
        return i;
      }
      if (owner !== 0 && slotHolderGone(i32, word, owned.has(i)) && takeLock(i32, word, owner)) {
        // A watcher killed while asleep left its bit parked: clear it, or every writer would wake nobody forever.
        Atomics.and(i32, H.PARKED >> 2, ~(1 << i));
        owned.add(i);
        return i;
      }
    }
    return -1;
  }

  private releaseSlot(slot: number): void {
    const fileId = this.file.info.fileId;
    const owned = ownedSlots.get(fileId);
    owned?.delete(slot);
    if (owned?.size === 0) ownedSlots.delete(fileId);
    if (!this.file.closed) Atomics.compareExchange(this.file.i32, slotWord(slot).lockIdx, OWN_PID, 0);
  }

  /**
   * Another process can write anything into a shared file, a corrupt directory included: that must not
   * throw out of a native callback (which would end this process). It is reported, and watching goes on.
   */
  private safeScan(): void {
    let event: FileChangeEvent | undefined;
    try {
      event = this.scan();
    } catch (err) {
      this.onError(err);
      if (this.file.damaged) this.stopThread();
    }
    if (event !== undefined) deliverChange(this.listeners, event, warn);
  }

  /**
   * A damaged mapping (the file was truncated under it) never shows the file again: its thread would only wake
   * to the same error every second. Stopped after this callback returns; listeners stay (they hear nothing more).
   */
  private stopThread(): void {
    const watcher = this.watcher;
    this.watcher = undefined;
    if (watcher !== undefined) setImmediate(() => watcher.close());
  }

  /**
   * Every change at or below this version has been reported (a low watermark: a resume point). A write takes
   * its version before it stores it, so a scan cannot vouch for the service version it sees: only for the one
   * it read before looking at the entries, and only below the old version of any entry still mid-write.
   */
  get settledVersion(): bigint {
    return this.settled;
  }

  /**
   * Compares every slot's version with the last one seen: one event for the differences, if any. A slot not
   * seen before is an added variable; a slot whose variable was removed since is a removed one.
   */
  private scan(): FileChangeEvent | undefined {
    const file = this.file;
    if (file.closed || this.watcher === undefined) return undefined;
    let settled = file.version; // read before the entries: any write at or below it has begun by now
    const slots = file.slots();
    const changed: VariableMetadata[] = [];
    const added: string[] = [];
    const removed: string[] = [];
    let inFlight = false;
    let top = 0n;
    for (let i = 0; i < slots.length; i++) {
      const e = slots[i]!;
      const before = this.seen[i];
      const v = file.entryVersion(e);
      if (v > top) top = v;
      if (e.removed) {
        if (before !== undefined && before !== GONE) removed.push(e.meta.name);
        this.seen[i] = GONE;
        continue;
      }
      // A write in progress has bumped the service version but may not have stored its own yet: look again soon.
      if ((Atomics.load(file.i32, e.seqIdx) & 1) !== 0) {
        inFlight = true;
        if (v < settled) settled = v;
      }
      if (v === before) continue;
      if (before === undefined) added.push(e.meta.name);
      this.seen[i] = v;
      changed.push(e.meta);
    }
    if (inFlight && !this.rescanQueued) {
      this.rescanQueued = true;
      setImmediate(() => {
        this.rescanQueued = false;
        this.safeScan();
      });
    }
    if (settled > this.settled) this.settled = settled;
    if (changed.length === 0 && removed.length === 0) return undefined;
    return changeEventOf(file.path, this.serviceId, changed, top, { added, removed });
  }
}

/** Reported as a process warning: the error itself (a CommyError keeps its code), or one wrapping it. */
function warn(err: unknown): void {
  if (err instanceof Error) process.emitWarning(err);
  else process.emitWarning(String(err), { code: 'COMMY_WATCH' });
}
