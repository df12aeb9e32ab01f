/**
 * `commy stats URL`: the server's /metrics as a table that refreshes, like `redis-cli --stat` (docs/operations.md,
 * Metrics). Rates are per second over the interval; acknowledgement percentiles come from the histogram's
 * buckets over the interval (an upper bound: the bucket's edge).
 */

import { parseExposition, quantile, rate, total, type Sample } from '../core/metrics-text.js';

export interface StatsOptions {
  url: string;
  intervalS: number;
  /** Rows to print; 0: until interrupted. */
  count: number;
}

/** A larger answer is not a commy server's metrics (they are tens of KB): refused rather than read into memory. */
const MAX_BODY_BYTES = 16 * 1024 * 1024;
/** A scrape (answer and body) must be done within this, or the interval if longer. */
const SCRAPE_TIMEOUT_MS = 10_000;

const COLUMNS = ['conns', 'unauth', 'in msg/s', 'out msg/s', 'in KB/s', 'out KB/s', 'acks/s', 'ack p50', 'ack p99', 'errors/s', 'services', 'vars', 'syncs/s', 'buf max'];

export async function printStats(o: StatsOptions, write: (line: string) => void = (l) => console.log(l)): Promise<void> {
  const endpoint = `${o.url.replace(/^ws(s?):\/\//, 'http$1://').replace(/\/+$/, '')}/metrics`;
  const timeoutMs = Math.max(SCRAPE_TIMEOUT_MS, o.intervalS * 1000);
  let before = await scrape(endpoint, timeoutMs);
  for (let row = 0; o.count === 0 || row < o.count; row++) {
    await new Promise((resolve) => setTimeout(resolve, o.intervalS * 1000));
    const now = await scrape(endpoint, timeoutMs);
    if (row % 20 === 0) write(COLUMNS.map((c) => c.padStart(10)).join(''));
    write(statsRow(before, now, o.intervalS).map((c) => c.padStart(10)).join(''));
    before = now;
  }
}

/**
 * One /metrics, parsed. The server may be anything (a wrong URL, a hostile host): redirects are not followed, the
 * answer must come within `timeoutMs`, and a body past MAX_BODY_BYTES is refused.
 */
async function scrape(endpoint: string, timeoutMs: number): Promise<Sample> {
  const signal = AbortSignal.timeout(timeoutMs);
  let text: string;
  try {
    const res = await fetch(endpoint, { redirect: 'manual', signal });
    if (res.status !== 200) {
      await res.body?.cancel();
      throw new Error(`${endpoint} answered ${res.status}`);
    }
    text = await boundedText(endpoint, res);
  } catch (err) {
    if (signal.aborted) throw new Error(`${endpoint} did not answer within ${timeoutMs / 1000} s`);
    throw err;
  }
  return parseExposition(text);
}

/** The body as text, read up to MAX_BODY_BYTES (then refused). */
async function boundedText(endpoint: string, res: Response): Promise<string> {
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  for await (const chunk of res.body ?? []) {
    bytes += chunk.length;
    // Leaving the loop cancels the body: nothing more is read.
    if (bytes > MAX_BODY_BYTES) throw new Error(`${endpoint} answered more than ${MAX_BODY_BYTES / 1024 / 1024} MiB: not commy metrics`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function statsRow(a: Sample, b: Sample, seconds: number): string[] {
  const perSecond = (name: string) => rate(a, b, name, seconds);
  const get = (key: string) => b.get(key) ?? 0;
  const kb = (x: number) => (x / 1024).toFixed(1);
  const acks = perSecond('commy_write_ack_seconds_count');
  return [
    String(get('commy_connections{state="authenticated"}') + get('commy_connections{state="unauthenticated"}')),
    String(get('commy_connections{state="unauthenticated"}')),
    perSecond('commy_messages_received_total').toFixed(0),
    perSecond('commy_messages_sent_total').toFixed(0),
    kb(perSecond('commy_received_bytes_total')),
    kb(perSecond('commy_sent_bytes_total')),
    acks.toFixed(0),
    ms(quantile(a, b, 'commy_write_ack_seconds', 0.5)),
    ms(quantile(a, b, 'commy_write_ack_seconds', 0.99)),
    perSecond('commy_errors_total').toFixed(0),
    String(total(b, 'commy_services_open')),
    String(total(b, 'commy_variables')),
    perSecond('commy_file_syncs_total').toFixed(0),
    kb(get('commy_output_buffered_bytes{stat="max"}')),
  ];
}

function ms(seconds: number): string {
  if (Number.isNaN(seconds)) return '-';
  if (seconds === Infinity) return '>1s';
  return seconds < 0.001 ? `≤${(seconds * 1e6).toFixed(0)}µs` : `≤${(seconds * 1000).toFixed(seconds < 0.01 ? 1 : 0)}ms`;
}
