import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ReconnectPolicy, type ReconnectStep } from '../src/client/reconnect-policy.js';
import { Reconnector } from '../src/client/reconnector.js';
import { CommyError, ErrorCode } from '../src/core/errors.js';

// Backoff and breaker as sequences of decisions: no timing is asserted.

const options = { initialDelayMs: 100, maxDelayMs: 1000, breaker: { failures: 6, resetMs: 5000 } };

test('backoff: full jitter under a cap that doubles per failure up to maxDelayMs; then the breaker opens', () => {
  const top = new ReconnectPolicy(options, () => 0.999999);
  const caps: ReconnectStep[] = [];
  for (let i = 0; i < 8; i++) {
    caps.push(top.next());
    top.failed();
  }
  assert.deepEqual(
    caps.map((s) => [s.kind, s.delayMs]),
    [['retry', 99], ['retry', 199], ['retry', 399], ['retry', 799], ['retry', 999], ['retry', 999], ['probe', 5000], ['probe', 5000]],
  );
  const bottom = new ReconnectPolicy(options, () => 0);
  assert.deepEqual(bottom.next(), { kind: 'retry', delayMs: 0 }, 'full jitter: anywhere from zero');
  top.succeeded();
  assert.equal(top.breakerOpen, false);
  assert.equal(top.next().kind, 'retry', 'a success closes the breaker and restarts the backoff');
});

test('reconnector: N failures open the breaker, each later attempt is one probe; a success ends the loop and closes it', async () => {
  const policy = new ReconnectPolicy({ initialDelayMs: 1, maxDelayMs: 2, breaker: { failures: 3, resetMs: 5 } });
  const log: string[] = [];
  let failuresLeft = 7;
  const loop = () =>
    new Reconnector(policy, {
      attempt: async () => {
        log.push('attempt');
        if (failuresLeft-- > 0) throw new CommyError(ErrorCode.NOT_CONNECTED, 'refused');
      },
      failed: (err, step) => log.push(`failed ${step.kind} ${err.code}`),
      scheduled: (step) => log.push(step.kind),
    });
  assert.equal(await loop().run(), true);
  const kinds = log.filter((l) => l === 'retry' || l === 'probe');
  assert.deepEqual(kinds, ['retry', 'retry', 'retry', 'probe', 'probe', 'probe', 'probe', 'probe']);
  assert.equal(log.filter((l) => l === 'attempt').length, 8);
  assert.equal(log.filter((l) => l.startsWith('failed')).length, 7);
  log.length = 0;
  failuresLeft = 0;
  assert.equal(await loop().run(), true);
  assert.deepEqual(log, ['retry', 'attempt'], 'the next outage starts with the backoff again');
});

test('reconnector: stop() ends a wait at once, with no attempt', async () => {
  const policy = new ReconnectPolicy({ initialDelayMs: 60_000, maxDelayMs: 60_000, breaker: { failures: 1, resetMs: 60_000 } }, () => 0.5);
  let attempts = 0;
  const r = new Reconnector(policy, { attempt: async () => void attempts++, failed: () => {} });
  const running = r.run();
  r.stop();
  assert.equal(await running, false);
  assert.equal(attempts, 0);
});
