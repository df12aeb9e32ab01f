import { redisServerPath, startRedis as startRedisServer, type RedisProc } from '../test/helpers/redis.js';

/**
 * Debian's redis-server on a free loopback port for a peer measurement (test/helpers/redis.ts starts it): an
 * append-only file synced as asked, or no persistence; undefined if not installed.
 */
export async function startRedis(appendfsync?: 'always' | 'everysec'): Promise<RedisProc | undefined> {
  if (redisServerPath() === undefined) return undefined;
  return startRedisServer(appendfsync === undefined ? { appendonly: false } : { appendfsync });
}
