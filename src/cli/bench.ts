import { LogHistogram } from '../core/log-histogram.js';
// The package's entry, not the client's modules: it registers the Node platform (local mapping, TLS).
import { AuthCredentials, Client, VariableMetadata, VariableType, type VirtualVariableFile } from '../index.js';

/** `commy bench URL`: a load generator against a running server, like `nats bench` (docs/operations.md). */
export interface BenchOptions {
  url: string;
  tenant: string;
  key: string;
  service: string;
  publishers: number;
  subscribers: number;
  /** Writes per second per publisher; 0: as fast as acknowledgements come back. */
  rate: number;
  /** Bytes per value (at least 8: the first 8 carry the write's timestamp). */
  size: number;
  durationS: number;
  warmupS: number;
  mode: 'remote' | 'auto';
}

export interface BenchResult {
  writes: number;
  writeErrors: number;
  received: number;
  /** Subscribers that held every publisher's last value when the run ended. */
  subscribersCurrent: number;
  seconds: number;
  ack: LogHistogram;
  delivery: LogHistogram;
}

/** The clock every client of this process stamps and reads (CLOCK_MONOTONIC, µs). */
const nowUs = (): number => Number(process.hrtime.bigint()) / 1000;

export async function runBench(o: BenchOptions): Promise<BenchResult> {
  const size = Math.max(8, o.size);
  const names = Array.from({ length: o.publishers }, (_, i) => `bench.p${i}`);
  const connect = () => Client.initialize(o.url, o.tenant, AuthCredentials.apiKey(o.key), { mode: o.mode, reconnect: false });
  const clients: Client[] = [];
  const open = async (): Promise<VirtualVariableFile> => {
    const client = await connect();
    clients.push(client);
    await client.stopFileMonitoring();
    return client.getVirtualServiceFile(o.tenant, o.service);
  };
  try {
    const admin = await open();
    for (const name of names) await admin.registerVariable(new VariableMetadata(name, -1, size, VariableType.Bytes));
    const ack = new LogHistogram();
    const delivery = new LogHistogram();
    let measuring = false;
    let stopped = false;
    let received = 0;
    const subs = await Promise.all(Array.from({ length: o.subscribers }, open));
    const listening = subs.map((vf) => listen(vf, (latencyUs) => {
      if (!measuring) return;
      received++;
      delivery.add(latencyUs);
    }, () => stopped));
    const pubs = await Promise.all(names.map(async (name) => ({ vf: await open(), name })));
    const counts = { writes: 0, errors: 0 };
    const started = nowUs();
    const measureFrom = started + o.warmupS * 1e6;
    const end = measureFrom + o.durationS * 1e6;
    const finals = new Map<string, bigint>();
    setTimeout(() => (measuring = true), o.warmupS * 1000);
    await Promise.all(pubs.map(({ vf, name }) => publish(vf, name, size, o.rate, end, (us, t) => {
      if (t < measureFrom) return;
      counts.writes++;
      ack.add(us);
    }, () => counts.errors++, (stamp) => finals.set(name, stamp))));
    const seconds = (nowUs() - measureFrom) / 1e6;
    measuring = false;
    // Every subscriber should end on every publisher's last value: give deliveries a moment to land.
    const current = await settle(subs, finals, 5000);
    stopped = true;
    void listening;
    return { writes: counts.writes, writeErrors: counts.errors, received, subscribersCurrent: current, seconds, ack, delivery };
  } finally {
    await Promise.allSettled(clients.map((c) => c.close()));
  }
}

/** A subscriber: every changed bench variable's stamp, as a latency. */
async function listen(vf: VirtualVariableFile, record: (latencyUs: number) => void, stopped: () => boolean): Promise<void> {
  const events = vf.changes();
  for await (const ev of events) {
    const now = nowUs();
    for (const name of ev.changedVariables) {
      if (!name.startsWith('bench.p')) continue;
      const value = vf.get(name) as Uint8Array;
      const stamp = Number(Buffer.from(value.buffer, value.byteOffset, 8).readBigUInt64LE(0));
      if (stamp > 0) record(now - stamp / 1000);
    }
    if (stopped()) break;
  }
}

/** A publisher: set + flush (the acknowledgement) at `rate` per second (due times fixed: a late one catches up), until `end`. */
async function publish(
  vf: VirtualVariableFile,
  name: string,
  size: number,
  rate: number,
  end: number,
  record: (ackUs: number, at: number) => void,
  failed: () => void,
  last: (stamp: bigint) => void,
): Promise<void> {
  const h = vf.handle(name);
  const value = Buffer.alloc(size);
  const period = rate > 0 ? 1e6 / rate : 0;
  let due = nowUs();
  for (;;) {
    const t = nowUs();
    if (t >= end) return;
    if (period > 0 && t < due) await new Promise((r) => setTimeout(r, Math.max(0, (due - t) / 1000 - 0.5)));
    const stamp = process.hrtime.bigint();
    value.writeBigUInt64LE(stamp, 0);
    const sent = Number(stamp) / 1000;
    try {
      h.set(value);
      await vf.flush();
      record(nowUs() - sent, sent);
      last(stamp);
    } catch {
      failed();
    }
    due += period;
  }
}

/** How many subscribers hold every publisher's last stamp, waiting up to `ms` for them to get there. */
async function settle(subs: VirtualVariableFile[], finals: Map<string, bigint>, ms: number): Promise<number> {
  const holds = (vf: VirtualVariableFile) =>
    [...finals].every(([name, stamp]) => {
      const v = vf.get(name) as Uint8Array;
      return Buffer.from(v.buffer, v.byteOffset, 8).readBigUInt64LE(0) === stamp;
    });
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && !subs.every(holds)) await new Promise((r) => setTimeout(r, 20));
  return subs.filter(holds).length;
}

/** The result as `commy bench` prints it. */
export function formatBench(o: BenchOptions, r: BenchResult): string {
  const ms = (us: number) => (Number.isNaN(us) ? '-' : us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(0)} µs`);
  const n = (x: number) => Math.round(x).toLocaleString('en-US');
  const pct = (h: LogHistogram) => `p50 ${ms(h.p(50))}  p99 ${ms(h.p(99))}  p99.9 ${ms(h.p(99.9))}  max ${ms(h.p(100))}`;
  const rate = o.rate > 0 ? `${n(o.rate)} writes/s each` : 'as fast as acknowledged';
  return [
    `commy bench ${o.url}: ${o.publishers} publisher(s) (${rate}), ${o.subscribers} subscriber(s), ${o.size}-byte values, ${o.durationS} s after ${o.warmupS} s of warm-up, mode ${o.mode}`,
    `publishers   ${n(r.writes)} writes acknowledged (${n(r.writes / r.seconds)}/s, ${n((r.writes * o.size) / r.seconds)} B/s), ${r.writeErrors} failed`,
    `             write → ack     ${pct(r.ack)}`,
    `subscribers  ${n(r.received)} values received (${n(r.received / r.seconds)}/s; a slow subscriber skips to the latest value)`,
    `             write → seen    ${pct(r.delivery)}`,
    `             ${r.subscribersCurrent} of ${o.subscribers} hold every publisher's last value`,
    'All clients run in this one process: on a small machine they compete with the server for CPU.',
  ].join('\n');
}
