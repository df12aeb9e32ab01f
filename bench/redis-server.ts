import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** Starts Debian's redis-server on a free loopback port for a peer measurement; undefined if not installed. */
export async function startRedis(appendfsync?: 'always' | 'everysec'): Promise<{ port: number; stop: () => void } | undefined> {
  const which = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  const bin = which.stdout.trim();
  if (which.status !== 0 || bin === '') return undefined;
  const port = await freePort();
  // No persistence, or an append-only file synced as asked (in a directory of its own, removed at stop).
  const dir = appendfsync === undefined ? undefined : mkdtempSync(join(tmpdir(), 'commy-bench-redis-'));
  const persistence = dir === undefined ? ['--appendonly', 'no'] : ['--appendonly', 'yes', '--appendfsync', appendfsync!, '--dir', dir];
  const proc: ChildProcess = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...persistence], { stdio: 'ignore' });
  const cleanup = () => {
    proc.kill('SIGTERM');
    if (dir !== undefined) proc.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  };
  const { Redis } = await import('ioredis');
  for (let i = 0; i < 100; i++) {
    const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    try {
      await probe.connect();
      await probe.ping();
      probe.disconnect();
      return { port, stop: cleanup };
    } catch {
      probe.disconnect();
      await sleep(50);
    }
  }
  proc.kill('SIGKILL');
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  return undefined;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}
