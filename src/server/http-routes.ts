import type { IncomingMessage, ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';
import type { AdmissionCounts } from './admission.js';
import type { AuthStats } from './auth.js';
import type { ServerMetrics } from './metrics.js';
import { INSPECTOR_CSP, INSPECTOR_HTML } from './inspector-page.js';
import { assetOf, lazyAsset, loadAsset, serveAsset } from './static-asset.js';

/** What an HTTP route may read of the running server (metrics and the inspector hang here later). */
export interface ServerState {
  /** True from the moment close() begins: the server is no longer ready for new clients. */
  readonly closing: boolean;
  readonly connectionCount: number;
  readonly admissionCounts: AdmissionCounts;
  readonly authStats: AuthStats;
  readonly openServices: number;
  /** The Prometheus exposition (metrics.ts). */
  readonly metrics: ServerMetrics;
  /** Does this request carry the metrics token (`Authorization: Bearer …`)? It then gets the per-tenant series. */
  metricsTokenOf(req: IncomingMessage): boolean;
}

export type HttpRoute = (req: IncomingMessage, res: ServerResponse, state: ServerState) => void;

const text = (res: ServerResponse, status: number, body: string): void => {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff' }).end(body);
};

/** The browser bundle (scripts/build-browser.mjs): dist/browser/, beside this file's dist/src/server/. */
const BUNDLE_DIR = new URL('../../browser/', import.meta.url);
const REBUILD = 'the browser bundle is built by `npm install` or `npm run build` (scripts/build-browser.mjs); restart the server after building it';
const clientJs = lazyAsset(() => loadAsset(fileURLToPath(new URL('client.js', BUNDLE_DIR)), 'text/javascript; charset=utf-8', REBUILD));
const clientJsMap = lazyAsset(() => loadAsset(fileURLToPath(new URL('client.js.map', BUNDLE_DIR)), 'application/json; charset=utf-8', REBUILD));
const inspectorJs = lazyAsset(() => loadAsset(fileURLToPath(new URL('inspector.js', BUNDLE_DIR)), 'text/javascript; charset=utf-8', REBUILD));
const inspectorJsMap = lazyAsset(() => loadAsset(fileURLToPath(new URL('inspector.js.map', BUNDLE_DIR)), 'application/json; charset=utf-8', REBUILD));
// The page may be framed by nobody and load nothing but this server's scripts (page.ts); it never leaves a referrer.
const inspectorPage = lazyAsset(() => assetOf(Buffer.from(INSPECTOR_HTML), 'text/html; charset=utf-8', { 'content-security-policy': INSPECTOR_CSP, 'referrer-policy': 'no-referrer', 'x-frame-options': 'DENY' }));

/** Plain HTTP on the WebSocket port, by path (GET and HEAD). */
export const HTTP_ROUTES: ReadonlyMap<string, HttpRoute> = new Map<string, HttpRoute>([
  // Alive: the process answers.
  ['/healthz', (_req, res) => text(res, 200, 'ok\n')],
  // Ready: it takes new clients (not while closing).
  ['/readyz', (_req, res, state) => (state.closing ? text(res, 503, 'closing\n') : text(res, 200, 'ok\n'))],
  // Prometheus text: every name commy_… (docs/operations.md, Metrics).
  ['/metrics', (req, res, state) => void scrapeInto(res, state.metrics, state.metricsTokenOf(req))],
  // The client for browsers, one ES module (docs/client.md, In a browser), and its source map.
  ['/client.js', (req, res) => serveAsset(req, res, clientJs())],
  ['/client.js.map', (req, res) => serveAsset(req, res, clientJsMap())],
  // The live inspector (docs/operations.md, Inspector): its page, and its script built on /client.js.
  ['/inspector', (req, res) => serveAsset(req, res, inspectorPage())],
  ['/inspector.js', (req, res) => serveAsset(req, res, inspectorJs())],
  ['/inspector.js.map', (req, res) => serveAsset(req, res, inspectorJsMap())],
]);

async function scrapeInto(res: ServerResponse, metrics: ServerMetrics, perTenant: boolean): Promise<void> {
  try {
    const { contentType, body } = await metrics.scrape(perTenant);
    res.writeHead(200, { 'content-type': contentType, 'x-content-type-options': 'nosniff' }).end(body);
  } catch {
    text(res, 500, 'metrics unavailable\n');
  }
}

export function routeHttp(req: IncomingMessage, res: ServerResponse, state: ServerState): void {
  const path = (req.url ?? '/').split('?', 1)[0]!;
  const route = req.method === 'GET' || req.method === 'HEAD' ? HTTP_ROUTES.get(path) : undefined; // HEAD: the same, without the body
  if (route === undefined) text(res, 404, 'not found\n');
  else route(req, res, state);
}
