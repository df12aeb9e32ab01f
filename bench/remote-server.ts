import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocketServer } from 'ws';
import { Server } from '../src/server/index.js';

/** The server for the remote bench, in its own process like Redis is: reports its URL, stops on 'stop'. */
const dataDir = mkdtempSync(join(tmpdir(), 'commy-bench-server-'));
const server = await Server.start({
  host: '127.0.0.1',
  port: 0,
  dataDir,
  config: { tenants: { bench: { keys: [{ id: 'ops', secret: 'bench', read: ['*'], write: ['*'], admin: ['*'] }] } }, audit: { enabled: false }, limits: { rateLimit: { messagesPerSecond: 1_000_000, burst: 1_000_000 } } },
});
// The floor: a bare `ws` echo in the same process, so the bench can show what WebSocket alone costs.
const echo = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
echo.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
await new Promise((resolve) => echo.once('listening', resolve));
const echoPort = (echo.address() as { port: number }).port;
process.send?.({ url: server.url, echoUrl: `ws://127.0.0.1:${echoPort}` });
process.on('message', async () => {
  echo.close();
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
  process.disconnect?.();
});
