// The examples' server: commy on 127.0.0.1:9000 (COMMY_EXAMPLE_PORT) with a tenant "demo" and one key (a fixed one: this is a demo,
// never a deployment — see docs/operations.md for real keys). Data in ./commy-example-data. Stop with Ctrl-C.
import { Server } from 'commy/server';

/** COMMY_EXAMPLE_PORT moves it (the examples' test runs them on free ports). */
export const PORT = Number(process.env.COMMY_EXAMPLE_PORT ?? 9000);
export const DEMO = { url: `ws://127.0.0.1:${PORT}`, tenant: 'demo', key: 'demo:demo-secret' };

export async function startDemoServer() {
  const server = await Server.start({
    host: '127.0.0.1',
    port: PORT,
    dataDir: './commy-example-data',
    config: { tenants: { demo: { keys: [{ id: 'demo', secret: 'demo-secret', read: ['*'], write: ['*'], admin: ['*'] }] } } },
  });
  const http = server.url.replace(/^ws/, 'http');
  console.log(`commy example server on ${server.url}`);
  console.log(`inspector: ${http}/inspector#tenant=${DEMO.tenant}&key=${DEMO.key}`);
  const stop = () => server.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return server;
}
