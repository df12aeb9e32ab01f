import type { VariableMetadata } from './variable-metadata.js';

/** What changed in a service, as seen by one client. */
export interface FileChangeEvent {
  /** The service file (local mode) or the server's path for it (remote mode; may be empty). */
  filePath: string;
  serviceId: string;
  changedVariables: string[];
  /** [start, end) byte ranges in the data region, sorted. */
  byteRanges: [number, number][];
  /** The service version after the change. */
  version: bigint;
  /** Variables that appeared (registered by anyone); they are in changedVariables too (their first value). */
  addedVariables: string[];
  /** Variables that were removed: gone from the directory, their handles fail with VARIABLE_NOT_FOUND. */
  removedVariables: string[];
}

/** What a change did to the layout (FileChangeEvent.addedVariables / removedVariables). */
export interface LayoutChange {
  added?: readonly string[];
  removed?: readonly string[];
}

/**
 * The one way an event is made, in both modes: `variables` (each counted once, in any order) become the
 * changed names and their byte ranges, both in offset order.
 */
export function changeEventOf(filePath: string, serviceId: string, variables: readonly VariableMetadata[], version: bigint, layout: LayoutChange = {}): FileChangeEvent {
  const unique = variables.length > 1 ? [...new Set(variables)].sort((a, b) => a.offset - b.offset) : variables;
  return {
    filePath,
    serviceId,
    changedVariables: unique.map((m) => m.name),
    byteRanges: unique.map((m): [number, number] => [m.offset, m.end]),
    version,
    addedVariables: [...(layout.added ?? [])],
    removedVariables: [...(layout.removed ?? [])],
  };
}

/** Folds `next` into `into` (used when a slow consumer lets events pile up: nothing is lost, only merged). */
export function mergeChangeEvents(into: FileChangeEvent, next: FileChangeEvent): FileChangeEvent {
  if (sameVariablesAgain(into, next)) {
    // The usual pile-up (the same variables written again and again): nothing to merge but the version.
    return next.version > into.version ? { ...into, filePath: next.filePath, version: next.version } : into;
  }
  // In order: a variable removed by `next` is no longer changed or added; one `next` adds (again) is not removed.
  const gone = new Set(next.removedVariables);
  const names = new Set(into.changedVariables.filter((n) => !gone.has(n)));
  for (const n of next.changedVariables) names.add(n);
  const added = new Set(into.addedVariables.filter((n) => !gone.has(n)));
  for (const n of next.addedVariables) added.add(n);
  const removed = new Set(into.removedVariables.filter((n) => !added.has(n)));
  for (const n of next.removedVariables) removed.add(n);
  const ranges = [...into.byteRanges, ...next.byteRanges].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const merged: [number, number][] = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    if (last !== undefined && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else merged.push([r[0], r[1]]);
  }
  return {
    filePath: next.filePath,
    serviceId: next.serviceId,
    changedVariables: [...names],
    byteRanges: merged,
    version: next.version > into.version ? next.version : into.version,
    addedVariables: [...added],
    removedVariables: [...removed],
  };
}

/** `next` changes only variables `into` already names, and neither adds nor removes any (so its ranges are in `into`'s). */
function sameVariablesAgain(into: FileChangeEvent, next: FileChangeEvent): boolean {
  if (next.addedVariables.length > 0 || next.removedVariables.length > 0 || into.removedVariables.length > 0) return false;
  if (next.changedVariables.length > 8) return false; // not worth a scan: the general merge is linear
  for (const name of next.changedVariables) if (!into.changedVariables.includes(name)) return false;
  return true;
}

/** Gives `event` to every listener; one that throws goes to `onError` and does not starve the others. */
export function deliverChange(listeners: Iterable<(event: FileChangeEvent) => void>, event: FileChangeEvent, onError: (err: unknown) => void): void {
  for (const listener of listeners) {
    try {
      listener(event);
    } catch (err) {
      onError(err);
    }
  }
}
