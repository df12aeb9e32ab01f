import { Redis } from 'ioredis';

/** Ping-pong partner for the Redis pub/sub peer: republishes every `ping` message on `pong`. */
const port = Number(process.argv[2]);
const sub = new Redis({ port, host: '127.0.0.1' });
const pub = new Redis({ port, host: '127.0.0.1' });
await sub.subscribe('ping');
sub.on('message', (_channel: string, message: string) => {
  if (message === 'stop') {
    sub.disconnect();
    pub.disconnect();
    process.disconnect?.();
    return;
  }
  void pub.publish('pong', message);
});
process.send?.('ready');
