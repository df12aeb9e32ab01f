import type { StructField } from '../core/struct-layout.js';
import { typeName } from '../core/variable-type.js';
import { BUSY } from './busy.js';
import { H, WATCH_SLOT_COUNT } from './file-format.js';
import { I32 } from './file-mapping.js';
import type { DirEntry } from './directory.js';
import { ServiceFile } from './service-file.js';

/** One variable as `commy inspect` shows it. */
export interface VariableReport {
  readonly index: number;
  readonly name: string;
  readonly type: string;
  /** Offset in the data region, and size, in bytes. */
  readonly offset: number;
  readonly size: number;
  readonly state: 'live' | 'removed';
  /** A Struct's fields, in their order in its bytes; its value is an object of them. */
  readonly fields?: readonly StructField[];
  readonly version: bigint;
  /** Pid of the process that completed the last write (0 unknown). */
  readonly lastWriter: number;
  /** A writer died mid-write: the value may be torn until the next complete write. */
  readonly torn: boolean;
  /** The value, or `busy` when a write was in progress at every look (never waited for). Undefined once removed. */
  readonly value?: unknown;
}

/** What a service file holds, read without taking a lock (docs/operations.md, Inspecting a file). */
export interface FileReport {
  readonly path: string;
  readonly fileId: string;
  readonly tenant: string;
  readonly service: string;
  readonly version: bigint;
  readonly fileSize: number;
  readonly maxFileSize: number;
  readonly dataCapacity: number;
  readonly dataEnd: number;
  readonly maxVariables: number;
  /** Processes watching the file with a wake channel, those parked now, and fallback (futex) watchers asleep. */
  readonly watchers: { readonly slots: number; readonly parked: number; readonly fallback: number };
  readonly variables: readonly VariableReport[];
}

/**
 * Reads a service file as it is now: mapped read-only, so nothing in it changes and no lock is taken (a value
 * being written is retried a few times, then reported `busy`). Works on a live file beside its server.
 */
export function inspectFile(path: string): FileReport {
  const file = ServiceFile.open(path, { readOnly: true });
  try {
    const i32 = file.i32;
    let slots = 0;
    for (let i = 0; i < WATCH_SLOT_COUNT; i++) if (Atomics.load(i32, I32(H.WATCH_SLOTS) + i) !== 0) slots++;
    return {
      path: file.path,
      fileId: file.info.fileId,
      tenant: file.info.tenant,
      service: file.info.service,
      version: file.version,
      fileSize: file.fileSize(),
      maxFileSize: file.info.maxFileSize,
      dataCapacity: file.dataCapacity,
      dataEnd: file.dataEnd,
      maxVariables: file.info.maxVariables,
      watchers: { slots, parked: popCount(Atomics.load(i32, I32(H.PARKED))), fallback: Atomics.load(i32, I32(H.WAITERS)) },
      variables: file.slots().map((e) => variableReport(file, e)),
    };
  } finally {
    file.close();
  }
}

function variableReport(file: ServiceFile, e: DirEntry): VariableReport {
  const { name, size, typeId, fields } = e.meta;
  const live = file.isLive(e);
  const report = {
    index: e.index,
    name,
    type: typeName(typeId),
    offset: e.at - file.dataStart,
    size,
    state: live ? ('live' as const) : ('removed' as const),
    ...(fields !== undefined ? { fields } : {}),
    version: file.entryVersion(e),
    lastWriter: file.lastWriter(e),
    torn: file.isTorn(e),
  };
  if (!live) return report;
  let value: unknown;
  try {
    value = file.tryRead(e, () => e.codec.load(file.view, e.at));
  } catch {
    return report; // removed between the two looks
  }
  return { ...report, value: value === BUSY ? 'busy' : value };
}

function popCount(bits: number): number {
  let n = 0;
  for (let b = bits >>> 0; b !== 0; b &= b - 1) n++;
  return n;
}
