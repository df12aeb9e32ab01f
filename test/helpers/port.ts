import { createServer } from 'node:net';

/**
 * A loopback port that was free a moment ago, for a process that must be told its port before it listens (an
 * example script, redis-server). Another process may take it in between: rare enough for tests.
 */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((done) => srv.listen(0, '127.0.0.1', done));
  const { port } = srv.address() as { port: number };
  await new Promise<void>((done) => srv.close(() => done()));
  return port;
}
