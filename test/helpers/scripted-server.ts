import assert from 'node:assert/strict';
import { WebSocketServer, type WebSocket } from 'ws';
import { AuthCredentials, Client, type CommyError } from '../../src/index.js';
import { decodeFrame, encodeFrame } from '../../src/protocol/frame-codec.js';
import type { Message, MessageBodies, MessageOf, MessageTypeName } from '../../src/protocol/messages.js';

/** A WebSocket server that hands every decoded frame to the test, with the socket to answer on. */
export class ScriptedServer {
  readonly wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  private readonly inbox: { ws: WebSocket; msg: Message }[] = [];
  private waiter: (() => void) | undefined;

  async start(): Promise<string> {
    await new Promise((resolve) => this.wss.once('listening', resolve));
    this.wss.on('connection', (ws) => {
      ws.on('message', (data) => {
        this.inbox.push({ ws, msg: decodeFrame(new Uint8Array(data as Buffer)) });
        this.waiter?.();
      });
    });
    return `ws://127.0.0.1:${(this.wss.address() as { port: number }).port}`;
  }

  /** The next frame the client sent (Authenticate is answered here, and returned too). */
  async next<K extends MessageTypeName>(type: K): Promise<{ ws: WebSocket; msg: MessageOf<K> }> {
    for (;;) {
      const i = this.inbox.findIndex((m) => m.msg.type === type);
      if (i >= 0) return this.inbox.splice(i, 1)[0] as { ws: WebSocket; msg: MessageOf<K> };
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => assert.fail(`no ${type} within 20 s`), 20_000);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Authenticates the next connection; returns its socket and the clientKey it sent. */
  async accept(): Promise<{ ws: WebSocket; clientKey: string | undefined }> {
    const { ws, msg } = await this.next('Authenticate');
    send(ws, 'Authenticated', msg.id, { clientId: 'c', hostId: 'another-machine', protocol: 1, keyId: 'ops' });
    return { ws, clientKey: msg.body.clientKey };
  }

  close(): Promise<void> {
    for (const ws of this.wss.clients) ws.terminate();
    return new Promise((resolve) => this.wss.close(() => resolve()));
  }
}

export function send<K extends MessageTypeName>(ws: WebSocket, type: K, id: number, body: MessageBodies[K]): void {
  ws.send(encodeFrame(type, id, body));
}

/**
 * A remote Client (tenant acme) of a fresh ScriptedServer, authenticated: the socket to answer on, and what the
 * client reported to onError. Both are closed after the test.
 */
export async function scriptedClient(t: { after(fn: () => unknown): void }): Promise<{ server: ScriptedServer; ws: WebSocket; client: Client; errors: CommyError[] }> {
  const server = new ScriptedServer();
  const url = await server.start();
  t.after(() => server.close());
  const errors: CommyError[] = [];
  const initializing = Client.initialize(url, 'acme', AuthCredentials.apiKey('ops:s3cret'), { mode: 'remote', onError: (e) => errors.push(e) });
  const { ws } = await server.accept();
  const client = await initializing;
  t.after(() => client.close());
  return { server, ws, client, errors };
}
