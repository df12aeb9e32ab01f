import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { ANNOUNCE_SCRIPT, APPEND_SCRIPT, SNAPSHOT_SCRIPT } from './cluster-scripts.js';

/** The scripts' replies (cluster-scripts.ts): APPEND answers a status, its detail and the stream's previous last id. */
export type AppendReply = [string, string, string?];
export interface ClusterCommands {
  commyAppend(...args: (string | Buffer | Uint8Array | number)[]): Promise<AppendReply>;
  commySnapshotBuffer(...args: string[]): Promise<[Buffer, Buffer[], Buffer[]]>;
  commyAnnounce(...args: string[]): Promise<number>;
}
/** The node's command connection: appends, snapshots, announcements, and the reader's wake-ups. */
export type CommandConnection = Redis & ClusterCommands;

const RETRY_MS = [50, 100, 250, 500, 1000, 2000];
/** A Redis command unanswered this long has failed (Redis answers in microseconds when it is there). */
const COMMAND_TIMEOUT_MS = 3000;

export function commandConnection(url: string): CommandConnection {
  // Writes fail at once while Redis is away (UNAVAILABLE to the client), never queue behind a reconnect.
  // A command in flight when the connection drops can be left unanswered by ioredis (it is neither resent nor
  // rejected with the offline queue off): commandTimeout makes it fail, and its write is then "outcome unknown".
  const cmd = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: COMMAND_TIMEOUT_MS }) as CommandConnection;
  cmd.defineCommand('commyAppend', { numberOfKeys: 6, lua: APPEND_SCRIPT });
  cmd.defineCommand('commySnapshot', { numberOfKeys: 3, lua: SNAPSHOT_SCRIPT });
  cmd.defineCommand('commyAnnounce', { numberOfKeys: 2, lua: ANNOUNCE_SCRIPT });
  return cmd;
}

export function readerConnection(url: string): Redis {
  // The reader's offline queue is on: a read in flight when the connection drops is sent again on reconnection.
  // No command timeout: its timer would keep a stopped process alive while Redis is away.
  return new Redis(url, { maxRetriesPerRequest: null });
}

/**
 * Errors of the node's two connections since Redis was last ready (ioredis reconnects by itself): said at the
 * first and every 50th, and they space the reader's retries.
 */
export class RedisFailures {
  count = 0;

  constructor(
    private readonly log: Logger,
    private readonly isClosed: () => boolean,
  ) {}

  said(which: string, err: Error): void {
    if (this.isClosed()) return;
    if (this.count === 0 || this.count % 50 === 0) this.log.warn({ err: err.message, connection: which }, 'cluster: Redis connection error (reconnecting)');
    this.count++;
  }
}

/** How long to wait before the retry after `failures` failures in a row. */
export function retryDelay(failures: number): number {
  return RETRY_MS[Math.min(failures, RETRY_MS.length - 1)]!;
}

/**
 * A stream's XINFO STREAM fields by name, or undefined when there is no such stream (nothing appended yet, or
 * Redis lost it).
 */
export async function streamInfo(cmd: Redis, key: string): Promise<((field: string) => unknown) | undefined> {
  let info: unknown[];
  try {
    info = (await cmd.xinfo('STREAM', key)) as unknown[];
  } catch (err) {
    if (/no such key/i.test((err as Error).message)) return undefined;
    throw err;
  }
  return (field) => (info.includes(field) ? info[info.indexOf(field) + 1] : undefined);
}
