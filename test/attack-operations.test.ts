import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, copyFileSync, open, openSync, truncateSync, writeSync } from 'node:fs';
import { createServer, type Server as HttpServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { AuthCredentials, Client, VariableMetadata, VariableType } from '../src/index.js';
import { H } from '../src/local/file-format.js';
import { runCli } from './helpers/cli.js';
import { startServer } from './helpers/server.js';
import { OPS } from './helpers/server-process.js';
import { tempDir } from './helpers/temp.js';
import { pino } from 'pino';

/**
 * Attacks on the operational surfaces: /metrics, graceful stop, durability's syncs, `commy inspect`, `commy stats`.
 * Each test is a defect found by attacking them, fixed unless marked todo.
 */


/** A plain HTTP server on 127.0.0.1 answering every request with `handle`; closed after the test. */
async function httpServer(t: { after(fn: () => void): void }, handle: Parameters<typeof createServer>[1]): Promise<string> {
  const server: HttpServer = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/**
 * Occupies every thread of libuv's pool (each blocked opening a FIFO that has no writer yet), so an fdatasync the
 * server starts meanwhile waits; `release()` lets them all go.
 */
function blockThreadPool(t: { after(fn: () => void): void }): { release(): void } {
  const fifo = join(tempDir(t, 'commy-pool-'), 'fifo');
  execFileSync('mkfifo', [fifo]);
  const size = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  for (let i = 0; i < size; i++) open(fifo, 'r', (err, fd) => err === null && closeSync(fd));
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    closeSync(openSync(fifo, 'w')); // every reader's open() returns: the pool is free again
  };
  t.after(release);
  return { release };
}

test('durability: server.close() while a periodic sync is still running waits for it before closing the file', { timeout: 120_000 }, async (t) => {
  const errors: unknown[] = [];
  const server = await startServer(t, { durability: 'periodic', syncIntervalMs: 20, onError: (err) => errors.push(err) });
  const client = await Client.initialize(server.url, 'acme', OPS, { mode: 'remote', onError: () => {}, reconnect: false });
  const vf = await client.getVirtualServiceFile('acme', 'synced');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  await new Promise((resolve) => setTimeout(resolve, 300)); // the registration's periodic sync is done

  const pool = blockThreadPool(t);
  vf.set('n', 42n);
  await vf.flush();
  await client.close();
  // The periodic timer fires meanwhile: its fdatasync is queued behind the blocked threads, the file no longer dirty.
  await new Promise((resolve) => setTimeout(resolve, 300));
  let closed = false;
  const closing = server.close().then(() => (closed = true));
  await new Promise((resolve) => setTimeout(resolve, 300));
  const closedBeforeSync = closed;
  pool.release();
  await closing;
  await new Promise((resolve) => setTimeout(resolve, 200)); // a stray fdatasync on a closed descriptor reports here
  assert.equal(closedBeforeSync, false, 'close() resolved while the last sync of a written file had not run');
  assert.deepEqual(errors.map(String), [], 'the sync ran on a descriptor closed under it');
});

test('/metrics still answers when a local process has damaged one open service file', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t, { onError: () => {} });
  const client = await Client.initialize(server.url, 'acme', OPS, { mode: 'remote', onError: () => {}, reconnect: false });
  t.after(() => client.close());
  const vf = await client.getVirtualServiceFile('acme', 'damaged');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  truncateSync(join(server.config.dataDir, 'tenants', 'acme', 'damaged.mem'), 0);
  const res = await fetch(`${server.url.replace(/^ws/, 'http')}/metrics`);
  const body = await res.text();
  assert.equal(res.status, 200, body);
  assert.match(body, /^commy_connections\{state="authenticated"\} 1$/m);
});

test('/metrics: a flood of scrapes shares collections instead of running one per request', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const SOCKETS = 40;
  const PIPELINED = 10;
  const bodies: string[] = [];
  await Promise.all(
    Array.from({ length: SOCKETS }, () =>
      new Promise<void>((resolve, reject) => {
        const socket = connect(server.port, '127.0.0.1');
        let text = '';
        socket.setEncoding('latin1');
        socket.on('data', (d: string) => {
          text += d;
          const parts = text.split(/HTTP\/1\.1 200 OK\r\n/).slice(1);
          const done = parts.filter((p) => /# EOF|commy_file_syncs_total \d+\n/.test(p));
          if (done.length === PIPELINED) {
            for (const p of done) bodies.push(p.slice(p.indexOf('\r\n\r\n') + 4));
            socket.destroy();
            resolve();
          }
        });
        socket.on('error', reject);
        socket.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(PIPELINED));
      }),
    ),
  );
  assert.equal(bodies.length, SOCKETS * PIPELINED);
  const distinct = new Set(bodies).size;
  // One collection per request would make each body differ (CPU time, heap, lag); shared, a handful do.
  assert.ok(distinct <= (SOCKETS * PIPELINED) / 4, `${distinct} distinct collections for ${bodies.length} scrapes`);
});

test('/metrics does not tell an unauthenticated client which tenants exist', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const client = await Client.initialize(server.url, 'beta', AuthCredentials.apiKey('ops:beta-secret'), { mode: 'remote', onError: () => {}, reconnect: false });
  t.after(() => client.close());
  await client.getVirtualServiceFile('beta', 'secret-project');
  const body = await (await fetch(`${server.url.replace(/^ws/, 'http')}/metrics`)).text();
  assert.doesNotMatch(body, /tenant="beta"/);
});

test('commy inspect: control characters in a file\'s recorded tenant or service name are escaped, never sent to the terminal', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const client = await Client.initialize(server.url, 'acme', OPS, { mode: 'remote', onError: () => {}, reconnect: false });
  const vf = await client.getVirtualServiceFile('acme', 'plain');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  await client.close();
  const path = join(tempDir(t, 'commy-inspect-'), 'hostile.mem');
  copyFileSync(join(server.config.dataDir, 'tenants', 'acme', 'plain.mem'), path);
  // Anyone who can write the file can write its header: an OSC title change, a screen clear, a forged line.
  const name = Buffer.from('\x1b]0;owned\x07\x1b[2J\nfile       /etc/shadow\r', 'latin1');
  const fd = openSync(path, 'r+');
  writeSync(fd, name, 0, name.length, H.TENANT);
  writeSync(fd, Buffer.from([name.length]), 0, 1, H.TENANT_LEN);
  closeSync(fd);
  const run = await runCli(['inspect', path], t);
  assert.equal(run.code, 0, run.stderr);
  assert.doesNotMatch(run.stdout, /[\x00-\x08\x0b-\x1f\x7f]/, 'a control character reached the terminal');
  assert.equal(run.stdout.split('\n').filter((l) => l.startsWith('file ')).length, 1, 'a line forged by the file');
  assert.match(run.stdout, /^service .*\\u001b\]0;owned\\u0007/m);
});

test('commy stats: a server answering /metrics with an endless body is refused, not read into memory', { timeout: 120_000 }, async (t) => {
  const chunk = Buffer.alloc(1 << 20, 0x61);
  const url = await httpServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    const more = (): void => {
      while (!res.destroyed && res.write(chunk));
      if (!res.destroyed) res.once('drain', more);
    };
    more();
  });
  const run = await runCli(['stats', url, '--interval', '0.1', '--count', '1'], t);
  assert.equal(run.code, 1, run.stdout);
  assert.match(run.stderr, /^commy: .*metrics.*more than \d+ MiB/m);
});

test('commy stats: a server that never answers /metrics is given up on', { timeout: 120_000 }, async (t) => {
  const url = await httpServer(t, () => {});
  const run = await runCli(['stats', url, '--interval', '0.1', '--count', '1'], t);
  assert.equal(run.code, 1, run.stdout);
  assert.match(run.stderr, /^commy: .*metrics.*(did not answer|timed out)/m);
});

test('logs: a client cannot make the server write a line per connection it opens past its limits', { timeout: 120_000 }, async (t) => {
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
  const server = await startServer(t, { logger, limits: { maxUnauthenticatedPerIp: 10 } });
  const sockets = Array.from({ length: 500 }, () => connect(server.port, '127.0.0.1').on('error', () => {}));
  await Promise.all(sockets.map((s) => new Promise((resolve) => s.once('close', resolve).once('connect', () => setTimeout(resolve, 200)))));
  for (const s of sockets) s.destroy();
  assert.ok(lines.length <= 50, `${lines.length} log lines for 500 refused connections`);
});
