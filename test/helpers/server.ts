import { Server, type ServerOptions } from '../../src/server/index.js';
import { tempDir } from './temp.js';

export const TEST_TENANTS = {
  acme: {
    keys: [
      { id: 'ops', secret: 's3cret', read: ['*'], write: ['*'], admin: ['*'] },
      { id: 'viewer', secret: 'view', read: ['*'], write: [], admin: [] },
      { id: 'editor', secret: 'edit', read: ['*'], write: ['*'], admin: [] },
      { id: 'dash', secret: 'dash', read: ['dash-*'], write: ['dash-*'], admin: ['dash-*'] },
    ],
  },
  beta: { keys: [{ id: 'ops', secret: 'beta-secret', read: ['*'], write: ['*'], admin: ['*'] }] },
};

/** A real server on 127.0.0.1, port 0, in a fresh data directory; closed after the test. */
export async function startServer(t: Parameters<typeof tempDir>[0], options: ServerOptions = {}): Promise<Server> {
  const dataDir = tempDir(t, 'commy-server-');
  const server = await Server.start({
    host: '127.0.0.1',
    port: 0,
    dataDir,
    config: { tenants: TEST_TENANTS, audit: { enabled: false } },
    ...options,
  });
  t.after(() => server.close());
  return server;
}
