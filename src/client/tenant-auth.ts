import { PROTOCOL_VERSION, type AuthenticatedBody } from '../protocol/messages.js';
import { credentialOf, type AuthCredentials } from './auth-credentials.js';
import { newClientKey } from './client-key.js';
import type { Connection } from './connection.js';

/** The tenants a client authenticated to, kept to authenticate again on each new connection. */
export class TenantAuth {
  /** Every tenant this client authenticated to, to authenticate again after a reconnection. */
  private readonly tenants = new Map<string, AuthCredentials>();
  /** This client's identity for operation ids (Authenticate.clientKey): the same on every connection. */
  private readonly clientKey = newClientKey();
  private hostId: string | undefined;

  /** `authenticated` hears each Authenticated reply, at once (the server's limits come with it). */
  constructor(private readonly authenticated: (reply: AuthenticatedBody) => void) {}

  /** From the last Authenticated: the machine the server runs on. */
  get serverHostId(): string | undefined {
    return this.hostId;
  }

  /** Authenticates `conn` to one tenant (remember() it once that succeeded, to authenticate it again later). */
  async authenticateOn(conn: Connection, tenant: string, credentials: AuthCredentials): Promise<void> {
    const reply = await conn.request(
      'Authenticate',
      { tenant, method: credentials.method, credential: credentialOf(credentials), protocol: PROTOCOL_VERSION, clientKey: this.clientKey },
      'Authenticated',
    );
    this.hostId = reply.hostId;
    this.authenticated(reply);
  }

  remember(tenant: string, credentials: AuthCredentials): void {
    this.tenants.set(tenant, credentials);
  }

  /** Every remembered tenant (a live view: one remembered meanwhile is included). */
  remembered(): IterableIterator<[string, AuthCredentials]> {
    return this.tenants.entries();
  }
}
