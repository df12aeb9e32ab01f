import { RemoteStore } from './store.js';

/** What the reconciler needs of a variable: where its bytes are, and the version of its last known change. */
export interface Synced {
  readonly index: number;
  readonly meta: { readonly offset: number; readonly size: number };
  version: number;
  /** Removed by the server: whatever is still on its way for it is ignored. */
  readonly removed?: boolean;
}

/** One variable's change in one report. */
export type SentChange<V extends Synced> = readonly [variable: V, bytes: Uint8Array];

/** The versions an acknowledgement gives (VariableChangesAcknowledged). */
export interface AckVersions {
  /** The service version after the report's last change. */
  readonly version: number;
  /** The version each change got, in order (absent from older servers). */
  readonly versions?: readonly number[] | undefined;
}

/** A change of ours not yet answered: the bytes last sent, and how many unanswered reports carry it. */
interface InFlight<V> {
  readonly variable: V;
  bytes: Uint8Array;
  reports: number;
}

/** A server update held back while the variable has a change of ours the server has not acknowledged. */
interface Held<V> {
  readonly variable: V;
  readonly version: number;
  readonly bytes: Uint8Array;
}

/**
 * The convergence rule (docs/protocol.md, "Convergence") over the two buffers, with no I/O and no timers.
 * `shadow` holds what the server confirmed, `current` what this client shows. A variable is *ours* from a
 * local write until every report carrying it is answered; while ours, `current` keeps our value and server
 * updates to it are held back (the newest only). Once no report carries it, a held update is applied if the
 * server ordered it after our acknowledged write, and dropped otherwise. Every client thus ends on the value
 * of the server's last write.
 */
export class Reconciler<V extends Synced = Synced> {
  /** Written since the last flush (typed writes; raw writes into `current` are found by the diff). */
  private readonly unsent = new Set<number>();
  private readonly inFlight = new Map<number, InFlight<V>>();
  private readonly held = new Map<number, Held<V>>();
  /** Written before the flush under way and maybe holding an update: decided once the flush is out. */
  private settling: number[] | undefined;

  constructor(private readonly store: RemoteStore) {}

  /** A local write into `current`. */
  wrote(index: number): void {
    this.unsent.add(index);
  }

  /**
   * The server removed the variable: nothing of ours is pending for it any more (a report in flight skips
   * it), and its bytes go to zero in both buffers, as the server zeroed them, so no diff finds them again.
   */
  removed(variable: V): void {
    const index = variable.index;
    this.unsent.delete(index);
    this.inFlight.delete(index);
    this.held.delete(index);
    const { offset, size } = variable.meta;
    this.store.putBoth(offset, size, new Uint8Array(size));
  }

  /** Does the variable hold a change of ours the server has not answered? */
  isOurs(index: number): boolean {
    return this.inFlight.has(index) || this.unsent.has(index);
  }

  /**
   * Starts a flush: of the variables the diff `touched` and those in flight, the ones whose bytes differ from
   * what the server confirmed or, when in flight, from what was last sent (so a value set back to the
   * confirmed one while a change is in flight is sent too). The caller sends them, then calls finishFlush().
   */
  startFlush(touched: Iterable<V>): SentChange<V>[] {
    const out: SentChange<V>[] = [];
    const seen = this.inFlight.size > 0 ? new Set<number>() : undefined;
    for (const v of touched) {
      seen?.add(v.index);
      this.collect(v, out);
    }
    if (seen !== undefined) {
      for (const [index, f] of this.inFlight) if (!seen.has(index)) this.collect(f.variable, out);
    }
    this.settling = this.held.size > 0 && this.unsent.size > 0 ? [...this.unsent] : undefined;
    this.unsent.clear();
    return out;
  }

  /** A change is on its way to the server. */
  sent(variable: V, bytes: Uint8Array): void {
    const f = this.inFlight.get(variable.index);
    if (f === undefined) this.inFlight.set(variable.index, { variable, bytes, reports: 1 });
    else {
      f.bytes = bytes;
      f.reports++;
    }
  }

  /** Ends a flush: a variable written but not sent (set back to the confirmed value) takes its held update. */
  finishFlush(): V[] {
    const settling = this.settling;
    this.settling = undefined;
    const applied: V[] = [];
    for (const index of settling ?? []) {
      const h = this.held.get(index);
      if (h !== undefined && !this.inFlight.has(index) && this.applyHeld(index, -1)) applied.push(h.variable);
    }
    return applied;
  }

  /** The server applied a report: its bytes are confirmed, each change at its own version. */
  acknowledged(changes: readonly SentChange<V>[], ack: AckVersions): void {
    const last = changes.length - 1;
    for (let i = 0; i <= last; i++) {
      const [v, bytes] = changes[i]!;
      if (v.removed === true) continue; // skipped by the server; its space may be another variable's by now
      this.store.shadow.set(bytes, v.meta.offset);
      // An older server names only the version after the whole report; its changes were applied in order,
      // one version each, so change i got about version - (last - i).
      const version = ack.versions?.[i] ?? ack.version - (last - i);
      if (version > v.version) v.version = version;
      // A held update wins if the server ordered it after this change, even within the same report.
      if (this.release(v.index)) this.applyHeld(v.index, version);
      else if ((this.held.get(v.index)?.version ?? Infinity) <= version) this.held.delete(v.index); // superseded by ours
    }
  }

  /**
   * The server refused a report: nothing of it was applied. Each change is undone unless the value changed
   * again since; then the update held meanwhile applies. Returns the variables whose bytes changed.
   */
  refused(changes: readonly SentChange<V>[]): V[] {
    const changed: V[] = [];
    for (const [v, bytes] of changes) {
      if (v.removed === true) continue;
      if (!this.release(v.index)) continue; // a later report carries a newer value: it decides
      const { offset, size } = v.meta;
      let touched = false;
      if (!this.unsent.has(v.index) && RemoteStore.holds(this.store.current, offset, bytes)) {
        this.store.restore(offset, size);
        touched = true;
      }
      if (this.applyHeld(v.index, -1)) touched = true;
      if (touched) changed.push(v);
    }
    return changed;
  }

  /** Refused for now (RATE_LIMITED): nothing was applied and the values stay ours, to be sent again. */
  deferred(changes: readonly SentChange<V>[]): void {
    for (const [v] of changes) if (this.release(v.index)) this.unsent.add(v.index);
  }

  /**
   * A server update: into both buffers, or held back while the variable is ours. One older than what this
   * client has is dropped (a resent mutation answered from the server's memory of operation ids names the
   * version it committed then): versions never go back, and the newer value the server has stays. Only a
   * reset (`lower`: a full snapshot, perhaps of another file numbered from scratch) may lower a version.
   */
  update(variable: V, version: number, bytes: Uint8Array, lower = false): void {
    if (variable.removed === true) return;
    const index = variable.index;
    if (this.isOurs(index)) {
      const h = this.held.get(index);
      if (h === undefined || version >= h.version) this.held.set(index, { variable, version, bytes });
      return;
    }
    if (version < variable.version && !lower) return;
    this.store.putBoth(variable.meta.offset, variable.meta.size, bytes);
    variable.version = version;
  }

  private collect(v: V, out: SentChange<V>[]): void {
    const store = this.store;
    const { offset, size } = v.meta;
    const sent = this.inFlight.get(v.index)?.bytes;
    const unchanged = sent !== undefined ? RemoteStore.holds(store.current, offset, sent) : store.same(offset, size);
    if (!unchanged) out.push([v, store.current.slice(offset, offset + size)]);
  }

  /** One report carrying the variable is answered; true when none is left. */
  private release(index: number): boolean {
    const f = this.inFlight.get(index);
    if (f === undefined) return true;
    if (--f.reports > 0) return false;
    this.inFlight.delete(index);
    return true;
  }

  /** Applies the held update if the server ordered it after our write (version > floor). */
  private applyHeld(index: number, floor: number): boolean {
    const h = this.held.get(index);
    if (h === undefined) return false;
    this.held.delete(index);
    if (h.version <= floor) return false;
    const v = h.variable;
    const { offset, size } = v.meta;
    RemoteStore.put(this.store.shadow, offset, size, h.bytes);
    // A newer local value not yet sent stays in current: it will be sent, and ordered after this update.
    if (!this.unsent.has(index)) RemoteStore.put(this.store.current, offset, size, h.bytes);
    if (h.version > v.version) v.version = h.version;
    return true;
  }
}
