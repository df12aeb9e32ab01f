import { VirtualVariableFile } from '../src/index.js';

/** Ping-pong partner for the change-latency figure: copies `ping` to `pong` on every change event. */
const vf = await VirtualVariableFile.open(process.argv[2]!);
const ping = vf.handle<bigint>('ping');
const pong = vf.handle<bigint>('pong');
const events = vf.changes();
process.send?.('ready');
for await (const ev of events) {
  if (!ev.changedVariables.includes('ping')) continue;
  const v = ping.get();
  if (v < 0n) break;
  pong.set(v);
}
await vf.close();
process.disconnect?.();
