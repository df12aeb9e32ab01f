/**
 * The other process of bench/local-change.ts's Node floor: connects to the Unix socket at argv[2] and, for every
 * 8-byte stamp that arrives (the writer's process.hrtime.bigint()), records how long ago it was stamped (one way,
 * µs) and writes it straight back. What any two Node processes pay to wake each other: a socket, libuv's poll,
 * a 'data' event. 'collect': the one-way samples since the last collect.
 */
import { connect } from 'node:net';
import { SampleBox, serveRequests } from './harness.js';

const samples = new SampleBox();
const socket = connect(process.argv[2]!);
socket.setNoDelay?.(true);
socket.on('data', (chunk: Buffer) => {
  const now = process.hrtime.bigint();
  for (let at = 0; at + 8 <= chunk.length; at += 8) samples.add(Number(now - chunk.readBigUInt64LE(at)) / 1000);
  socket.write(chunk);
});
await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));

serveRequests({ pid: process.pid }, {
  collect: samples.collect,
}, () => {
  socket.destroy();
});
