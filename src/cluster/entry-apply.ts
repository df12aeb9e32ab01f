import type { Logger } from 'pino';
import { CommyError, ErrorCode, isCommyError } from '../core/errors.js';
import { BUSY, type DirEntry } from '../local/service-file.js';
import { untilNotBusy } from '../server/busy-retry.js';
import type { ServiceHost } from '../server/service-host.js';
import type { ServiceRegistry } from '../server/service-registry.js';
import type { ClusterEntry } from './cluster-entry.js';
import { layoutCode, metadataOfCode } from './layout-code.js';
import type { ServiceReplica, Applied, Waiter } from './service-replica.js';

/** How long applying an entry waits for a local process's lock before it skips the entry (and resyncs: StreamReader.resyncLater). */
export const LOCK_WAIT_MS = 10_000;

/** What applying entries needs of the node. */
export interface EntryApplyDeps {
  readonly nodeId: string;
  readonly registry: ServiceRegistry;
  readonly log: Logger;
  /** The node stopped: lock waits end (NOT_CONNECTED). */
  isClosed(): boolean;
}

/**
 * Applies one stream entry into this node's file: a write (or the echo of a local process's write this node
 * appended), a registration, a removal; and answers the node's own waiter of it.
 */
export class EntryApplier {
  constructor(private readonly deps: EntryApplyDeps) {}

  /** Applies `entry`; false when it was skipped because a local process held a lock too long (the caller resyncs). */
  async applyEntry(replica: ServiceReplica, entry: ClusterEntry): Promise<boolean> {
    const waiter = entry.node === this.deps.nodeId ? replica.waiters.get(entry.token) : undefined;
    if (waiter !== undefined) replica.waiters.delete(entry.token);
    if (waiter?.localNames !== undefined) replica.countLocal(waiter.localNames, -1);
    if (entry.items.length === 0) {
      waiter?.resolve([]);
      return true;
    }
    let host: ServiceHost;
    try {
      host = this.deps.registry.acquire(replica.tenant, replica.service, false);
    } catch (err) {
      this.deps.log.error({ err, service: replica.serviceId, id: entry.id }, 'cluster: cannot open the service to apply an entry');
      waiter?.reject(err);
      return true;
    }
    try {
      const applied = await this.applyTo(host, entry, waiter);
      if (Array.isArray(applied)) replica.recent.set(entry.id, applied);
      waiter?.resolve(applied);
      return true;
    } catch (err) {
      if (waiter !== undefined) waiter.reject(err);
      else this.deps.log.error({ err, service: replica.serviceId, id: entry.id, node: entry.node }, 'cluster: an entry could not be applied here');
      return !isCommyError(err, ErrorCode.TIMEOUT);
    } finally {
      this.deps.registry.release(host);
    }
  }

  /** The variable's entry, registered first if this node's file does not have it (with the shape the cluster gave it). */
  async ensureRegistered(host: ServiceHost, name: string, code: string, offset = -1, waitMs = LOCK_WAIT_MS): Promise<DirEntry> {
    const known = host.file.find(name);
    if (known !== undefined && layoutCode(known.meta) === code) return known;
    const meta = metadataOfCode(name, code, known === undefined ? offset : -1);
    return this.busy(() => host.file.tryRegister(meta), host, name, waitMs);
  }

  /** `attempt` until no local process holds what it needs: TIMEOUT after `waitMs` (0: one attempt). */
  busy<T>(attempt: () => T | typeof BUSY, host: ServiceHost, what: string, waitMs = LOCK_WAIT_MS): Promise<T> {
    return untilNotBusy(attempt, `${host.serviceId}/${what}`, waitMs, () => !this.deps.isClosed());
  }

  private async applyTo(host: ServiceHost, entry: ClusterEntry, waiter: Waiter | undefined): Promise<Applied> {
    if (entry.kind === 'r') {
      const [it] = entry.items;
      return this.ensureRegistered(host, it!.name, it!.code ?? '', Number(it!.value.toString('latin1')));
    }
    if (entry.kind === 'x') {
      const [it] = entry.items;
      if (host.file.find(it!.name) === undefined) return 0n;
      return this.busy(() => host.remove(it!.name), host, it!.name);
    }
    return this.applyWrite(host, entry, waiter);
  }

  private async applyWrite(host: ServiceHost, entry: ClusterEntry, waiter: Waiter | undefined): Promise<bigint[]> {
    const entries: DirEntry[] = [];
    const values: Uint8Array[] = [];
    const at: number[] = [];
    for (const [i, it] of entry.items.entries()) {
      const e = it.code === undefined ? host.file.find(it.name) : await this.ensureRegistered(host, it.name, it.code);
      if (e === undefined || e.meta.size !== it.value.length) continue; // not here, or not this shape here: skipped
      entries.push(e);
      values.push(it.value);
      at.push(i);
    }
    const versions = entry.items.map(() => 0n);
    if (entries.length === 0) return versions;
    if (waiter?.localNames !== undefined) return this.applyEcho(host, entries, values, at, versions);
    // This node's compare-and-set: Redis saw no entry write the variable since the check, but a local process may
    // have (its entry comes later): then it is refused here, and that process's write is not undone.
    const cas = waiter?.casVersion;
    const expected = cas === undefined ? undefined : at.map((i) => (i === 0 ? Number(cas) : undefined));
    const written = await this.busy(() => host.apply(entries, values, { origin: waiter?.origin, record: waiter?.record, skipRemoved: true, ...(expected === undefined ? {} : { expected }) }), host, 'variables');
    written.forEach((v, j) => (versions[at[j]!] = v));
    return versions;
  }

  /**
   * A local process's write coming back (this node appended it). Where a local process wrote the variable last,
   * the file holds this value or a newer one of that process (appended after this entry): writing this one
   * again would undo the newer one, and a local read-modify-write would lose updates. Only a variable that this
   * node's apply wrote since (an entry ordered before this one) gets it again. Checked under the locks: a local
   * write landing in between is a CONFLICT, and the variables are looked at again.
   */
  private async applyEcho(host: ServiceHost, entries: DirEntry[], values: Uint8Array[], at: number[], versions: bigint[]): Promise<bigint[]> {
    // Coming back unchanged: the file already holds it; writing it again would only make a second version of the
    // same value.
    if (sameBytes(host, entries, values)) {
      entries.forEach((e, j) => (versions[at[j]!] = host.file.entryVersion(e)));
      return versions;
    }
    for (;;) {
      const keep = entries.flatMap((e, j) => (host.file.lastWriter(e) === process.pid ? [j] : []));
      entries.forEach((e, j) => (versions[at[j]!] = host.file.entryVersion(e)));
      if (keep.length === 0) return versions;
      const expected = keep.map((j) => Number(host.file.entryVersion(entries[j]!)));
      try {
        const written = await this.busy(() => host.apply(keep.map((j) => entries[j]!), keep.map((j) => values[j]!), { expected, skipRemoved: true }), host, 'variables');
        written.forEach((v, k) => (versions[at[keep[k]!]!] = v));
        return versions;
      } catch (err) {
        if (!(err instanceof CommyError && err.code === ErrorCode.CONFLICT)) throw err;
      }
    }
  }
}

function sameBytes(host: ServiceHost, entries: readonly DirEntry[], values: readonly Uint8Array[]): boolean {
  return entries.every((e, i) => Buffer.compare(host.file.readBytes(e), values[i]!) === 0);
}
