/**
 * The other process of bench/local-change.ts's Redis peer: subscribed to `ping`, it records how long ago each
 * message was stamped (one way, µs; the message is the writer's process.hrtime.bigint()) and republishes it
 * on `pong`. 'collect': the one-way samples since the last collect.
 */
import { Redis } from 'ioredis';
import { SampleBox, serveRequests } from './harness.js';

const port = Number(process.argv[2]);
const sub = new Redis({ port, host: '127.0.0.1' });
const pub = new Redis({ port, host: '127.0.0.1' });
await sub.subscribe('ping');
await pub.ping();
const samples = new SampleBox();
sub.on('message', (_channel: string, message: string) => {
  samples.add(Number(process.hrtime.bigint() - BigInt(message)) / 1000);
  void pub.publish('pong', message);
});
serveRequests({ pid: process.pid }, {
  collect: samples.collect,
}, () => {
  sub.disconnect();
  pub.disconnect();
});
