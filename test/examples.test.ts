import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openPage, screenshot } from './helpers/browser.js';
import { freePort } from './helpers/port.js';
import { tempDir } from './helpers/temp.js';

/**
 * The README's examples, run as a user runs them (each script a process of its own, in a fresh directory), on
 * free ports, with Chromium looking at what they show: they must keep working as the code under them changes.
 */

const EXAMPLES = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples');

interface Running {
  readonly child: ChildProcess;
  output(): string;
  /** Resolves with the first output line matching `re`. */
  line(re: RegExp): Promise<RegExpMatchArray>;
}

function run(t: Parameters<typeof tempDir>[0] & { after(fn: () => unknown): void }, script: string, cwd: string, env: Record<string, string>): Running {
  const child = spawn(process.execPath, [join(EXAMPLES, script)], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiting: Array<() => void> = [];
  const take = (chunk: Buffer) => {
    out += chunk.toString();
    for (const w of waiting.splice(0)) w();
  };
  child.stdout!.on('data', take);
  child.stderr!.on('data', take);
  t.after(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((done) => child.once('exit', done));
    child.kill('SIGINT'); // the examples stop cleanly on Ctrl-C
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  });
  const line = async (re: RegExp): Promise<RegExpMatchArray> => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const m = out.match(re);
      if (m !== null) return m;
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${script} printed no ${re} (exit ${child.exitCode}):\n${out}`);
      await new Promise<void>((done) => {
        waiting.push(done);
        setTimeout(done, 500);
      });
    }
  };
  return { child, output: () => out, line };
}

test('examples/sensors: the producer writes 1,000 samples a second through the mapped file, and the inspector shows them live', { timeout: 180_000 }, async (t) => {
  const dir = tempDir(t);
  const env = { COMMY_EXAMPLE_PORT: String(await freePort()) };
  const server = run(t, 'sensors/server.mjs', dir, env);
  const [, inspector] = await server.line(/inspector: (\S+)/);
  const producer = run(t, 'sensors/producer.mjs', dir, env);
  await producer.line(/mode local/);
  const { page, guard } = await openPage(t);
  await page.goto(inspector!);
  const samples = async () => Number(await page.locator('[data-variable="sensors/samples"] [data-value]').textContent());
  await guard(page.waitForFunction(() => Number(document.querySelector('[data-variable="sensors/samples"] [data-value]')?.textContent) > 500, undefined, { timeout: 60_000 }));
  const first = await samples();
  await guard(page.waitForFunction((n) => Number(document.querySelector('[data-variable="sensors/samples"] [data-value]')?.textContent) > n + 500, first, { timeout: 60_000 }));
  assert.match((await page.locator('[data-variable="sensors/vibration"] [data-value]').textContent()) ?? '', /^x: .*\ny: .*\nz: /, 'the struct shown as fields, a line each');
  await screenshot(t, page, 'example-sensors');
  await page.context().close(); // before the processes stop: the page would log its reconnection attempts
});

test('examples/ecs: the simulation moves 40 entities through the mapped file, and the page follows them with one signalMap', { timeout: 180_000 }, async (t) => {
  const dir = tempDir(t);
  const env = { COMMY_EXAMPLE_PORT: String(await freePort()), COMMY_EXAMPLE_PAGE_PORT: String(await freePort()) };
  const server = run(t, 'ecs/server.mjs', dir, env);
  const [, view] = await server.line(/world view: (\S+)/);
  const simulation = run(t, 'ecs/simulation.mjs', dir, env);
  await simulation.line(/40 entities in mode local/);
  const { page, guard } = await openPage(t);
  await page.goto(view!);
  await guard(page.waitForFunction(() => document.getElementById('status')?.dataset.entities === '40', undefined, { timeout: 60_000 }));
  const updates = Number(await page.evaluate(() => document.getElementById('status')!.dataset.updates));
  await guard(page.waitForFunction((n) => Number(document.getElementById('status')?.dataset.updates) > n + 30, updates, { timeout: 60_000 }));
  await screenshot(t, page, 'example-ecs');
  await page.context().close();
});
