import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Page } from 'playwright-core';
import { VariableMetadata, VariableType } from '../src/index.js';
import { httpOrigin, openPage, screenshot } from './helpers/browser.js';
import { OPS_KEY, startClientServer, VIEWER_KEY } from './helpers/client-server.js';

/**
 * The inspector (GET /inspector) in a real browser against a real server, beside Node clients: live values,
 * edits where the key may write, none where it may not, nothing for a wrong key. Found through the spec's
 * data-* hooks only, as any automation would.
 */

/** Waits (up to a minute) for what a Node client sees. */
async function until(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

const cell = (page: Page, id: string) => page.locator(`[data-variable="${id}"] [data-value]`);

async function valueIs(page: Page, id: string, text: string): Promise<void> {
  await page.waitForFunction(
    ([sel, want]) => document.querySelector(sel!)?.textContent === want,
    [`[data-variable="${id}"] [data-value]`, text] as const,
    { timeout: 60_000 },
  );
}

async function plant(t: Parameters<typeof startClientServer>[0]) {
  const srv = await startClientServer(t);
  const node = await srv.connect({ mode: 'remote' });
  const vf = await node.getVirtualServiceFile('acme', 'plant');
  await vf.registerVariable(new VariableMetadata('temp', -1, 8, VariableType.F64));
  await vf.registerVariable(new VariableMetadata('count', -1, 8, VariableType.U64));
  await vf.registerVariable(new VariableMetadata('label', -1, 16, VariableType.String));
  await vf.registerVariable(VariableMetadata.struct('pos', { x: VariableType.F64, y: VariableType.I64 }));
  vf.set('pos', { x: 1.5, y: 2n });
  vf.set('temp', 21.5);
  vf.set('count', 7n);
  vf.set('label', 'boiler <b>1</b>');
  await vf.flush();
  return { srv, vf, inspector: `${httpOrigin(srv.server.url)}/inspector` };
}

test('the inspector shows a service live: a Node write appears, an edit in the page reaches a Node client; the key leaves the address bar', { timeout: 180_000 }, async (t) => {
  const { vf, inspector } = await plant(t);
  const { page, guard } = await openPage(t);
  await page.goto(`${inspector}#tenant=acme&key=${encodeURIComponent(OPS_KEY)}`);
  await guard(valueIs(page, 'plant/temp', '21.5'));
  assert.equal(new URL(page.url()).hash, '', 'the key is gone from the URL');
  assert.equal(await cell(page, 'plant/count').textContent(), '7');
  assert.equal(await cell(page, 'plant/label').textContent(), '"boiler <b>1</b>"', 'a value is text, never markup');
  assert.equal(await page.locator('[data-variable="plant/label"] b').count(), 0);
  assert.equal(await cell(page, 'plant/pos').textContent(), 'x: 1.5\ny: 2', 'a struct: its fields');

  // Live: a series of Node writes, the page follows to the last.
  for (let i = 1; i <= 20; i++) {
    vf.set('temp', 21.5 + i);
    await vf.flush();
  }
  await guard(valueIs(page, 'plant/temp', '41.5'));

  // An edit: Enter commits it, a Node client sees it.
  await page.locator('input[data-edit="plant/count"]').fill('42');
  await page.locator('input[data-edit="plant/count"]').press('Enter');
  await until(() => vf.get('count') === 42n);
  assert.equal(vf.get('count'), 42n);
  await guard(valueIs(page, 'plant/count', '42'));
  // A bad edit is refused in the page, with its code, and nothing is written.
  await page.locator('input[data-edit="plant/count"]').fill('not a number');
  await page.locator('input[data-edit="plant/count"]').press('Enter');
  await guard(page.waitForFunction(() => document.querySelector('[data-variable="plant/count"] .note')?.textContent?.startsWith('TYPE_MISMATCH'), undefined, { timeout: 30_000 }));
  assert.equal(vf.get('count'), 42n);
  // A struct is edited as JSON of some of its fields; the others keep their value.
  await page.locator('input[data-edit="plant/pos"]').fill('{"y": 5}');
  await page.locator('input[data-edit="plant/pos"]').press('Enter');
  await guard(valueIs(page, 'plant/pos', 'x: 1.5\ny: 5'));
  await until(() => (vf.get('pos') as { y: bigint }).y === 5n);
  assert.deepEqual(vf.get('pos'), { x: 1.5, y: 5n });
  await page.waitForFunction(() => (document.querySelector('#traffic-figures dl') !== null), undefined, { timeout: 30_000 });
  await screenshot(t, page, 'inspector');
  await page.context().close(); // before the server closes: the page would log its failing /metrics poll
});

test('a read-only key sees values but no edit control; the form signs in too', { timeout: 120_000 }, async (t) => {
  const { inspector } = await plant(t);
  const { page, guard } = await openPage(t);
  await page.goto(inspector);
  await page.locator('input[name="tenant"]').fill('acme');
  await page.locator('input[name="key"]').fill(VIEWER_KEY);
  await page.locator('button[type="submit"]').click();
  await guard(valueIs(page, 'plant/temp', '21.5'));
  assert.equal(await page.locator('[data-variable]').count(), 4);
  assert.equal(await page.locator('[data-edit]').count(), 0, 'no edit control where the key may not write');
  await page.context().close();
});

test('a wrong key sees nothing: AUTH_FAILED, no service, no variable', { timeout: 120_000 }, async (t) => {
  const { inspector } = await plant(t);
  // The browser logs the refused WebSocket itself; that is expected here.
  const { page, guard } = await openPage(t, [/WebSocket|websocket|401|403/]);
  await page.goto(`${inspector}#tenant=acme&key=ops:wrong`);
  await guard(page.waitForFunction(() => document.getElementById('signin-error')?.textContent?.includes('AUTH_FAILED'), undefined, { timeout: 60_000 }));
  assert.equal(await page.locator('[data-variable]').count(), 0);
  assert.equal(await page.locator('[data-service]').count(), 0);
  assert.ok(await page.locator('#main').isHidden());
  await page.context().close();
});

test('the page is served with a policy that allows this server\'s scripts only', async (t) => {
  const { inspector } = await plant(t);
  const res = await fetch(inspector);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
  assert.match(res.headers.get('content-security-policy') ?? '', /script-src 'self'/);
  assert.equal(res.headers.get('x-frame-options'), 'DENY');
  const html = await res.text();
  assert.ok(!/<script>/.test(html), 'no inline script');
  const js = await fetch(`${inspector}.js`);
  assert.equal(js.status, 200);
  assert.match(await js.text(), /from"\.\/client\.js"/, 'built on the server\'s own client.js');
});
