import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { VariableType } from '../src/index.js';
import { startChild } from './helpers/child.js';
import { RawClient, errorCode } from './helpers/raw-client.js';
import { TEST_TENANTS, startServer } from './helpers/server.js';
import { tempDir } from './helpers/temp.js';

/** Local mode's trust model (docs/security.md): the key unlocks the path, the OS decides what a process may do with the file. */

async function connect(t: { after(fn: () => void): void }, url: string, key: string, tenant = 'acme'): Promise<RawClient> {
  const c = await RawClient.connect(url);
  t.after(() => c.close());
  assert.equal((await c.auth(tenant, key)).type, 'Authenticated');
  return c;
}

async function until(what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('files.group: a tenant\'s files belong to its group, and the OS lets a group member map them read-only, not write', { skip: process.getuid?.() !== 0 && 'needs root to act as another user' }, async (t) => {
  const dataDir = tempDir(t, 'commy-group-');
  chmodSync(dataDir, 0o711); // the test's own temp dir: let the other user pass through
  const gid = 4242;
  const tenants = { ...TEST_TENANTS, acme: { ...TEST_TENANTS.acme, files: { group: gid, mode: '0640' } } };
  const server = await startServer(t, { dataDir: join(dataDir, 'data'), config: { tenants, audit: { enabled: false } } });
  const c = await connect(t, server.url, 'ops:s3cret');
  const reply = await c.request('GetServiceFilePath', { tenant: 'acme', service: 'shared', create: true });
  const path = (reply.body as { filePath: string }).filePath;
  const file = statSync(path);
  assert.equal(file.gid, gid);
  assert.equal(file.mode & 0o777, 0o640);
  const dir = statSync(join(dataDir, 'data', 'tenants', 'acme'));
  assert.deepEqual([dir.gid, dir.mode & 0o777], [gid, 0o750]);
  // Another user in the group: may open the file read-only, never read-write (whatever key it holds).
  const probe = (flags: string) =>
    spawnSync(process.execPath, ['-e', `require('fs').closeSync(require('fs').openSync(${JSON.stringify(path)}, '${flags}'))`], { uid: 4343, gid, encoding: 'utf8' });
  assert.equal(probe('r').status, 0, probe('r').stderr);
  const rw = probe('r+');
  assert.notEqual(rw.status, 0);
  assert.match(rw.stderr, /EACCES/);
  // A tenant without the setting keeps its files private.
  const beta = await connect(t, server.url, 'beta-secret', 'beta');
  const betaPath = ((await beta.request('GetServiceFilePath', { tenant: 'beta', service: 'private', create: true })).body as { filePath: string }).filePath;
  assert.equal(statSync(betaPath).mode & 0o777, 0o600);
  const other = spawnSync(process.execPath, ['-e', `require('fs').openSync(${JSON.stringify(betaPath)}, 'r')`], { uid: 4343, gid, encoding: 'utf8' });
  assert.notEqual(other.status, 0);
});

test('a local process\'s writes into the mapped file are audited, with its pid', async (t) => {
  const dir = tempDir(t);
  const auditFile = join(dir, 'audit.log');
  const server = await startServer(t, { config: { tenants: TEST_TENANTS, audit: { file: auditFile } } });
  const c = await connect(t, server.url, 'ops:s3cret');
  const snap = await c.request('Subscription', { tenant: 'acme', service: 'plant', create: true });
  const sid = (snap.body as { sid: number }).sid;
  await c.request('RegisterVariable', { sid, name: 'temp', offset: -1, size: 8, typeId: VariableType.U64 });
  const path = ((await c.request('GetServiceFilePath', { tenant: 'acme', service: 'plant' })).body as { filePath: string }).filePath;
  const writer = startChild('local-writer', [path, 'temp', '42'], t);
  const { pid } = await writer.next<{ pid: number }>('written');
  const line = (): Record<string, unknown> | undefined =>
    existsSync(auditFile)
      ? readFileSync(auditFile, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>)
          .find((l) => l.event === 'LocalVariablesChanged')
      : undefined;
  await until('the audit line of the local write', () => line() !== undefined);
  const found = line()!;
  assert.deepEqual([found.tenant, found.service, found.variables, found.pid], ['acme', 'plant', ['temp'], pid]);
  assert.equal(statSync(auditFile).mode & 0o777, 0o600);
});

test('errors sent to clients never carry the server\'s data path', async (t) => {
  const dataDir = tempDir(t, 'commy-paths-');
  const server = await startServer(t, { dataDir });
  const elsewhere = tempDir(t);
  // A tenant directory planted as a symbolic link: refused, and the refusal does not say where the data is.
  mkdirSync(join(dataDir, 'tenants'), { recursive: true });
  symlinkSync(elsewhere, join(dataDir, 'tenants', 'beta'));
  const beta = await connect(t, server.url, 'beta-secret', 'beta');
  const reply = await beta.request('GetServiceFilePath', { tenant: 'beta', service: 'x', create: true });
  assert.equal(errorCode(reply), 'INVALID_FILE');
  const message = (reply.body as { message: string }).message;
  assert.ok(!message.includes(dataDir), message);
  assert.ok(!message.includes(elsewhere), message);
});

test('a tenant directory swapped for a symbolic link after its first use is refused at the next open', async (t) => {
  const dataDir = tempDir(t, 'commy-swap-');
  const server = await startServer(t, { dataDir });
  const acme = await connect(t, server.url, 'ops:s3cret');
  assert.equal((await acme.request('Subscription', { tenant: 'acme', service: 'first', create: true })).type, 'Snapshot');
  const beta = await connect(t, server.url, 'beta-secret', 'beta');
  assert.equal((await beta.request('Subscription', { tenant: 'beta', service: 'own', create: true })).type, 'Snapshot');
  const tenants = join(dataDir, 'tenants');
  renameSync(join(tenants, 'acme'), join(tenants, 'acme.real'));
  symlinkSync(join(tenants, 'beta'), join(tenants, 'acme'));
  assert.equal(errorCode(await acme.request('Subscription', { tenant: 'acme', service: 'planted', create: true })), 'INVALID_FILE');
  assert.equal(existsSync(join(tenants, 'beta', 'planted.mem')), false);
});
