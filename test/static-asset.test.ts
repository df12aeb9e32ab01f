import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, request, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { acceptsGzip, lazyAsset, loadAsset, serveAsset, type AssetLoad } from '../src/server/static-asset.js';
import { httpOrigin } from './helpers/browser.js';
import { startServer } from './helpers/server.js';
import { tempDir } from './helpers/temp.js';

/** GET /client.js and /client.js.map (the browser bundle, served from memory) and the asset serving behind them. */

const BUNDLE = fileURLToPath(new URL('../browser/client.js', import.meta.url)); // dist/browser/, beside dist/test/

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** One request as a browser or curl sends it, the body as it came (not decompressed). */
function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

test('GET /client.js: the bundle from memory, JavaScript, for any origin, revalidated by ETag, gzipped when accepted', async (t) => {
  const server = await startServer(t);
  const url = `${httpOrigin(server.url)}/client.js`;
  const onDisk = readFileSync(BUNDLE);

  const plain = await get(url);
  assert.equal(plain.status, 200);
  assert.deepEqual(plain.body, onDisk, 'the bundle as built');
  assert.equal(plain.headers['content-type'], 'text/javascript; charset=utf-8');
  assert.equal(plain.headers['access-control-allow-origin'], '*');
  assert.equal(plain.headers['cache-control'], 'no-cache');
  assert.equal(plain.headers['vary'], 'accept-encoding');
  assert.equal(plain.headers['content-encoding'], undefined);
  assert.equal(Number(plain.headers['content-length']), onDisk.byteLength);
  const etag = plain.headers['etag'];
  assert.match(etag ?? '', /^"[A-Za-z0-9_-]+"$/);

  const zipped = await get(url, { 'accept-encoding': 'br, gzip;q=0.8, deflate' });
  assert.equal(zipped.status, 200);
  assert.equal(zipped.headers['content-encoding'], 'gzip');
  assert.deepEqual(gunzipSync(zipped.body), onDisk);
  assert.ok(zipped.body.byteLength < onDisk.byteLength / 2, `gzipped ${zipped.body.byteLength} of ${onDisk.byteLength} bytes`);
  assert.notEqual(zipped.headers['etag'], etag, 'another representation, another strong ETag');
  t.diagnostic(`client.js: ${onDisk.byteLength} bytes, ${zipped.body.byteLength} gzipped`);

  const refused = await get(url, { 'accept-encoding': 'gzip;q=0, identity' });
  assert.equal(refused.headers['content-encoding'], undefined, 'gzip;q=0 is a refusal');

  const revalidated = await get(url, { 'if-none-match': etag! });
  assert.equal(revalidated.status, 304);
  assert.equal(revalidated.body.byteLength, 0);
  assert.equal(revalidated.headers['etag'], etag);
  assert.equal((await get(url, { 'if-none-match': '"something-else"' })).status, 200);

  const head = await get(url, {}, 'HEAD');
  assert.equal(head.status, 200);
  assert.equal(head.body.byteLength, 0);
  assert.equal(Number(head.headers['content-length']), onDisk.byteLength);
});

test('GET /client.js.map: the source map the bundle names, with the sources in it', async (t) => {
  const server = await startServer(t);
  const origin = httpOrigin(server.url);
  const bundle = (await get(`${origin}/client.js`)).body.toString('utf8');
  assert.match(bundle, /\n\/\/# sourceMappingURL=client\.js\.map\n?$/);
  const reply = await get(`${origin}/client.js.map`);
  assert.equal(reply.status, 200);
  assert.equal(reply.headers['content-type'], 'application/json; charset=utf-8');
  const map = JSON.parse(reply.body.toString('utf8')) as { version: number; sources: string[]; sourcesContent: string[] };
  assert.equal(map.version, 3);
  assert.ok(map.sources.some((s) => s.endsWith('src/client/client.ts')), 'maps back to the TypeScript');
  assert.equal(map.sourcesContent.length, map.sources.length);
});

test('a missing asset is a 503 that says what to do, every time, and the server goes on', async (t) => {
  const missing = join(tempDir(t), 'client.js');
  const load = loadAsset(missing, 'text/javascript', 'build it with npm run build');
  const http = createServer((req, res) => serveAsset(req, res, load));
  await new Promise<void>((done) => http.listen(0, '127.0.0.1', done));
  t.after(() => new Promise<void>((done) => http.close(() => done())));
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/client.js`;
  for (let i = 0; i < 2; i++) {
    const reply = await get(url, { 'accept-encoding': 'gzip' });
    assert.equal(reply.status, 503);
    assert.equal(reply.headers['access-control-allow-origin'], '*', 'a page on another origin can read why');
    assert.equal(reply.body.toString('utf8'), `${missing} cannot be read (ENOENT): build it with npm run build\n`);
  }
});

test('lazyAsset reads once, a failure too: no request reads the disk after the first', () => {
  let loads = 0;
  const asset = lazyAsset((): AssetLoad => {
    loads++;
    return { missing: 'not built' };
  });
  assert.equal(loads, 0, 'nothing before the first request');
  for (let i = 0; i < 3; i++) assert.deepEqual(asset(), { missing: 'not built' });
  assert.equal(loads, 1);
});

test('Accept-Encoding: gzip when named or *, unless its q is 0', () => {
  const cases: [string | undefined, boolean][] = [
    [undefined, false],
    ['', false],
    ['gzip', true],
    ['GZIP', true],
    ['x-gzip', true],
    ['deflate, gzip;q=1.0, *;q=0.5', true],
    ['br', false],
    ['gzip;q=0', false],
    ['gzip; q=0.000', false],
    ['*', true],
    ['*;q=0', false],
    ['*, gzip;q=0', false],
    ['identity', false],
  ];
  for (const [header, expected] of cases) assert.equal(acceptsGzip(header), expected, `Accept-Encoding: ${header}`);
});

test('every answer of the port says what it is: plain text, metrics and a 404 carry nosniff', async (t) => {
  const server = await startServer(t);
  const origin = httpOrigin(server.url);
  for (const path of ['/healthz', '/metrics', '/no-such-route']) {
    const r = await get(`${origin}${path}`);
    assert.equal(r.headers['x-content-type-options'], 'nosniff', path);
  }
});
