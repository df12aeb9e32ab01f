/**
 * Clients of bench/idle.ts: holds many idle connections in one process. 'connect' {kind, url, count, parallel}
 * opens `count` connections, `parallel` at a time: kind 'commy' is a Client (mode 'remote', authenticated,
 * nothing subscribed), kind 'ws' a plain `ws` connection. Answers how many opened and the first errors.
 */
import { WebSocket } from 'ws';
import { AuthCredentials, Client } from '../src/index.js';
import { BENCH_KEY, BENCH_TENANT, serveRequests } from './harness.js';

const closers: Array<() => unknown> = [];

async function commy(url: string): Promise<void> {
  const client = await Client.initialize(url, BENCH_TENANT, AuthCredentials.apiKey(BENCH_KEY), { mode: 'remote', reconnect: false, onError: () => {} });
  await client.stopFileMonitoring();
  closers.push(() => client.close());
}

async function ws(url: string): Promise<void> {
  const socket = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  socket.on('error', () => {});
  closers.push(() => socket.terminate());
}

serveRequests({ pid: process.pid }, {
  connect: async ({ kind, url, count, parallel }) => {
    const open = kind === 'commy' ? commy : ws;
    let next = 0;
    let ok = 0;
    const errors = new Map<string, number>();
    const worker = async () => {
      while (next < (count as number)) {
        next++;
        try {
          await open(url as string);
          ok++;
        } catch (err) {
          const key = err instanceof Error ? `${(err as { code?: string }).code ?? ''} ${err.message}`.trim() : String(err);
          errors.set(key, (errors.get(key) ?? 0) + 1);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(parallel as number, count as number) }, worker));
    return { ok, errors: [...errors].map(([message, n]) => `${n} × ${message}`) };
  },
});
// 'stop' exits at once: the kernel closes every socket (the server is usually gone by then anyway).
void closers;
