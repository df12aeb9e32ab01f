import { isIPv6 } from 'node:net';
import type { Limits } from './limits.js';

/**
 * Connection admission: who may hold a connection, decided when its TCP connection arrives, before any byte
 * of it is read (server.ts admit), so a socket that never sends a request is counted too.
 *
 * Not-yet-authenticated connections live in a small pool of their own (maxUnauthenticatedConnections,
 * maxUnauthenticatedPerIp), so sockets that never authenticate cannot fill maxConnections and lock every
 * tenant out. When that pool is full, a newcomer from a source holding fewer unauthenticated connections than
 * the heaviest source takes the place of that source's oldest one: a flood from a few addresses cannot keep a
 * legitimate client from connecting, and the flooder's own next connection is refused.
 */
export type AdmissionLimits = Pick<Limits, 'maxConnections' | 'maxConnectionsPerIp' | 'maxUnauthenticatedConnections' | 'maxUnauthenticatedPerIp'>;

/** The limit a refused connection ran into: its name goes out in the 503's `X-Commy-Refused` header. */
export type AdmissionLimit = keyof AdmissionLimits;

export interface Refusal {
  limit: AdmissionLimit;
  message: string;
}

export interface AdmissionCounts {
  /** Connections admitted and not closed yet, authenticated or not. */
  connections: number;
  /** Of those, the ones that have not authenticated yet. */
  unauthenticated: number;
  /** Sources (see sourceOf) with at least one connection. */
  sources: number;
}

interface Source {
  key: string;
  all: number;
  /** Its unauthenticated connections, oldest first. */
  pending: Set<Ticket>;
}

interface Pool {
  connections: number;
  unauthenticated: number;
  sources: Map<string, Source>;
  /** Tickets of TCP connections whose WebSocket upgrade has not come yet, by the server's socket key. */
  parked: Map<string, Ticket>;
}

type TicketState = 'unauthenticated' | 'authenticated' | 'released';

/**
 * One admitted connection's place in the counts. The server calls release() when the socket closes, whatever
 * happened before (handshake aborted, error, eviction): release is idempotent, so counts cannot drift.
 */
const NOTHING = (): void => {};

export class Ticket {
  private state: TicketState = 'unauthenticated';
  /**
   * What evicts this connection (set by the server: destroy the socket, later close the WebSocket). Only an
   * unauthenticated connection can be evicted, so authenticated() lets go of it (and of what it holds).
   */
  onEvict: () => void = NOTHING;
  /** Its key among the parked tickets, until the upgrade claims it. */
  private parkedAs: string | undefined;

  /** @internal created by Admission.admit */
  constructor(
    private readonly pool: Pool,
    private readonly origin: Source,
    /** Arrival order, so the oldest unauthenticated connection of a source is known. */
    readonly seq: number,
  ) {}

  /** The connection's source as the counts and the auth throttle know it (sourceOf). */
  get source(): string {
    return this.origin.key;
  }

  get isAuthenticated(): boolean {
    return this.state === 'authenticated';
  }

  /** First successful Authenticate: the connection leaves the unauthenticated pool. Later calls do nothing. */
  authenticated(): void {
    if (this.state !== 'unauthenticated') return;
    this.leavePending();
    this.state = 'authenticated';
    this.onEvict = NOTHING;
  }

  /** The connection is gone: its place is free again. Later calls do nothing. */
  release(): void {
    if (this.state === 'released') return;
    this.unpark();
    if (this.state === 'unauthenticated') this.leavePending();
    this.state = 'released';
    this.pool.connections--;
    this.origin.all--;
    if (this.origin.all === 0) this.pool.sources.delete(this.origin.key);
  }

  /** Frees the place now (the newcomer takes it), then has the connection closed. */
  evict(): void {
    this.release();
    this.onEvict();
  }

  /** @internal Admission.park */
  park(key: string): boolean {
    if (this.pool.parked.has(key)) return false;
    this.pool.parked.set(key, this);
    this.parkedAs = key;
    return true;
  }

  /** @internal (Admission.claim, release) */
  unpark(): void {
    if (this.parkedAs !== undefined && this.pool.parked.get(this.parkedAs) === this) this.pool.parked.delete(this.parkedAs);
    this.parkedAs = undefined;
  }

  private leavePending(): void {
    this.origin.pending.delete(this);
    this.pool.unauthenticated--;
  }
}

export class Admission {
  private readonly pool: Pool = { connections: 0, unauthenticated: 0, sources: new Map(), parked: new Map() };
  private nextSeq = 0;

  constructor(private readonly limits: AdmissionLimits) {}

  /** A ticket for a new connection from `address` (the socket's remote address), or why it is refused. */
  admit(address: string): Ticket | Refusal {
    const key = sourceOf(address);
    const source = this.pool.sources.get(key) ?? { key, all: 0, pending: new Set<Ticket>() };
    const refusal = this.check(source);
    if (refusal !== undefined) return refusal;
    if (source.all === 0) this.pool.sources.set(key, source);
    const ticket = new Ticket(this.pool, source, this.nextSeq++);
    source.all++;
    source.pending.add(ticket);
    this.pool.connections++;
    this.pool.unauthenticated++;
    return ticket;
  }

  /**
   * Keeps `ticket` for the upgrade of the connection named `key` (server.ts socketKey); false if that key is
   * parked already. A released ticket leaves on its own.
   */
  park(key: string, ticket: Ticket): boolean {
    return ticket.park(key);
  }

  /** The ticket parked under `key`, now the upgraded connection's (undefined if none: closed meanwhile). */
  claim(key: string): Ticket | undefined {
    const ticket = this.pool.parked.get(key);
    ticket?.unpark();
    return ticket;
  }

  get counts(): AdmissionCounts {
    return { connections: this.pool.connections, unauthenticated: this.pool.unauthenticated, sources: this.pool.sources.size };
  }

  /** Connections of one source (all, and not yet authenticated). */
  countsOf(address: string): { all: number; unauthenticated: number } {
    const source = this.pool.sources.get(sourceOf(address));
    return { all: source?.all ?? 0, unauthenticated: source?.pending.size ?? 0 };
  }

  private check(source: Source): Refusal | undefined {
    const l = this.limits;
    if (source.all >= l.maxConnectionsPerIp) return refusal('maxConnectionsPerIp', 'too many connections from this address');
    if (source.pending.size >= l.maxUnauthenticatedPerIp) {
      return refusal('maxUnauthenticatedPerIp', 'too many unauthenticated connections from this address');
    }
    if (this.pool.connections >= l.maxConnections && !this.makeRoom(source)) return refusal('maxConnections', 'server full');
    if (this.pool.unauthenticated >= l.maxUnauthenticatedConnections && !this.makeRoom(source)) {
      return refusal('maxUnauthenticatedConnections', 'too many unauthenticated connections');
    }
    return undefined;
  }

  /**
   * Evicts the oldest unauthenticated connection of the source holding the most, if the newcomer's source holds
   * fewer: a source never evicts its equal, so a lone flooder is refused instead, while a client from a quiet
   * address always gets in (its own connection is the newest, the last to go).
   */
  private makeRoom(newcomer: Source): boolean {
    const victim = this.heaviest();
    if (victim === undefined || victim.pending.size <= newcomer.pending.size) return false;
    const oldest = victim.pending.values().next().value;
    if (oldest === undefined) return false;
    oldest.evict();
    return true;
  }

  /** The source with the most unauthenticated connections; among equals, the one with the oldest. */
  private heaviest(): Source | undefined {
    let best: Source | undefined;
    let bestSeq = Infinity;
    for (const s of this.pool.sources.values()) {
      const size = s.pending.size;
      if (size === 0 || (best !== undefined && size < best.pending.size)) continue;
      const seq = s.pending.values().next().value!.seq;
      if (best === undefined || size > best.pending.size || seq < bestSeq) {
        best = s;
        bestSeq = seq;
      }
    }
    return best;
  }
}

function refusal(limit: AdmissionLimit, message: string): Refusal {
  return { limit, message };
}

/**
 * The unit per-address limits count in: an IPv4 address (also when IPv4-mapped, `::ffff:a.b.c.d`), or an
 * IPv6 /64 prefix, since one host usually holds a whole /64 and could otherwise take a fresh address per
 * connection.
 */
export function sourceOf(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  return `${expandIPv6(address).slice(0, 4).join(':')}::/64`;
}

/** The 8 hextets of an IPv6 address (zone id dropped, `::` filled in, a trailing dotted quad split in two). */
function expandIPv6(address: string): string[] {
  const bare = address.split('%')[0]!;
  const halves = bare.split('::');
  const left = hextets(halves[0]!);
  const right = halves.length > 1 ? hextets(halves[1]!) : [];
  const fill = halves.length > 1 ? new Array<string>(8 - left.length - right.length).fill('0') : [];
  return [...left, ...fill, ...right].map((h) => parseInt(h, 16).toString(16));
}

function hextets(part: string): string[] {
  if (part === '') return [];
  return part.split(':').flatMap((h) => {
    if (!h.includes('.')) return [h];
    const [a, b, c, d] = h.split('.').map(Number) as [number, number, number, number];
    return [((a << 8) | b).toString(16), ((c << 8) | d).toString(16)];
  });
}
