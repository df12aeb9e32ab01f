/**
 * The commy server of the remote figures, in its own process as Redis and the ws peers are (start it with
 * harness.ts startCommyServer). argv[2]: JSON `{ limits?, authThrottle?, dataDir?, durability?, cluster? }` over
 * the bench config below (`cluster: { redis, nodeId }` makes it a node of a cluster: bench/cluster.ts). Answers
 * 'cpu' and 'mem' (serverProbes), stops on 'stop'. Audit log off (like Redis without AOF); rate limits raised so
 * that the bench, not the limiter, sets the pace.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Server } from '../src/server/index.js';
import { BENCH_TENANT, serveRequests, serverProbes } from './harness.js';

const opts = JSON.parse(process.argv[2] ?? '{}') as {
  limits?: Record<string, unknown>;
  authThrottle?: Record<string, number>;
  dataDir?: string;
  durability?: 'ack' | 'periodic' | 'none';
  cluster?: { redis: string; nodeId: string };
};
// A parent that may kill this process (SIGKILL: no cleanup here) makes the directory and removes it itself.
const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'commy-bench-server-'));
const server = await Server.start({
  host: '127.0.0.1',
  port: 0,
  dataDir,
  config: {
    tenants: { [BENCH_TENANT]: { keys: [{ id: 'ops', secret: 'bench', read: ['*'], write: ['*'], admin: ['*'] }] } },
    audit: { enabled: false },
    limits: { rateLimit: { messagesPerSecond: 1_000_000, burst: 1_000_000 }, ...opts.limits },
    ...(opts.cluster ? { cluster: opts.cluster } : {}),
  },
  ...(opts.authThrottle ? { authThrottle: opts.authThrottle } : {}),
  ...(opts.durability ? { durability: opts.durability } : {}),
});
serveRequests({ url: server.url, pid: process.pid }, serverProbes, async () => {
  await server.close();
  if (opts.dataDir === undefined) rmSync(dataDir, { recursive: true, force: true });
});
