/**
 * The bare `ws` peer, in its own process. argv[2]: 'echo' (sends every message back), 'broadcast' (a message
 * from the connection on path /pub goes to every other connection, one ws.send each: the plain broadcast loop
 * of ws's README) or 'idle' (accepts and holds connections). Answers 'cpu' and 'mem' (serverProbes).
 */
import { WebSocketServer, type WebSocket } from 'ws';
import { serveRequests, serverProbes } from './harness.js';

const mode = process.argv[2] ?? 'echo';
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
const subscribers = new Set<WebSocket>();
wss.on('connection', (ws, req) => {
  if (mode === 'echo') {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  } else if (mode === 'broadcast') {
    if (req.url === '/pub') {
      ws.on('message', (data) => {
        for (const s of subscribers) s.send(data, { binary: true });
      });
    } else {
      subscribers.add(ws);
      ws.on('close', () => subscribers.delete(ws));
    }
  }
  ws.on('error', () => {});
});
await new Promise((resolve) => wss.once('listening', resolve));
const port = (wss.address() as { port: number }).port;
serveRequests({ url: `ws://127.0.0.1:${port}`, pid: process.pid }, serverProbes, () => new Promise((r) => wss.close(r)));
