import { CommyError, ErrorCode } from '../core/errors.js';
import { DEFAULT_MAX_FRAME_BYTES } from '../protocol/frame-codec.js';

/** 'auto': map the server's file when on the same machine, else WebSocket; 'local': map or fail; 'remote': always WebSocket. */
export type ClientMode = 'auto' | 'local' | 'remote';

/** 'connecting' until the first connection opens; 'reconnecting' while a lost one is being re-established. */
export type ClientState = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** How a lost connection is re-established: exponential backoff with full jitter, behind a circuit breaker. */
export interface ReconnectOptions {
  /** The first delay's cap (each attempt waits a random time up to its cap). Default 100. */
  initialDelayMs?: number;
  /** The cap never grows past this. Default 10,000. */
  maxDelayMs?: number;
  /** After `failures` consecutive failed attempts, wait `resetMs`, then try once (half-open). Default 10 and 30,000. */
  breaker?: { failures?: number; resetMs?: number };
}

export interface ResolvedReconnect {
  initialDelayMs: number;
  maxDelayMs: number;
  breaker: { failures: number; resetMs: number };
}

/** Node only: a browser's own trust store decides. */
export interface ClientTlsOptions {
  /** Trusted CA certificate(s), PEM (a string, or its bytes): for a server with a self-signed or private-CA certificate. */
  ca?: string | Uint8Array;
  /** Default true. false accepts any certificate: for tests only. */
  rejectUnauthorized?: boolean;
}

export interface ClientOptions {
  mode?: ClientMode;
  /** Used for wss:// URLs. */
  tls?: ClientTlsOptions;
  /** A request without a reply after this long fails with TIMEOUT. Default 30,000. */
  requestTimeoutMs?: number;
  /** Largest frame this client sends (bigger flushes are split; a single bigger message fails with MESSAGE_TOO_LARGE). Default 1 MiB, the server's default limit. */
  maxFrameBytes?: number;
  /**
   * Failures nobody awaits: a background flush the server refused (the local value is already restored),
   * an Error the server sent outside any request, the connection's loss. Default: the runtime's warning
   * (Node: process.emitWarning; browsers: console.warn).
   */
  onError?: (err: CommyError) => void;
  /**
   * Mode 'auto' could not map a service's file and uses it remotely instead: `reason` says why (the server on
   * another machine, a key with `"hybrid": false` (HYBRID_ACCESS_DENIED), a file that would not open, …).
   * Called before getVirtualServiceFile() resolves with the remote file. Default: nothing (falling back is
   * what 'auto' is for).
   */
  onFallback?: (reason: CommyError, service: { tenant: string; service: string }) => void;
  /**
   * Re-establish a lost connection (on by default): authenticate every tenant again, resubscribe every file
   * (resuming where it left off), resend what the server may not have. `false`: a lost connection closes the
   * client for good (NOT_CONNECTED everywhere).
   */
  reconnect?: boolean | ReconnectOptions;
  /**
   * Node only (docs/client.md, "Mirror files"): back each remote service file's buffer with a service file in
   * `dir` (default `$XDG_CACHE_HOME/commy_virtual_files`, else `~/.cache/commy_virtual_files`), mode 0600, that
   * other processes of this machine open with `VirtualVariableFile.open(vf.mirrorPath)`; their writes are sent
   * like this client's own. Removed when the file or the client closes. Files mapped locally are not mirrored.
   */
  mirror?: boolean | MirrorOptions;
}

/** Where mirror files go (ClientOptions.mirror). */
export interface MirrorOptions {
  /** The directory of the mirror files (created 0700 if missing; must be this user's and writable by nobody else). */
  dir?: string;
}

export interface ResolvedClientOptions {
  mode: ClientMode;
  tls: ClientTlsOptions | undefined;
  requestTimeoutMs: number;
  maxFrameBytes: number;
  /** Snapshots carry a whole service (up to 64 MiB by default), so incoming frames may be larger than outgoing ones. */
  maxIncomingBytes: number;
  onError: (err: CommyError) => void;
  onFallback: ((reason: CommyError, service: { tenant: string; service: string }) => void) | undefined;
  reconnect: ResolvedReconnect | false;
  /** Mirror remote files (`dir` undefined: the platform's default directory); undefined: no mirrors. */
  mirror: { dir: string | undefined } | undefined;
}

const MODES: readonly ClientMode[] = ['auto', 'local', 'remote'];
const MIN_INCOMING_BYTES = 128 * 1024 * 1024;
const MAX_TIMEOUT_MS = 0x7fffffff;

/** Checks the options and fills in defaults; `warn` is the platform's default for onError. */
export function resolveClientOptions(options: ClientOptions = {}, warn: (err: CommyError) => void): ResolvedClientOptions {
  if (typeof options !== 'object' || options === null) throw invalid('options must be an object');
  const mode = options.mode ?? 'auto';
  if (!MODES.includes(mode)) throw invalid(`options.mode must be 'auto', 'local' or 'remote', not ${JSON.stringify(mode)}`);
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  if (!Number.isInteger(requestTimeoutMs) || requestTimeoutMs < 1 || requestTimeoutMs > MAX_TIMEOUT_MS) {
    throw invalid(`options.requestTimeoutMs must be an integer from 1 to ${MAX_TIMEOUT_MS}`);
  }
  const maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 1024) throw invalid('options.maxFrameBytes must be an integer of at least 1024');
  if (options.onError !== undefined && typeof options.onError !== 'function') throw invalid('options.onError must be a function');
  if (options.onFallback !== undefined && typeof options.onFallback !== 'function') throw invalid('options.onFallback must be a function');
  return {
    mode,
    tls: options.tls,
    requestTimeoutMs,
    maxFrameBytes,
    maxIncomingBytes: Math.max(maxFrameBytes, MIN_INCOMING_BYTES),
    onError: options.onError ?? warn,
    onFallback: options.onFallback,
    reconnect: resolveReconnect(options.reconnect),
    mirror: resolveMirror(options.mirror),
  };
}

function resolveMirror(option: boolean | MirrorOptions | undefined): { dir: string | undefined } | undefined {
  if (option === undefined || option === false) return undefined;
  if (option === true) return { dir: undefined };
  if (typeof option !== 'object' || option === null) throw invalid('options.mirror must be a boolean or { dir }');
  const dir = option.dir;
  if (dir !== undefined && (typeof dir !== 'string' || dir.length === 0 || dir.includes('\0'))) {
    throw invalid('options.mirror.dir must be a non-empty path without NUL');
  }
  return { dir };
}

const RECONNECT_DEFAULTS: ResolvedReconnect = { initialDelayMs: 100, maxDelayMs: 10_000, breaker: { failures: 10, resetMs: 30_000 } };

function resolveReconnect(option: boolean | ReconnectOptions | undefined): ResolvedReconnect | false {
  if (option === false) return false;
  if (option === undefined || option === true) return RECONNECT_DEFAULTS;
  if (typeof option !== 'object' || option === null) throw invalid('options.reconnect must be a boolean or { initialDelayMs, maxDelayMs, breaker }');
  const d = RECONNECT_DEFAULTS;
  const initialDelayMs = delay(option.initialDelayMs ?? d.initialDelayMs, 'reconnect.initialDelayMs');
  const maxDelayMs = delay(option.maxDelayMs ?? Math.max(d.maxDelayMs, initialDelayMs), 'reconnect.maxDelayMs');
  if (maxDelayMs < initialDelayMs) throw invalid('options.reconnect.maxDelayMs must be at least initialDelayMs');
  const failures = option.breaker?.failures ?? d.breaker.failures;
  if (!Number.isInteger(failures) || failures < 1) throw invalid('options.reconnect.breaker.failures must be a positive integer');
  const resetMs = delay(option.breaker?.resetMs ?? d.breaker.resetMs, 'reconnect.breaker.resetMs');
  return { initialDelayMs, maxDelayMs, breaker: { failures, resetMs } };
}

function delay(ms: number, what: string): number {
  if (!Number.isInteger(ms) || ms < 0 || ms > MAX_TIMEOUT_MS) throw invalid(`options.${what} must be an integer from 0 to ${MAX_TIMEOUT_MS}`);
  return ms;
}

function invalid(message: string): CommyError {
  return new CommyError(ErrorCode.TYPE_MISMATCH, message);
}
