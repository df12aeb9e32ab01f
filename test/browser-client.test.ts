import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Page } from 'playwright-core';
import type { Client, FileChangeEvent, VirtualVariableFile } from '../src/browser.js';
import { VariableMetadata, VariableType } from '../src/index.js';
import { httpOrigin, openPage, screenshot, servePage } from './helpers/browser.js';
import { OPS_KEY, startClientServer } from './helpers/client-server.js';

/**
 * The browser build in a real browser (Chromium, headless): a page on another origin imports the bundle from
 * the server (GET /client.js, as docs/client.md shows) and uses it against that server, beside Node clients.
 */

/** What the page's module script leaves on globalThis, and what the steps below keep there between calls. */
interface PageGlobals {
  commy: typeof import('../src/browser.js');
  show(step: string, result: string): void;
  client: Client;
  vf: VirtualVariableFile;
  countSeen: Promise<{ changedVariables: string[]; count: string }>;
}

/** A page whose module script imports the client statically, the way docs/client.md tells applications to. */
function pageHtml(clientUrl: string): string {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>commy in a browser</title><link rel="icon" href="data:,">
<style>
  body { font: 15px/1.4 sans-serif; margin: 24px; }
  table { border-collapse: collapse; } td, th { text-align: left; padding: 4px 14px; border-bottom: 1px solid #ccc; }
  code { background: #f2f2f2; padding: 1px 4px; }
</style></head>
<body>
<h1>commy browser client</h1>
<p>module: <code>${clientUrl}</code></p>
<table id="log"><tr><th>step</th><th>result</th></tr></table>
<script type="module">
  import * as commy from ${JSON.stringify(clientUrl)};
  globalThis.show = (step, result) => {
    const row = document.createElement('tr');
    for (const text of [step, result]) row.appendChild(document.createElement('td')).textContent = text;
    document.getElementById('log').appendChild(row);
  };
  globalThis.show('page origin', location.origin);
  globalThis.commy = commy;
</script>
</body></html>`;
}

/** Opens the page (served from an origin of its own) and waits until its module script has imported the client. */
async function openClientPage(t: Parameters<typeof openPage>[0], serverUrl: string): Promise<Page> {
  const { page, guard } = await openPage(t);
  const pageUrl = await servePage(t, pageHtml(`${httpOrigin(serverUrl)}/client.js`));
  await page.goto(pageUrl);
  // A module that fails to load (CORS, a syntax error, a 503) says so in the console: fail with that at once.
  await guard(page.waitForFunction(() => 'commy' in globalThis, undefined, { timeout: 60_000 }));
  return page;
}

test('a page on another origin imports /client.js, reads what a Node client wrote, writes what Node clients see, hears changes', async (t) => {
  const srv = await startClientServer(t);
  const node = await srv.connect({ mode: 'auto' }); // on the server's machine: the file mapped
  const nodeVf = await node.getVirtualServiceFile('acme', 'web');
  assert.equal(nodeVf.mode, 'local');
  await nodeVf.registerVariable(new VariableMetadata('greeting', -1, 32, VariableType.String));
  await nodeVf.registerVariable(new VariableMetadata('count', -1, 4, VariableType.U32));
  await nodeVf.registerVariable(new VariableMetadata('fromBrowser', -1, 8, VariableType.U64));
  nodeVf.set('greeting', 'hello from node');
  nodeVf.set('count', 7);
  await nodeVf.flush();

  const page = await openClientPage(t, srv.url);

  const opened = await page.evaluate(
    async ({ url, key }) => {
      const g = globalThis as unknown as PageGlobals;
      const { Client, AuthCredentials } = g.commy;
      g.client = await Client.initialize(url, 'acme', AuthCredentials.apiKey(key)); // mode 'auto'
      g.vf = await g.client.getVirtualServiceFile('acme', 'web');
      const read = { mode: g.vf.mode, greeting: String(g.vf.get('greeting')), count: String(g.vf.get('count')) };
      g.show('connected, mode', read.mode);
      g.show('greeting, count (written by Node)', `${read.greeting}, ${read.count}`);
      return read;
    },
    { url: srv.url, key: OPS_KEY },
  );
  assert.deepEqual(opened, { mode: 'remote', greeting: 'hello from node', count: '7' }, "'auto' is remote in a browser; the Node client's values are there");

  await page.evaluate(async () => {
    const g = globalThis as unknown as PageGlobals;
    g.vf.set('fromBrowser', 42n);
    await g.vf.flush(); // resolves once the server applied it for every client
    g.show('wrote fromBrowser', '42 (flushed)');
  });
  assert.deepEqual([...(await node.readVariable('acme', 'web', 'fromBrowser'))], [42, 0, 0, 0, 0, 0, 0, 0], 'the server has it');
  for (let seen = nodeVf.get('fromBrowser'); seen !== 42n; seen = nodeVf.get('fromBrowser')) {
    assert.notEqual(await node.waitForFileChange({ timeoutMs: 30_000 }), null, "the browser's write reaches the Node client's mapping");
  }
  const other = await srv.connect({ mode: 'remote' });
  assert.equal((await other.getVirtualServiceFile('acme', 'web')).get('fromBrowser'), 42n, 'and a remote Node client');
  await page.evaluate(() => (globalThis as unknown as PageGlobals).show('Node clients read fromBrowser', '42 (local and remote)'));

  // The page listens first; the Node client writes only once the iterator is waiting.
  await page.evaluate(() => {
    const g = globalThis as unknown as PageGlobals;
    g.countSeen = (async () => {
      for await (const ev of g.vf.changes()) {
        const count = String(g.vf.get('count'));
        if ((ev as FileChangeEvent).changedVariables.includes('count') && count === '8') return { changedVariables: ev.changedVariables, count };
      }
      throw new Error('vf.changes() ended');
    })();
  });
  nodeVf.set('count', 8);
  await nodeVf.flush();
  const heard = await page.evaluate(async () => {
    const g = globalThis as unknown as PageGlobals;
    const seen = await g.countSeen;
    g.show('vf.changes(): count changed', `${seen.changedVariables.join(', ')} → ${seen.count}`);
    return seen;
  });
  assert.deepEqual(heard, { changedVariables: ['count'], count: '8' });

  await screenshot(t, page, 'browser-client');
  await page.evaluate(async () => {
    await (globalThis as unknown as PageGlobals).client.close();
  });
});

test('in the page, a wrong key is a CommyError with code AUTH_FAILED, and the client is remote-only', async (t) => {
  const srv = await startClientServer(t);
  const page = await openClientPage(t, srv.url);
  const outcome = await page.evaluate(async (url) => {
    const { Client, AuthCredentials, CommyError, VirtualVariableFile, isCommyError } = (globalThis as unknown as PageGlobals).commy;
    const codeOf = (err: unknown): string => (err instanceof CommyError ? err.code : `not a CommyError: ${String(err)}`);
    const wrongKey = await Client.initialize(url, 'acme', AuthCredentials.apiKey('ops:wrong')).then(
      () => 'connected',
      (err: unknown) => `${codeOf(err)} ${isCommyError(err)}`,
    );
    const embedded = await VirtualVariableFile.open('/tmp/x.mem', { create: true }).then(() => 'opened', codeOf);
    return { wrongKey, embedded };
  }, srv.url);
  assert.deepEqual(outcome, { wrongKey: 'AUTH_FAILED true', embedded: 'FILE_NOT_FOUND' });
});
