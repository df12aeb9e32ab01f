import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';
import { tempDir } from './helpers/temp.js';

/**
 * The browser bundle (scripts/build-browser.mjs → dist/browser/client.js): one module that needs nothing else,
 * built from nothing of Node; a build that would pull Node in fails; rebuilt only when its inputs change.
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BUNDLE = join(ROOT, 'dist', 'browser', 'client.js');

interface BuildResult {
  built: boolean;
  bytes: number;
  gzipBytes: number;
}

interface BuildScript {
  buildBrowserBundle(options: { entry: string; outFile: string; workingDir?: string; force?: boolean }): Promise<BuildResult>;
}

const script = (await import(pathToFileURL(join(ROOT, 'scripts', 'build-browser.mjs')).href)) as BuildScript;

test('dist/browser/client.js is one self-contained ES module exporting what the browser entry exports', async () => {
  // Bundling the bundle again lists every import it makes, static or dynamic: there must be none.
  const rel = 'dist/browser/client.js';
  const again = await esbuild.build({ entryPoints: [BUNDLE], absWorkingDir: ROOT, bundle: true, write: false, metafile: true, format: 'esm', logLevel: 'silent' });
  assert.deepEqual(again.metafile.inputs[rel]?.imports, [], 'imports nothing');
  const bundled = Object.keys((await import(pathToFileURL(BUNDLE).href)) as object).sort();
  const entry = Object.keys((await import('../src/browser.js')) as object).sort();
  assert.deepEqual(bundled, entry);
  for (const name of ['AuthCredentials', 'Client', 'CommyError', 'VariableMetadata', 'VariableType', 'VirtualVariableFile']) assert.ok(bundled.includes(name), name);
});

test('the bundle was built from the browser platform, and from nothing of Node (server, local files, addon, ws)', () => {
  // The stamp lists every file the last build read (esbuild's metafile).
  const inputs = readFileSync(`${BUNDLE}.stamp`, 'utf8').trim().split('\n').slice(1);
  assert.ok(inputs.includes('src/browser.ts') && inputs.includes('src/client/browser-platform.ts'), inputs.join('\n'));
  assert.ok(inputs.some((f) => f.includes('node_modules/msgpackr/')), 'msgpackr, its browser build');
  const nodeOnly = inputs.filter((f) => /^src\/(server|local|native)\/|node-platform|local-attach|mirror-file|node_modules\/(ws|node-addon-api)\//.test(f));
  assert.deepEqual(nodeOnly, []);
});

test('an import of a Node module fails the browser build, saying which', async (t) => {
  const dir = tempDir(t);
  for (const spec of ['node:fs', 'fs', 'node:child_process']) {
    writeFileSync(join(dir, 'entry.ts'), `import * as m from '${spec}';\nexport const used = m;\n`);
    await assert.rejects(
      script.buildBrowserBundle({ entry: join(dir, 'entry.ts'), outFile: join(dir, 'out', 'client.js'), workingDir: dir }),
      (err: Error) => err.message.includes(`Could not resolve "${spec}"`),
      spec,
    );
  }
  assert.deepEqual(readdirSync(dir), ['entry.ts'], 'a failed build writes nothing');
});

test('the build is skipped while its inputs are unchanged, and leaves no temporary file', async (t) => {
  const dir = tempDir(t);
  const entry = join(dir, 'entry.ts');
  const outFile = join(dir, 'out', 'client.js');
  writeFileSync(entry, "import { answer } from './answer.js';\nexport const doubled: number = answer * 2;\n");
  writeFileSync(join(dir, 'answer.ts'), 'export const answer = 21;\n');
  const build = (force = false): Promise<BuildResult> => script.buildBrowserBundle({ entry, outFile, workingDir: dir, force });

  assert.equal((await build()).built, true);
  const first = statSync(outFile);
  assert.equal((await build()).built, false, 'nothing changed');
  assert.equal(statSync(outFile).mtimeMs, first.mtimeMs, 'not rewritten');

  writeFileSync(join(dir, 'answer.ts'), 'export const answer = 50;\n'); // an imported file, not the entry
  assert.equal((await build()).built, true);
  assert.match(readFileSync(outFile, 'utf8'), /100|50\*2/);
  rmSync(`${outFile}.map`);
  assert.equal((await build()).built, true, 'a missing map is rebuilt');
  assert.equal((await build(true)).built, true, 'forced');
  assert.deepEqual(readdirSync(dirname(outFile)).sort(), ['client.js', 'client.js.map', 'client.js.stamp']);
});
