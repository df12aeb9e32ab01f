// `node examples/ecs/server.mjs`: the commy server, and the page that renders the world on
// http://127.0.0.1:8080/ (any static server would do: the page imports the client from commy's /client.js).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { PORT, startDemoServer } from '../demo-server.mjs';

const PAGE_PORT = Number(process.env.COMMY_EXAMPLE_PAGE_PORT ?? 8080);

await startDemoServer();
const page = readFileSync(new URL('./index.html', import.meta.url));
createServer((req, res) => {
  const path = (req.url ?? '/').split('?')[0];
  if (path === '/' || path === '/index.html') res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page);
  else res.writeHead(404).end();
}).listen(PAGE_PORT, '127.0.0.1', () => console.log(`world view: http://127.0.0.1:${PAGE_PORT}/${PORT === 9000 ? '' : `?commy=${PORT}`}`));
