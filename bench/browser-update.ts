/**
 * `npm run bench:browser`: from a Node client's write to the inspector page showing the value (GET /inspector in
 * headless Chromium), beside a bare `ws` push to a minimal page, measured in the same interleaved rounds.
 *
 *   commy: vf.set() + flush() in Node → server → the page's browser client (/client.js) → the inspector's row,
 *          redrawn on the next animation frame
 *   peer:  ws.send() in Node → a page whose WebSocket 'message' handler sets the same kind of cell on the next
 *          animation frame (the floor: transport and one frame, no protocol, no client)
 *
 * Each page records when its cell's text changed (a MutationObserver: performance.timeOrigin + now(), the same
 * clock as Node's on this machine). Writes are 25 ms apart, so every one gets a frame of its own.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Page } from 'playwright-core';
import { WebSocketServer, type WebSocket } from 'ws';
import { AuthCredentials, Client, VariableMetadata, VariableType } from '../src/index.js';
import { CHROMIUM, CHROMIUM_ARGS } from '../test/helpers/chromium.js';
import { BENCH_KEY, BENCH_TENANT, header, interleave, main, percentileRows, printTable, Samples, sleep, startCommyServer } from './harness.js';

const WARMUP = 100;
const ROUNDS = 8;
const PER_ROUND = 40;
const GAP_MS = 25;

const now = (): number => performance.timeOrigin + performance.now();

/** Starts recording the text changes of `selector` in the page, into globalThis.seen as [text, ms]. */
async function observe(page: Page, selector: string): Promise<void> {
  await page.waitForSelector(selector, { timeout: 60_000 });
  await page.evaluate((sel) => {
    const g = globalThis as unknown as { seen: Array<[string, number]> };
    g.seen = [];
    const target = document.querySelector(sel)!;
    new MutationObserver(() => g.seen.push([target.textContent ?? '', performance.timeOrigin + performance.now()])).observe(target, { childList: true, characterData: true, subtree: true });
  }, selector);
}

/** Takes what the page recorded since the last call. */
async function drain(page: Page): Promise<Array<[string, number]>> {
  return page.evaluate(() => {
    const g = globalThis as unknown as { seen: Array<[string, number]> };
    const out = g.seen;
    g.seen = [];
    return out;
  });
}

const PEER_PAGE = `<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<table><tr data-variable="bench/x"><td data-value></td></tr></table>
<script type="module">
  const cell = document.querySelector('[data-value]');
  const ws = new WebSocket('ws://' + location.host);
  let next, frame = 0;
  ws.onmessage = (e) => { next = e.data; if (frame === 0) frame = requestAnimationFrame(() => { frame = 0; cell.textContent = next; }); };
  ws.onopen = () => { globalThis.ready = true; };
</script></body></html>`;

/** The peer: an HTTP server for the page and a ws server on the same port. */
async function startPeer(): Promise<{ url: string; send(text: string): void; stop(): Promise<void> }> {
  const http = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end(PEER_PAGE));
  const wss = new WebSocketServer({ server: http });
  const sockets = new Set<WebSocket>();
  wss.on('connection', (ws) => {
    sockets.add(ws);
    ws.on('close', () => sockets.delete(ws));
  });
  await new Promise<void>((done) => http.listen(0, '127.0.0.1', done));
  return {
    url: `http://127.0.0.1:${(http.address() as AddressInfo).port}/`,
    send: (text) => sockets.forEach((ws) => ws.send(text)),
    stop: async () => {
      for (const ws of sockets) ws.terminate();
      wss.close();
      http.closeAllConnections();
      await new Promise<void>((done) => http.close(() => done()));
    },
  };
}

main(async () => {
  header('Browser: a Node write until the page shows it', [
    `Node write → the cell's text changed in headless Chromium (${CHROMIUM}); ${WARMUP} writes each to warm up, then ${ROUNDS} interleaved rounds × ${PER_ROUND} writes, ${GAP_MS} ms apart.`,
  ]);
  const server = await startCommyServer();
  const peer = await startPeer();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS] });
  const stops: Array<() => unknown> = [() => browser.close(), () => peer.stop(), () => server.stop()];
  try {
    const writer = await Client.initialize(server.url, BENCH_TENANT, AuthCredentials.apiKey(BENCH_KEY), { mode: 'remote', reconnect: false });
    stops.unshift(() => writer.close());
    const vf = await writer.getVirtualServiceFile(BENCH_TENANT, 'bench');
    await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.F64));
    vf.set('x', 1);
    await vf.flush();

    const inspector = await browser.newPage();
    await inspector.goto(`${server.url.replace(/^ws/, 'http')}/inspector#tenant=${BENCH_TENANT}&key=${encodeURIComponent(BENCH_KEY)}`);
    await observe(inspector, '[data-variable="bench/x"] [data-value]');
    const plain = await browser.newPage();
    await plain.goto(peer.url);
    await plain.waitForFunction(() => 'ready' in globalThis, undefined, { timeout: 60_000 });
    await observe(plain, '[data-value]');

    let value = 1_000_000;
    const contenders = {
      commy: { page: inspector, write: async (v: number) => { vf.set('x', v); await vf.flush(); }, samples: new Samples(), sent: new Map<string, number>() },
      ws: { page: plain, write: async (v: number) => peer.send(String(v)), samples: new Samples(), sent: new Map<string, number>() },
    };
    const round = async (c: (typeof contenders)['commy'], n: number, keep: boolean): Promise<void> => {
      for (let i = 0; i < n; i++) {
        const v = ++value;
        c.sent.set(String(v), now());
        await c.write(v);
        await sleep(GAP_MS);
      }
      await sleep(100); // the last write's frame
      for (const [text, at] of await drain(c.page)) {
        const t0 = c.sent.get(text);
        if (t0 !== undefined && keep) c.samples.add((at - t0) * 1000); // µs
        c.sent.delete(text);
      }
      c.sent.clear(); // one not shown (coalesced into the next frame) is not a sample
    };
    await round(contenders.commy, WARMUP, false);
    await round(contenders.ws, WARMUP, false);
    await interleave(ROUNDS, { commy: () => round(contenders.commy, PER_ROUND, true), ws: () => round(contenders.ws, PER_ROUND, true) });
    const ms = (s: Samples) => ({ p: (q: number) => s.p(q) / 1000 });
    printTable('Node write → the page shows it', percentileRows('write → inspector cell updated', ms(contenders.commy.samples), 'bare ws push → cell updated', ms(contenders.ws.samples), 'ms', {}, false), [
      `samples: commy ${contenders.commy.samples.count}, ws ${contenders.ws.samples.count} (of ${ROUNDS * PER_ROUND} each).`,
      'Both pages redraw on the next animation frame (about 16.7 ms apart): half a frame is part of both figures.',
    ]);
  } finally {
    for (const stop of stops) await stop();
  }
});
