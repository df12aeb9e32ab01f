import { closeSync, fstatSync, ftruncateSync, linkSync, openSync, readSync, unlinkSync, writeSync, constants as fsc } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { CommyError, ErrorCode } from '../core/errors.js';
import { assertValidName } from '../core/names.js';
import {
  DEFAULT_MAX_FILE_SIZE,
  DEFAULT_MAX_VARIABLES,
  HEADER_SIZE,
  INITIAL_DATA_CAPACITY,
  MAX_MAX_FILE_SIZE,
  MAX_MAX_VARIABLES,
  PAGE_SIZE,
  dataStartFor,
  readHeader,
  writeHeader,
  type HeaderInfo,
} from './file-format.js';
import type { LockPolicy } from './process-lock.js';

/**
 * Opening and creating a service file, and growing it: everything done to it through its fd rather than its
 * mapping. Nothing read from the file is trusted: a symlink, a FIFO, another owner's file or another
 * service's header at the path is refused with INVALID_FILE before anything is mapped.
 */

export interface ServiceFileOptions {
  /** Create the file if it does not exist (mode 0600). */
  create?: boolean;
  /** Directory capacity, fixed at creation. */
  maxVariables?: number;
  /** Maximum file size, fixed at creation: the size of the one mapping every process makes. */
  maxFileSize?: number;
  /** Largest variable this process may register. */
  maxVariableSize?: number;
  /** Recorded in the header at creation; the server names its files' tenant and service. */
  tenant?: string;
  service?: string;
  lock?: Partial<LockPolicy>;
  /**
   * Open O_RDONLY and map PROT_READ: values and the directory can be read, nothing can be changed. Every
   * mutator throws PERMISSION_DENIED before touching memory; reads never take a writer lock nor break a dead
   * writer's; `dataBytes()` returns a copy. Never creates the file (a missing one is FILE_NOT_FOUND).
   */
  readOnly?: boolean;
  /**
   * The file's name in every error message (default: its absolute path). A server passes `tenant/service`, so
   * that no error it forwards to a client reveals where its data lives.
   */
  label?: string;
  /** The header must name this tenant and service (else INVALID_FILE): a planted link or copy of another service's file is refused. */
  expect?: { tenant: string; service: string };
  /** Refuse (INVALID_FILE) a file not owned by this process's effective uid, or writable by group or others. */
  requireOwner?: boolean;
}

/** An open service file before it is mapped: its absolute path, how errors name it, and its fd. */
export interface OpenedFile {
  readonly path: string;
  readonly label: string;
  readonly fd: number;
}

/** Open without following a symlink as the last component, and without blocking on a FIFO planted at the path. */
const OPEN_FLAGS = fsc.O_NOFOLLOW | fsc.O_NONBLOCK;

/** Opens (with `create`, creates) the file at `path`. FILE_NOT_FOUND, INVALID_FILE (a symlink), INVALID_NAME. */
export function openServiceFile(path: string, options: ServiceFileOptions): OpenedFile {
  if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) {
    throw new CommyError(ErrorCode.INVALID_NAME, 'a service file path must be a non-empty string without NUL');
  }
  const abs = resolve(path);
  const label = options.label ?? abs;
  return { path: abs, label, fd: openOrCreate(abs, label, options) };
}

/**
 * The header of an opened file, checked: the fd is a regular file (with `requireOwner` ours and writable by
 * nobody else), the header is sound for the file's real size, and with `expect` names that tenant and service.
 */
export function readCheckedHeader(opened: OpenedFile, options: ServiceFileOptions): HeaderInfo {
  const { fd, label } = opened;
  const size = checkOpened(fd, label, options);
  const page = Buffer.alloc(HEADER_SIZE);
  const got = readSync(fd, page, 0, HEADER_SIZE, 0);
  const info = readHeader(label, page.subarray(0, got), size);
  checkExpected(info, label, options);
  return info;
}

/** A failure while opening or mapping, as a CommyError: ours as they are, anything else INTERNAL_ERROR. */
export function openFailure(err: unknown, label: string): CommyError {
  if (err instanceof CommyError) return err;
  return new CommyError(ErrorCode.INTERNAL_ERROR, `cannot map ${label}: ${(err as Error).message}`, { cause: err });
}

/** ftruncate to `fileSize` as a CommyError: a full disk (ENOSPC) or a file-size limit (EFBIG) is QUOTA_EXCEEDED, never a raw errno. */
export function growFile(fd: number, label: string, fileSize: number): void {
  try {
    ftruncateSync(fd, fileSize);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const quota = code === 'ENOSPC' || code === 'EFBIG' || code === 'EDQUOT';
    throw new CommyError(quota ? ErrorCode.QUOTA_EXCEEDED : ErrorCode.INTERNAL_ERROR, `${label} cannot grow to ${fileSize} bytes: ${code ?? String(err)}`, { cause: err });
  }
}

export function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* already closed */
  }
}

/** Opens an existing file without following a symlink; FILE_NOT_FOUND, or INVALID_FILE for a symlink. */
function openExisting(abs: string, label: string, flags: number): number {
  try {
    return openSync(abs, flags | OPEN_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') {
      throw new CommyError(ErrorCode.INVALID_FILE, `${label} is a symbolic link: service files are never opened through one`, { cause: err });
    }
    throw err;
  }
}

function openOrCreate(abs: string, label: string, options: ServiceFileOptions): number {
  if (options.readOnly === true) {
    try {
      return openExisting(abs, label, fsc.O_RDONLY);
    } catch (err) {
      if (err instanceof CommyError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'does not exist (a read-only open never creates)' : `cannot be opened: ${code}`;
      throw new CommyError(ErrorCode.FILE_NOT_FOUND, `${label} ${why}`, { cause: err });
    }
  }
  try {
    return openExisting(abs, label, fsc.O_RDWR);
  } catch (err) {
    if (err instanceof CommyError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw new CommyError(ErrorCode.FILE_NOT_FOUND, `cannot open ${label}: ${code}`, { cause: err });
    if (!options.create) throw new CommyError(ErrorCode.FILE_NOT_FOUND, `${label} does not exist`, { cause: err });
  }
  return createFile(abs, label, options);
}

/**
 * What the open fd must be before anything is read: a regular file (not a directory, FIFO or device), and with
 * `requireOwner` ours and writable by nobody else. Returns its size. INVALID_FILE otherwise.
 */
function checkOpened(fd: number, label: string, options: ServiceFileOptions): number {
  const st = fstatSync(fd);
  if (!st.isFile()) throw new CommyError(ErrorCode.INVALID_FILE, `${label} is not a regular file`);
  if (options.requireOwner === true) {
    const euid = process.geteuid?.();
    if (euid !== undefined && st.uid !== euid) {
      throw new CommyError(ErrorCode.INVALID_FILE, `${label} is owned by uid ${st.uid}, not by this process (uid ${euid})`);
    }
    if ((st.mode & 0o022) !== 0) {
      throw new CommyError(ErrorCode.INVALID_FILE, `${label} is writable by group or others (mode ${(st.mode & 0o777).toString(8)})`);
    }
  }
  return st.size;
}

/** With `expect`, the header must name that tenant and service (which ones it names is not said: not ours to tell). */
function checkExpected(info: HeaderInfo, label: string, options: ServiceFileOptions): void {
  const want = options.expect;
  if (want === undefined || (info.tenant === want.tenant && info.service === want.service)) return;
  throw new CommyError(ErrorCode.INVALID_FILE, `${label} belongs to another service: its header names a different tenant or service`);
}

/** The shape a new file is created with, checked: VALUE_TOO_LARGE or INVALID_NAME otherwise. */
function creationShape(options: ServiceFileOptions): { maxVariables: number; maxFileSize: number; tenant: string; service: string } {
  const maxVariables = options.maxVariables ?? DEFAULT_MAX_VARIABLES;
  const maxFileSize = options.maxFileSize ?? DEFAULT_MAX_FILE_SIZE;
  if (!Number.isInteger(maxVariables) || maxVariables < 1 || maxVariables > MAX_MAX_VARIABLES) {
    throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `maxVariables must be 1..${MAX_MAX_VARIABLES}`);
  }
  const least = dataStartFor(maxVariables) + INITIAL_DATA_CAPACITY;
  if (!Number.isInteger(maxFileSize) || maxFileSize % PAGE_SIZE !== 0 || maxFileSize < least || maxFileSize > MAX_MAX_FILE_SIZE) {
    throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `maxFileSize must be a multiple of ${PAGE_SIZE} between ${least} and ${MAX_MAX_FILE_SIZE}`);
  }
  const tenant = options.tenant ?? options.expect?.tenant ?? '';
  const service = options.service ?? options.expect?.service ?? '';
  if (tenant !== '') assertValidName(tenant, 'tenant name');
  if (service !== '') assertValidName(service, 'service name');
  return { maxVariables, maxFileSize, tenant, service };
}

/**
 * Creates the file under a temporary name, writes a complete header, then links it into place:
 * a process that opens the path never sees a half-written header, and of two creators exactly one wins.
 */
function createFile(abs: string, label: string, options: ServiceFileOptions): number {
  const shape = creationShape(options);
  const tmp = `${abs}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  let fd: number;
  try {
    fd = openSync(tmp, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL | OPEN_FLAGS, 0o600);
  } catch (err) {
    throw new CommyError(ErrorCode.FILE_NOT_FOUND, `cannot create ${label}: ${(err as NodeJS.ErrnoException).code}`, { cause: err });
  }
  try {
    ftruncateSync(fd, dataStartFor(shape.maxVariables) + INITIAL_DATA_CAPACITY);
    const page = Buffer.alloc(HEADER_SIZE);
    writeHeader(page, { ...shape, fileId: randomBytes(16), createdMs: Date.now() });
    writeSync(fd, page, 0, HEADER_SIZE, 0);
    try {
      linkSync(tmp, abs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      closeQuietly(fd);
      fd = -1;
      fd = openExisting(abs, label, fsc.O_RDWR); // another process created it first: use theirs
    }
    return fd;
  } catch (err) {
    closeQuietly(fd);
    // The code only: a Node fs error's message holds the paths, and the label is all an error may reveal.
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).name;
    throw err instanceof CommyError ? err : new CommyError(ErrorCode.FILE_NOT_FOUND, `cannot create ${label}: ${why}`, { cause: err });
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      /* already gone */
    }
  }
}
