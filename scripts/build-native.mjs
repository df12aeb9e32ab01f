#!/usr/bin/env node
// Builds the native addon from source with node-gyp (run by `npm install`, and by `npx commy` the first time,
// which installs the package in place).
//
// Safe to repeat, and safe beside running processes (docs/operations.md, Installing):
// - nothing is built when build/Release/commy_native.node is there and its stamp matches: a hash of the
//   addon's sources, binding.gyp, this script, and the Node version, ABI, platform, arch and compiler flags
//   it was built for (COMMY_FORCE_BUILD=1 builds anyway);
// - otherwise it builds in a directory of its own and renames the result over the old addon, so a process
//   that loads commy meanwhile gets the old addon or the new one, never none (`node-gyp rebuild` in place
//   deletes build/ first).
//
// Node's headers ship with the node binary on Debian-style installs (/usr/include/node); node-gyp is pointed at
// them so the build never tries to download headers (machines here have no internet).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const release = join(root, 'build', 'Release');
const addon = join(release, 'commy_native.node');
const stampFile = join(release, 'commy_native.stamp');

/** What the addon depends on: any change to it means a build. */
function stamp() {
  const hash = createHash('sha256');
  const files = ['binding.gyp', 'scripts/build-native.mjs', ...readdirSync(join(root, 'native')).filter((f) => /\.(cc|h)$/.test(f)).sort().map((f) => `native/${f}`)];
  for (const file of files) hash.update(`${file}\0`).update(readFileSync(join(root, file))).update('\0');
  const flags = ['CC', 'CXX', 'CFLAGS', 'CXXFLAGS', 'LDFLAGS', 'npm_config_nodedir'].map((k) => `${k}=${process.env[k] ?? ''}`);
  hash.update([process.version, process.versions.modules, process.platform, process.arch, ...flags].join('\n'));
  return hash.digest('hex');
}

function upToDate(want) {
  return existsSync(addon) && existsSync(stampFile) && readFileSync(stampFile, 'utf8').trim() === want;
}

function nodeGyp() {
  const prefix = dirname(dirname(process.execPath));
  const env = { ...process.env };
  if (!env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix;
  // npm exposes its bundled node-gyp to lifecycle scripts; run directly (`npm run build`, or by hand), use the
  // one bundled with the npm next to this node, else one on PATH.
  const bundled = join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  const gyp = [env.npm_config_node_gyp, bundled].find((p) => p && existsSync(p));
  return { env, cmd: gyp ? process.execPath : 'node-gyp', args: gyp ? [gyp, 'rebuild'] : ['rebuild'] };
}

function fail(status, cmd, error) {
  if (error) console.error(`commy: cannot run ${cmd}: ${error.message}`);
  console.error(
    `\ncommy: building the native addon failed (${process.platform}-${process.arch}, Node ${process.version}, ABI ${process.versions.modules}).\n` +
      "It needs python3, make, g++ and Node's headers (include/node next to the node binary, or npm_config_nodedir).",
  );
  process.exit(status ?? 1);
}

const want = stamp();
if (process.env.COMMY_FORCE_BUILD !== '1' && upToDate(want)) {
  console.log('commy: native addon up to date (build/Release/commy_native.node)');
  process.exit(0);
}

// Inside the package, so that binding.gyp's require('node-addon-api') finds node_modules from there too.
const work = mkdtempSync(join(root, '.native-build-'));
try {
  cpSync(join(root, 'binding.gyp'), join(work, 'binding.gyp'));
  cpSync(join(root, 'native'), join(work, 'native'), { recursive: true });
  const { env, cmd, args } = nodeGyp();
  const result = spawnSync(cmd, args, { cwd: work, stdio: 'inherit', env });
  if (result.error || result.status !== 0) fail(result.status, cmd, result.error);
  mkdirSync(release, { recursive: true });
  // Copied next to the target first: a rename within one directory replaces it in one step.
  const next = `${addon}.${process.pid}.tmp`;
  cpSync(join(work, 'build', 'Release', 'commy_native.node'), next);
  renameSync(next, addon);
  writeFileSync(`${stampFile}.${process.pid}.tmp`, `${want}\n`);
  renameSync(`${stampFile}.${process.pid}.tmp`, stampFile);
  console.log('commy: native addon built (build/Release/commy_native.node)');
} finally {
  rmSync(work, { recursive: true, force: true });
}
