import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { messageName } from '../protocol/messages.js';

/** What the gauges read from the server when /metrics is scraped (nothing is kept up to date between scrapes). */
export interface MetricsSource {
  /** Connections admitted and open now, and of those the unauthenticated ones. */
  connections(): { all: number; unauthenticated: number };
  /** Bytes queued on the connections' sockets, unsent: the largest and the total. */
  outputBuffered(): { max: number; sum: number };
  /** Open services per tenant: how many, their live variables, their files' bytes (what the mappings can hold). */
  tenants(): Map<string, { services: number; variables: number; bytes: number }>;
  /** Service files synced so far (durability.ts). */
  syncs(): number;
}

/** Message types are one byte on the wire: per-type children are made once, kept by that byte. */
const TYPE_SLOTS = 128;

/**
 * /metrics answers anyone who reaches the port, and a collection costs the event loop (about a millisecond, more
 * with many open services): a collection is reused by every scrape that asks while it runs, and for this many
 * times as long as it took after it ended, at least REUSE_MIN_MS. A flood of scrapes then costs at most about a
 * tenth of the loop, and a scraper every few seconds always gets a fresh one.
 */
const REUSE_FACTOR = 10;
const REUSE_MIN_MS = 100;

type Exposition = { contentType: string; body: string };

/**
 * The server's Prometheus metrics (`GET /metrics`, every name `commy_…`; docs/operations.md, Metrics). Counters
 * are bumped where things happen, through children made once (a label lookup per message would cost more than
 * the count); gauges are read from the server at scrape time.
 */
export class ServerMetrics {
  readonly registry = new Registry();
  /** What only a scraper with the metrics token gets: the per-tenant series. */
  private readonly tenantRegistry = new Registry();
  private readonly received: Array<{ messages: Counter.Internal; bytes: Counter.Internal } | undefined> = new Array(TYPE_SLOTS);
  private readonly sent: Array<{ messages: Counter.Internal; bytes: Counter.Internal } | undefined> = new Array(TYPE_SLOTS);
  private readonly messagesIn: Counter<'type'>;
  private readonly bytesIn: Counter<'type'>;
  private readonly messagesOut: Counter<'type'>;
  private readonly bytesOut: Counter<'type'>;
  private readonly errors: Counter<'code'>;
  private readonly authFailures: Counter<'code'>;
  private readonly writeAck: Histogram;
  private readonly batchUpdates: Histogram;
  private readonly conflatedUpdates: Counter;
  private readonly wakeUps: Counter;
  /** The last collection of each kind (with tenants or not): running (until `reuseUntil` is set) or done, and until when scrapes get it again. */
  private readonly last = new Map<boolean, { readonly result: Promise<Exposition>; reuseUntil: number }>();
  /** The source's per-tenant figures, read once per collection (three gauges use them). */
  private tenantsNow: ReturnType<MetricsSource['tenants']> | undefined;

  constructor(source: MetricsSource) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'commy_' });
    this.messagesIn = new Counter({ name: 'commy_messages_received_total', help: 'Frames received, by message type (unreadable: "invalid").', labelNames: ['type'], registers });
    this.bytesIn = new Counter({ name: 'commy_received_bytes_total', help: 'Bytes of frames received, by message type.', labelNames: ['type'], registers });
    this.messagesOut = new Counter({ name: 'commy_messages_sent_total', help: 'Frames sent, by message type.', labelNames: ['type'], registers });
    this.bytesOut = new Counter({ name: 'commy_sent_bytes_total', help: 'Bytes of frames sent, by message type.', labelNames: ['type'], registers });
    this.errors = new Counter({ name: 'commy_errors_total', help: 'Error replies sent, by error code.', labelNames: ['code'], registers });
    this.authFailures = new Counter({ name: 'commy_auth_failures_total', help: 'Failed authentications, by the code answered.', labelNames: ['code'], registers });
    this.writeAck = new Histogram({
      name: 'commy_write_ack_seconds',
      help: 'From a write request taken up (report, WriteVariable, Mutate) to its acknowledgement (durability included).',
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.batchUpdates = new Histogram({ name: 'commy_sync_batch_updates', help: 'Updates per SyncBatch sent.', buckets: [1, 2, 5, 10, 50, 100, 500, 1000, 5000], registers });
    this.conflatedUpdates = new Counter({ name: 'commy_conflated_updates_total', help: 'Changes folded into an update a subscriber was still owed (it gets the latest value only).', registers });
    this.wakeUps = new Counter({ name: 'commy_watcher_wakeups_total', help: "Changes the server's service watchers reported (its own writes and local processes')." , registers });
    this.gauges(source, registers);
  }

  /** A frame received: `type` is its type byte (data[1]), anything unreadable counts as "invalid". */
  receivedFrame(type: number, bytes: number): void {
    const c = this.child(this.received, this.messagesIn, this.bytesIn, type);
    c.messages.inc();
    c.bytes.inc(bytes);
  }

  sentFrame(type: number, bytes: number): void {
    const c = this.child(this.sent, this.messagesOut, this.bytesOut, type);
    c.messages.inc();
    c.bytes.inc(bytes);
  }

  error(code: string): void {
    this.errors.inc({ code });
  }

  authFailed(code: string): void {
    this.authFailures.inc({ code });
  }

  writeAcknowledged(seconds: number): void {
    this.writeAck.observe(seconds);
  }

  batch(updates: number): void {
    this.batchUpdates.observe(updates);
  }

  conflated(): void {
    this.conflatedUpdates.inc();
  }

  wakeUp(): void {
    this.wakeUps.inc();
  }

  /**
   * The exposition text and its content type (a recent collection's: see REUSE_FACTOR). `perTenant`: with the
   * per-tenant series (for a scraper that showed the metrics token).
   */
  scrape(perTenant = false): Promise<Exposition> {
    const last = this.last.get(perTenant);
    if (last !== undefined && performance.now() < last.reuseUntil) return last.result;
    const start = performance.now();
    const result = this.collect(perTenant);
    const current = { result, reuseUntil: Infinity };
    this.last.set(perTenant, current);
    const done = () => {
      const end = performance.now();
      current.reuseUntil = end + Math.max(REUSE_MIN_MS, REUSE_FACTOR * (end - start));
    };
    result.then(done, () => {
      if (this.last.get(perTenant) === current) this.last.delete(perTenant); // a failure is not kept: the next scrape tries again
    });
    return result;
  }

  private async collect(perTenant: boolean): Promise<Exposition> {
    this.tenantsNow = undefined;
    try {
      const body = await this.registry.metrics();
      return { contentType: this.registry.contentType, body: perTenant ? body + (await this.tenantRegistry.metrics()) : body };
    } finally {
      this.tenantsNow = undefined;
    }
  }

  private child(
    slots: Array<{ messages: Counter.Internal; bytes: Counter.Internal } | undefined>,
    messages: Counter<'type'>,
    bytes: Counter<'type'>,
    type: number,
  ): { messages: Counter.Internal; bytes: Counter.Internal } {
    const slot = type >= 0 && type < TYPE_SLOTS ? type : 0;
    let c = slots[slot];
    if (c === undefined) {
      const name = slot === 0 ? 'invalid' : (messageName(slot) ?? 'invalid');
      c = slots[slot] = { messages: messages.labels(name), bytes: bytes.labels(name) };
    }
    return c;
  }

  private gauges(source: MetricsSource, registers: Registry[]): void {
    const tenants = () => (this.tenantsNow ??= source.tenants());
    new Gauge({
      name: 'commy_connections',
      help: 'Open connections, by state.',
      labelNames: ['state'],
      registers,
      collect() {
        const { all, unauthenticated } = source.connections();
        this.set({ state: 'authenticated' }, all - unauthenticated);
        this.set({ state: 'unauthenticated' }, unauthenticated);
      },
    });
    new Gauge({
      name: 'commy_output_buffered_bytes',
      help: "Bytes queued unsent on the connections' sockets: the largest of one connection (max) and in all (sum).",
      labelNames: ['stat'],
      registers,
      collect() {
        const { max, sum } = source.outputBuffered();
        this.set({ stat: 'max' }, max);
        this.set({ stat: 'sum' }, sum);
      },
    });
    // Totals for everyone; per tenant only with the metrics token (tenant names are not for any client to learn).
    const perTenant = (name: string, help: string, pick: (t: { services: number; variables: number; bytes: number }) => number) => {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          let sum = 0;
          for (const t of tenants().values()) sum += pick(t);
          this.set(sum);
        },
      });
      new Gauge({
        name: name.replace(/^commy_/, 'commy_tenant_'),
        help: `${help} Per tenant (served with the metrics token only).`,
        labelNames: ['tenant'],
        registers: [this.tenantRegistry],
        collect() {
          this.reset();
          for (const [tenant, t] of tenants()) this.set({ tenant }, pick(t));
        },
      });
    };
    perTenant('commy_services_open', 'Services open now.', (t) => t.services);
    perTenant('commy_variables', 'Live variables of the open services.', (t) => t.variables);
    perTenant('commy_mapped_bytes', "Bytes of the open services' files (what their mappings can hold in memory).", (t) => t.bytes);
    new Counter({
      name: 'commy_file_syncs_total',
      help: 'Service files synced to disk since the server started (durability).',
      registers,
      collect() {
        this.reset();
        this.inc(source.syncs());
      },
    });
  }
}
