#!/usr/bin/env node
// Builds the native addon from source with node-gyp (run by `npm install`).
// Node's headers ship with the node binary on Debian-style installs (/usr/include/node); point node-gyp at
// them so the build never tries to download headers (machines here have no internet).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

const prefix = dirname(dirname(process.execPath));
const env = { ...process.env };
if (!env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix;

// npm exposes its bundled node-gyp to lifecycle scripts; run directly (`npm run build`, or by hand), use the
// one bundled with the npm next to this node, else one on PATH.
const bundled = join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const gyp = [env.npm_config_node_gyp, bundled].find((p) => p && existsSync(p));
const [cmd, args] = gyp ? [process.execPath, [gyp, 'rebuild']] : ['node-gyp', ['rebuild']];
const result = spawnSync(cmd, args, { stdio: 'inherit', env });
if (result.error) console.error(`commy: cannot run ${cmd}: ${result.error.message}`);
if (result.status !== 0) {
  console.error(
    `\ncommy: building the native addon failed (${process.platform}-${process.arch}, Node ${process.version}, ABI ${process.versions.modules}).\n` +
      'It needs python3, make, g++ and Node\'s headers (include/node next to the node binary, or npm_config_nodedir).',
  );
  process.exit(result.status ?? 1);
}
