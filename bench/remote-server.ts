import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Server } from '../src/server/index.js';

/** The server for the remote bench, in its own process like Redis is: reports its URL, stops on 'stop'. */
const dataDir = mkdtempSync(join(tmpdir(), 'commy-bench-server-'));
const server = await Server.start({
  host: '127.0.0.1',
  port: 0,
  dataDir,
  config: { tenants: { bench: { keys: [{ id: 'ops', secret: 'bench', read: ['*'], write: ['*'], admin: ['*'] }] } }, audit: { enabled: false } },
});
process.send?.({ url: server.url });
process.on('message', async () => {
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
  process.disconnect?.();
});
