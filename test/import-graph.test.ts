import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * The module graph as it runs (the compiled files; type-only imports are gone): no cycle, and no import
 * running back up the layers core → protocol/native → local → server/client.
 */
const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../src');

function modules(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const path = join(dir, d.name);
    if (d.isDirectory()) return modules(path);
    return d.name.endsWith('.js') ? [path] : [];
  });
}

const IMPORT = /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+['"](\.[^'"]+)['"]|(?:^|\n)\s*import\s+['"](\.[^'"]+)['"]/g;

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(IMPORT)].map((m) => resolve(dirname(file), (m[1] ?? m[2])!));
}

const graph = new Map(modules(SRC).map((f) => [f, importsOf(f)]));
const name = (f: string): string => relative(SRC, f);

test('the runtime import graph of src/ has no cycle', () => {
  assert.ok([...graph.values()].flat().length > 100, 'the import scan found too few imports to be reading them');
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const visit = (f: string): void => {
    if (state.get(f) === 'done') return;
    if (state.get(f) === 'open') assert.fail(`import cycle: ${[...path.slice(path.indexOf(f)), f].map(name).join(' → ')}`);
    state.set(f, 'open');
    path.push(f);
    for (const dep of graph.get(f) ?? []) visit(dep);
    path.pop();
    state.set(f, 'done');
  };
  for (const f of graph.keys()) visit(f);
});

/** Which top folders each folder may import from (its own always). */
const MAY_IMPORT: Record<string, readonly string[]> = {
  core: [],
  protocol: ['core'],
  native: ['core'],
  local: ['core', 'native'],
  server: ['core', 'protocol', 'native', 'local'],
  // Only through the Node platform (node-platform.ts, local-attach.ts); client-core.test.ts keeps the core Node-free.
  client: ['core', 'protocol', 'native', 'local'],
  // Above the server: a node is a server that also writes its files from Redis. The server loads it only
  // dynamically (server.ts, when `cluster` is configured).
  cluster: ['core', 'protocol', 'native', 'local', 'server'],
};

test('no import runs back up the layers', () => {
  const wrong: string[] = [];
  for (const [file, deps] of graph) {
    const layer = name(file).split('/')[0]!;
    const allowed = MAY_IMPORT[layer];
    if (allowed === undefined) continue;
    for (const dep of deps) {
      const target = name(dep).split('/')[0]!;
      if (target !== layer && !allowed.includes(target)) wrong.push(`${name(file)} → ${name(dep)}`);
    }
  }
  assert.deepEqual(wrong, []);
});
