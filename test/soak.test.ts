import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatSoak, runSoak, soakFailures } from '../soak/soak.js';

/**
 * The time-boxed soak (`npm run soak` runs a million frames): fuzzed and half-valid frames from three
 * connections against `commy serve` in its own process, while a correct client writes and another checks every
 * value; then SIGTERM, and every service file opened and checked.
 */
test('soak: 30,000 fuzzed and half-valid frames; no crash, no internal error, no wrong or lost value, every file valid', { timeout: 300_000 }, async () => {
  const report = await runSoak({ frames: 30_000, connections: 3, window: 16, seed: 7 });
  const text = formatSoak(report);
  assert.deepEqual(soakFailures(report), [], text);
  assert.equal(report.frames, 30_000, text);
  assert.equal(report.crashes, 0, text);
  assert.equal(report.exitCode, 0, text);
  assert.ok(report.truth.writes > 0 && report.truth.checks > 0, text);
  assert.ok(report.files.checked >= 2, `the truth file and the attackers' own services: ${text}`);
  // The frames reached the server's real paths, not only its first check: some valid requests took effect.
  assert.ok((report.repliesByType.VariableChangesAcknowledged ?? 0) > 0 && (report.repliesByType.Snapshot ?? 0) > 0, text);
  assert.ok((report.errorsByCode.PERMISSION_DENIED ?? 0) > 0, `the attacker tried the correct client's service and was refused: ${text}`);
});
