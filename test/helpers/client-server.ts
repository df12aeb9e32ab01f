import { AuthCredentials, Client, type ClientOptions } from '../../src/index.js';
import type { Server, ServerOptions } from '../../src/server/index.js';
import { startServer } from './server.js';

export const OPS_KEY = 'ops:s3cret';
export const VIEWER_KEY = 'viewer:view';

export interface ClientTestServer {
  server: Server;
  url: string;
  /** Client.initialize on tenant `acme` (mode 'remote' unless told); closed after the test, before the server. */
  connect(options?: ClientOptions, key?: string): Promise<Client>;
}

/** A real server (helpers/server.ts) plus Clients that are closed before it, so no test ends on a lost connection. */
export async function startClientServer(t: Parameters<typeof startServer>[0], options: ServerOptions = {}): Promise<ClientTestServer> {
  const clients: Client[] = [];
  // After-hooks run in the order they are added: this one, registered before the server's, runs first.
  t.after(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
  });
  const server = await startServer(t, options);
  return {
    server,
    url: server.url,
    async connect(options: ClientOptions = {}, key = OPS_KEY): Promise<Client> {
      const client = await Client.initialize(server.url, 'acme', AuthCredentials.apiKey(key), { mode: 'remote', ...options });
      clients.push(client);
      return client;
    },
  };
}
