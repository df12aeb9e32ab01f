import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * test/helpers/browser.ts turns what goes wrong in a page into a failure of the test: run a file of browser
 * tests (fixtures/browser-page-problems.ts) as node --test would, and read which of its tests failed and why.
 */
test('a page exception or console error fails its test; expected errors do not; one browser serves the whole file', () => {
  const fixture = fileURLToPath(new URL('fixtures/browser-page-problems.js', import.meta.url));
  // Without NODE_TEST_CONTEXT, which this runner sets and which would make the child skip its file.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const run = spawnSync(process.execPath, ['--test', '--test-reporter=tap', fixture], { encoding: 'utf8', timeout: 240_000, env });
  const results = [...run.stdout.matchAll(/^(ok|not ok) \d+ - (.+)$/gm)].map((m) => `${m[1]} - ${m[2]}`);
  assert.deepEqual(results, [
    'not ok - an uncaught exception in the page',
    'not ok - a console error in the page',
    'ok - a console error the test expects',
    'ok - a clean page, in the same browser as the first test',
  ], run.stdout + run.stderr);
  assert.match(run.stdout, /page exception: Error: boom from the page/);
  assert.match(run.stdout, /console error: an error line from the page/);
  assert.equal(run.status, 1);
});
