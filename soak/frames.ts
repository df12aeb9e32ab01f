import { Packr } from 'msgpackr';
import { MessageType } from '../src/protocol/messages.js';
import { VariableType } from '../src/core/variable-type.js';
import { seededRandom } from '../bench/harness.js';

/**
 * Fuzzed and half-valid frames for the soak run, from a seeded generator (a run is repeatable by its seed):
 * raw garbage, random MessagePack, real message types with bodies made of plausible and hostile fields, valid
 * requests on the attacker's own services, and valid frames cut short or with bytes appended. Cheap enough for
 * a million frames a minute: no property-testing library in the loop.
 */

/** What the attacker's frames aim at: its own services (it may write them) and the others (it may not). */
export interface FuzzTargets {
  tenant: string;
  /** Services the attacker's key may use (created by its valid requests). */
  own: readonly string[];
  /** Services it may not touch (the correct client's): every try must be refused. */
  forbidden: readonly string[];
}

const CLIENT_TYPES = [
  MessageType.Authenticate,
  MessageType.GetServiceFilePath,
  MessageType.Subscription,
  MessageType.Unsubscribe,
  MessageType.RegisterVariable,
  MessageType.ReadVariable,
  MessageType.WriteVariable,
  MessageType.ReportVariableChanges,
  MessageType.Mutate,
  MessageType.Query,
  MessageType.QueryCancel,
  MessageType.RemoveVariable,
];
const FIELDS = ['tenant', 'service', 'name', 'sid', 'offset', 'size', 'typeId', 'value', 'changes', 'create', 'variables', 'services', 'values', 'method', 'credential', 'protocol', 'notify', 'since', 'opId', 'index', 'expectedVersion', 'id', 'clientKey'];
const NASTY_NAMES = ['', '.', '..', '../x', '../../etc/passwd', 'a/b', 'x\0y', '*', '**', 'v'.repeat(65), 'é', '%2e%2e', ' ', 'a'.repeat(300)];
const NASTY_NUMBERS = [-1, 0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53, -(2 ** 53), 1.5, Number.NaN, Number.POSITIVE_INFINITY, 1e308];

export class FrameFuzzer {
  private readonly rand: () => number;
  private readonly packr = new Packr({ useRecords: false, variableMapSize: true });
  private nextId = 1;
  /** Subscriptions this connection holds, as its answers told (learn()): the valid requests use them. */
  private readonly sids: number[] = [];

  constructor(
    seed: number,
    private readonly targets: FuzzTargets,
  ) {
    this.rand = seededRandom(seed);
  }

  /** What the server answered: a new subscription's sid, or one that ended. */
  learn(type: string, body: unknown): void {
    const sid = (body as { sid?: unknown } | undefined)?.sid;
    if (typeof sid !== 'number') return;
    if (type === 'Snapshot') this.sids.push(sid);
    if (type === 'Unsubscribed') this.sids.splice(this.sids.indexOf(sid) >>> 0, this.sids.includes(sid) ? 1 : 0);
  }

  /** A new connection: its subscriptions are gone with the old one. */
  reset(): void {
    this.sids.length = 0;
  }

  /**
   * The next frame, what kind it is (for the report), and whether an answer is due: a QueryCancel is never
   * answered (the protocol's immediate lane), whatever else it carries.
   */
  next(): { frame: Uint8Array; kind: string; answered: boolean } {
    const { frame, kind, type } = this.draw();
    return { frame, kind, answered: type !== MessageType.QueryCancel };
  }

  private draw(): { frame: Uint8Array; kind: string; type?: number } {
    const r = this.rand();
    if (r < 0.08) return { frame: this.bytes(this.int(0, 96)), kind: 'garbage' };
    if (r < 0.23) return { frame: this.pack([this.anyValue(3), this.anyValue(1), this.anyValue(3)]), kind: 'random msgpack' };
    if (r < 0.68) {
      const type = this.pick(CLIENT_TYPES);
      return { frame: this.pack([type, this.requestId(), this.body()]), kind: 'half-valid', type };
    }
    if (r < 0.92) {
      const valid = this.valid();
      return { frame: this.pack(valid), kind: 'valid', type: valid[0] as number };
    }
    const whole = this.pack(this.valid());
    return this.rand() < 0.5
      ? { frame: whole.subarray(0, this.int(0, whole.length - 1)), kind: 'cut short' }
      : { frame: concat(whole, this.bytes(this.int(1, 16))), kind: 'trailing bytes' };
  }

  private pack(value: unknown): Uint8Array {
    try {
      return this.packr.pack(value);
    } catch {
      return this.bytes(8); // a value msgpackr will not pack (a deep cycle cannot happen; NaN keys can)
    }
  }

  private valid(): unknown[] {
    const { tenant, own, forbidden } = this.targets;
    const service = this.rand() < 0.85 ? this.pick(own) : this.pick(forbidden);
    // A known sid mostly, sometimes one that is not (or no longer) this connection's.
    const sid = this.sids.length > 0 && this.rand() < 0.9 ? this.pick(this.sids) : this.int(0, 40);
    const name = `v${this.int(0, 7)}`;
    const id = this.nextId++;
    // Few subscriptions at a time: each one multiplies what every write sends.
    const kind = this.sids.length >= 6 && this.int(0, 9) === 0 ? 7 : this.int(0, 9);
    switch (kind) {
      case 0:
        return [MessageType.Subscription, id, { tenant, service, create: true, ...(this.rand() < 0.3 ? { variables: [`v${this.int(0, 3)}*`] } : {}) }];
      case 1:
        return [MessageType.RegisterVariable, id, { sid, name, offset: -1, size: this.pick([1, 4, 8, 16, 64]), typeId: this.pick([VariableType.U8, VariableType.U64, VariableType.F64, VariableType.Bytes]) }];
      case 2:
        return [MessageType.WriteVariable, id, { tenant, service, name, value: this.bytes(this.int(0, 24)), ...(this.rand() < 0.3 ? { opId: this.int(1, 50) } : {}) }];
      case 3:
        return [MessageType.ReportVariableChanges, id, { sid, changes: Array.from({ length: this.int(0, 4) }, () => [this.int(0, 8), this.bytes(this.int(0, 16))]), ...(this.rand() < 0.3 ? { opId: this.int(1, 50) } : {}) }];
      case 4:
        return [MessageType.ReadVariable, id, { tenant, service, name }];
      case 5:
        return [MessageType.Query, id, { tenant, services: [this.rand() < 0.5 ? '*' : service], variables: ['*'], values: this.rand() < 0.5 }];
      case 6:
        return [MessageType.Mutate, id, { sid, index: this.int(0, 8), value: this.bytes(8), ...(this.rand() < 0.5 ? { expectedVersion: this.int(0, 100) } : {}) }];
      case 7:
        return [MessageType.Unsubscribe, id, { sid }];
      case 8:
        return [MessageType.RemoveVariable, id, { sid, name }];
      default:
        return [MessageType.GetServiceFilePath, id, { tenant, service, create: this.rand() < 0.5 }];
    }
  }

  private body(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (let i = this.int(0, 7); i > 0; i--) out[this.pick(FIELDS)] = this.field();
    return out;
  }

  private field(): unknown {
    const r = this.rand();
    if (r < 0.2) return this.pick([...this.targets.own, ...this.targets.forbidden, this.targets.tenant, 'other-tenant']);
    if (r < 0.35) return this.pick(NASTY_NAMES);
    if (r < 0.5) return this.pick(NASTY_NUMBERS);
    if (r < 0.6) return this.bytes(this.int(0, 70));
    if (r < 0.7) return Array.from({ length: this.int(0, 5) }, () => [this.int(-2, 10), this.bytes(this.int(0, 12))]);
    if (r < 0.75) return Array.from({ length: this.int(0, 3000) }, () => this.int(0, 9)); // long arrays: bounded decoding
    if (r < 0.8) return nest(this.int(1, 200)); // deep nesting
    return this.anyValue(2);
  }

  private anyValue(depth: number): unknown {
    const r = this.rand();
    if (depth <= 0 || r < 0.5) {
      const s = this.rand();
      if (s < 0.3) return this.int(-1000, 1 << 20);
      if (s < 0.5) return this.pick(NASTY_NAMES);
      if (s < 0.65) return this.bytes(this.int(0, 20));
      if (s < 0.75) return this.rand() < 0.5;
      if (s < 0.85) return null;
      return this.pick(NASTY_NUMBERS);
    }
    if (r < 0.75) return Array.from({ length: this.int(0, 4) }, () => this.anyValue(depth - 1));
    const out: Record<string, unknown> = {};
    for (let i = this.int(0, 4); i > 0; i--) out[this.pick(FIELDS)] = this.anyValue(depth - 1);
    return out;
  }

  private requestId(): unknown {
    const r = this.rand();
    return r < 0.7 ? this.nextId++ : r < 0.85 ? this.pick(NASTY_NUMBERS) : this.anyValue(1);
  }

  private bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = (this.rand() * 256) | 0;
    return out;
  }

  private int(min: number, max: number): number {
    return min + Math.floor(this.rand() * (max - min + 1));
  }

  private pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rand() * xs.length)]!;
  }
}

function nest(depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
