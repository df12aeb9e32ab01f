import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CommyError, ErrorCode } from '../core/errors.js';

/**
 * A native thread waiting on a shared futex word; calls back on the JS thread when the word changes. The
 * fallback of a change watcher that has no wake channel (docs/file-format.md, Change notification).
 */
export interface NativeWatcher {
  close(): void;
  ref(): void;
  unref(): void;
}

/**
 * A wake channel: a datagram socket bound to the abstract address `\0commy-w-<token as 16 hex digits>`, polled
 * by this thread's own event loop. Each readable event drains it and calls back, on this thread, with no
 * arguments. Unref'd until ref(); close() is idempotent and frees the address at once.
 */
export interface NativeWakeChannel {
  close(): void;
  ref(): this;
  unref(): this;
}

export type DiffImpl = 'auto' | 'avx512' | 'avx2' | 'u64';

/** The surface of `native/*.cc` (see docs/file-format.md for how it is used). */
export interface NativeAddon {
  map(fd: number, length: number, writable: boolean): ArrayBuffer;
  unmap(buffer: ArrayBuffer): void;
  msync(buffer: ArrayBuffer, offset: number, length: number, sync: boolean): void;
  /** 0 woken, 1 timed out, 2 the word did not hold `expected`. */
  futexWait(buffer: ArrayBuffer, byteOffset: number, expected: number, timeoutMs: number, bitset?: number): number;
  /** Wakes waiters whose bitset shares a bit with `bitset` (default: all). */
  futexWake(buffer: ArrayBuffer, byteOffset: number, count: number, bitset?: number): number;
  /**
   * A thread sleeping on `wordOffset` until it changes. With a single-bit `bitset` the thread marks itself in
   * the word at `waitersOffset` as a bit mask (OR while parked); with all bits, it counts itself there.
   */
  watch(buffer: ArrayBuffer, wordOffset: number, waitersOffset: number, timeoutMs: number, callback: () => void, bitset?: number): NativeWatcher;
  /**
   * Binds and polls the wake channel of `token` (a non-zero u64), then stores the token in the mapping at
   * `tokenOffset` (needs a writable mapping): a writer can only learn an address that is already bound. Throws
   * ERR_COMMY_WAKE (with errno and syscall) when the socket cannot be had: EADDRINUSE, EMFILE...
   */
  wakeChannel(buffer: ArrayBuffer, tokenOffset: number, token: bigint, callback: () => void): NativeWakeChannel;
  /**
   * One byte to the wake channel of each slot in `bits`: slot i's token is the u64 at `tokensOffset + 8 i` (32
   * slots; a zero token is skipped). Failures are ignored (a gone reader, a full queue). Returns the bytes sent.
   */
  wakeChannels(buffer: ArrayBuffer, tokensOffset: number, bits: number): number;
  /** Flat [start, end) pairs of the byte runs that differ. */
  diff(a: Uint8Array, b: Uint8Array, impl?: DiffImpl): Uint32Array;
  diffImpls(): string[];
  cpu(): { avx512: boolean; avx2: boolean };
  /**
   * Did a SIGBUS inside this mapping get repaired (a zero page mapped over a page past end of file, because
   * another process truncated the file)? Such a mapping no longer shows the file. See native/sigbus.cc.
   */
  damaged(buffer: ArrayBuffer): boolean;
  /** 4 bytes: the process-wide count of repaired SIGBUS faults (read as an Int32Array, see `damageCount`). */
  readonly damageCount: ArrayBuffer;
}

// dist/src/native/addon.js → package root is three levels up.
const ADDON_PATH = fileURLToPath(new URL('../../../build/Release/commy_native.node', import.meta.url));

function load(): NativeAddon {
  const where = `${process.platform}-${process.arch}, Node ${process.version}, ABI ${process.versions.modules}, N-API ${process.versions.napi}`;
  if (!existsSync(ADDON_PATH)) {
    throw new CommyError(
      ErrorCode.INTERNAL_ERROR,
      `commy's native addon is not built for ${where}: expected ${ADDON_PATH}. Run \`npm install\` (or \`npm run build\`) in the commy package; it needs g++, make and python3.`,
    );
  }
  try {
    return createRequire(import.meta.url)(ADDON_PATH) as NativeAddon;
  } catch (cause) {
    throw new CommyError(ErrorCode.INTERNAL_ERROR, `commy's native addon at ${ADDON_PATH} does not load on ${where}: rebuild it with \`npm run build\``, { cause });
  }
}

export const native: NativeAddon = load();

/**
 * Process-wide count of repaired SIGBUS faults, written by the signal handler: a mapping user compares it with
 * the value it last saw (one load) and asks `native.damaged(buffer)` only when it moved. Read it with a plain
 * load (`damageCount[0]`): Atomics.load on this non-shared array is not inlined (~9 ns a call, measured), and a
 * plain load is enough, since the handler runs synchronously inside the faulting access of the same thread,
 * and for another thread's fault (a watcher's) the check only needs to see it eventually.
 */
export const damageCount: Int32Array = new Int32Array(native.damageCount);
