import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startRedis, type RedisProc } from './helpers/redis.js';
import { tempDir } from './helpers/temp.js';

/**
 * test/helpers/redis.ts, which the cluster tests stand on: a redis-server of the test's own that keeps what it
 * acknowledged across a restart and a SIGKILL (append-only file, synced at every write), and leaves nothing behind.
 */

/** A client that fails at once while the server is down, rather than queue commands; closed after the test. */
function client(t: { after(fn: () => void): void }, redis: RedisProc): Redis {
  const r = new Redis(redis.url, { retryStrategy: () => null, maxRetriesPerRequest: 0 });
  r.on('error', () => {}); // the server is killed under it on purpose
  // Not once it has ended (its server went): ioredis would then hold a 2 s timer for a close that came already.
  t.after(() => {
    if (r.status !== 'end') r.disconnect();
  });
  return r;
}

test('redis-server answers on its url; restart keeps what it had; stop removes its directory', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  assert.equal(redis.url, `redis://127.0.0.1:${redis.port}`);
  assert.ok(existsSync(redis.dir));

  assert.equal(await client(t, redis).set('k', 'v1'), 'OK');
  assert.equal(await client(t, redis).get('k'), 'v1');

  await redis.restart();
  assert.equal(await client(t, redis).get('k'), 'v1', 'the append-only file brought the key back');

  await redis.stop();
  assert.ok(!existsSync(redis.dir), 'stop removed the temporary directory');
});

test('a key written before a SIGKILL is there after restart (appendfsync always)', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const before = client(t, redis);
  assert.equal(await before.set('k', 'acknowledged'), 'OK');

  await redis.kill('SIGKILL');
  await assert.rejects(before.get('k'), 'the server is gone');

  await redis.restart();
  assert.equal(await client(t, redis).get('k'), 'acknowledged');
});

test('a directory of the caller\'s own outlives the server: a new one on it has the keys, and stop leaves it', async (t) => {
  const dir = join(tempDir(t), 'redis');
  const first = await startRedis({ dir });
  t.after(() => first.stop());
  assert.equal(first.dir, dir);
  assert.equal(await client(t, first).set('k', 'kept'), 'OK');
  await first.stop();
  assert.ok(existsSync(dir));

  const second = await startRedis({ dir });
  t.after(() => second.stop());
  assert.equal(await client(t, second).get('k'), 'kept');
  await second.stop();
  assert.ok(existsSync(dir));
});
