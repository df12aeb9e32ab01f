/** Tiny benchmark harness: median of several timed runs, and a table with the peer and the ratio. */
export function nsPerOp(ops: number, fn: (n: number) => unknown, runs = 7): number {
  fn(Math.min(ops, 100_000)); // warm up: let the JIT settle
  const samples: number[] = [];
  let sink: unknown;
  for (let r = 0; r < runs; r++) {
    const t0 = process.hrtime.bigint();
    sink = fn(ops);
    samples.push(Number(process.hrtime.bigint() - t0) / ops);
  }
  if (sink === Symbol.for('never')) console.log(sink);
  return median(samples);
}

export function median(xs: number[]): number {
  return percentile(xs, 50);
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

export interface Row {
  figure: string;
  ours: number | undefined;
  peer: string;
  theirs: number | undefined;
  unit: string;
  target: string;
  /** For throughput rows a higher number is better. */
  higherIsBetter?: boolean;
}

function fmt(x: number | undefined): string {
  if (x === undefined) return 'n/a';
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

/** Prints rows as a Markdown table; the ratio says how many times better ours is than the peer. */
export function printTable(title: string, rows: Row[]): void {
  console.log(`\n### ${title}\n`);
  console.log('| figure | commy | peer | peer figure | unit | commy vs peer | target |');
  console.log('|---|---:|---|---:|---|---:|---|');
  for (const r of rows) {
    let ratio = 'n/a';
    if (r.ours !== undefined && r.theirs !== undefined && r.ours > 0 && r.theirs > 0) {
      const x = r.higherIsBetter ? r.ours / r.theirs : r.theirs / r.ours;
      ratio = `${x.toFixed(x >= 10 ? 0 : 2)}× ${x >= 1 ? 'better' : 'worse'}`;
    }
    console.log(`| ${r.figure} | ${fmt(r.ours)} | ${r.peer} | ${fmt(r.theirs)} | ${r.unit} | ${ratio} | ${r.target} |`);
  }
}
