import assert from 'node:assert/strict';
import { AuthCredentials, Client, type ClientOptions } from '../../src/index.js';
import { startChild, type Child } from './child.js';

/** A real server in a child process (fixtures/server-process.ts) that a test can kill, stop and restart, and its clients. */

export const OPS = AuthCredentials.apiKey('ops:s3cret');
/** Reconnection fast enough for tests, its breaker out of the way. */
export const FAST_RECONNECT: ClientOptions['reconnect'] = { initialDelayMs: 10, maxDelayMs: 200, breaker: { failures: 1000, resetMs: 1000 } };

export async function until(check: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The server on `dataDir` (on `port` to restart a killed one where its clients look for it). */
export async function serverIn(t: { after(fn: () => void): void }, dataDir: string, port?: string): Promise<{ child: Child; url: string }> {
  const child = startChild('server-process', port === undefined ? [dataDir] : [dataDir, port], t);
  const { url } = await child.next<{ url: string }>('ready');
  return { child, url };
}

/** A remote client of tenant acme that reconnects fast; closed after the test. */
export async function reconnectingClient(t: { after(fn: () => Promise<void>): void }, url: string, options: ClientOptions = {}): Promise<Client> {
  const c = await Client.initialize(url, 'acme', OPS, { mode: 'remote', onError: () => {}, reconnect: FAST_RECONNECT, ...options });
  t.after(() => c.close());
  return c;
}
