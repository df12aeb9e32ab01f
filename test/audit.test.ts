import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { MAX_AUDIT_VARIABLES, createAuditLog, type AuditEvent, type WarningLogger } from '../src/server/audit.js';
import { loadConfig } from '../src/server/config.js';
import { tempDir } from './helpers/temp.js';

const event = (i: number, variables?: string[]): AuditEvent => ({
  event: 'VariablesChanged',
  clientId: `c${i}`,
  keyId: 'ops',
  tenant: 'acme',
  service: 'plant',
  variables: variables ?? [`v${i}`],
});

const linesOf = (path: string) =>
  readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

test('the audit file is created 0600; an existing 0644 file is made 0600', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'logs', 'audit.log');
  const log = createAuditLog({ enabled: true, file });
  log.record(event(1));
  await log.close();
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.equal(linesOf(file).length, 1);

  const old = join(dir, 'old.log');
  writeFileSync(old, '', { mode: 0o644 });
  const again = createAuditLog({ enabled: true, file: old });
  await again.close();
  assert.equal(statSync(old).mode & 0o777, 0o600);
});

test('rotation: past maxBytes the file moves to .1 (… .maxFiles); disk use stays bounded and nothing is lost in between', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'audit.log');
  writeFileSync(join(dir, 'audit.log.9'), 'left over from a larger maxFiles\n');
  const maxBytes = 4096;
  const maxFiles = 2;
  const log = createAuditLog({ enabled: true, file, maxBytes, maxFiles });
  const count = 1000; // ~150 KB: many rotations
  for (let i = 0; i < count; i++) log.record(event(i));
  await log.close();

  const names = readdirSync(dir).sort();
  assert.deepEqual(names, ['audit.log', 'audit.log.1', 'audit.log.2']);
  const files = [join(dir, 'audit.log.2'), join(dir, 'audit.log.1'), file];
  const lines = files.flatMap(linesOf);
  const longest = Math.max(...files.flatMap((f) => readFileSync(f, 'utf8').split('\n').map((l) => l.length + 1)));
  const total = files.reduce((sum, f) => sum + statSync(f).size, 0);
  assert.ok(total <= (maxFiles + 1) * maxBytes + longest, `${total} bytes on disk`);
  for (const f of files) {
    assert.ok(statSync(f).size <= maxBytes, `${f}: ${statSync(f).size} bytes`);
    assert.equal(statSync(f).mode & 0o777, 0o600);
  }
  // The newest lines survive, in order, with no gap across the files.
  const ids = lines.map((l) => Number(String(l.clientId).slice(1)));
  assert.equal(ids[ids.length - 1], count - 1);
  ids.forEach((id, i) => i > 0 && assert.equal(id, ids[i - 1]! + 1));
});

test('rotation with maxFiles 0 keeps only the current file', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'audit.log');
  const log = createAuditLog({ enabled: true, file, maxBytes: 1024, maxFiles: 0 });
  for (let i = 0; i < 100; i++) log.record(event(i));
  await log.close();
  assert.deepEqual(readdirSync(dir), ['audit.log']);
  assert.ok(statSync(file).size <= 1024);
});

test('a line never lists more than 100 variables; variableCount tells how many there were', async (t) => {
  const file = join(tempDir(t), 'audit.log');
  const log = createAuditLog({ enabled: true, file });
  const names = Array.from({ length: 5000 }, (_, i) => `variable-${i}`);
  log.record(event(1, names));
  log.record(event(2, ['a', 'b']));
  log.record({ event: 'LocalVariablesChanged', clientId: '', keyId: '', tenant: 'acme', service: 'plant', variables: ['x'], pid: 4242 });
  await log.close();
  const text = readFileSync(file, 'utf8');
  const [big, small, local] = linesOf(file);
  assert.equal((big!.variables as string[]).length, MAX_AUDIT_VARIABLES);
  assert.deepEqual((big!.variables as string[]).slice(0, 2), ['variable-0', 'variable-1']);
  assert.equal(big!.variableCount, 5000);
  assert.ok(text.split('\n')[0]!.length < 10_000, 'the capped line is small');
  assert.deepEqual(small!.variables, ['a', 'b']);
  assert.equal(small!.variableCount, 2);
  assert.equal(local!.event, 'LocalVariablesChanged');
  assert.equal(local!.pid, 4242);
});

test('a disabled audit log writes nothing', async (t) => {
  const file = join(tempDir(t), 'audit.log');
  const log = createAuditLog({ enabled: false, file });
  log.record(event(1));
  await log.close();
  assert.equal(existsSync(file), false);
});

test('config: audit.maxBytes and audit.maxFiles are accepted and checked', () => {
  assert.deepEqual(loadConfig({ audit: { maxBytes: 1_000_000, maxFiles: 3 } }).audit, { enabled: true, maxBytes: 1_000_000, maxFiles: 3 });
  assert.deepEqual(loadConfig({}).audit, { enabled: true }, 'defaults come from the audit log (100 MiB, 5 files)');
  assert.throws(() => loadConfig({ audit: { maxBytes: 0 } }), { code: 'CONFIG_INVALID', field: 'audit.maxBytes' });
  assert.throws(() => loadConfig({ audit: { maxFiles: -1 } }), { code: 'CONFIG_INVALID', field: 'audit.maxFiles' });
  assert.throws(() => loadConfig({ audit: { maxFiles: 1.5 } }), { code: 'CONFIG_INVALID', field: 'audit.maxFiles' });
});

/** A log whose every rotation fails: `audit.log.1` is a directory, which rotation (maxFiles 1) cannot delete. */
function failingRotation(dir: string, logger?: WarningLogger): { file: string; log: ReturnType<typeof createAuditLog> } {
  const file = join(dir, 'audit.log');
  mkdirSync(join(dir, 'audit.log.1'));
  return { file, log: createAuditLog({ enabled: true, file, maxBytes: 512, maxFiles: 1, ...(logger ? { logger } : {}) }) };
}

test('the audit log reports its own failures to the logger given (a pino Logger fits) and goes on writing', async (t) => {
  const compatible: WarningLogger = pino({ enabled: false }); // compile-time: a pino Logger is accepted
  assert.equal(typeof compatible.warn, 'function');
  const warnings: Array<{ err: unknown; msg: string }> = [];
  const { file, log } = failingRotation(tempDir(t), { warn: (fields, msg) => warnings.push({ err: fields.err, msg }) });
  for (let i = 0; i < 20; i++) log.record(event(i));
  await log.close();
  assert.ok(warnings.length >= 1);
  assert.match(warnings[0]!.msg, /^commy audit log: rotation of .*audit\.log failed: /);
  assert.ok(warnings[0]!.err instanceof Error);
  assert.equal(linesOf(file).length, 20, 'every line kept in the current file');
});

test('without a logger, the audit log reports its failures as process warnings', async (t) => {
  const seen: string[] = [];
  const onWarning = (w: Error) => seen.push(w.message);
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));
  const { log } = failingRotation(tempDir(t));
  for (let i = 0; i < 5; i++) log.record(event(i)); // ~750 bytes: one failed rotation, one warning on stderr
  await log.close();
  await new Promise((resolve) => setImmediate(resolve)); // 'warning' is emitted on a later tick
  assert.ok(seen.some((m) => /^commy audit log: rotation of .* failed: /.test(m)), seen.join('\n'));
});
