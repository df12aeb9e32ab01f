import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { Server } from '../src/server/index.js';
import { DEFAULT_LIMITS } from '../src/server/limits.js';
import { ServiceRegistry } from '../src/server/service-registry.js';
import { tempDir } from './helpers/temp.js';

type T = Parameters<typeof tempDir>[0];
const BROADCAST = { tick: 'immediate' as const, maxBufferedBytes: 1 << 20, maxFrameBytes: 1 << 20 };
const OTHER_UID = 12345;

function open(t: T, dataDir: string): ServiceRegistry {
  const r = new ServiceRegistry(dataDir, DEFAULT_LIMITS, BROADCAST);
  t.after(() => r.close());
  return r;
}

const modeOf = (path: string) => statSync(path).mode & 0o777;

test('a fresh data directory is created 0700, with tenants/ and tenant directories 0700', (t) => {
  const dataDir = join(tempDir(t), 'nested', 'data');
  const r = open(t, dataDir);
  assert.equal(modeOf(dataDir), 0o700);
  assert.equal(modeOf(join(dataDir, 'tenants')), 0o700);
  r.get('acme', 'plant', true);
  assert.equal(modeOf(join(dataDir, 'tenants', 'acme')), 0o700);
});

test('an existing 0755 data directory is fine (not writable by others)', (t) => {
  const dataDir = join(tempDir(t), 'data');
  mkdirSync(dataDir, { mode: 0o755 });
  chmodSync(dataDir, 0o755);
  open(t, dataDir).get('acme', 'plant', true);
});

test('a data directory writable by group or others is refused at start (CONFIG_INVALID)', (t) => {
  for (const mode of [0o777, 0o775, 0o757]) {
    const dataDir = join(tempDir(t), 'data');
    mkdirSync(dataDir);
    chmodSync(dataDir, mode);
    assert.throws(() => open(t, dataDir), { code: 'CONFIG_INVALID', message: /must not be writable by group or others/ });
  }
});

test('a tenants/ directory writable by others is refused at start', (t) => {
  const dataDir = tempDir(t);
  mkdirSync(join(dataDir, 'tenants'));
  chmodSync(join(dataDir, 'tenants'), 0o777);
  assert.throws(() => open(t, dataDir), { code: 'CONFIG_INVALID' });
});

test('a data directory or tenants/ that is a symlink is refused at start', (t) => {
  const base = tempDir(t);
  mkdirSync(join(base, 'real'), { mode: 0o700 });
  symlinkSync(join(base, 'real'), join(base, 'link'));
  assert.throws(() => open(t, join(base, 'link')), { code: 'CONFIG_INVALID', message: /symbolic link/ });

  const dataDir = join(base, 'data');
  mkdirSync(dataDir, { mode: 0o700 });
  symlinkSync(join(base, 'real'), join(dataDir, 'tenants'));
  assert.throws(() => open(t, dataDir), { code: 'CONFIG_INVALID', message: /symbolic link/ });
});

test('a data directory owned by another uid is refused at start', (t) => {
  const dataDir = join(tempDir(t), 'data');
  mkdirSync(dataDir, { mode: 0o700 });
  chownSync(dataDir, OTHER_UID, OTHER_UID);
  assert.throws(() => open(t, dataDir), { code: 'CONFIG_INVALID', message: /owned by uid 12345/ });
});

test('a tenant directory that is a symlink to another directory is refused (INVALID_FILE); nothing is created there', (t) => {
  const dataDir = tempDir(t);
  const r = open(t, dataDir);
  const elsewhere = join(tempDir(t), 'elsewhere');
  mkdirSync(elsewhere, { mode: 0o700 });
  symlinkSync(elsewhere, join(dataDir, 'tenants', 'acme'));
  assert.throws(() => r.get('acme', 'plant', true), { code: 'INVALID_FILE', message: /symbolic link/ });
  assert.throws(() => r.get('acme', 'plant', false), { code: 'INVALID_FILE' });
  assert.throws(() => r.exists('acme', 'plant'), { code: 'INVALID_FILE' });
  assert.deepEqual(readdirSync(elsewhere), []);
  r.get('beta', 'plant', true); // other tenants are fine
});

test('a tenant directory writable by others, or owned by another uid, is refused', (t) => {
  const dataDir = tempDir(t);
  const r = open(t, dataDir);
  const open777 = join(dataDir, 'tenants', 'acme');
  mkdirSync(open777);
  chmodSync(open777, 0o777);
  assert.throws(() => r.get('acme', 'plant', true), { code: 'INVALID_FILE', message: /writable by group or others/ });
  assert.equal(existsSync(join(open777, 'plant.mem')), false);

  const foreign = join(dataDir, 'tenants', 'beta');
  mkdirSync(foreign, { mode: 0o700 });
  chownSync(foreign, OTHER_UID, OTHER_UID);
  assert.throws(() => r.get('beta', 'plant', true), { code: 'INVALID_FILE', message: /owned by uid/ });
});

test('a service file that is a symlink is refused', (t) => {
  const dataDir = tempDir(t);
  const r = open(t, dataDir);
  const real = r.get('acme', 'real', true);
  symlinkSync(real.file.path, join(dataDir, 'tenants', 'acme', 'alias.mem'));
  assert.throws(() => r.get('acme', 'alias', false), { code: 'INVALID_FILE' });
});

test('Server.start refuses an insecure data directory with CONFIG_INVALID', async (t) => {
  const dataDir = join(tempDir(t), 'data');
  mkdirSync(dataDir);
  chmodSync(dataDir, 0o777);
  await assert.rejects(Server.start({ host: '127.0.0.1', port: 0, dataDir, config: { audit: { enabled: false } } }), { code: 'CONFIG_INVALID' });
});
