import { ErrorCode, isCommyError } from '../core/errors.js';
import { BUSY, type DirEntry, type ServiceFile } from '../local/service-file.js';
import { encodeFrame } from '../protocol/frame-codec.js';
import { splitByCost } from '../protocol/frame-split.js';
import type { SnapshotBody, SnapshotChunkBody, VariableDef } from '../protocol/messages.js';
import { defCost, defOf } from '../protocol/variable-def.js';
import type { SubscriptionSpec } from './subscription-spec.js';

/** The entry's definition at `version`, for a client speaking `protocol` (a struct is Bytes before protocol 3). */
export function entryDef(entry: DirEntry, version: bigint, protocol: number): VariableDef {
  return defOf(entry.index, entry.meta, version, protocol);
}

export interface SnapshotRequest {
  file: ServiceFile;
  requestId: number;
  sid: number;
  serviceId: string;
  readOnly: boolean;
  /** Which variables (filter), whose values (since), and whether values at all (mode 'names': definitions only). */
  spec: SubscriptionSpec;
  /** Each frame's definitions plus data stay under this many bytes (a single variable may exceed it). */
  budget: number;
  /** Variables whose writer was mid-write: sent as zeros here, owed to the subscriber as a later update. */
  owe(index: number): void;
  /** A resume was asked and cannot be served: why (the snapshot is full and says so). */
  reset?: string;
}

/**
 * A subscription's starting point as frames: a `Snapshot` (the reply), then as many `SnapshotChunk`s as the
 * service needs, so no frame exceeds the frame limit whatever the service's size. Lazy: each frame's values
 * are read when the caller pulls it (after the socket drained), so a 64 MiB service never sits in memory
 * twice. Values are read without waiting: one a local writer holds mid-write is owed instead (see `owe`).
 */
export function* snapshotFrames(req: SnapshotRequest): Generator<Uint8Array, void, undefined> {
  const { file, spec } = req;
  // The resume point: read before any value, then lowered below any value found mid-write (whose write may
  // have taken its version already): every change at or below it is in the snapshot or owed.
  const version = file.version;
  let settled = version;
  const owe = (e: DirEntry): void => {
    req.owe(e.index);
    const old = file.entryVersion(e);
    if (old < settled) settled = old;
  };
  const entries = file.list().filter((e) => spec.filter.wants(e.index, e.meta.name));
  const defs = entries.map((e) => entryDef(e, file.entryVersion(e), spec.protocol));
  const namesOnly = spec.mode === 'names';
  const valued = namesOnly ? [] : changedSince(file, entries, spec.since);
  const dataEnd = namesOnly ? 0 : endOf(file, valued, spec.filter.everything && spec.since === undefined);
  const defsCost = defs.reduce((n, d) => n + defCost(d), 0);
  const head = (variables: VariableDef[], data: Uint8Array, more: boolean): Uint8Array => {
    const body: SnapshotBody = { sid: req.sid, serviceId: req.serviceId, version: Number(settled), variables, data, readOnly: req.readOnly, fileId: file.info.fileId };
    if (more) body.more = true;
    if (spec.since !== undefined) body.resumed = true;
    if (req.reset !== undefined) body.reset = req.reset;
    return encodeFrame('Snapshot', req.requestId, body);
  };
  if (defsCost + dataEnd <= req.budget) {
    const data = readRun(file, owe, valued, 0, dataEnd);
    yield head(defs, data, false);
    return;
  }
  const defGroups = splitByCost(defs, defCost, req.budget);
  const runs = dataRuns(valued, req.budget);
  yield head(defGroups[0] ?? [], new Uint8Array(0), true);
  const moreDefs = defGroups.slice(1);
  const chunks = moreDefs.length + runs.length;
  let sent = 0;
  const chunk = (body: Omit<SnapshotChunkBody, 'sid' | 'more'>): Uint8Array => {
    const last = ++sent >= chunks;
    // The last chunk says so when a value read on the way lowered the resume point below the Snapshot's.
    const lowered = last && settled < version ? { version: Number(settled) } : {};
    return encodeFrame('SnapshotChunk', 0, { sid: req.sid, ...body, more: !last, ...lowered });
  };
  for (const group of moreDefs) yield chunk({ defs: group });
  for (const run of runs) yield chunk({ offset: run.start, data: readRun(file, owe, run.entries, run.start, run.end) });
  if (chunks === 0) yield encodeFrame('SnapshotChunk', 0, { sid: req.sid, more: false });
}

/** The entries whose values the snapshot carries: all, or those changed after `since`. */
function changedSince(file: ServiceFile, entries: DirEntry[], since: number | undefined): DirEntry[] {
  return since === undefined ? entries : entries.filter((e) => file.entryVersion(e) > BigInt(since));
}

/** Where the snapshot's data ends: the whole checked data region, or just past the last value it carries. */
function endOf(file: ServiceFile, valued: readonly DirEntry[], whole: boolean): number {
  const checked = file.checkedDataEnd();
  if (whole) return checked;
  return Math.min(checked, valued.reduce((end, e) => Math.max(end, e.meta.end), 0));
}

interface DataRun {
  start: number;
  end: number;
  entries: DirEntry[];
}

/** Variables in offset order, grouped into runs of at most `budget` bytes (a larger variable alone). */
function dataRuns(entries: readonly DirEntry[], budget: number): DataRun[] {
  const sorted = [...entries].sort((a, b) => a.meta.offset - b.meta.offset);
  const runs: DataRun[] = [];
  let run: DataRun | undefined;
  for (const e of sorted) {
    const { offset, end } = e.meta;
    if (run === undefined || end - run.start > budget) {
      run = { start: offset, end, entries: [] };
      runs.push(run);
    }
    run.entries.push(e);
    if (end > run.end) run.end = end;
  }
  return runs;
}

/** [start, end) of the data region with every variable in it read consistently (zeros for a busy one). */
function readRun(file: ServiceFile, owe: (e: DirEntry) => void, entries: readonly DirEntry[], start: number, end: number): Uint8Array {
  const out = new Uint8Array(end - start);
  for (const e of entries) {
    const { offset, end: varEnd } = e.meta;
    if (offset < start || varEnd > end) continue;
    // A busy one is left as zeros and owed as a later update; one removed meanwhile (by another process) is left
    // as zeros too: its removal reaches the subscriber like any other.
    if (readOrGone(file, e, out, offset - start) === BUSY) owe(e);
  }
  return out;
}

/** tryReadCopy, with a variable removed by another process since the directory was listed read as undefined. */
export function readOrGone(file: ServiceFile, e: DirEntry, into?: Uint8Array, at?: number): ReturnType<ServiceFile['tryReadCopy']> | undefined {
  try {
    return file.tryReadCopy(e, into, at);
  } catch (err) {
    if (isCommyError(err, ErrorCode.VARIABLE_NOT_FOUND)) return undefined;
    throw err;
  }
}
