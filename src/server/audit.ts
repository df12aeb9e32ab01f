import { fchmodSync, fstatSync, mkdirSync, openSync, readdirSync, renameSync, unlinkSync, constants as fsc } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { pino, type DestinationStream, type Logger } from 'pino';
import { CommyError, ErrorCode } from '../core/errors.js';

/**
 * One JSON line per file handed out, subscription, service created, variable registered, change applied by
 * the server, and change seen in a local client's mapping (docs/operations.md lists the fields).
 */
export interface AuditEvent {
  event: 'GetServiceFilePath' | 'Subscription' | 'VariablesChanged' | 'VariableRegistered' | 'VariableRemoved' | 'ServiceCreated' | 'LocalVariablesChanged';
  clientId: string;
  keyId: string;
  tenant: string;
  service: string;
  /** At most MAX_AUDIT_VARIABLES names are written; `variableCount` tells how many there were. */
  variables?: string[];
  /** Set by record() whenever `variables` is given. */
  variableCount?: number;
  filePath?: string;
  /** LocalVariablesChanged: the local process that wrote, when known. */
  pid?: number;
}

export interface AuditLog {
  record(event: AuditEvent): void;
  close(): Promise<void>;
}

export interface AuditOptions {
  enabled: boolean;
  /** Append to this file; stdout when undefined. */
  file?: string;
  /** Rotate the file before it would pass this many bytes (default DEFAULT_AUDIT_MAX_BYTES). */
  maxBytes?: number;
  /** Rotated files kept: `<file>.1` (newest) … `<file>.<maxFiles>` (default DEFAULT_AUDIT_MAX_FILES). */
  maxFiles?: number;
  /** Where the log reports its own failures (a pino Logger fits); default: process.emitWarning. */
  logger?: WarningLogger;
}

/**
 * The one method the audit log needs of a logger, in pino's shape: `fields` carries `err`, `msg` says what
 * failed. Failures are reported, never thrown: a full disk must not take the server down.
 */
export interface WarningLogger {
  warn(fields: { err: unknown }, msg: string): void;
}

/** The default: the process's warning channel (stderr unless the embedder listens for 'warning'). */
const processWarnings: WarningLogger = { warn: (_fields, msg) => process.emitWarning(msg) };

/** Names written per event: keeps every line small (names are ≤ 64 characters, so ≤ ~7 KB of names). */
export const MAX_AUDIT_VARIABLES = 100;
export const DEFAULT_AUDIT_MAX_BYTES = 100 * 1024 * 1024;
export const DEFAULT_AUDIT_MAX_FILES = 5;

/**
 * Lines are written in batches: a write waits until this many bytes are buffered or AUDIT_FLUSH_MS has passed
 * (one system call per write on the hot path cost 16–23 µs of a remote round trip). A clean stop (close(),
 * SIGTERM, process exit) writes what is buffered; a kill -9 loses at most the lines of the last AUDIT_FLUSH_MS.
 */
export const AUDIT_BATCH_BYTES = 8 * 1024;
export const AUDIT_FLUSH_MS = 100;
/** How long a stop waits for the audit file's last lines before giving them up (a full or stuck disk). */
export const AUDIT_CLOSE_MS = 3000;

const silent: AuditLog = { record: () => {}, close: async () => {} };

/**
 * Audit to a file or stdout; `enabled: false` records nothing. The file is created 0600 (it names who
 * touched what) and rotated by size: disk use stays under (maxFiles + 1) × maxBytes, or one line more
 * when a single line is larger than maxBytes. Throws CONFIG_INVALID if the file cannot be opened.
 */
export function createAuditLog(options: AuditOptions): AuditLog {
  if (!options.enabled) return silent;
  if (options.file === undefined) return stdoutLog();
  const warnings = options.logger ?? processWarnings;
  const file = new RotatingFile(options.file, options.maxBytes ?? DEFAULT_AUDIT_MAX_BYTES, options.maxFiles ?? DEFAULT_AUDIT_MAX_FILES, warnings);
  const logger = auditLogger(file);
  return { record: (event) => logger.info(bounded(event)), close: () => file.close() };
}

function stdoutLog(): AuditLog {
  const destination = pino.destination({ dest: 1, sync: false, minLength: AUDIT_BATCH_BYTES, periodicFlush: AUDIT_FLUSH_MS });
  const logger = auditLogger(destination);
  return {
    record: (event) => logger.info(bounded(event)),
    close: () =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, AUDIT_CLOSE_MS); // stdout that is not read must not hold a stop
        destination.flush(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}

function auditLogger(destination: DestinationStream): Logger {
  return pino({ base: { log: 'audit' }, timestamp: isoTimeByMs() }, destination);
}

/** pino's ISO `time` field, formatted once per millisecond (a line per remote write formatted it for each). */
function isoTimeByMs(): () => string {
  let last = -1;
  let field = '';
  return () => {
    const now = Date.now();
    if (now !== last) {
      last = now;
      field = `,"time":"${new Date(now).toISOString()}"`;
    }
    return field;
  };
}

/** The event with its variable list capped (a 5,000-name report must not make a 300 KB line); may set `variableCount` on `event`. */
export function bounded(event: AuditEvent): AuditEvent {
  if (event.variables === undefined) return event;
  const count = event.variables.length;
  // The common case needs no copy of the event (one per remote write).
  if (count <= MAX_AUDIT_VARIABLES) {
    event.variableCount = count;
    return event;
  }
  return { ...event, variables: event.variables.slice(0, MAX_AUDIT_VARIABLES), variableCount: count };
}

type Boom = ReturnType<typeof pino.destination>;

/**
 * A pino destination appending to `path` and rotating by size: before a line would take the file past
 * maxBytes, `path.<maxFiles>` is deleted, `path.<i>` becomes `path.<i+1>`, `path` becomes `path.1` (with
 * maxFiles 0 it is deleted), and a fresh 0600 file takes its place. The old file's writer finishes its
 * buffered lines into the renamed file (an open fd follows the rename), so nothing is lost or reordered and
 * each file holds at most maxBytes. Writes are asynchronous (sonic-boom).
 */
class RotatingFile implements DestinationStream {
  private boom: Boom;
  private size: number;
  private readonly rotatable: boolean;
  private readonly retiring = new Set<Promise<void>>();
  private closing: Promise<void> | undefined;

  constructor(
    private readonly path: string,
    private readonly maxBytes: number,
    private readonly maxFiles: number,
    private readonly warnings: WarningLogger,
  ) {
    const { fd, size, regular } = openPrivate(path, warnings);
    this.size = size;
    this.rotatable = regular; // never rename a device or FIFO someone configured as the audit "file"
    this.boom = writerFor(fd, warnings);
  }

  write(line: string): void {
    if (this.closing !== undefined) return; // a straggler after close(): its writer is gone
    const bytes = Buffer.byteLength(line);
    if (this.rotatable && this.size > 0 && this.size + bytes > this.maxBytes) this.rotate();
    this.size += bytes;
    this.boom.write(line);
  }

  private rotate(): void {
    let next: Boom;
    try {
      shiftFiles(this.path, this.maxFiles);
      next = writerFor(openPrivate(this.path, this.warnings).fd, this.warnings);
    } catch (err) {
      // Keep writing where we are; try again after another maxBytes rather than on every line.
      this.warnings.warn({ err }, `commy audit log: rotation of ${this.path} failed: ${(err as Error).message}`);
      this.size = 0;
      return;
    }
    this.retire(this.boom);
    this.boom = next;
    this.size = 0;
  }

  /**
   * end(): writes what is still buffered, then closes the fd. A writer that cannot write (a full disk: sonic-boom
   * retries forever) is destroyed after AUDIT_CLOSE_MS, its unwritten lines reported lost, so a stop never hangs.
   */
  private retire(boom: Boom): void {
    let timer: NodeJS.Timeout | undefined;
    const closed = new Promise<void>((resolve) => {
      boom.once('close', () => resolve());
      timer = setTimeout(() => {
        this.warnings.warn({ err: new Error('audit log writer did not finish') }, `commy audit log: ${this.path} could not be written within ${AUDIT_CLOSE_MS} ms; its last buffered lines are lost`);
        boom.destroy();
        resolve();
      }, AUDIT_CLOSE_MS);
    }).finally(() => clearTimeout(timer));
    this.retiring.add(closed);
    void closed.then(() => this.retiring.delete(closed));
    boom.end();
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.retire(this.boom);
      await Promise.all([...this.retiring]);
    })();
    return this.closing;
  }
}

function writerFor(fd: number, warnings: WarningLogger): Boom {
  const boom = pino.destination({ dest: fd, sync: false, minLength: AUDIT_BATCH_BYTES, periodicFlush: AUDIT_FLUSH_MS });
  // An unhandled 'error' would take the whole server down over a full disk.
  boom.on('error', (err: Error) => warnings.warn({ err }, `commy audit log: ${err.message}`));
  return boom;
}

/** Opens `path` for appending, creating it (and its directory) private to the server; tightens an old 0644 file. */
function openPrivate(path: string, warnings: WarningLogger): { fd: number; size: number; regular: boolean } {
  let fd: number;
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    fd = openSync(path, fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT, 0o600);
  } catch (err) {
    throw new CommyError(ErrorCode.CONFIG_INVALID, `cannot open audit log ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
  const st = fstatSync(fd);
  const regular = st.isFile();
  if (regular && (st.mode & 0o077) !== 0) {
    try {
      fchmodSync(fd, 0o600);
    } catch (err) {
      warnings.warn({ err }, `commy audit log: cannot make ${path} private (mode 0600): ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  }
  return { fd, size: regular ? st.size : 0, regular };
}

/** `path` → `path.1` → … → `path.<maxFiles>`; anything older (also left by a larger maxFiles) is deleted. */
function shiftFiles(path: string, maxFiles: number): void {
  removeOlderThan(path, maxFiles);
  for (let i = maxFiles - 1; i >= 1; i--) renameIfExists(`${path}.${i}`, `${path}.${i + 1}`);
  if (maxFiles === 0) unlinkIfExists(path);
  else renameSync(path, `${path}.1`);
}

/** Deletes `path.<n>` for n ≥ maxFiles (`path.<maxFiles>` is about to be replaced). */
function removeOlderThan(path: string, maxFiles: number): void {
  const dir = dirname(path);
  const prefix = `${basename(path)}.`;
  for (const name of readdirSync(dir)) {
    if (!name.startsWith(prefix)) continue;
    const suffix = name.slice(prefix.length);
    if (/^[1-9][0-9]{0,5}$/.test(suffix) && Number(suffix) >= Math.max(maxFiles, 1)) unlinkIfExists(join(dir, name));
  }
}

function renameIfExists(from: string, to: string): void {
  try {
    renameSync(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

function unlinkIfExists(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
