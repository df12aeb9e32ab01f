import assert from 'node:assert/strict';
import { isCommyError, type Client, type VirtualVariableFile } from '../../src/index.js';
import { startChild, type Child } from './child.js';
import { startRedis, type RedisProc } from './redis.js';
import { tempDir } from './temp.js';

/** One node of a test cluster: a server in its own process (fixtures/cluster-node.ts) that a test can kill -9 and restart. */
export interface TestNode {
  readonly id: string;
  readonly dataDir: string;
  url: string;
  child: Child;
  /** kill -9, and waits for the process to be gone. */
  kill(): Promise<void>;
  /** Starts it again on the same port and data directory (where its clients look for it). */
  restart(): Promise<void>;
}

export interface TestCluster {
  readonly redis: RedisProc;
  readonly nodes: TestNode[];
}

type Hooks = { after(fn: () => void | Promise<void>): void };

/** A real redis-server and `count` nodes (a, b, c, …) on it, each in its own process with its own data directory. */
export async function startCluster(t: Hooks, count: number): Promise<TestCluster> {
  const redis = await startRedis();
  const nodes: TestNode[] = [];
  // The nodes go first: a Redis stopped under live nodes would only fill the log with reconnections.
  t.after(async () => {
    for (const node of nodes) await node.kill();
    await redis.stop();
  });
  for (let i = 0; i < count; i++) nodes.push(await startNode(t, redis.url, String.fromCharCode(97 + i)));
  return { redis, nodes };
}

async function startNode(t: Hooks, redisUrl: string, id: string): Promise<TestNode> {
  const dataDir = tempDir(t, `commy-node-${id}-`);
  const launch = async (port?: string): Promise<{ child: Child; url: string }> => {
    const child = startChild('cluster-node', port === undefined ? [dataDir, redisUrl, id] : [dataDir, redisUrl, id, port], t);
    const { url } = await child.next<{ url: string }>('ready', 60_000);
    return { child, url };
  };
  const first = await launch();
  const node: TestNode = {
    id,
    dataDir,
    url: first.url,
    child: first.child,
    async kill() {
      node.child.kill('SIGKILL');
      await node.child.exited;
    },
    async restart() {
      const again = await launch(new URL(node.url).port);
      node.child = again.child;
      node.url = again.url;
    },
  };
  return node;
}

/**
 * Tenant acme's `service` once the node `client` talks to has it (created on another node, it comes through the
 * catalog): SERVICE_NOT_FOUND (or, for a key that may not create it, PERMISSION_DENIED) until then.
 */
export async function openedWhenThere(client: Client, service: string, timeoutMs = 30_000): Promise<VirtualVariableFile> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await client.getVirtualServiceFile('acme', service);
    } catch (err) {
      if (!isCommyError(err, 'SERVICE_NOT_FOUND') && !isCommyError(err, 'PERMISSION_DENIED')) throw err;
      if (Date.now() > deadline) assert.fail(`timed out waiting for service ${service} on the node`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}
