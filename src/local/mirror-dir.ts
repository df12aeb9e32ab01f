import { lstatSync, mkdirSync, readdirSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { CommyError, ErrorCode } from '../core/errors.js';
import { holderGone, OWN_PID, OWN_START, pidAlive } from './process-lock.js';

/**
 * The directory of a remote client's mirror files (docs/client.md, "Mirror files"), their names and the
 * removal of those their processes left behind. A name says whose file it is:
 *
 *   <tenant>.<service>.<pid>.<start>.<random>.commy
 *
 * `pid` and `start` (the owner's start time, process-lock.ts; 0 unknown) tell a live owner from a gone one, as
 * for a lock; `random` (16 hex digits) keeps two mirrors of one service in one process apart. A file is only
 * ever removed when its name has exactly this shape and its owner is gone; a creation the owner died in
 * (file-open.ts's `<name>.<pid>.<12 hex>.tmp`) when that pid is not running.
 */

const NAME = '[A-Za-z0-9][A-Za-z0-9._-]*';
const MIRROR_NAME = new RegExp(`^${NAME}\\.(\\d{1,10})\\.(\\d{1,10})\\.[0-9a-f]{16}\\.commy$`);
const MIRROR_TMP = new RegExp(`^${NAME}\\.\\d{1,10}\\.\\d{1,10}\\.[0-9a-f]{16}\\.commy\\.(\\d{1,10})\\.[0-9a-f]{12}\\.tmp$`);

/** `$XDG_CACHE_HOME/commy_virtual_files` when XDG_CACHE_HOME is an absolute path, else `~/.cache/commy_virtual_files`. */
export function defaultMirrorDir(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  const cache = xdg !== undefined && xdg !== '' && isAbsolute(xdg) ? xdg : join(homedir(), '.cache');
  return join(cache, 'commy_virtual_files');
}

/**
 * The directory, absolute, created 0700 if missing. It must be a real directory (a symbolic link is not
 * followed), owned by this user and writable by nobody else: another user could otherwise plant or remove
 * files in it. INVALID_FILE otherwise.
 */
export function prepareMirrorDir(dir: string): string {
  const abs = resolve(dir);
  try {
    mkdirSync(abs, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new CommyError(ErrorCode.FILE_NOT_FOUND, `cannot create the mirror directory ${abs}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
  const st = lstatSync(abs);
  if (!st.isDirectory()) throw new CommyError(ErrorCode.INVALID_FILE, `the mirror directory ${abs} is not a directory (a symbolic link is not followed)`);
  const euid = process.geteuid?.();
  if (euid !== undefined && st.uid !== euid) {
    throw new CommyError(ErrorCode.INVALID_FILE, `the mirror directory ${abs} is owned by uid ${st.uid}, not by this process (uid ${euid})`);
  }
  if ((st.mode & 0o022) !== 0) {
    throw new CommyError(ErrorCode.INVALID_FILE, `the mirror directory ${abs} is writable by group or others (mode ${(st.mode & 0o777).toString(8)})`);
  }
  return abs;
}

/** A new mirror file's name for this process. */
export function mirrorFileName(tenant: string, service: string): string {
  return `${tenant}.${service}.${OWN_PID}.${OWN_START >>> 0}.${randomBytes(8).toString('hex')}.commy`;
}

/** Is the owner of a mirror file, `pid` started at `start`, gone? Never for a live process (ours included). */
export function mirrorOwnerGone(pid: number, start: number): boolean {
  // holderGone would call a lock of our own a leftover unless held here; a mirror of ours is a live one.
  const recorded = start | 0; // the name holds it unsigned; process-lock.ts keeps start times as int32
  if (pid === OWN_PID) return recorded !== 0 && OWN_START !== 0 && recorded !== OWN_START;
  return holderGone(pid, recorded, false);
}

/**
 * Removes the mirror files in `dir` whose owners are gone (killed, or ended without closing their client), and
 * the temporary files of mirror creations their process died in. Only regular files of this user whose names
 * have the mirror shape; symbolic links are never followed (nor removed). Returns the names removed.
 */
export function removeLeftoverMirrors(dir: string): string[] {
  const removed: string[] = [];
  const euid = process.geteuid?.();
  for (const d of readdirSync(dir, { withFileTypes: true })) {
    if (!d.isFile()) continue;
    const mirror = MIRROR_NAME.exec(d.name);
    const tmp = mirror === null ? MIRROR_TMP.exec(d.name) : null;
    let gone: boolean;
    if (mirror !== null) gone = mirrorOwnerGone(Number(mirror[1]), Number(mirror[2]));
    else if (tmp !== null) gone = Number(tmp[1]) !== OWN_PID && !pidAlive(Number(tmp[1]));
    else continue;
    if (!gone) continue;
    const path = join(dir, d.name);
    try {
      const st = lstatSync(path);
      if (!st.isFile() || (euid !== undefined && st.uid !== euid)) continue;
      unlinkSync(path);
      removed.push(d.name);
    } catch {
      // Gone already (another client cleaned up at the same time), or not ours to remove.
    }
  }
  return removed;
}

/** Removes one mirror file of ours; false if it was gone already. */
export function removeMirrorFile(path: string): boolean {
  try {
    unlinkSync(path);
    return true;
  } catch {
    return false;
  }
}
