/**
 * `npm run bench`: every figure of the spec's "What fast means", one script each, one after another (never at
 * once: they would measure each other), then a summary of every row that has a target. Arguments pick a
 * subset: `node dist/bench/all.js fanout idle`. Exits 1 only if a script crashed; a MISS is a result.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchFile, fmt, machine, verdict } from './harness.js';

const FIGURES = ['local-rw', 'local-change', 'remote-ack', 'fanout', 'idle', 'diff', 'durability', 'browser-update', 'cluster'];

const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !FIGURES.includes(w));
if (unknown.length > 0) {
  console.error(`unknown figure(s): ${unknown.join(', ')}; known: ${FIGURES.join(', ')}`);
  process.exit(2);
}
const figures = wanted.length > 0 ? wanted : FIGURES;
const dir = mkdtempSync(join(tmpdir(), 'commy-bench-results-'));
const results = join(dir, 'rows.jsonl');
const ran: Array<{ name: string; seconds: number; code: number | null }> = [];

console.log(`# commy benchmarks\n\n${machine()}  \nfigures: ${figures.join(', ')}`);
for (const name of figures) {
  const t0 = performance.now();
  const code = await new Promise<number | null>((resolve) => {
    const child = spawn(process.execPath, [benchFile(name)], { stdio: 'inherit', env: { ...process.env, COMMY_BENCH_RESULTS: results } });
    child.once('exit', (c, signal) => resolve(signal ? 128 : c));
  });
  ran.push({ name, seconds: (performance.now() - t0) / 1000, code });
}

interface Result {
  table: string;
  figure: string;
  ours: string;
  theirs: string;
  target: string;
  pass: boolean | null;
}
let rows: Result[] = [];
try {
  rows = readFileSync(results, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Result);
} catch {
  /* no rows */
}
rmSync(dir, { recursive: true, force: true });

console.log('\n## Summary\n');
console.log('| table | figure | commy | peer | target | result |');
console.log('|---|---|---:|---:|---|---|');
for (const r of rows) console.log(`| ${r.table} | ${r.figure} | ${r.ours} | ${r.theirs} | ${r.target} | ${verdict(r.pass ?? undefined)} |`);
const pass = rows.filter((r) => r.pass === true).length;
const miss = rows.filter((r) => r.pass === false).length;
console.log(`\n${pass} PASS, ${miss} MISS, ${rows.length - pass - miss} not checked.  `);
console.log(`scripts: ${ran.map((r) => `${r.name} ${fmt(r.seconds)} s${r.code === 0 ? '' : ` (exit ${r.code})`}`).join(', ')}.`);
process.exit(ran.some((r) => r.code !== 0) ? 1 : 0);
