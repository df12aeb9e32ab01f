import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';

import { freePort } from './port.js';

/**
 * A redis-server of a caller's own on loopback, which it can kill, restart and stop: for the Redis (cluster)
 * tests and the benches' Redis peers (no node:test here).
 */

/** Debian's redis-server on PATH (scripts/install-redis.sh installs it); COMMY_REDIS_SERVER names another (a path, or a name on PATH). */
export const REDIS_SERVER = process.env.COMMY_REDIS_SERVER ?? 'redis-server';

/** How long a start (up to PING answered) or an exit may take: past it the caller fails, saying why, rather than hang. */
const TIMEOUT_MS = 20_000;

/** Of the server's output (its log goes to stdout, fatal errors to stderr), the tail that errors quote. */
const OUTPUT_KEPT = 8192;

export interface RedisOptions {
  /** Its directory, kept at stop (created if missing); default a fresh temporary one, removed at stop. */
  dir?: string;
  /** Default a free one. */
  port?: number;
  /** An append-only file (default true): what lets data survive a restart, and a SIGKILL with appendfsync always. */
  appendonly?: boolean;
  /** When the append-only file is synced (default 'always': every acknowledged write survives a SIGKILL). */
  appendfsync?: 'always' | 'everysec';
}

export interface RedisProc {
  readonly port: number;
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  readonly dir: string;
  /** Signals the server (default SIGKILL: a crash) and waits for it to exit; nothing if it has already. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port and directory (after a SIGTERM if it still runs): what it had synced survives. */
  restart(): Promise<void>;
  /** Stops it (SIGTERM), then removes its directory unless the caller gave it. */
  stop(): Promise<void>;
}

/** Where REDIS_SERVER is: the file, or undefined when it is not there (not installed). */
export function redisServerPath(): string | undefined {
  const candidates = REDIS_SERVER.includes('/') ? [REDIS_SERVER] : (process.env.PATH ?? '').split(delimiter).filter((d) => d !== '').map((d) => join(d, REDIS_SERVER));
  return candidates.find((file) => {
    try {
      accessSync(file, constants.X_OK);
      return statSync(file).isFile();
    } catch {
      return false;
    }
  });
}

// The servers are unref'd (one left running must not hold the caller's process open until node:test's timeout),
// so this process's exit is their end: killed, and their temporary directories removed, even when a test failed
// before its stop().
const abandoned = new Set<() => void>();
process.on('exit', () => {
  for (const abandon of abandoned) abandon();
});

/**
 * A redis-server on 127.0.0.1 (`port`, default a free one), saving no snapshots, with an append-only file synced
 * at every write unless told otherwise, in `dir` (default a fresh temporary one); resolves once it answers PING.
 * Fails with the way to install it when it is missing (never a silent skip).
 */
export async function startRedis(options: RedisOptions = {}): Promise<RedisProc> {
  const bin = redisServerPath();
  if (bin === undefined) {
    throw new Error(`the Redis tests need redis-server (${REDIS_SERVER} is not there): run 'sh scripts/install-redis.sh' (as root; it runs apt-get install redis-server), or set COMMY_REDIS_SERVER`);
  }
  const port = options.port ?? (await freePort());
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'commy-redis-'));
  mkdirSync(dir, { recursive: true });
  const persistence = options.appendonly === false ? ['--appendonly', 'no'] : ['--appendonly', 'yes', '--appendfsync', options.appendfsync ?? 'always'];
  const args = ['--bind', '127.0.0.1', '--port', String(port), '--dir', dir, '--save', '', ...persistence];

  let server: Server | undefined;
  const removeDir = (): void => {
    if (ownDir) rmSync(dir, { recursive: true, force: true });
  };
  const abandon = (): void => {
    server?.proc.kill('SIGKILL');
    removeDir();
  };
  const halt = async (signal: NodeJS.Signals): Promise<void> => {
    const running = server;
    server = undefined;
    await running?.halt(signal);
  };
  abandoned.add(abandon);
  try {
    server = await launch(bin, args, port);
  } catch (err) {
    abandoned.delete(abandon);
    removeDir();
    throw err;
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    kill: (signal = 'SIGKILL') => halt(signal),
    async restart() {
      await halt('SIGTERM');
      server = await launch(bin, args, port);
    },
    async stop() {
      try {
        await halt('SIGTERM');
      } finally {
        abandoned.delete(abandon);
        removeDir();
      }
    },
  };
}

/** One run of the server process. */
interface Server {
  readonly proc: ChildProcess;
  /** Signals it and waits for its exit; SIGKILLs it and fails if it has not exited within TIMEOUT_MS. */
  halt(signal: NodeJS.Signals): Promise<void>;
}

async function launch(bin: string, args: readonly string[], port: number): Promise<Server> {
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  // Read as it comes, or a full pipe would stall the server.
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-OUTPUT_KEPT);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  proc.unref();
  (proc.stdout as Socket).unref();
  (proc.stderr as Socket).unref();
  let ended: string | undefined;
  const exited = new Promise<void>((resolve) => {
    proc.once('exit', (code, signal) => {
      ended = `exited (${code ?? signal})`;
      resolve();
    });
    proc.once('error', (err) => {
      ended = `did not run (${err.message})`;
      resolve();
    });
  });
  const failure = (what: string): Error => new Error(`redis-server on port ${port} ${what}; its output:\n${output.trimEnd() || '(none)'}`);

  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    if (ended !== undefined) throw failure(`${ended} before it answered PING`);
    if (await answersPing(port, proc.pid)) break;
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw failure(`did not answer PING within ${TIMEOUT_MS / 1000} s`);
    }
    await sleep(50);
  }

  return {
    proc,
    async halt(signal) {
      if (ended === undefined) proc.kill(signal);
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), TIMEOUT_MS)));
      const outcome = await Promise.race([exited, late]);
      clearTimeout(timer);
      if (outcome === 'late') {
        proc.kill('SIGKILL');
        throw failure(`had not exited ${TIMEOUT_MS / 1000} s after ${signal}`);
      }
    },
  };
}

/**
 * Whether this server answers PING now: not while it is still loading its append-only file (LOADING), nor when
 * another process's server answers on the port (ours then exits, unable to listen).
 */
async function answersPing(port: number, pid: number | undefined): Promise<boolean> {
  const probe = new Redis({ host: '127.0.0.1', port, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, connectTimeout: 1000 });
  probe.on('error', () => {}); // a refused connection also comes as an event; unheard, ioredis prints it
  try {
    await probe.connect();
    return (await probe.ping()) === 'PONG' && (await probe.info('server')).includes(`\nprocess_id:${pid}\r\n`);
  } catch {
    return false;
  } finally {
    // Not once it has ended (refused): ioredis would then hold a 2 s timer for a close that came already.
    if (probe.status !== 'end') probe.disconnect();
  }
}
