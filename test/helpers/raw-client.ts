import { WebSocket } from 'ws';
import { decodeFrame, encodeFrame } from '../../src/protocol/frame-codec.js';
import type { Message, MessageBodies, MessageTypeName } from '../../src/protocol/messages.js';

/** A bare protocol client for server tests: sends frames, matches replies by request id, keeps pushes. */
export class RawClient {
  private nextId = 1;
  private readonly waiting = new Map<number, (m: Message) => void>();
  readonly pushes: Message[] = [];
  private pushWaiters: (() => void)[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      const m = decodeFrame(data, 64 * 1024 * 1024);
      const w = m.id !== 0 ? this.waiting.get(m.id) : undefined;
      if (w !== undefined) {
        this.waiting.delete(m.id);
        w(m);
      } else {
        this.pushes.push(m);
        for (const f of this.pushWaiters.splice(0)) f();
      }
    });
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  static connect(url: string, options: ConstructorParameters<typeof WebSocket>[2] = {}): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, options);
      ws.once('open', () => resolve(new RawClient(ws)));
      ws.once('error', reject);
    });
  }

  /** The id of the last request sent. */
  get lastRequestId(): number {
    return this.nextId - 1;
  }

  /** Sends a request and resolves with its reply (which may be an Error message). */
  request<K extends MessageTypeName>(type: K, body: MessageBodies[K]): Promise<Message> {
    return this.sendRaw(encodeFrame(type, this.nextId, body), this.nextId++);
  }

  sendRaw(frame: Uint8Array | string, id: number): Promise<Message> {
    return new Promise((resolve, reject) => {
      this.waiting.set(id, resolve);
      this.ws.send(frame, (err) => err && reject(err));
      void this.closed.then(() => reject(new Error(`closed before reply ${id}`)));
    });
  }

  async auth(tenant: string, credential: string): Promise<Message> {
    return this.request('Authenticate', { tenant, method: 'apiKey', credential, protocol: 1 });
  }

  /** Waits for a push matching `pred`. */
  async push(pred: (m: Message) => boolean, timeoutMs = 30_000): Promise<Message> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.pushes.findIndex(pred);
      if (i >= 0) return this.pushes.splice(i, 1)[0]!;
      if (Date.now() > deadline) throw new Error('no matching push');
      await new Promise<void>((r) => {
        this.pushWaiters.push(r);
        setTimeout(r, 200);
      });
    }
  }

  close(): void {
    this.ws.close();
  }
}

export function errorCode(m: Message): string | undefined {
  return m.type === 'Error' ? m.body.errorCode : undefined;
}
