import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Reconciler, type Synced } from '../src/client/remote/reconciler.js';
import { RemoteStore } from '../src/client/remote/store.js';

// One variable, one client, one server, over the two ordered channels of a WebSocket. The client's reports
// and the server's answers and pushes interleave in every order fast-check can find; several reports may
// be in flight at once (the outbox allows it after a RATE_LIMITED pause or at close).

const u64 = (n: number): Uint8Array => new Uint8Array(new BigUint64Array([BigInt(n)]).buffer);
const read = (a: Uint8Array): number => Number(new DataView(a.buffer, a.byteOffset, 8).getBigUint64(0, true));

/** Another writer's value says its version; the snapshot's 0 is version 1; ours are 1000 + n. */
const OTHER = 1_000_000;
const versionOfOther = (value: number): number => (value === 0 ? 1 : value - OTHER);

type Answer = 'ack' | 'refuse' | 'rateLimit';
type Step =
  | { kind: 'write'; back: boolean } // a local write: a new value, or back to the confirmed one
  | { kind: 'flush' }
  | { kind: 'serve'; answer: Answer } // the server takes the next report
  | { kind: 'other' } // another writer's write at the server
  | { kind: 'push' } // the server's batch: the latest value, if another writer changed it since the last one
  | { kind: 'deliver' }; // the next message reaches the client

type ToClient = { kind: Answer; version: number } | { kind: 'update'; version: number; value: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ kind: fc.constant('write' as const), back: fc.boolean() }),
  fc.constant({ kind: 'flush' as const }),
  fc.record({ kind: fc.constant('serve' as const), answer: fc.constantFrom<Answer>('ack', 'ack', 'refuse', 'rateLimit') }),
  fc.constant({ kind: 'other' as const }),
  fc.constant({ kind: 'push' as const }),
  fc.constant({ kind: 'deliver' as const }),
  fc.constant({ kind: 'deliver' as const }),
);

class World {
  readonly store = new RemoteStore(new Uint8Array(8), 8);
  readonly variable: Synced = { index: 0, meta: { offset: 0, size: 8 }, version: 1 };
  readonly rec = new Reconciler(this.store);
  readonly server = { value: 0, version: 1, changedByOthers: false, reports: [] as number[] };
  readonly toClient: ToClient[] = [];
  /** The client's reports not yet answered, oldest first (answers come back in order). */
  readonly unanswered: Uint8Array[] = [];
  /** The model's view: our latest local value, whether it is still unsent, and the highest ack so far. */
  latest = 0;
  unsent = false;
  maxAck = 0;
  readonly ours = new Set<number>();
  private fresh = 1000;

  get isOurs(): boolean {
    return this.unsent || this.unanswered.length > 0;
  }

  get shown(): number {
    return read(this.store.current);
  }

  run(s: Step): void {
    if (s.kind === 'write') this.write(s.back);
    else if (s.kind === 'flush') this.flush();
    else if (s.kind === 'serve') this.serve(s.answer);
    else if (s.kind === 'other') this.other();
    else if (s.kind === 'push') this.push();
    else this.deliver();
  }

  write(back: boolean): void {
    this.latest = back ? read(this.store.shadow) : ++this.fresh;
    this.store.current.set(u64(this.latest));
    this.rec.wrote(0);
    this.unsent = true;
    this.ours.add(this.latest);
  }

  /** True when something was sent. */
  flush(): boolean {
    const touched = this.store.same(0, 8) ? [] : [this.variable];
    const changes = this.rec.startFlush(touched);
    for (const [v, bytes] of changes) {
      this.rec.sent(v, bytes);
      this.unanswered.push(bytes);
      this.server.reports.push(read(bytes));
    }
    this.rec.finishFlush();
    this.unsent = false;
    return changes.length > 0;
  }

  serve(answer: Answer): void {
    const value = this.server.reports.shift();
    if (value === undefined) return;
    if (answer === 'ack') {
      this.server.value = value;
      this.server.version++;
    }
    this.toClient.push({ kind: answer, version: this.server.version });
  }

  other(): void {
    this.server.version++;
    this.server.value = OTHER + this.server.version;
    this.server.changedByOthers = true;
  }

  push(): void {
    if (!this.server.changedByOthers) return;
    this.server.changedByOthers = false;
    this.toClient.push({ kind: 'update', version: this.server.version, value: this.server.value });
  }

  deliver(): void {
    const m = this.toClient.shift();
    if (m === undefined) return;
    if (m.kind === 'update') {
      this.rec.update(this.variable, m.version, u64(m.value));
      return;
    }
    const change = [[this.variable, this.unanswered.shift()!] as const];
    if (m.kind === 'ack') {
      this.rec.acknowledged(change, { version: m.version });
      this.maxAck = Math.max(this.maxAck, m.version);
    } else if (m.kind === 'refuse') {
      this.rec.refused(change);
    } else {
      this.rec.deferred(change);
      if (this.unanswered.length === 0) this.unsent = true;
    }
  }

  /** No more local writes: everything is sent, accepted, pushed and delivered until nothing moves. */
  settle(): void {
    for (let round = 0; round < 100; round++) {
      const sent = this.flush();
      while (this.server.reports.length > 0) this.serve('ack');
      this.push();
      const moved = this.toClient.length > 0;
      while (this.toClient.length > 0) this.deliver();
      if (!sent && !moved) return;
    }
    assert.fail('did not settle');
  }
}

test('reconciler: any interleaving of acks and server updates ends on the server\'s last write', () => {
  fc.assert(
    fc.property(fc.array(step, { maxLength: 80, size: 'max' }), (steps) => {
      const w = new World();
      for (const s of steps) w.run(s);
      w.settle();
      assert.equal(w.shown, w.server.value, 'current shows the server\'s last write');
      assert.equal(read(w.store.shadow), w.server.value, 'shadow holds it');
      assert.equal(w.variable.version, w.server.version, 'at its version');
    }),
    { numRuns: 2000 },
  );
});

test('reconciler: a local write not yet acknowledged is never overwritten by an older server value', () => {
  fc.assert(
    fc.property(fc.array(step, { maxLength: 80, size: 'max' }), (steps) => {
      const w = new World();
      for (const s of steps) {
        w.run(s);
        if (w.isOurs) assert.equal(w.shown, w.latest, `our unanswered write stays after ${s.kind}`);
        // Another writer's value shows only if the server ordered it after every write of ours it acknowledged.
        if (!w.ours.has(w.shown)) assert.ok(versionOfOther(w.shown) > w.maxAck, `${w.shown} shown after ack ${w.maxAck}`);
      }
    }),
    { numRuns: 2000 },
  );
});

test('reconciler: an update held back during a report is applied on its ack only when ordered after it', () => {
  const w = new World();
  w.write(false);
  w.flush();
  w.other(); // version 2, before our write at the server
  w.push();
  w.serve('ack'); // ours: version 3
  w.other(); // version 4, after ours
  w.push();
  w.deliver(); // the update at 2 is held back
  assert.equal(w.shown, w.latest);
  w.deliver(); // our ack at 3: the held update is older, dropped
  assert.equal(w.shown, w.latest);
  w.deliver(); // the update at 4 is newer: it shows
  assert.equal(w.shown, OTHER + 4);
  assert.equal(w.variable.version, 4);
});


test('reconciler: with two reports in flight, an update older than the first ack stays dropped when the second is refused', () => {
  const w = new World();
  w.write(false);
  w.flush(); // report 1
  w.write(false);
  w.flush(); // report 2: a newer value
  w.other(); // version 2, before report 1 at the server
  w.push();
  w.serve('ack'); // report 1: version 3
  w.serve('refuse'); // report 2: never applied
  w.deliver(); // the update at 2 is held back
  w.deliver(); // ack of report 1: the held update is older, so obsolete (report 2 still carries the variable)
  w.deliver(); // report 2 refused: back to report 1's value, the server's last write
  assert.equal(w.shown, w.server.value);
  assert.equal(read(w.store.shadow), w.server.value);
  assert.equal(w.variable.version, 3);
});
