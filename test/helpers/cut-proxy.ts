import { createServer, connect, type Server as NetServer, type Socket } from 'node:net';

/**
 * A TCP proxy between one WebSocket client and a real server, so a test can take the client's connection away
 * without touching the server: `cut()` drops every proxied connection (FIN, or RST with `rst`); while `offline`,
 * new connections are dropped as they come (the client keeps trying); while `blackhole`, nothing the server sends
 * reaches the client (its reports arrive and are applied, their acknowledgements are lost).
 */
export class CutProxy {
  offline = false;
  blackhole = false;
  /** Connections forwarded, and connections dropped because the proxy was offline. */
  accepted = 0;
  refused = 0;
  private readonly pairs = new Set<{ down: Socket; up: Socket }>();
  private readonly server: NetServer;

  private constructor(private readonly targetPort: number) {
    this.server = createServer((down) => this.onConnection(down));
  }

  static async start(targetPort: number): Promise<CutProxy> {
    const proxy = new CutProxy(targetPort);
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  get connections(): number {
    return this.pairs.size;
  }

  private onConnection(down: Socket): void {
    down.on('error', () => {});
    if (this.offline) {
      this.refused++;
      down.resetAndDestroy();
      return;
    }
    this.accepted++;
    const up = connect(this.targetPort, '127.0.0.1');
    up.on('error', () => {});
    const pair = { down, up };
    this.pairs.add(pair);
    const end = () => {
      if (!this.pairs.delete(pair)) return;
      down.destroy();
      up.destroy();
    };
    down.on('data', (chunk) => up.write(chunk));
    up.on('data', (chunk) => {
      if (!this.blackhole) down.write(chunk);
    });
    down.on('close', end);
    up.on('close', end);
  }

  /** Drops every proxied connection now; returns how many. */
  cut(rst = false): number {
    const n = this.pairs.size;
    for (const pair of [...this.pairs]) {
      this.pairs.delete(pair);
      if (rst) {
        pair.down.resetAndDestroy();
        pair.up.resetAndDestroy();
      } else {
        pair.down.destroy();
        pair.up.destroy();
      }
    }
    return n;
  }

  close(): Promise<void> {
    this.cut(true);
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
