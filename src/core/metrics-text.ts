/**
 * The Prometheus text format, read (the server's /metrics): for `commy stats` and the web inspector, so this
 * module imports nothing and runs in a browser too.
 */

/** A scrape: `name{labels}` → value. */
export type Sample = Map<string, number>;

/** Prometheus text as `name{labels}` → value (comments and types left out). */
export function parseExposition(text: string): Sample {
  const out: Sample = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/** Sum of every series of `name` (all label sets). */
export function total(s: Sample, name: string): number {
  let sum = 0;
  for (const [key, value] of s) if (key === name || key.startsWith(`${name}{`)) sum += value;
  return sum;
}

/** The q-quantile of what a histogram observed between two scrapes, as its bucket's upper edge (seconds). */
export function quantile(a: Sample, b: Sample, name: string, q: number): number {
  const buckets: Array<[number, number]> = [];
  for (const [key, value] of b) {
    const le = /^(.+)_bucket\{le="([^"]+)"\}$/.exec(key);
    if (le === null || le[1] !== name) continue;
    buckets.push([le[2] === '+Inf' ? Infinity : Number(le[2]), value - (a.get(key) ?? 0)]);
  }
  buckets.sort((x, y) => x[0] - y[0]);
  const count = buckets.at(-1)?.[1] ?? 0;
  if (count <= 0) return NaN;
  for (const [edge, cumulative] of buckets) if (cumulative >= q * count) return edge;
  return Infinity;
}

/** Per second, how much `name` (all label sets) grew between two scrapes `seconds` apart. */
export function rate(a: Sample, b: Sample, name: string, seconds: number): number {
  return (total(b, name) - total(a, name)) / seconds;
}
