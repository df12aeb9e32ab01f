#!/usr/bin/env node
// Bundles the client for browsers (src/browser.ts: remote mode only, nothing of Node) into one ES module,
// dist/browser/client.js, minified, with its source map beside it (client.js.map, sources included). The
// server serves both (GET /client.js, GET /client.js.map); a page imports it with <script type="module">.
// Bundlers do not need it: the package's `browser` condition gives them the unbundled ESM (docs/client.md).
//
// Run by `npm install` (prepare), `npm run build` and `npm test`. Safe to repeat:
// - nothing is built when the bundle is there and its stamp matches: a hash of every file the last build read
//   (esbuild's metafile), this script, and esbuild's version (COMMY_FORCE_BUILD=1 builds anyway);
// - otherwise each output is written next to its target and renamed over it, so a server starting meanwhile
//   reads an old file or a new one, never half of one.
// `platform: 'browser'` makes an import of a Node module (node:fs, ws, the addon) fail the build.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';

const script = fileURLToPath(import.meta.url);
const root = dirname(dirname(script));

/** What every build of a browser bundle uses (the tests build other entries with these too, through buildBrowserBundle). */
const BUNDLE_OPTIONS = Object.freeze({
  bundle: true,
  format: 'esm',
  platform: 'browser',
  // What the client's sources are compiled for (tsconfig.json): Chrome/Edge ≥ 94, Firefox ≥ 93, Safari ≥ 16.4.
  target: 'es2022',
  minify: true,
  sourcemap: 'linked',
  sourcesContent: true,
  legalComments: 'eof',
  logLevel: 'silent',
});

/** The hash of what a build read, as its stamp records it: files relative to `base`, each with its contents. */
function stampOf(base, inputs) {
  const hash = createHash('sha256');
  hash.update(`esbuild ${esbuild.version}\0`).update(readFileSync(script)).update('\0');
  for (const file of [...inputs].sort()) {
    const path = resolve(base, file);
    hash.update(`${file}\0`).update(existsSync(path) ? readFileSync(path) : 'missing').update('\0');
  }
  return hash.digest('hex');
}

/** The stamp file of `outFile`: the hash, then the inputs it was taken over, one per line. */
function readStamp(stampFile) {
  if (!existsSync(stampFile)) return undefined;
  const [hash, ...inputs] = readFileSync(stampFile, 'utf8').split('\n').filter((l) => l !== '');
  return hash === undefined ? undefined : { hash, inputs };
}

function writeAtomically(path, contents) {
  const next = `${path}.${process.pid}.tmp`;
  writeFileSync(next, contents);
  renameSync(next, path);
}

/**
 * Builds `entry` into `outFile` (and `outFile.map`, and the stamp `outFile.stamp`) unless the stamp says nothing
 * changed; `workingDir` is the directory esbuild resolves from (the package).
 * Returns whether it built, and the bundle's size raw and gzipped. Throws esbuild's error when the build fails.
 */
export async function buildBrowserBundle({ entry, outFile, workingDir = process.cwd(), force = false, plugins = [] }) {
  const stampFile = `${outFile}.stamp`;
  const base = workingDir; // esbuild names its inputs relative to it; so does the stamp
  const previous = readStamp(stampFile);
  const upToDate = !force && previous !== undefined && existsSync(outFile) && existsSync(`${outFile}.map`) && stampOf(base, previous.inputs) === previous.hash;
  if (!upToDate) {
    const result = await esbuild.build({ ...BUNDLE_OPTIONS, entryPoints: [entry], outfile: outFile, absWorkingDir: base, write: false, metafile: true, plugins });
    mkdirSync(dirname(outFile), { recursive: true });
    // The map first: a bundle on disk always has the map it names.
    const outputs = [...result.outputFiles].sort((a, b) => Number(b.path.endsWith('.map')) - Number(a.path.endsWith('.map')));
    for (const output of outputs) writeAtomically(output.path, output.contents);
    const inputs = Object.keys(result.metafile.inputs);
    writeAtomically(stampFile, [stampOf(base, inputs), ...inputs].join('\n') + '\n');
  }
  const bundle = readFileSync(outFile);
  return { built: !upToDate, bytes: bundle.byteLength, gzipBytes: gzipSync(bundle).byteLength };
}

const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;

/**
 * The inspector (src/inspector/main.ts) imports the client from the server's own client.js, beside it (one copy
 * in the page, and the inspector exercises the very bundle pages use): its import of src/browser.ts is left to
 * the browser as `./client.js`.
 */
const clientFromServer = {
  name: 'client-from-server',
  setup(build) {
    build.onResolve({ filter: /(^|\/)browser\.js$/ }, () => ({ path: './client.js', external: true }));
  },
};

const BUNDLES = [
  { entry: join(root, 'src', 'browser.ts'), outFile: join(root, 'dist', 'browser', 'client.js') },
  { entry: join(root, 'src', 'inspector', 'main.ts'), outFile: join(root, 'dist', 'browser', 'inspector.js'), plugins: [clientFromServer] },
];

async function main() {
  for (const { entry, outFile, plugins } of BUNDLES) {
    try {
      const { built, bytes, gzipBytes } = await buildBrowserBundle({ entry, outFile, workingDir: root, force: process.env.COMMY_FORCE_BUILD === '1', plugins });
      console.log(`commy: browser bundle ${built ? 'built' : 'up to date'} (dist/browser/${basename(outFile)}: ${kib(bytes)}, ${kib(gzipBytes)} gzipped)`);
    } catch (err) {
      console.error(`commy: building the browser bundle (${entry} → ${outFile}) failed:\n${err instanceof Error ? err.message : String(err)}`);
      process.exit(1);
    }
  }
}

if (process.argv[1] !== undefined && pathToFileURL(resolve(process.argv[1])).href === import.meta.url) await main();
