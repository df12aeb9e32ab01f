import { existsSync, mkdirSync } from 'node:fs';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';

import { CHROMIUM, CHROMIUM_ARGS } from './chromium.js';

export { CHROMIUM, CHROMIUM_ARGS };

/** Where tests put what a person may want to look at after a run (screenshots); git-ignored. */
export const ARTIFACTS = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test-artifacts');

type TestContext = { after(fn: () => unknown): void; diagnostic(message: string): void };

let launched: Promise<Browser> | undefined;

// Registered while this module loads, so on the test file's root: `after` called inside a test would attach
// to that test, and the browser would close before the file's next test. (node --test runs each file in a
// process of its own, so "the root" is one file.)
after(async () => {
  const browser = await launched?.catch(() => undefined);
  await browser?.close();
});

/**
 * The test file's browser: launched on first use, closed when the file's tests are done. Fails with the way to
 * install Chromium when it is missing (never a silent skip).
 */
export function testBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    return Promise.reject(new Error(`the browser tests need Chromium at ${CHROMIUM}: run 'sh scripts/install-browser.sh' (as root; it runs apt-get install chromium), or set COMMY_CHROMIUM`));
  }
  launched ??= chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS] });
  return launched;
}

/** A page of the test's own, and what went wrong in it so far: uncaught exceptions and console errors. */
export interface TestPage {
  readonly page: Page;
  readonly problems: readonly string[];
  /** `work`, or the page's first problem as soon as it has one (a wait for the page then fails at once, saying why). */
  guard<T>(work: Promise<T>): Promise<T>;
}

/**
 * A fresh page (in a context of its own) of the file's browser, closed after the test. An uncaught exception
 * or a console error in it fails the test (`expected` lists console errors the test provokes on purpose).
 */
export async function openPage(t: TestContext, expected: readonly RegExp[] = []): Promise<TestPage> {
  const browser = await testBrowser();
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems: string[] = [];
  let reject: (err: Error) => void = () => {};
  const failed = new Promise<never>((_, r) => (reject = r));
  failed.catch(() => {}); // only guarded waits await it
  const report = (problem: string): void => {
    problems.push(problem);
    reject(new Error(`the page reported: ${problem}`));
  };
  page.on('pageerror', (err) => report(`page exception: ${err.stack ?? err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !expected.some((re) => re.test(msg.text()))) report(`console error: ${msg.text()}`);
  });
  t.after(async () => {
    await context.close();
    // A throwing hook skips the test's later ones (a server to close, …): the check goes last, as a hook
    // added now, which node:test runs after the others (test/browser-harness.test.ts checks both).
    t.after(() => {
      if (problems.length > 0) throw new Error(`the page reported problems:\n${problems.join('\n')}`);
    });
  });
  return { page, problems, guard: <T>(work: Promise<T>) => Promise.race([work, failed]) };
}

/** Saves a screenshot of `page` into test-artifacts/ and names it in the test's output. */
export async function screenshot(t: TestContext, page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  t.diagnostic(`screenshot: ${path}`);
  return path;
}

/**
 * Serves `html` at the root of another origin than the server's (its own port on 127.0.0.1), as a web
 * application on its own host would; closed after the test.
 */
export async function servePage(t: TestContext, html: string): Promise<string> {
  const http: HttpServer = createServer((req, res) => {
    if (req.url === '/' || req.url === '/index.html') res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(html);
    else res.writeHead(204).end(); // /favicon.ico and the like: nothing, and no console error for it
  });
  await new Promise<void>((done) => http.listen(0, '127.0.0.1', done));
  t.after(() => {
    const closed = new Promise<void>((done) => http.close(() => done()));
    http.closeAllConnections(); // the browser keeps its connections alive past the page
    return closed;
  });
  return `http://127.0.0.1:${(http.address() as AddressInfo).port}/`;
}

/** The server's HTTP origin for its WebSocket URL (`ws://H:P` → `http://H:P`, `wss` → `https`). */
export function httpOrigin(wsUrl: string): string {
  return wsUrl.replace(/^ws/, 'http').replace(/\/$/, '');
}
