import { spawn } from 'node:child_process';
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
