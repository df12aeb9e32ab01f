import { lstatSync, mkdirSync, type Stats } from 'node:fs';
import { CommyError, ErrorCode } from '../core/errors.js';

/** Group- or other-writable: someone else could add, swap or remove service files. */
const FOREIGN_WRITE_BITS = 0o022;

/**
 * Makes sure `path` is a directory the server alone controls: not a symlink (which could point anywhere,
 * e.g. into another tenant), owned by the server's effective uid, and not writable by group or others.
 * A missing directory is created with mode 0700 (its parent must exist unless `parents`). Throws
 * CommyError(`code`) naming the reason; `what` names the directory in the message.
 */
export function ensurePrivateDir(path: string, code: ErrorCode, what: string, parents = false): void {
  let st = lstatOrUndefined(path, code, what);
  if (st === undefined) {
    try {
      mkdirSync(path, { mode: 0o700, recursive: parents });
    } catch (err) {
      // Another process may have created it in between: the lstat below judges whatever is there now.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new CommyError(code, `cannot create ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
      }
    }
    st = lstatOrUndefined(path, code, what);
    if (st === undefined) throw new CommyError(code, `${what} ${path} vanished while being created`);
  }
  assertPrivate(path, st, code, what);
}

function lstatOrUndefined(path: string, code: ErrorCode, what: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CommyError(code, `cannot inspect ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
}

function assertPrivate(path: string, st: Stats, code: ErrorCode, what: string): void {
  if (st.isSymbolicLink()) throw new CommyError(code, `${what} ${path} is a symbolic link; use the real directory`);
  if (!st.isDirectory()) throw new CommyError(code, `${what} ${path} is not a directory`);
  const euid = process.geteuid?.();
  if (euid !== undefined && st.uid !== euid) {
    throw new CommyError(code, `${what} ${path} is owned by uid ${st.uid}, not by the server's uid ${euid}`);
  }
  if ((st.mode & FOREIGN_WRITE_BITS) !== 0) {
    const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
    throw new CommyError(code, `${what} ${path} has mode ${mode}: it must not be writable by group or others (chmod go-w)`);
  }
}
