import { parseExposition, quantile, rate, total, type Sample } from '../core/metrics-text.js';

/**
 * The server's connections and traffic, from its /metrics (the totals every visitor may read; per-tenant
 * figures need the metrics token and are not shown), as a few figures refreshed every INTERVAL_MS.
 */

const INTERVAL_MS = 2000;

export interface TrafficFigure {
  readonly label: string;
  readonly value: string;
}

/** The figures between two scrapes `seconds` apart (pure: tested in Node). */
export function trafficFigures(a: Sample, b: Sample, seconds: number): TrafficFigure[] {
  const perSecond = (name: string) => rate(a, b, name, seconds);
  const get = (key: string) => b.get(key) ?? 0;
  const authed = get('commy_connections{state="authenticated"}');
  const unauth = get('commy_connections{state="unauthenticated"}');
  const ms = (s: number) => (Number.isNaN(s) ? '—' : s === Infinity ? '> 1 s' : s < 0.001 ? `≤ ${(s * 1e6).toFixed(0)} µs` : `≤ ${(s * 1000).toFixed(1)} ms`);
  return [
    { label: 'connections', value: `${authed + unauth}${unauth > 0 ? ` (${unauth} signing in)` : ''}` },
    { label: 'messages in / s', value: perSecond('commy_messages_received_total').toFixed(0) },
    { label: 'messages out / s', value: perSecond('commy_messages_sent_total').toFixed(0) },
    { label: 'KB in / s', value: (perSecond('commy_received_bytes_total') / 1024).toFixed(1) },
    { label: 'KB out / s', value: (perSecond('commy_sent_bytes_total') / 1024).toFixed(1) },
    { label: 'write → ack p50', value: ms(quantile(a, b, 'commy_write_ack_seconds', 0.5)) },
    { label: 'write → ack p99', value: ms(quantile(a, b, 'commy_write_ack_seconds', 0.99)) },
    { label: 'services open', value: String(total(b, 'commy_services_open')) },
  ];
}

/** Keeps `panel` up to date until the page goes; a failed scrape says so in the panel and tries again. */
export function followTraffic(panel: HTMLElement): void {
  let before: { sample: Sample; at: number } | undefined;
  const scrape = async (): Promise<void> => {
    try {
      const res = await fetch('/metrics', { cache: 'no-store' });
      if (!res.ok) throw new Error(`/metrics answered ${res.status}`);
      const now = { sample: parseExposition(await res.text()), at: performance.now() };
      if (before !== undefined) render(panel, trafficFigures(before.sample, now.sample, (now.at - before.at) / 1000));
      before = now;
    } catch (err) {
      panel.textContent = `traffic unavailable: ${String(err)}`;
    }
  };
  // Rates need two scrapes: the second comes soon, then one every INTERVAL_MS.
  void scrape().then(() => setTimeout(() => void scrape(), 500));
  setInterval(() => void scrape(), INTERVAL_MS);
}

function render(panel: HTMLElement, figures: TrafficFigure[]): void {
  const dl = document.createElement('dl');
  for (const f of figures) {
    const dt = document.createElement('dt');
    dt.textContent = f.label;
    const dd = document.createElement('dd');
    dd.textContent = f.value;
    dl.append(dt, dd);
  }
  panel.replaceChildren(dl);
}
