import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { VariableMetadata } from '../src/core/variable-metadata.js';
import { VariableType } from '../src/core/variable-type.js';
import { ServiceFile } from '../src/local/service-file.js';
import { DEFAULT_LIMITS, type Limits } from '../src/server/limits.js';
import { NEW_SERVICE_BYTES, SERVICE_CREATIONS_PER_SECOND } from '../src/server/quotas.js';
import type { ServiceHost } from '../src/server/service-host.js';
import { ServiceRegistry } from '../src/server/service-registry.js';
import { tempDir } from './helpers/temp.js';

type T = Parameters<typeof tempDir>[0];
const BROADCAST = { tick: 'immediate' as const, maxBufferedBytes: 1 << 20, maxFrameBytes: 1 << 20 };

function registry(t: T, limits: Partial<Limits> = {}, dir = tempDir(t)): ServiceRegistry {
  const r = new ServiceRegistry(dir, { ...DEFAULT_LIMITS, ...limits }, BROADCAST);
  t.after(() => r.close());
  return r;
}

const bytesVar = (name: string, size: number) => new VariableMetadata(name, -1, size, VariableType.Bytes);
const u64 = (name: string) => new VariableMetadata(name, -1, 8, VariableType.U64);

/** What a session does: check the quota, then register. */
function register(r: ServiceRegistry, host: ServiceHost, meta: VariableMetadata): void {
  r.checkRegistration(host, meta);
  host.file.register(meta);
}

async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// ---- per-tenant quotas ----------------------------------------------------------------------------

test('maxServicesPerTenant: one service too many is QUOTA_EXCEEDED and nothing is created on disk', (t) => {
  const r = registry(t, { maxServicesPerTenant: 3 });
  for (const s of ['a', 'b', 'c']) r.get('acme', s, true);
  assert.throws(() => r.get('acme', 'd', true), { code: 'QUOTA_EXCEEDED' });
  assert.equal(existsSync(r.pathOf('acme', 'd')), false);
  assert.equal(r.exists('acme', 'd'), false);
  // Existing services still open (create on an existing one creates nothing); other tenants are not affected.
  assert.equal(r.get('acme', 'a', true).service, 'a');
  r.get('beta', 'd', true);
  assert.deepEqual(r.usage('acme').services, 3);
});

test('the services quota counts files other processes created', (t) => {
  const dir = tempDir(t);
  const tenantDir = join(dir, 'tenants', 'acme');
  mkdirSync(tenantDir, { recursive: true, mode: 0o700 });
  for (const s of ['x', 'y']) ServiceFile.open(join(tenantDir, `${s}.mem`), { create: true }).close();
  const r = registry(t, { maxServicesPerTenant: 3 }, dir);
  r.get('acme', 'z', true);
  assert.throws(() => r.get('acme', 'w', true), { code: 'QUOTA_EXCEEDED' });
});

test('maxVariablesPerTenant counts every service of the tenant; re-registering the same variable is free', (t) => {
  const r = registry(t, { maxVariablesPerTenant: 5 });
  const a = r.get('acme', 'a', true);
  const b = r.get('acme', 'b', true);
  for (const n of ['v1', 'v2', 'v3']) register(r, a, u64(n));
  for (const n of ['v1', 'v2']) register(r, b, u64(n));
  assert.throws(() => r.checkRegistration(b, u64('v3')), { code: 'QUOTA_EXCEEDED' });
  assert.equal(b.file.list().length, 2, 'nothing registered');
  r.checkRegistration(a, u64('v1')); // already there: adds nothing
  const other = r.get('beta', 'a', true);
  register(r, other, u64('v1'));
  assert.equal(r.usage('acme').variables, 5);
});

test('checks that pass reserve: a burst of checks cannot overshoot before the usage is read again', (t) => {
  const r = registry(t, { maxVariablesPerTenant: 3 });
  const host = r.get('acme', 'a', true);
  for (const n of ['v1', 'v2', 'v3']) r.checkRegistration(host, u64(n));
  assert.throws(() => r.checkRegistration(host, u64('v4')), { code: 'QUOTA_EXCEEDED' });
});

test('maxBytesPerTenant counts file sizes and the growth a registration causes', (t) => {
  const r = registry(t, { maxBytesPerTenant: NEW_SERVICE_BYTES + 8192 });
  const host = r.get('acme', 'a', true);
  const size = () => statSync(host.file.path).size;
  assert.equal(size(), NEW_SERVICE_BYTES);
  register(r, host, bytesVar('one', 4000)); // fits the initial 4 KiB data region: no growth
  register(r, host, bytesVar('two', 4000)); // grows the data region to 8 KiB: +4 KiB
  assert.equal(size(), NEW_SERVICE_BYTES + 4096);
  // The next one would double the region to 16 KiB: +8 KiB, past the quota.
  assert.throws(() => r.checkRegistration(host, bytesVar('three', 4000)), { code: 'QUOTA_EXCEEDED' });
  assert.equal(size(), NEW_SERVICE_BYTES + 4096, 'the file did not grow');
  register(r, host, u64('small')); // still fits the current capacity
  assert.throws(() => r.get('acme', 'b', true), { code: 'QUOTA_EXCEEDED' }, 'a new file would pass the byte quota too');
  assert.equal(existsSync(r.pathOf('acme', 'b')), false);
});

test('usage is read from disk: a local registration is seen (within about a second)', async (t) => {
  const r = registry(t);
  const host = r.get('acme', 'a', true);
  assert.equal(r.usage('acme').variables, 0);
  const local = ServiceFile.open(host.file.path);
  t.after(() => local.close());
  local.register(u64('from-local'));
  await until('the usage to be read again', () => r.usage('acme').variables === 1);
});

test(`service creation rate: past ${SERVICE_CREATIONS_PER_SECOND} per second per tenant, RATE_LIMITED`, (t) => {
  const r = registry(t);
  const started = performance.now();
  let created = 0;
  let limited = 0;
  for (let i = 0; i < 200; i++) {
    try {
      r.get('acme', `s${i}`, true);
      created++;
    } catch (err) {
      assert.equal((err as { code?: string }).code, 'RATE_LIMITED');
      assert.equal(existsSync(r.pathOf('acme', `s${i}`)), false);
      limited++;
    }
  }
  const seconds = (performance.now() - started) / 1000;
  assert.ok(limited > 0, 'some creations were refused');
  assert.ok(created >= SERVICE_CREATIONS_PER_SECOND, 'the burst is allowed');
  assert.ok(created <= SERVICE_CREATIONS_PER_SECOND * (1 + seconds) + 1, `${created} created in ${seconds.toFixed(2)} s`);
  r.get('beta', 'x', true); // another tenant has its own budget
});

// ---- open services: reference counting and idle close --------------------------------------------

test('released services are closed after serviceIdleMs; a retained one never is', async (t) => {
  const r = registry(t, { serviceIdleMs: 50 });
  const kept = r.acquire('acme', 'kept', true); // get + retain
  const hosts = ['a', 'b', 'c'].map((s) => r.get('acme', s, true));
  for (const h of hosts) r.retain(h);
  assert.equal(r.openCount, 4);
  for (const h of hosts) r.release(h);
  await until('idle services to close', () => r.openCount === 1);
  for (const h of hosts) assert.equal(h.file.closed, true);
  assert.equal(kept.file.closed, false);
  assert.equal(r.get('acme', 'kept', false), kept, 'still the same open host');
  // The next get reopens a closed service (a new host).
  const again = r.get('acme', 'a', false);
  assert.notEqual(again, hosts[0]);
  assert.equal(again.file.closed, false);
  r.release(kept);
  await until('the last release to close it too', () => r.openCount === 0);
});

test('a host obtained by get and never retained is closed after serviceIdleMs too', async (t) => {
  const r = registry(t, { serviceIdleMs: 50 });
  const host = r.get('acme', 'a', true);
  assert.equal(r.openCount, 1);
  await until('the unretained host to close', () => r.openCount === 0);
  assert.equal(host.file.closed, true);
  assert.throws(() => r.retain(host), { code: 'CLOSED' }, 'a closed host cannot be retained: get it again');
  r.release(host); // harmless
});

test('maxOpenServices: all in use → QUOTA_EXCEEDED; otherwise the longest-idle one is closed to make room', (t) => {
  const r = registry(t, { maxOpenServices: 3, serviceIdleMs: 60_000 });
  const [a, b, c] = ['a', 'b', 'c'].map((s) => r.get('acme', s, true)) as [ServiceHost, ServiceHost, ServiceHost];
  for (const h of [a, b, c]) r.retain(h);
  assert.throws(() => r.get('acme', 'd', true), { code: 'QUOTA_EXCEEDED', message: /too many open services/ });
  assert.equal(existsSync(r.pathOf('acme', 'd')), false);

  for (const h of [a, b, c]) r.release(h); // idle order: a, b, c
  r.get('acme', 'a', false); // a use: a is now the most recently idle
  r.get('acme', 'd', true);
  assert.equal(r.openCount, 3);
  assert.equal(b.file.closed, true, 'the longest idle is closed first');
  assert.equal(a.file.closed, false);
  assert.equal(c.file.closed, false);
});

test('close() closes every service; the registry refuses use afterwards', (t) => {
  const r = registry(t);
  const hosts = ['a', 'b'].map((s) => r.get('acme', s, true));
  r.retain(hosts[0]!);
  r.close();
  assert.equal(r.openCount, 0);
  for (const h of hosts) assert.equal(h.file.closed, true);
  assert.throws(() => r.get('acme', 'a', false), { code: 'CLOSED' });
  r.close(); // idempotent
});
