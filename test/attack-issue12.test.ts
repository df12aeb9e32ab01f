import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Page } from 'playwright-core';
import { pino } from 'pino';
import { VariableMetadata, VariableType } from '../src/index.js';
import type { VariableDef } from '../src/protocol/messages.js';
import { httpOrigin, openPage } from './helpers/browser.js';
import { OPS_KEY, startClientServer, VIEWER_KEY } from './helpers/client-server.js';
import { scriptedClient, send } from './helpers/scripted-server.js';
import { TEST_TENANTS } from './helpers/server.js';
import { tempDir } from './helpers/temp.js';

/**
 * Attacks on this session's work (issue 12): staleness notices from a hostile server, struct values, the
 * browser surfaces. The journal's own attacks are in attack-journal.test.ts.
 */

const u64 = (n: number): Uint8Array => new Uint8Array(new BigUint64Array([BigInt(n)]).buffer);

async function until(check: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The heap after a full collection (gc exposed for this process through V8's flags). */
function heapAfterGc(): number {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

// ---- a hostile server's SyncPending (type 77) -------------------------------------------------------------

test('a hostile server\'s SyncPending notices (bogus indices by the million, bad shapes, unknown sids) neither grow the client\'s memory nor corrupt its copy', { timeout: 120_000 }, async (t) => {
  const { server, ws, client, errors } = await scriptedClient(t);
  const opening = client.getVirtualServiceFile('acme', 'svc');
  const sub = await server.next('Subscription');
  assert.equal(sub.msg.body.pending, true);
  const variables: VariableDef[] = [[0, 'x', 0, 8, VariableType.U64, 1]];
  send(ws, 'Snapshot', sub.msg.id, { sid: 1, serviceId: 'acme/svc', version: 1, variables, data: u64(1), readOnly: false, fileId: 'f' });
  const vf = await opening;

  const before = heapAfterGc();
  // 40 notices, each naming 60,000 variables the client never heard of (indices it cannot have), at huge versions.
  for (let n = 0; n < 40; n++) {
    const pending: [number, number][] = [];
    for (let i = 0; i < 60_000; i++) pending.push([1 + n * 60_000 + i, 2 ** 52]);
    send(ws, 'SyncPending', 0, { sid: 1, version: 2 ** 52, pending });
  }
  // Shapes the frame check refuses, and a sid the client does not have.
  ws.send(Buffer.from([0x93, 77, 0, 0x82, 0xa3, 0x73, 0x69, 0x64, 1, 0xa7, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0xff])); // version -1
  send(ws, 'SyncPending', 0, { sid: 99, version: 5, pending: [[0, 5]] });
  send(ws, 'SyncPending', 0, { sid: 1, version: 3, pending: [[0, 3]] });
  await until(() => vf.staleness('x').versionsBehind === 2, 'the real notice');
  send(ws, 'SyncBatch', 0, { sid: 1, version: 3, updates: [[0, 3, u64(42)]] });
  await until(() => vf.get('x') === 42n, 'the batch after the notices');
  assert.deepEqual(vf.staleness('x'), { versionsBehind: 0, ms: 0 }, 'current once delivered');
  const grown = heapAfterGc() - before;
  t.diagnostic(`heap grew by ${(grown / 1e6).toFixed(1)} MB after 2.4 million bogus owed entries; errors: ${errors.map((e) => e.code).join(',')}`);
  assert.ok(grown < 40e6, `the client keeps what a hostile server says it owes for variables it does not have: +${(grown / 1e6).toFixed(0)} MB`);
});

// ---- the inspector in a real browser ----------------------------------------------------------------------

const HOSTILE = '<img src=x onerror="window.pwned=1">';

async function valueIs(page: Page, id: string, text: string, timeout = 60_000): Promise<void> {
  await page.waitForFunction(([sel, want]) => document.querySelector(sel!)?.textContent === want, [`[data-variable="${id}"] [data-value]`, text] as const, { timeout });
}

test('inspector: markup in values, struct fields and edit errors shows as text; the policy blocks inline script however it gets in', { timeout: 180_000 }, async (t) => {
  const srv = await startClientServer(t);
  const node = await srv.connect();
  const vf = await node.getVirtualServiceFile('acme', 'xss');
  await vf.registerVariable(new VariableMetadata('label', -1, 64, VariableType.String));
  await vf.registerVariable(VariableMetadata.struct('pos', { name: { type: VariableType.String, size: 48 }, x: VariableType.F64 }));
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  vf.set('label', HOSTILE);
  vf.set('pos', { name: '<script>window.pwned=2</script>', x: 1.5 });
  await vf.flush();
  // The browser reports what the policy refuses as console errors: those are provoked here.
  const { page, guard } = await openPage(t, [/Content Security Policy/]);
  await page.goto(`${httpOrigin(srv.url)}/inspector#tenant=acme&key=${encodeURIComponent(OPS_KEY)}`);
  await guard(valueIs(page, 'xss/label', JSON.stringify(HOSTILE)));
  await guard(valueIs(page, 'xss/pos', 'name: "<script>window.pwned=2</script>"\nx: 1.5'));
  // An edit whose error message repeats what was typed.
  await page.locator('input[data-edit="xss/n"]').fill('<img src=x onerror="window.pwned=3">');
  await page.locator('input[data-edit="xss/n"]').press('Enter');
  await guard(page.waitForFunction(() => document.querySelector('[data-variable="xss/n"] .note')?.textContent?.startsWith('TYPE_MISMATCH'), undefined, { timeout: 30_000 }));
  // A struct edit naming inherited properties: refused by the inspector, nothing written.
  await page.locator('input[data-edit="xss/pos"]').fill('{"__proto__": {"x": 9}, "constructor": 1}');
  await page.locator('input[data-edit="xss/pos"]').press('Enter');
  await guard(page.waitForFunction(() => /TYPE_MISMATCH: .* is not a value for these fields/.test(document.querySelector('[data-variable="xss/pos"] .note')?.textContent ?? ''), undefined, { timeout: 30_000 }));
  assert.equal(await page.locator('#services img, #services script').count(), 0, 'no element made of a value');
  // Inline script put in by any means (an element, a handler attribute) is refused by the page's policy.
  const blocked = await page.evaluate(async () => {
    const refused = new Promise<string[]>((resolve) => {
      const seen: string[] = [];
      document.addEventListener('securitypolicyviolation', (e) => {
        seen.push(e.violatedDirective);
        if (seen.length === 2) resolve(seen);
      });
    });
    const s = document.createElement('script');
    s.textContent = 'window.pwned = 4';
    document.body.append(s);
    const img = document.createElement('img');
    img.setAttribute('onerror', 'window.pwned = 5');
    img.src = 'data:,x';
    document.body.append(img);
    return refused;
  });
  assert.ok(blocked.every((d) => d.startsWith('script-src')), blocked.join(','));
  assert.equal(await page.evaluate(() => (window as { pwned?: unknown }).pwned), undefined, 'nothing ran');
  assert.deepEqual(vf.get('pos'), { name: '<script>window.pwned=2</script>', x: 1.5 });
  assert.equal(vf.get('n'), 0n);
  await page.close(); // before the server closes under it (a failed /metrics poll is a console error)
});

test('inspector: the key in the fragment reaches no request, header or server log; without the page\'s script the form cannot send it in a URL', { timeout: 180_000 }, async (t) => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const dataDir = tempDir(t);
  const srv = await startClientServer(t, { dataDir, logger: pino({ level: 'trace' }, sink), config: { tenants: TEST_TENANTS, audit: { enabled: true } } });
  const node = await srv.connect();
  const vf = await node.getVirtualServiceFile('acme', 'k');
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  const secret = 's3cret';
  const { page, guard } = await openPage(t, [/Content Security Policy/, /inspector\.js/, /ERR_FAILED/]);
  const seen: string[] = [];
  page.on('request', (req) => void seen.push(`${req.method()} ${req.url()} ${JSON.stringify(req.headers())} ${req.postData() ?? ''}`));
  await page.goto(`${httpOrigin(srv.url)}/inspector#tenant=acme&key=${encodeURIComponent(OPS_KEY)}`);
  await guard(valueIs(page, 'k/x', '0'));
  vf.set('x', 5n);
  await vf.flush();
  await guard(valueIs(page, 'k/x', '5'));
  await page.waitForFunction(() => document.querySelector('#traffic-figures dl') !== null, undefined, { timeout: 30_000 }); // /metrics fetched
  assert.ok(seen.length >= 3, seen.join('\n'));
  assert.deepEqual(seen.filter((r) => r.includes(secret)), [], 'no request carries the key');
  assert.ok(!page.url().includes(secret), 'the address bar no longer holds it');
  await page.goto('about:blank');

  // The page without its script (blocked, or slow to load): a submitted form would be a GET of /inspector?…&key=…,
  // the key in the server's request line and in the browser's history. The policy's form-action 'none' stops it.
  await page.route('**/inspector.js', (route) => route.abort());
  await page.goto(`${httpOrigin(srv.url)}/inspector`);
  await page.locator('input[name="tenant"]').fill('acme');
  await page.locator('input[name="key"]').fill(OPS_KEY);
  const refused = page.evaluate(() => new Promise<string>((resolve) => document.addEventListener('securitypolicyviolation', (e) => resolve(e.violatedDirective))));
  await page.locator('button[type="submit"]').click({ noWaitAfter: true });
  assert.equal(await refused, 'form-action');
  assert.deepEqual(seen.filter((r) => r.includes(secret)), [], 'the form sent nothing');
  await page.close();
  await node.close();
  await srv.server.close();
  const audit = readFileSync(join(dataDir, 'audit.log'), 'utf8');
  assert.ok(audit.length > 0 && lines.length > 0);
  assert.ok(!audit.includes(secret) && !lines.some((l) => l.includes(secret)), 'neither the audit log nor the server log holds the key');
});

test('inspector: a read-only key, crafting writes through the page\'s own client (an edit field of its own making, WriteVariable, Mutate), is refused by the server', { timeout: 180_000 }, async (t) => {
  const srv = await startClientServer(t);
  const node = await srv.connect();
  const vf = await node.getVirtualServiceFile('acme', 'ro');
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  vf.set('x', 7n);
  await vf.flush();
  const { page, guard } = await openPage(t);
  await page.goto(`${httpOrigin(srv.url)}/inspector#tenant=acme&key=${encodeURIComponent(VIEWER_KEY)}`);
  await guard(valueIs(page, 'ro/x', '7'));
  assert.equal(await page.locator('[data-edit]').count(), 0);
  const codes = await page.evaluate(async ([url, key]) => {
    // An input with the spec's hook, made by hand: nothing listens to it.
    const input = document.createElement('input');
    input.setAttribute('data-edit', 'ro/x');
    document.querySelector('[data-variable="ro/x"]')!.append(input);
    input.value = '99';
    input.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));
    const { Client, AuthCredentials } = (await import('/client.js' as string)) as typeof import('../src/browser.js');
    const c = await Client.initialize(url!, 'acme', AuthCredentials.apiKey(key!), { mode: 'remote' });
    const code = async (p: Promise<unknown>) => p.then(() => 'ok', (e: { code?: string }) => e.code ?? String(e));
    const bytes = new Uint8Array(8);
    bytes[0] = 99;
    const out = [await code(c.writeVariable('acme', 'ro', 'x', bytes))];
    const rvf = await c.getVirtualServiceFile('acme', 'ro');
    out.push(await code(rvf.mutate('x', 99n)));
    await c.close();
    return out;
  }, [srv.url, VIEWER_KEY] as const);
  assert.deepEqual(codes, ['PERMISSION_DENIED', 'PERMISSION_DENIED']);
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(vf.get('x'), 7n, 'nothing was written');
  await page.close();
});

test('inspector: a service of 5,000 variables, one of them written 10,000 times a second: the page answers throughout, shows the final value, and its once-a-second refresh rewrites no cell that did not change', { timeout: 300_000 }, async (t) => {
  const srv = await startClientServer(t);
  const node = await srv.connect({ mode: 'auto' }); // local: registrations and writes at memory speed
  const vf = await node.getVirtualServiceFile('acme', 'big');
  for (let i = 0; i < 5000; i++) await vf.registerVariable(new VariableMetadata(`v${i}`, -1, 8, VariableType.U64));
  for (let i = 0; i < 5000; i++) vf.set(`v${i}`, BigInt(i));
  await vf.flush();
  const { page, guard } = await openPage(t);
  await page.goto(`${httpOrigin(srv.url)}/inspector#tenant=acme&key=${encodeURIComponent(OPS_KEY)}`);
  await guard(valueIs(page, 'big/v4999', '4999', 120_000));
  // Idle: the refresh (every second: "changed … ago", staleness) must leave unchanged cells alone. Each rewrite
  // of a cell, even with the same text, made the browser lay out the 5,000-row table again.
  const rewritten = await page.evaluate(async () => {
    let n = 0;
    const observer = new MutationObserver((records) => void (n += records.length));
    observer.observe(document.getElementById('services')!, { subtree: true, childList: true, characterData: true });
    await new Promise((resolve) => setTimeout(resolve, 2500));
    observer.disconnect();
    return n;
  });
  assert.equal(rewritten, 0, `${rewritten} DOM changes in 2.5 s while nothing changed`);
  assert.equal(await page.evaluate(() => getComputedStyle(document.querySelector('[data-service="big"] table')!).tableLayout), 'fixed', 'a large table has a fixed layout');

  const h = vf.handle<bigint>('v0');
  let n = 0n;
  const end = Date.now() + 3000;
  const writer = (async () => {
    while (Date.now() < end) {
      for (let i = 0; i < 100; i++) h.set(++n);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  let answers = 0;
  while (Date.now() < end) {
    assert.equal(await page.evaluate(() => 1 + 1, undefined), 2); // Playwright's own timeout (30 s) is the bound
    answers++;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await writer;
  t.diagnostic(`${n} writes; the page answered ${answers} times meanwhile`);
  await guard(valueIs(page, 'big/v0', String(n)));
  assert.equal(await page.locator('[data-variable]').count(), 5000);
  await page.close();
});

test('inspector: sign-in submitted three times while it connects opens one client and one set of rows; a refused key can be corrected', { timeout: 120_000 }, async (t) => {
  const srv = await startClientServer(t);
  const node = await srv.connect();
  const vf = await node.getVirtualServiceFile('acme', 'once');
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  const { page, guard } = await openPage(t, [/WebSocket|websocket/]);
  await page.goto(`${httpOrigin(srv.url)}/inspector`);
  await page.locator('input[name="tenant"]').fill('acme');
  await page.locator('input[name="key"]').fill('ops:wrong');
  await page.locator('button[type="submit"]').click();
  await guard(page.waitForFunction(() => document.getElementById('signin-error')?.textContent?.includes('AUTH_FAILED'), undefined, { timeout: 60_000 }));
  await page.locator('input[name="key"]').fill(OPS_KEY);
  await page.evaluate(() => {
    const form = document.getElementById('signin') as HTMLFormElement;
    for (let i = 0; i < 3; i++) form.requestSubmit(); // a double click and an Enter, before the first connects
  });
  await guard(valueIs(page, 'once/x', '0'));
  await page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 1000))); // the others, had they gone, would be in by now
  assert.equal(await page.locator('[data-variable="once/x"]').count(), 1, 'one row per variable');
  assert.equal(srv.server.connectionCount, 2, 'the Node client and one inspector client');
  await page.close();
});
