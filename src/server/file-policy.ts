import { chmodSync, chownSync, lstatSync, readFileSync } from 'node:fs';
import { CommyError, ErrorCode } from '../core/errors.js';
import type { FilesConfig } from './config.js';

/**
 * Who besides the server's own user may open a tenant's service files (docs/security.md, "Local clients").
 * By default nobody: files 0600 in 0700 directories, so only processes of the server's user can map them.
 * With a group, the OS enforces what a local process may do whatever its key says: `0640` lets the group
 * map the files read-only (its writes must go through the server, remote mode), `0660` read-write.
 */
export interface FilePolicy {
  gid: number;
  mode: 0o640 | 0o660;
}

/** The gid of a group name (from /etc/group) or a numeric gid; undefined for an unknown name. */
export function resolveGroup(group: string | number): number | undefined {
  if (typeof group === 'number') return group;
  if (/^\d+$/.test(group)) return Number(group);
  let text: string;
  try {
    text = readFileSync('/etc/group', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  return undefined;
}

export function filePolicyOf(files: FilesConfig | undefined): FilePolicy | undefined {
  if (files === undefined) return undefined;
  const gid = resolveGroup(files.group);
  if (gid === undefined) throw new CommyError(ErrorCode.CONFIG_INVALID, `unknown group ${JSON.stringify(files.group)}`);
  return { gid, mode: files.mode === '0660' ? 0o660 : 0o640 };
}

/**
 * Gives a tenant's directory (0750) and one of its files (policy.mode) to the policy's group. Paths are the
 * registry's own, below directories only the server's user can write, so no one can swap them in between.
 */
export function applyFilePolicy(path: string, policy: FilePolicy, isDir: boolean): void {
  const want = isDir ? 0o750 : policy.mode;
  withCode(ErrorCode.INVALID_FILE, `cannot give ${path} to group ${policy.gid}`, () => {
    const st = lstatSync(path);
    if (st.isSymbolicLink()) throw new CommyError(ErrorCode.INVALID_FILE, 'refusing to change the group of a symbolic link');
    if (st.gid !== policy.gid) chownSync(path, st.uid, policy.gid);
    if ((st.mode & 0o777) !== want) chmodSync(path, want);
  });
}

/** The data directory and `tenants/` become 0711: a group member may pass through, not list or write. */
export function openForTraversal(dir: string): void {
  // At start, like the data directory's own checks (data-dir.ts): a config error.
  withCode(ErrorCode.CONFIG_INVALID, `cannot make ${dir} traversable (mode 0711)`, () => {
    const st = lstatSync(dir);
    if ((st.mode & 0o777) !== 0o711) chmodSync(dir, 0o711);
  });
}

/** Runs `run`; a system error (EPERM: the server's user is not in the group, …) becomes CommyError(`code`). */
function withCode(code: ErrorCode, what: string, run: () => void): void {
  try {
    run();
  } catch (err) {
    if (err instanceof CommyError) throw err;
    throw new CommyError(code, `${what}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
}
