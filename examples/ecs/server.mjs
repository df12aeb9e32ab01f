// `node examples/ecs/server.mjs`: the commy server, and the page that renders the world on
// http://127.0.0.1:8080/ (any static server would do: the page imports the client from commy's /client.js).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { startDemoServer } from '../demo-server.mjs';

await startDemoServer();
const page = readFileSync(new URL('./index.html', import.meta.url));
createServer((req, res) => {
  if (req.url === '/' || req.url === '/index.html') res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page);
  else res.writeHead(404).end();
}).listen(8080, '127.0.0.1', () => console.log('world view: http://127.0.0.1:8080/'));
