import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CommyError, ErrorCode, isCommyError } from '../core/errors.js';
import type { FileChangeEvent } from '../core/file-change-event.js';
import { sameFields } from '../core/struct-layout.js';
import { VariableMetadata } from '../core/variable-metadata.js';
import { ChangeWatcher } from '../local/change-watcher.js';
import { alignUp, dataStartFor, DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_VARIABLES, MAX_MAX_FILE_SIZE, MAX_MAX_VARIABLES, PAGE_SIZE } from '../local/file-format.js';
import { defaultMirrorDir, mirrorFileName, prepareMirrorDir, removeLeftoverMirrors, removeMirrorFile } from '../local/mirror-dir.js';
import { BUSY, ServiceFile, type DirEntry } from '../local/service-file.js';
import type { MirrorRequest } from './platform.js';
import type { ChangeTap } from './remote/change-events.js';
import type { RemoteEntry } from './remote/directory.js';
import type { RemoteFileAccessor } from './remote/remote-file-accessor.js';

/**
 * Mirror files (ClientOptions.mirror; docs/client.md, "Mirror files"), Node only: a remote service file's
 * `current` buffer, kept as a real service file (the format of src/local/) that other processes of this
 * machine map with VirtualVariableFile.open(vf.mirrorPath) and use at memory speed.
 *
 * Every variable is registered in the mirror at the server's offset, size and type. The bridge keeps `synced`:
 * each variable's bytes as the mirror and the buffer last agreed on. One rule, per variable, whatever told it
 * to look (the remote file's ChangeTap: a server update, an answer, a registration, a write of this client; the
 * mirror's change watcher: a write of another process, or our own write coming back; a retry):
 *
 *   under the mirror variable's writer lock (taken without waiting: busy means a writer is at work, look again soon)
 *   - mirror ≠ synced: another process wrote it → synced ← mirror, and the bytes go into the buffer as a write of
 *     this client (writeVariable: sent, conflated, under an operation id, kept while offline);
 *   - else buffer ≠ synced: the buffer moved → synced ← buffer, written into the mirror (a seqlock write: readers
 *     there never see it torn).
 *
 * A write into the mirror that races a server update therefore wins: it is sent after the update arrived, so
 * the server orders it later, and every client ends on it (the convergence rule). Our own writes into the mirror
 * come back from its watcher equal to `synced` and are not sent again.
 */
export function openMirror(request: MirrorRequest): void {
  const dir = prepareMirrorDir(request.dir ?? defaultMirrorDir());
  removeLeftoverMirrors(dir);
  const bridge = MirrorBridge.create(join(dir, mirrorFileName(request.tenant, request.service)), request);
  try {
    request.accessor.mirror(bridge);
  } catch (err) {
    bridge.closed();
    throw err;
  }
}

/** How soon a variable whose mirror lock was busy (or a registration that was) is looked at again. */
const RETRY_MS = 2;

/** Mirror files of this process still open: removed if the process exits without closing its clients. */
const openPaths = new Set<string>();
let exitHooked = false;

function track(path: string): void {
  if (!exitHooked) {
    exitHooked = true;
    process.on('exit', () => {
      for (const p of openPaths) removeMirrorFile(p);
    });
  }
  openPaths.add(path);
}

class MirrorBridge implements ChangeTap {
  /** What the server has (this client knows of), by name. */
  private readonly remote = new Map<string, VariableMetadata>();
  /** The mirror's entries of the server's variables, by name. */
  private readonly entries = new Map<string, DirEntry>();
  /** Each variable's bytes as mirror and buffer last agreed on, at the variables' offsets. */
  private synced: Uint8Array;
  /** Server variables the mirror cannot hold (another variable there, registered by a local process), reported once. */
  private readonly unmirrorable = new Set<string>();
  /** Variables local processes registered in the mirror: sent to the server (pending), or refused by it. */
  private readonly registering = new Set<string>();
  private readonly refused = new Set<string>();
  /** Server variables a local process removed from the mirror: removal asked of the server, not answered yet. */
  private readonly removing = new Set<string>();
  /** Variables the server removed that are still to go from the mirror (its lock was busy). */
  private readonly removals = new Set<string>();
  private readonly retries = new Set<string>();
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private watcher: ChangeWatcher | undefined;
  private disposed = false;

  private constructor(
    readonly path: string,
    private readonly file: ServiceFile,
    private readonly accessor: RemoteFileAccessor,
    private readonly onError: (err: CommyError) => void,
  ) {
    this.synced = new Uint8Array(Math.max(64, accessor.store.dataEnd));
  }

  /** Creates the file (0600), fills it from the buffer, and starts watching it. */
  static create(path: string, request: MirrorRequest): MirrorBridge {
    const { accessor, tenant, service } = request;
    const metas = accessor.variables();
    // Room for the server's layout as it is now and as it may grow (the file is sparse: unused room costs nothing).
    const maxVariables = Math.min(MAX_MAX_VARIABLES, Math.max(DEFAULT_MAX_VARIABLES, 2 * metas.length));
    const wanted = alignUp(dataStartFor(maxVariables) + 2 * accessor.store.dataEnd, PAGE_SIZE);
    const maxFileSize = Math.min(MAX_MAX_FILE_SIZE, Math.max(DEFAULT_MAX_FILE_SIZE, wanted));
    // The name is this process's own (pid, start time, 64 random bits): a file already there is nobody's mirror of ours.
    if (existsSync(path)) throw new CommyError(ErrorCode.INVALID_FILE, `${path} exists already: not a new mirror file`);
    const file = ServiceFile.open(path, { create: true, tenant, service, maxVariables, maxFileSize, maxVariableSize: maxFileSize });
    track(path);
    const bridge = new MirrorBridge(path, file, accessor, request.onError);
    try {
      for (const meta of metas) bridge.look(meta.name, meta);
      bridge.watch(`${tenant}/${service}`);
    } catch (err) {
      bridge.closed();
      throw err;
    }
    return bridge;
  }

  // ---- ChangeTap: the remote file ---------------------------------------------------------------------

  changed(entries: readonly RemoteEntry[], removed: readonly string[]): void {
    if (this.disposed) return;
    for (const name of removed) this.goneRemotely(name);
    for (const e of entries) this.look(e.meta.name, e.meta);
  }

  /** The file is closing: what local processes wrote and the watcher has not told yet goes into the buffer now. */
  closing(): void {
    if (this.disposed) return;
    for (const name of [...this.entries.keys()]) this.look(name);
    this.closed();
  }

  /** Stops watching, unmaps and removes the file (processes that still map it keep their mapping, now of no file). */
  closed(): void {
    if (this.disposed) return;
    this.disposed = true;
    clearTimeout(this.retryTimer);
    this.retries.clear();
    try {
      this.watcher?.close();
    } finally {
      this.file.close();
      removeMirrorFile(this.path);
      openPaths.delete(this.path);
    }
  }

  // ---- the mirror's side ------------------------------------------------------------------------------

  private watch(serviceId: string): void {
    const watcher = new ChangeWatcher(this.file, serviceId, (err) => this.report(err));
    this.watcher = watcher;
    watcher.add((event) => this.mirrorChanged(event));
  }

  private mirrorChanged(event: FileChangeEvent): void {
    if (this.disposed) return;
    for (const name of event.removedVariables) if (this.remote.has(name)) this.removedHere(name);
    for (const name of event.changedVariables) {
      if (this.remote.has(name)) this.look(name);
      else this.registeredHere(name);
    }
  }

  /**
   * The server removed a variable (an admin, maybe through another mirror): removed from the mirror too. Its
   * name is no longer the server's, so nothing of it goes back (a registration in the mirror would).
   */
  private goneRemotely(name: string): void {
    this.remote.delete(name);
    this.entries.delete(name);
    this.unmirrorable.delete(name);
    this.removing.delete(name);
    this.removals.add(name);
    this.removeHere(name);
  }

  private removeHere(name: string): void {
    try {
      if (this.file.tryRemoveVariable(name) === BUSY) {
        this.later(name); // a local process holds its lock, or the directory's: look again soon
        return;
      }
    } catch (err) {
      if (!isCommyError(err, ErrorCode.VARIABLE_NOT_FOUND)) this.report(err);
    }
    this.removals.delete(name);
  }

  /**
   * A local process removed a server variable from the mirror: removed on the server too, like a write (it
   * needs the admin right). Refused: reported, and the variable is put back into the mirror.
   */
  private removedHere(name: string): void {
    if (this.removing.has(name) || this.accessor.closed) return;
    this.entries.delete(name);
    this.removing.add(name);
    this.accessor.removeVariable(name).then(
      () => this.removing.delete(name), // the server's answer came through changed(): gone
      (err: unknown) => {
        if (!this.removing.delete(name) || this.disposed) return;
        const why = err instanceof Error ? err.message : String(err);
        const code = isCommyError(err) ? err.code : ErrorCode.INTERNAL_ERROR;
        this.report(new CommyError(code, `${name}, removed from the mirror file ${this.path} by a local process, stays on the server: ${why}`, { cause: err }));
        this.look(name); // registered in the mirror again, with the buffer's value
      },
    );
  }

  /**
   * A variable a local process registered in the mirror: registered on the server too, at the same offset
   * (then its value follows like any other's). The server may refuse (no admin right, the space taken by a
   * variable this client does not know): reported once, and it stays in the mirror only.
   */
  private registeredHere(name: string): void {
    if (this.registering.has(name) || this.refused.has(name) || this.removals.has(name) || this.accessor.closed) return;
    const entry = this.file.list().find((e) => e.meta.name === name);
    if (entry === undefined) return;
    this.registering.add(name);
    this.accessor.register(entry.meta).then(
      () => this.registering.delete(name), // its definition came through changed(): it is a server variable now
      (err: unknown) => {
        this.registering.delete(name);
        this.refused.add(name);
        if (this.disposed) return;
        const why = err instanceof Error ? err.message : String(err);
        const code = isCommyError(err) ? err.code : ErrorCode.INTERNAL_ERROR;
        this.report(new CommyError(code, `${name}, registered in the mirror file ${this.path} by a local process, is not on the server: ${why}`, { cause: err }));
      },
    );
  }

  // ---- one variable -------------------------------------------------------------------------------------

  /** Brings one variable's mirror and buffer together (the rule above); `meta`: its definition, when the server gave one. */
  private look(name: string, meta?: VariableMetadata): void {
    if (this.disposed) return;
    try {
      if (meta !== undefined && this.remote.get(name) !== meta) {
        this.remote.set(name, meta);
        this.entries.delete(name);
        this.removals.delete(name); // defined (again) by the server: a removal still to do here is off
      }
      if (this.removals.has(name)) {
        this.removeHere(name);
        return;
      }
      const known = this.remote.get(name);
      if (known === undefined || this.unmirrorable.has(name) || this.removing.has(name)) return;
      const entry = this.entries.get(name) ?? this.place(known);
      if (entry !== undefined) this.sync(known, entry);
    } catch (err) {
      this.report(err);
      if (this.file.closed || this.file.damaged) this.closed(); // truncated under us, say: a mirror no more
    }
  }

  /** The server's variable in the mirror: registered at its offset, or found there with its layout. */
  private place(meta: VariableMetadata): DirEntry | undefined {
    const { name, offset, size, typeId, fields } = meta;
    const there = this.file.list().find((e) => e.meta.name === name);
    if (there !== undefined) {
      const m = there.meta;
      if (m.offset === offset && m.size === size && m.typeId === typeId && sameFields(m.fields, fields)) {
        this.entries.set(name, there);
        return there; // registered by a local process first (and forwarded): its bytes there are news
      }
      this.cannotMirror(name, `the mirror file has ${name} at [${m.offset}, ${m.end}) as type ${m.typeId}`);
      return undefined;
    }
    let entry: DirEntry | typeof BUSY;
    try {
      entry = this.file.tryRegister(new VariableMetadata(name, offset, size, typeId, fields));
    } catch (err) {
      this.cannotMirror(name, err instanceof Error ? err.message : String(err));
      return undefined;
    }
    if (entry === BUSY) {
      this.later(name); // a local process is registering: look again soon
      return undefined;
    }
    this.entries.set(name, entry);
    this.reserve(offset + size);
    this.synced.fill(0, offset, offset + size); // a new variable starts at zero in the file
    return entry;
  }

  private sync(meta: VariableMetadata, entry: DirEntry): void {
    const file = this.file;
    const { offset, size } = meta;
    if (!file.tryLock(entry)) {
      this.later(meta.name); // a writer is at work (or died at it: tryLock recovers its lock after a while)
      return;
    }
    let locked = true;
    try {
      // Removed from the mirror by a local process (under this same lock): the watcher tells of it (removedHere).
      if (!file.isLive(entry)) return;
      this.reserve(offset + size);
      const synced = this.synced;
      const current = this.accessor.store.current; // read each time: the buffer is replaced when it grows
      const there = file.u8.subarray(entry.at, entry.at + size);
      if (!equal(there, 0, synced, offset, size)) {
        const written = there.slice();
        file.unlock(entry);
        locked = false;
        synced.set(written, offset);
        if (!equal(written, 0, current, offset, size)) this.send(meta.name, written);
        return;
      }
      if (equal(current, offset, synced, offset, size)) return;
      const value = current.slice(offset, offset + size);
      synced.set(value, offset);
      locked = false;
      file.writeLocked(entry, value); // publishes and lets go of the lock
    } finally {
      if (locked) file.unlock(entry);
    }
  }

  /** A local process's write, into the buffer as this client's own write. */
  private send(name: string, bytes: Uint8Array): void {
    if (this.accessor.closed) return;
    this.accessor.writeBytes(name, bytes).catch((err: unknown) => {
      // Still pending (offline, or an answer that is late): it is sent, or resent, by the remote file itself.
      if (isCommyError(err, ErrorCode.TIMEOUT) || isCommyError(err, ErrorCode.NOT_CONNECTED)) return;
      if (this.disposed) return;
      this.report(err);
      this.look(name); // refused: the buffer holds the server's value again, and so does the mirror now
    });
  }

  // ---- helpers ------------------------------------------------------------------------------------------

  private cannotMirror(name: string, why: string): void {
    this.unmirrorable.add(name);
    this.report(new CommyError(ErrorCode.INVALID_OFFSET, `${name} cannot be mirrored in ${this.path}: ${why}`));
  }

  private later(name: string): void {
    this.retries.add(name);
    if (this.retryTimer !== undefined) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      const names = [...this.retries];
      this.retries.clear();
      for (const n of names) this.look(n);
    }, RETRY_MS);
  }

  private reserve(end: number): void {
    if (end <= this.synced.length) return;
    const grown = new Uint8Array(Math.max(end, this.synced.length * 2));
    grown.set(this.synced);
    this.synced = grown;
  }

  private report(err: unknown): void {
    this.onError(err instanceof CommyError ? err : new CommyError(ErrorCode.INTERNAL_ERROR, `mirror file ${this.path}: ${String(err)}`, { cause: err }));
  }
}

function equal(a: Uint8Array, aAt: number, b: Uint8Array, bAt: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[aAt + i] !== b[bAt + i]) return false;
  return true;
}
