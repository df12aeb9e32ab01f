import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ConfigError, defaultDevTenant, isServerConfig, loadConfig, withLimits } from '../src/server/config.js';
import { Authenticator } from '../src/server/auth.js';
import { verifySecret } from '../src/server/key-hash.js';
import { ByteRate, DEFAULT_LIMITS, RateLimiter } from '../src/server/limits.js';
import { loadTls, selfSignedTls } from '../src/server/tls.js';
import { tempDir } from './helpers/temp.js';

const run = promisify(execFile);
// dist/test/config.test.js → dist/src/cli.js
const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));

function writeJson(dir: string, name: string, value: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
  return file;
}

/** loadConfig must refuse `input` with CONFIG_INVALID naming `field`. */
function assertRefused(input: string | Record<string, unknown>, field: string): void {
  assert.throws(
    () => loadConfig(input),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.code, 'CONFIG_INVALID');
      assert.equal(err.field, field);
      assert.ok(err.message.includes(`${field}:`), err.message);
      return true;
    },
  );
}

test('defaults', () => {
  const config = loadConfig();
  assert.equal(config.host, '127.0.0.1');
  assert.equal(config.port, 9000);
  assert.equal(config.dataDir, './commy-data');
  assert.deepEqual(config.tenants, {});
  assert.deepEqual(config.limits, DEFAULT_LIMITS);
  assert.equal(config.tick, 'immediate');
  assert.deepEqual(config.audit, { enabled: true }, 'audited by default (to <dataDir>/audit.log)');
  assert.equal(config.tls, undefined);
  assert.ok(isServerConfig(config));
  assert.ok(!isServerConfig({ host: 'x' }));
});

test('an object config: defaults filled in, limits merged deeply, globs default to none', () => {
  const config = loadConfig({
    port: 0,
    tenants: { acme: { keys: [{ id: 'ops', secret: 's', read: ['*'] }] } },
    limits: { maxConnections: 5, rateLimit: { burst: 3 } },
    tick: 20,
    audit: { file: 'audit.log' },
  });
  assert.equal(config.port, 0);
  assert.deepEqual(config.tenants.acme?.keys[0], { id: 'ops', secret: 's', read: ['*'], write: [], admin: [] });
  assert.equal(config.limits.maxConnections, 5);
  assert.equal(config.limits.maxFrameBytes, DEFAULT_LIMITS.maxFrameBytes);
  assert.deepEqual(config.limits.rateLimit, { messagesPerSecond: DEFAULT_LIMITS.rateLimit.messagesPerSecond, burst: 3 });
  assert.equal(config.tick, 20);
  assert.deepEqual(config.audit, { enabled: true, file: 'audit.log' });
  // A loaded config goes through again unchanged (Server.start accepts either).
  assert.deepEqual(loadConfig(config), config);
});

test('a bad config names the field', (t) => {
  const dir = tempDir(t);
  assertRefused(writeJson(dir, 'port.json', { port: '9000' }), 'port');
  assertRefused({ port: 70000 }, 'port');
  assertRefused({ hots: '0.0.0.0' }, 'hots');
  assertRefused({ limits: { maxFrameBytes: 1, maxFrames: 2 } }, 'limits.maxFrames');
  assertRefused({ tenants: { '../x': { keys: [] } } }, 'tenants["../x"]');
  assertRefused({ tenants: { acme: { keys: [{ id: 'a/b', secret: 's' }] } } }, 'tenants.acme.keys[0].id');
  assertRefused({ tenants: { acme: { keys: [{ id: 'ops', secret: 's', read: 'x' }] } } }, 'tenants.acme.keys[0].read');
  assertRefused({ tenants: { acme: { keys: [{ id: 'ops', secret: 's', extra: 1 }] } } }, 'tenants.acme.keys[0].extra');
  assertRefused({ tenants: { acme: { keys: [{ id: 'ops', secret: 's' }, { id: 'ops', secret: 't' }] } } }, 'tenants.acme.keys[1].id');
  assertRefused({ tenants: { acme: { keys: [{ id: 'ops', secret: 'scrypt$1$2$3$x$y' }] } } }, 'tenants.acme.keys[0].secret');
  assertRefused({ tenants: { acme: { keys: [], jwt: { issuer: 'me' } } } }, 'tenants.acme.jwt.secret');
  assertRefused({ tick: 'sometimes' }, 'tick');
  assertRefused({ limits: { maxNameLength: 65 } }, 'limits.maxNameLength');
  assertRefused({ limits: { maxServiceFileBytes: 3_000_001 } }, 'limits.maxServiceFileBytes');
  assertRefused({ limits: { rateLimit: { burst: 0 } } }, 'limits.rateLimit.burst');
  assertRefused({ audit: { enabled: 'yes' } }, 'audit.enabled');
});

test('an unreadable or invalid JSON file is CONFIG_INVALID', (t) => {
  const dir = tempDir(t);
  assert.throws(() => loadConfig(writeJson(dir, 'broken.json', '{ "port": 9000,')), { code: 'CONFIG_INVALID' });
  assert.throws(() => loadConfig(join(dir, 'missing.json')), { code: 'CONFIG_INVALID' });
});

test('relative paths in a file resolve against its directory', (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'etc'));
  const file = writeJson(dir, 'etc/commy.json', { dataDir: 'data', tls: { cert: 'cert.pem', key: '/abs/key.pem' }, audit: { file: '../log/audit.log' } });
  const config = loadConfig(file);
  assert.equal(config.dataDir, join(dir, 'etc', 'data'));
  assert.deepEqual(config.tls, { cert: join(dir, 'etc', 'cert.pem'), key: '/abs/key.pem' });
  assert.equal(config.audit.file, join(dir, 'log', 'audit.log'));
  // An object is not a file: its paths stay as given.
  assert.equal(loadConfig({ dataDir: 'data' }).dataDir, 'data');
});

test('TLS files: loaded when readable and matching, CONFIG_INVALID otherwise', async (t) => {
  const dir = tempDir(t);
  const a = await selfSignedTls(['example.test']);
  const b = await selfSignedTls();
  writeFileSync(join(dir, 'cert.pem'), a.cert);
  writeFileSync(join(dir, 'key.pem'), a.key);
  writeFileSync(join(dir, 'other-key.pem'), b.key);
  const config = loadConfig(writeJson(dir, 'commy.json', { tls: { cert: 'cert.pem', key: 'key.pem' } }));
  assert.deepEqual(loadTls(config.tls!), a);
  assert.throws(() => loadTls({ cert: join(dir, 'cert.pem'), key: join(dir, 'nope.pem') }), { code: 'CONFIG_INVALID' });
  assert.throws(() => loadTls({ cert: join(dir, 'key.pem'), key: join(dir, 'key.pem') }), { code: 'CONFIG_INVALID' });
  assert.throws(() => loadTls({ cert: join(dir, 'cert.pem'), key: join(dir, 'other-key.pem') }), { code: 'CONFIG_INVALID' });
});

test('the dev tenant: a fresh key that authenticates with every right', async () => {
  const one = defaultDevTenant();
  const two = defaultDevTenant();
  assert.notEqual(one.apiKey, two.apiKey);
  assert.match(one.apiKey, /^dev:[A-Za-z0-9_-]{32}$/);
  const grants = await new Authenticator({ dev: one.config }).authenticate('dev', 'apiKey', one.apiKey);
  assert.deepEqual(grants, { tenant: 'dev', keyId: 'dev', principal: 'key:dev', read: ['*'], write: ['*'], admin: ['*'] });
});

test('rate limiter: a burst, then the sustained rate', () => {
  const limiter = new RateLimiter({ messagesPerSecond: 10, burst: 3 });
  // Whole milliseconds: with a fractional clock, (t0 + 100) - (t0 + 50) is not exactly 50 and half a token
  // plus half a token can fall just short of one.
  const t0 = Math.ceil(performance.now()) + 1000;
  assert.deepEqual([1, 2, 3, 4].map(() => limiter.take(t0)), [true, true, true, false]);
  assert.equal(limiter.take(t0 + 50), false); // half a token
  assert.equal(limiter.take(t0 + 100), true);
  assert.equal(limiter.take(t0 + 100), false);
  assert.equal(limiter.take(t0 + 10_000), true); // refills to the burst, not beyond
  assert.equal([1, 2, 3].filter(() => limiter.take(t0 + 10_000)).length, 2);
});

test('cli: hash-key prints a hash that verifies', async () => {
  const { stdout } = await run(process.execPath, [CLI, 'hash-key', 's3cret']);
  const hash = stdout.trim();
  assert.match(hash, /^scrypt\$16384\$8\$1\$/);
  assert.equal(await verifySecret('s3cret', hash), true);
  assert.equal(await verifySecret('s3cret!', hash), false);
});

test('cli: hash-key reads the secret from stdin', async () => {
  const child = run(process.execPath, [CLI, 'hash-key']);
  child.child.stdin!.end('from stdin\nignored\n');
  const { stdout } = await child;
  assert.equal(await verifySecret('from stdin', stdout.trim()), true);
});

test('cli: serve with a bad config exits 2 naming the field', async (t) => {
  const dir = tempDir(t);
  const file = writeJson(dir, 'bad.json', { port: 'x', tenants: { acme: { keys: [{ id: 'ops', secret: 's', read: 'x' }] } } });
  await assert.rejects(run(process.execPath, [CLI, 'serve', '--config', file], { cwd: resolve(dir) }), (err: { code: number; stderr: string }) => {
    assert.equal(err.code, 2);
    assert.match(err.stderr, /^commy: /);
    assert.ok(err.stderr.includes('port:'), err.stderr);
    assert.ok(err.stderr.includes('tenants.acme.keys[0].read:'), err.stderr);
    return true;
  });
});

test('security settings are checked at load: key globs past the pattern limits, an unknown files group', () => {
  const key = (read: string[]) => ({ tenants: { acme: { keys: [{ id: 'k', secret: 's', read }] } } });
  assert.throws(() => loadConfig(key(Array.from({ length: 65 }, (_, i) => `s${i}`))), (err: ConfigError) => err.field === 'tenants.acme.keys[0].read');
  assert.throws(() => loadConfig(key(['x'.repeat(257)])), (err: ConfigError) => err.field === 'tenants.acme.keys[0].read');
  assert.equal(loadConfig({ ...key(Array.from({ length: 65 }, (_, i) => `s${i}`)), limits: { maxPatterns: 100 } }).tenants.acme?.keys[0]?.read.length, 65);
  assert.throws(() => loadConfig({ tenants: { acme: { keys: [], files: { group: 'no-such-group-commy' } } } }), (err: ConfigError) => err.field === 'tenants.acme.files.group');
  assert.equal(loadConfig({ tenants: { acme: { keys: [], files: { group: 0, mode: '0660' } } } }).tenants.acme?.files?.mode, '0660');
  assert.throws(() => loadConfig({ tenants: { acme: { keys: [], files: { group: 0, mode: '0666' } } } }), (err: ConfigError) => err.field === 'tenants.acme.files.mode');
});

test('ByteRate: a burst is free, then the debt says how long to stop reading; it refills with time', () => {
  const rate = new ByteRate(1000, 2000); // 1 byte per ms, 2,000 saved up at most
  // A whole number of ms (after the constructor's clock): with a fractional t0, (t0 + 500) - t0 may come out as
  // 499.99999999, leaving a debt of a hair and a wait of 1 ms where the test says 0 (seen failing in a full run).
  const t0 = Math.ceil(performance.now()) + 1;
  assert.equal(rate.spend(2000, t0), 0);
  assert.equal(rate.spend(500, t0), 500, '500 bytes of debt at 1 byte/ms: 500 ms');
  assert.equal(rate.spend(0, t0 + 500), 0, 'repaid');
  assert.equal(rate.spend(100, t0 + 1000), 0, 'refilled meanwhile');
  assert.equal(rate.spend(10_000, t0 + 1_000_000), 8000, 'never more than the burst saved up');
});

test('withLimits (Server.start({ limits })): checked by the config schema, merged deeply', () => {
  const merged = withLimits(DEFAULT_LIMITS, { rateLimit: { burst: 5 }, maxConnections: 7 });
  assert.deepEqual(merged.rateLimit, { messagesPerSecond: DEFAULT_LIMITS.rateLimit.messagesPerSecond, burst: 5 });
  assert.equal(merged.maxConnections, 7);
  assert.equal(merged.maxFrameBytes, DEFAULT_LIMITS.maxFrameBytes);
  assert.throws(() => withLimits(DEFAULT_LIMITS, { maxConnections: -1 }), (err: ConfigError) => err.field === 'limits.maxConnections');
  assert.throws(() => withLimits(DEFAULT_LIMITS, { maxConnectoins: 5 }), (err: ConfigError) => err.field === 'limits.maxConnectoins');
});

test('defaults: the schema fills in what a file leaves out; dataDir stays relative to the current directory', (t) => {
  const dir = tempDir(t);
  const config = loadConfig(writeJson(dir, 'commy.json', { audit: { maxFiles: 2 }, tenants: { acme: {} } }));
  assert.equal(config.dataDir, './commy-data', 'the default is not resolved against the file');
  assert.deepEqual(config.audit, { enabled: true, maxFiles: 2 });
  assert.deepEqual(config.tenants.acme, { keys: [] });
  // Fields given as undefined are left out, as if absent.
  const bare = loadConfig({ tls: undefined, audit: { file: undefined } });
  assert.equal('tls' in bare, false);
  assert.deepEqual(bare.audit, { enabled: true });
  assert.equal(loadConfig({ audit: { enabled: false } }).audit.enabled, false);
});
