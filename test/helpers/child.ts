import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** A fixture script (test/fixtures/NAME.ts, compiled next to this file) running as a separate process. */
export interface Child {
  proc: ChildProcess;
  /** Resolves with the next IPC message whose `type` matches. */
  next<T = Record<string, unknown>>(type: string, timeoutMs?: number): Promise<T>;
  send(message: Record<string, unknown>): void;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): void;
}

export function startChild(name: string, args: string[], t?: { after(fn: () => void): void }): Child {
  const script = fileURLToPath(new URL(`../fixtures/${name}.js`, import.meta.url));
  const proc = fork(script, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const inbox: Record<string, unknown>[] = [];
  const waiting: { type: string; resolve: (m: Record<string, unknown>) => void }[] = [];
  proc.on('message', (raw) => {
    const msg = raw as Record<string, unknown>;
    const i = waiting.findIndex((w) => w.type === msg.type);
    if (i >= 0) waiting.splice(i, 1)[0]!.resolve(msg);
    else inbox.push(msg);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const child: Child = {
    proc,
    exited,
    next<T>(type: string, timeoutMs = 120_000): Promise<T> {
      const i = inbox.findIndex((m) => m.type === type);
      if (i >= 0) return Promise.resolve(inbox.splice(i, 1)[0] as T);
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`child ${name} sent no ${type} within ${timeoutMs} ms`)), timeoutMs);
        const failed = (m: Record<string, unknown>) => {
          clearTimeout(timer);
          reject(new Error(`child ${name} failed: ${String(m.error)}`));
        };
        waiting.push({ type: 'error', resolve: failed });
        waiting.push({
          type,
          resolve: (m) => {
            clearTimeout(timer);
            const j = waiting.findIndex((w) => w.resolve === failed);
            if (j >= 0) waiting.splice(j, 1);
            resolve(m as T);
          },
        });
        void exited.then(({ code, signal }) => {
          clearTimeout(timer);
          reject(new Error(`child ${name} exited (${code ?? signal}) before sending ${type}`));
        });
      });
    },
    send(message) {
      // To a child that has gone, a message is lost, not an error of its own: a reply the test waits for fails
      // through next() ("exited before sending"). Without the callback, the EPIPE of a send racing the child's
      // exit (a 'quit' in an after-hook) became an uncaught exception that failed the whole file.
      if (proc.connected) proc.send(message, () => {});
    },
    kill(signal = 'SIGKILL') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    },
  };
  t?.after(() => child.kill());
  return child;
}
