import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { gzipSync } from 'node:zlib';

/** A file served from memory: read and gzipped once, never per request. */
export interface StaticAsset {
  readonly contentType: string;
  readonly raw: Buffer;
  readonly gzip: Buffer;
  /** Strong validators, one per representation (RFC 9110: a gzipped body is another representation). */
  readonly etag: string;
  readonly gzipEtag: string;
  /** Sent with it besides the usual ones (a page's Content-Security-Policy). */
  readonly headers?: Readonly<Record<string, string>>;
}

/** A file that could not be read: `message` says which and what to do, for the 503 answer. */
export interface MissingAsset {
  readonly missing: string;
}

export type AssetLoad = StaticAsset | MissingAsset;

/** Reads `path` once, with its gzipped form and ETags; a missing or unreadable file is a MissingAsset, not a throw. */
export function loadAsset(path: string, contentType: string, whenMissing: string): AssetLoad {
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    return { missing: `${path} cannot be read (${code}): ${whenMissing}` };
  }
  return assetOf(raw, contentType);
}

/** An asset made of `raw` (a page the server holds in memory, or a file read): its gzipped form and ETags. */
export function assetOf(raw: Buffer, contentType: string, headers: Readonly<Record<string, string>> = {}): StaticAsset {
  const tag = createHash('sha256').update(raw).digest('base64url').slice(0, 27);
  return { contentType, raw, gzip: gzipSync(raw), etag: `"${tag}"`, gzipEtag: `"${tag}-gz"`, headers };
}

/** Loads on first use and keeps the result, the failure too: a missing file is not looked for again per request. */
export function lazyAsset(load: () => AssetLoad): () => AssetLoad {
  let loaded: AssetLoad | undefined;
  return () => (loaded ??= load());
}

/** Does the request's Accept-Encoding take gzip (named, or `*`, with a q above 0)? */
export function acceptsGzip(header: string | undefined): boolean {
  if (header === undefined) return false;
  let gzip: boolean | undefined;
  let star = false;
  for (const part of header.split(',')) {
    const [name = '', ...params] = part.split(';').map((s) => s.trim().toLowerCase());
    const q = params.find((p) => p.startsWith('q='));
    const wanted = q === undefined || Number(q.slice(2)) > 0;
    if (name === 'gzip' || name === 'x-gzip') gzip = wanted;
    else if (name === '*') star = wanted;
  }
  return gzip ?? star; // an explicit gzip;q=0 wins over *
}

/** Does If-None-Match name one of the asset's representations? (Weak comparison, as RFC 9110 asks for GET.) */
function matches(ifNoneMatch: string | undefined, asset: StaticAsset): boolean {
  if (ifNoneMatch === undefined) return false;
  return ifNoneMatch.split(',').some((t) => {
    const tag = t.trim().replace(/^W\//, '');
    return tag === '*' || tag === asset.etag || tag === asset.gzipEtag;
  });
}

/**
 * Answers with the asset: any origin may load it (a page elsewhere imports the client), a cache revalidates
 * it every time (an upgraded server changes it at the same URL), gzipped when the request takes gzip.
 */
export function serveAsset(req: IncomingMessage, res: ServerResponse, load: AssetLoad): void {
  res.setHeader('access-control-allow-origin', '*');
  if ('missing' in load) {
    res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }).end(`${load.missing}\n`);
    return;
  }
  const gzip = acceptsGzip(req.headers['accept-encoding']);
  const etag = gzip ? load.gzipEtag : load.etag;
  const headers: Record<string, string | number> = { etag, 'cache-control': 'no-cache', vary: 'accept-encoding' };
  if (matches(req.headers['if-none-match'], load)) {
    res.writeHead(304, headers).end();
    return;
  }
  const body = gzip ? load.gzip : load.raw;
  Object.assign(headers, { 'content-type': load.contentType, 'content-length': body.byteLength, 'x-content-type-options': 'nosniff' }, load.headers);
  if (gzip) headers['content-encoding'] = 'gzip';
  res.writeHead(200, headers).end(body); // HEAD: Node sends the headers only
}
