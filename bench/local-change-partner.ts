/**
 * The other process of bench/local-change.ts: maps the same service file and, on every change of `ping`,
 * records how long ago the writer stamped it (one way, µs: the writer's process.hrtime.bigint() is
 * CLOCK_MONOTONIC, the same clock here) and echoes the value into `pong`.
 * 'mode' {mode: 'callback' | 'iterator'}: where changes come from: a callback on the file's watcher
 * (FileAccessor.watch, what vf.changes() is built on; commy/internal) or the public `for await (vf.changes())`.
 * 'collect': the one-way samples since the last collect.
 */
import { fileFromAccessor, nodePlatform, type FileAccessor } from '../src/internal.js';
import type { FileChangeEvent } from '../src/index.js';
import { VariableType } from '../src/index.js';
import { SampleBox, serveRequests } from './harness.js';

const accessor: FileAccessor = nodePlatform.openFile!(process.argv[2]!, {});
const vf = fileFromAccessor(accessor);
const ping = vf.handle('ping', VariableType.U64);
const pong = vf.handle('pong', VariableType.U64);
const samples = new SampleBox();
let last = 0n;

function onEvent(ev: FileChangeEvent): void {
  if (!ev.changedVariables.includes('ping')) return;
  const v = ping.get();
  if (v === last) return;
  samples.add(Number(process.hrtime.bigint() - v) / 1000);
  last = v;
  pong.set(v);
}

let stop: () => void = () => {};
serveRequests({ pid: process.pid }, {
  mode: ({ mode }) => {
    stop();
    if (mode === 'callback') {
      stop = accessor.watch(onEvent);
    } else {
      const events = vf.changes();
      void (async () => {
        for await (const ev of events) onEvent(ev);
      })();
      stop = () => void events.return?.();
    }
    return true;
  },
  collect: samples.collect,
}, async () => {
  stop();
  await vf.close();
});
