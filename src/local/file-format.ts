import { CommyError, ErrorCode } from '../core/errors.js';

/**
 * The service file format, versions 2 and 3 (docs/file-format.md is the prose of this file). Version 2 changed
 * how watchers are woken (wake channels: see WATCH_TOKENS), which version 1 processes cannot follow. Version 3
 * is version 2 with struct layouts (layout-records.ts): a file becomes version 3 when its first struct is
 * registered, so a commy that knows no structs refuses it at open instead of misreading it.
 *
 *   [0, 4096)                    header
 *   [4096, dataStart)            variable directory: maxVariables entries of 128 bytes (sparse until used)
 *   [dataStart, fileSize)        data region; variable offsets are relative to dataStart
 *
 * Every multi-byte field is little-endian. Words that several processes change at once are only ever
 * touched with atomic instructions (Atomics.*); the offsets below keep them naturally aligned.
 */
export const MAGIC = 'COMMYSVC';
/** The version a new file is written with: version 2 processes share it as long as it holds no struct. */
export const FORMAT_VERSION = 2;
/** The version of a file that holds (or held) a struct layout; also the newest this commy reads. */
export const STRUCT_FORMAT_VERSION = 3;
export const HEADER_SIZE = 4096;
export const ENTRY_SIZE = 128;
export const DATA_ALIGN = 8;
export const PAGE_SIZE = 4096;

export const DEFAULT_MAX_VARIABLES = 16384;
export const MAX_MAX_VARIABLES = 1 << 20;
export const DEFAULT_MAX_FILE_SIZE = 64 * 1024 * 1024;
/** Address space reserved per mapping is the file's maximum size; keep it sane. */
export const MAX_MAX_FILE_SIZE = 4 * 1024 * 1024 * 1024 - PAGE_SIZE;
export const INITIAL_DATA_CAPACITY = 4096;

/** Header fields: byte offsets. */
export const H = {
  MAGIC: 0, // 8 bytes ASCII
  FORMAT_VERSION: 8, // u32
  HEADER_SIZE: 12, // u32
  ENTRY_SIZE: 16, // u32
  MAX_VARIABLES: 20, // u32
  DATA_START: 24, // u32
  FLAGS: 28, // u32, reserved (0)
  MAX_FILE_SIZE: 32, // u64
  FILE_ID: 40, // 16 random bytes: this file's incarnation
  CREATED_MS: 56, // u64
  // Hot words, written concurrently by every process: atomics only.
  VERSION: 64, // u64 service version; its low 32 bits are the futex word fallback watchers sleep on
  WAITERS: 72, // i32 number of fallback watchers (no wake channel) asleep on VERSION
  VAR_COUNT: 76, // u32 published directory entries
  LAYOUT_GEN: 80, // u32 bumped whenever the directory or the file size changes
  REG_LOCK: 84, // i32 pid holding the registration lock, 0 when free
  DATA_END: 88, // u64 allocation high-water mark, relative to dataStart
  DATA_CAPACITY: 96, // u64 bytes of data region the file currently holds
  PARKED: 104, // i32 bit mask: watchers (by watcher bit) parked on their wake channel; a writer takes the bits it wakes
  REG_LOCK_START: 108, // u32 start time of REG_LOCK's holder (low 32 bits of /proc/PID/stat field 22), 0 unknown
  LAYOUT_SLOTS: 112, // u32 directory slots at the top of the directory holding struct layouts (version 3; 0 before)
  TENANT_LEN: 128, // u8
  SERVICE_LEN: 129, // u8
  TENANT: 192, // 64 bytes
  SERVICE: 256, // 64 bytes
  WATCH_SLOTS: 512, // 32 × i32: pid owning each watcher bit, 0 when free
  WATCH_STARTS: 640, // 32 × u32: start time of each watcher slot's owner, 0 unknown
  WATCH_TOKENS: 768, // 32 × u64: each watcher slot's wake channel token (its socket address), 0 none
} as const;

/** Longest tenant or service name the header holds. */
export const HEADER_NAME_MAX = 64;

/** Watcher bits: a process's watcher owns one (and a wake channel), so the process's own writes can skip waking it. */
export const WATCH_SLOT_COUNT = 32;
export const ALL_WATCH_BITS = 0xffffffff;

/** Directory entry fields: byte offsets inside one 128-byte entry. */
export const E = {
  STATE: 0, // u32: 0 empty, 1 live, 2 removed (a tombstone: its slot is never reused, its bytes may be)
  LOCK: 4, // i32 writer lock: pid of the holder, 0 when free
  SEQ: 8, // u32 seqlock: odd while a write is in progress
  FLAGS: 12, // u32 bit 0: TORN (a writer died mid-write; cleared by the next complete write)
  VERSION: 16, // u64 service version of the last change
  OFFSET: 24, // u32 data-relative offset
  SIZE: 28, // u32
  TYPE_ID: 32, // u8
  NAME_LEN: 33, // u8
  NAME: 40, // 64 bytes ASCII
  LOCK_START: 104, // u32 start time of LOCK's holder (low 32 bits of /proc/PID/stat field 22), 0 unknown
  LAST_WRITER: 108, // i32 pid of the process that completed the last write (or registered it), 0 unknown
  LAYOUT: 112, // u32 a Struct's layout record: the first directory slot it occupies (layout-records.ts)
} as const;

export const ENTRY_LIVE = 1;
/** A removed variable's entry: it keeps its slot (directory indexes never change meaning) and its last version. */
export const ENTRY_REMOVED = 2;
export const FLAG_TORN = 1;

export function entryOffset(index: number): number {
  return HEADER_SIZE + index * ENTRY_SIZE;
}

export function dataStartFor(maxVariables: number): number {
  return HEADER_SIZE + maxVariables * ENTRY_SIZE;
}

export function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/**
 * The data capacity a file grows to so that it holds `end` bytes of data: doubling, page-aligned, never past
 * `maxData` (maxFileSize − dataStart). The one growth rule: registration applies it, quotas predict it.
 */
export function grownCapacity(capacity: number, end: number, maxData: number): number {
  if (end <= capacity) return capacity;
  return Math.min(maxData, Math.max(alignUp(end, PAGE_SIZE), capacity * 2));
}

export interface HeaderInit {
  maxVariables: number;
  maxFileSize: number;
  tenant: string;
  service: string;
  fileId: Uint8Array;
  createdMs: number;
}

/** Writes a fresh header into `buf` (a whole new file's first page). */
export function writeHeader(buf: Buffer, init: HeaderInit): void {
  buf.fill(0, 0, HEADER_SIZE);
  buf.write(MAGIC, H.MAGIC, 'ascii');
  buf.writeUInt32LE(FORMAT_VERSION, H.FORMAT_VERSION);
  buf.writeUInt32LE(HEADER_SIZE, H.HEADER_SIZE);
  buf.writeUInt32LE(ENTRY_SIZE, H.ENTRY_SIZE);
  buf.writeUInt32LE(init.maxVariables, H.MAX_VARIABLES);
  buf.writeUInt32LE(dataStartFor(init.maxVariables), H.DATA_START);
  buf.writeBigUInt64LE(BigInt(init.maxFileSize), H.MAX_FILE_SIZE);
  Buffer.from(init.fileId).copy(buf, H.FILE_ID);
  buf.writeBigUInt64LE(BigInt(init.createdMs), H.CREATED_MS);
  buf.writeBigUInt64LE(0n, H.VERSION);
  buf.writeBigUInt64LE(BigInt(INITIAL_DATA_CAPACITY), H.DATA_CAPACITY);
  buf.writeUInt8(buf.write(init.tenant, H.TENANT, 64, 'ascii'), H.TENANT_LEN);
  buf.writeUInt8(buf.write(init.service, H.SERVICE, 64, 'ascii'), H.SERVICE_LEN);
}

/** What a header says about the file's shape; validated before anything is mapped. */
export interface HeaderInfo {
  maxVariables: number;
  dataStart: number;
  maxFileSize: number;
  fileId: string;
  tenant: string;
  service: string;
}

function invalid(label: string, why: string): CommyError {
  return new CommyError(ErrorCode.INVALID_FILE, `${label} is not a usable commy service file: ${why}`);
}

/**
 * Checks the first page of a file read with plain I/O against the file's real size (fstat) and the format's
 * limits; throws INVALID_FILE naming `label` (the caller's name for the file, never necessarily its path).
 * Every size and count is checked here, since another process may have written anything into the file.
 */
export function readHeader(label: string, page: Buffer, fileSize: number): HeaderInfo {
  if (page.length < HEADER_SIZE || fileSize < HEADER_SIZE) throw invalid(label, `truncated header (${fileSize} bytes)`);
  if (page.toString('ascii', H.MAGIC, H.MAGIC + 8) !== MAGIC) throw invalid(label, 'wrong magic');
  const version = page.readUInt32LE(H.FORMAT_VERSION);
  if (version < FORMAT_VERSION || version > STRUCT_FORMAT_VERSION) {
    const hint = version > STRUCT_FORMAT_VERSION ? ' (upgrade commy)' : version >= 1 ? ' (made by an older commy, whose processes are woken another way)' : '';
    throw invalid(label, `format version ${version}; this commy reads versions ${FORMAT_VERSION} and ${STRUCT_FORMAT_VERSION}${hint}`);
  }
  if (page.readUInt32LE(H.HEADER_SIZE) !== HEADER_SIZE || page.readUInt32LE(H.ENTRY_SIZE) !== ENTRY_SIZE) {
    throw invalid(label, 'unexpected header or entry size');
  }
  const maxVariables = page.readUInt32LE(H.MAX_VARIABLES);
  const dataStart = page.readUInt32LE(H.DATA_START);
  const maxFileSize = Number(page.readBigUInt64LE(H.MAX_FILE_SIZE));
  if (maxVariables < 1 || maxVariables > MAX_MAX_VARIABLES || dataStart !== dataStartFor(maxVariables)) {
    throw invalid(label, 'corrupt directory size');
  }
  if (maxFileSize % PAGE_SIZE !== 0 || maxFileSize <= dataStart || maxFileSize > MAX_MAX_FILE_SIZE) {
    throw invalid(label, `corrupt maximum file size ${maxFileSize}`);
  }
  const capacity = page.readBigUInt64LE(H.DATA_CAPACITY);
  if (capacity > BigInt(maxFileSize - dataStart)) throw invalid(label, `corrupt data capacity ${capacity}`);
  if (fileSize < dataStart + Number(capacity)) {
    throw invalid(label, `truncated: ${fileSize} bytes, the header promises ${dataStart + Number(capacity)}`);
  }
  const dataEnd = page.readBigUInt64LE(H.DATA_END);
  if (dataEnd > capacity) throw invalid(label, `corrupt data end ${dataEnd} (capacity ${capacity})`);
  const varCount = page.readUInt32LE(H.VAR_COUNT);
  if (varCount > maxVariables) throw invalid(label, `corrupt directory count ${varCount}`);
  const layoutSlots = page.readUInt32LE(H.LAYOUT_SLOTS);
  if (layoutSlots > maxVariables - varCount) throw invalid(label, `corrupt layout area of ${layoutSlots} slots`);
  const tenantLen = page.readUInt8(H.TENANT_LEN);
  const serviceLen = page.readUInt8(H.SERVICE_LEN);
  if (tenantLen > HEADER_NAME_MAX || serviceLen > HEADER_NAME_MAX) throw invalid(label, 'corrupt tenant or service name');
  return {
    maxVariables,
    dataStart,
    maxFileSize,
    fileId: page.toString('hex', H.FILE_ID, H.FILE_ID + 16),
    tenant: page.toString('ascii', H.TENANT, H.TENANT + tenantLen),
    service: page.toString('ascii', H.SERVICE, H.SERVICE + serviceLen),
  };
}
