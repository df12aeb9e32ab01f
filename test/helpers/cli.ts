import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The compiled CLI (dist/src/cli.js). */
export const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

/** Runs the CLI to its end: exit code and output. With `t`, it is killed after the test if it never ends. */
export async function runCli(args: string[], t?: { after(fn: () => void): void }): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  t?.after(() => proc.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d) => (stdout += String(d)));
  proc.stderr!.on('data', (d) => (stderr += String(d)));
  const code = await new Promise<number | null>((resolve) => proc.on('exit', (c) => resolve(c)));
  return { code, stdout, stderr };
}

/**
 * Starts `commy serve ARGS` in `cwd` (killed after the test) and reads the dev key and the URL it prints (a
 * server on embedded defaults: no tenant configured).
 */
export async function serveCli(t: { after(fn: () => void): void }, cwd: string, args: string[]): Promise<{ url: string; key: string; exited: Promise<number | null>; stop: () => void }> {
  const proc = spawn(process.execPath, [CLI, 'serve', ...args], { cwd, stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  t.after(() => proc.kill('SIGKILL'));
  let key = '';
  let url = '';
  for await (const line of createInterface({ input: proc.stdout! })) {
    key ||= /API key: (\S+)/.exec(line)?.[1] ?? '';
    url ||= /listening on (\S+)/.exec(line)?.[1] ?? '';
    if (key !== '' && url !== '') break;
  }
  assert.match(key, /^dev:/);
  assert.match(url, /^ws:\/\/127\.0\.0\.1:\d+$/);
  return { url, key, exited, stop: () => proc.kill('SIGTERM') };
}
