import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Authenticator } from '../src/server/auth.js';
import { DEFAULT_THROTTLE, FailureThrottle, Semaphore } from '../src/server/auth-throttle.js';
import { loadConfig } from '../src/server/config.js';
import { RawClient, errorCode } from './helpers/raw-client.js';
import { startServer } from './helpers/server.js';

const TENANTS = loadConfig({
  tenants: {
    acme: {
      keys: [
        { id: 'ops', secret: 'ops-secret', read: ['*'] },
        { id: 'viewer', secret: 'view-secret', read: ['*'] },
      ],
    },
  },
}).tenants;

/** An Authenticator on a clock the test moves by hand. */
function clocked(): { auth: Authenticator; clock: { now: number } } {
  const clock = { now: 1_000_000 };
  return { auth: new Authenticator(TENANTS, { now: () => clock.now }), clock };
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return (err as { code: string }).code;
  }
}

// ---- FailureThrottle and Semaphore, alone ----

test('back-off: 5 failures block for 1 s, then 2 s, 4 s … up to 60 s; a quiet spell starts over', () => {
  const throttle = new FailureThrottle(DEFAULT_THROTTLE);
  let now = 0;
  const fail = (n: number) => {
    for (let i = 0; i < n; i++) {
      throttle.begin('ip x', now);
      throttle.finish('ip x', true, now);
    }
  };
  fail(4);
  assert.equal(throttle.isBlocked('ip x', now), false);
  for (const block of [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]) {
    fail(1);
    assert.equal(throttle.isBlocked('ip x', now + block - 1), true, `blocked for ${block} ms`);
    assert.equal(throttle.isBlocked('ip x', now + block), false, `free after ${block} ms`);
    now += block;
    fail(4);
  }
  // 15 minutes without a failure: the next block is 1 s again.
  now += DEFAULT_THROTTLE.forgetAfterMs;
  fail(5);
  assert.equal(throttle.isBlocked('ip x', now + 999), true);
  assert.equal(throttle.isBlocked('ip x', now + 1_000), false);
});

test('back-off: failures outside the window do not add up; attempts under way count until they succeed', () => {
  const throttle = new FailureThrottle(DEFAULT_THROTTLE);
  for (let i = 0; i < 4; i++) {
    throttle.begin('k', 0);
    throttle.finish('k', true, 0);
  }
  throttle.begin('k', 60_000);
  throttle.finish('k', true, 60_000); // a new window: 1 failure, not 5
  assert.equal(throttle.isBlocked('k', 60_000), false);
  for (let i = 0; i < 4; i++) throttle.begin('k', 60_000);
  assert.equal(throttle.isBlocked('k', 60_000), true, '1 failure + 4 unfinished');
  for (let i = 0; i < 4; i++) throttle.finish('k', false, 60_000);
  assert.equal(throttle.isBlocked('k', 60_000), false, 'they succeeded');
});

test('the throttle tracks at most maxEntries keys, forgetting the least recently seen', () => {
  const throttle = new FailureThrottle({ ...DEFAULT_THROTTLE, maxEntries: 3, maxFailures: 1 });
  for (const k of ['a', 'b', 'c']) {
    throttle.begin(k, 0);
    throttle.finish(k, true, 0);
  }
  assert.equal(throttle.isBlocked('a', 0), true); // a is now the most recently seen
  throttle.begin('d', 0);
  throttle.finish('d', true, 0);
  assert.equal(throttle.size, 3);
  assert.equal(throttle.isBlocked('b', 0), false, 'b was forgotten');
  assert.equal(throttle.isBlocked('a', 0), true);
  for (let i = 0; i < 10_000; i++) throttle.begin(`flood-${i}`, 0);
  assert.equal(throttle.size, 3);
});

test('Semaphore: at most `permits` run, at most `maxQueued` wait, the rest are refused at once', async () => {
  const gate = new Semaphore(2, 1);
  let running = 0;
  let peak = 0;
  const releases: (() => void)[] = [];
  const task = () =>
    gate.run(async () => {
      peak = Math.max(peak, ++running);
      await new Promise<void>((r) => releases.push(r));
      running--;
    });
  const runs = [task(), task(), task()];
  await assert.rejects(task(), { code: 'RATE_LIMITED' });
  assert.equal(gate.queued, 1);
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setImmediate(r));
    releases.shift()!();
  }
  await Promise.all(runs);
  assert.equal(peak, 2);
  assert.equal(gate.queued, 0);
});

// ---- the Authenticator's throttling ----

test('an address that failed 5 times gets RATE_LIMITED without any verification; other addresses do not', async () => {
  const { auth, clock } = clocked();
  for (let i = 0; i < 5; i++) assert.equal(await code(auth.authenticate('acme', 'apiKey', `guess-${i}`, '10.0.0.1')), 'AUTH_FAILED');
  const scrypts = auth.stats.scrypts;
  assert.equal(await code(auth.authenticate('acme', 'apiKey', 'ops:ops-secret', '10.0.0.1')), 'RATE_LIMITED');
  assert.equal(await code(auth.authenticate('nobody', 'jwt', 'a.b.c', '10.0.0.1')), 'RATE_LIMITED', 'whatever the method');
  assert.equal(auth.stats.scrypts, scrypts, 'no scrypt while blocked');
  assert.equal(await code(auth.authenticate('acme', 'apiKey', 'ops:ops-secret', '10.0.0.2')), 'ok');
  clock.now += 1_000;
  assert.equal(await code(auth.authenticate('acme', 'apiKey', 'viewer:view-secret', '10.0.0.1')), 'ok', 'the first block lasts 1 s');
});

test('a key id that failed 5 times is blocked from every address, known or not alike; a cached credential still gets in', async () => {
  const { auth } = clocked();
  assert.equal(await code(auth.authenticate('acme', 'apiKey', 'ops:ops-secret', '10.0.0.1')), 'ok'); // now cached
  for (const keyId of ['ops', 'ghost']) {
    for (let i = 0; i < 5; i++) assert.equal(await code(auth.authenticate('acme', 'apiKey', `${keyId}:guess-${i}`, `10.1.${i}.1`)), 'AUTH_FAILED');
    // An unknown key id is throttled exactly like a real one: a block says nothing about what exists.
    assert.equal(await code(auth.authenticate('acme', 'apiKey', `${keyId}:another`, '10.2.0.1')), 'RATE_LIMITED', keyId);
  }
  assert.equal(await code(auth.authenticate('acme', 'apiKey', 'ops:ops-secret', '10.3.0.1')), 'ok', 'answered from the cache');
  assert.equal(await code(auth.authenticate('acme', 'apiKey', 'viewer:view-secret', '10.3.0.1')), 'ok', 'other key ids are not affected');
});

test('a burst of parallel guesses from one address gets 5 tries, not one per connection', async () => {
  const { auth } = clocked();
  const codes = await Promise.all(Array.from({ length: 20 }, (_, i) => code(auth.authenticate('acme', 'apiKey', `k${i}:guess`, '10.0.0.1'))));
  assert.equal(codes.filter((c) => c === 'AUTH_FAILED').length, 5, codes.join());
  assert.equal(codes.filter((c) => c === 'RATE_LIMITED').length, 15, codes.join());
  assert.equal(auth.stats.scrypts, 5);
});

// ---- over real sockets ----

test('after 5 failures from one address the next attempt is RATE_LIMITED, on a new connection too; a verified credential still works', async (t) => {
  // A block far longer than the test, so nothing here depends on timing.
  const server = await startServer(t, { authThrottle: { firstBlockMs: 600_000 } });
  const connect = async (localAddress: string) => {
    const c = await RawClient.connect(server.url, { localAddress, headers: { 'x-forwarded-for': '198.51.100.1' } });
    t.after(() => c.close());
    return c;
  };
  const known = await connect('127.0.0.1');
  assert.equal((await known.auth('acme', 'ops:s3cret')).type, 'Authenticated');

  const attacker = await connect('127.0.0.1');
  for (let i = 0; i < 5; i++) assert.equal(errorCode(await attacker.auth('acme', `viewer:guess-${i}`)), 'AUTH_FAILED');
  assert.equal((await attacker.closed).code, 4001, 'five failures close the connection');
  const scrypts = server.authStats.scrypts;

  const again = await connect('127.0.0.1');
  assert.equal(errorCode(await again.auth('acme', 'editor:edit')), 'RATE_LIMITED', 'the address is blocked, not the connection');
  assert.equal(errorCode(await again.auth('beta', 'ops:beta-secret')), 'RATE_LIMITED');
  assert.equal(server.authStats.scrypts, scrypts, 'refused without verifying');
  assert.equal((await again.auth('acme', 'ops:s3cret')).type, 'Authenticated', 'a credential verified before is accepted');

  const elsewhere = await connect('127.0.0.2');
  assert.equal(errorCode(await elsewhere.auth('acme', 'viewer:view')), 'RATE_LIMITED', 'the key id guessed at is blocked everywhere');
  assert.equal((await elsewhere.auth('acme', 'editor:edit')).type, 'Authenticated', 'another address, another key: unaffected');
});
