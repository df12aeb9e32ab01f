import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCommyError, VariableMetadata, VariableType, type VirtualVariableFile } from '../src/index.js';
import { startChild } from './helpers/child.js';
import { startClientServer } from './helpers/client-server.js';
import { guard } from './helpers/guard.js';

/**
 * Attack: vf.mutate with expectedVersion (a compare-and-set loop) from a remote client, while another process
 * maps the service file and increments the same variable in a loop (under the variable's writer lock, or by
 * its own compare-and-set). No increment of either side may be lost, and the versions this client sees of the
 * variable never go back.
 */

/**
 * `count` compare-and-set increments; checks after every read and every commit that the variable's version
 * never goes back, and that every committed version is above every version seen before. Returns the conflicts.
 */
async function casLoop(vf: VirtualVariableFile, count: number): Promise<{ conflicts: number; versions: bigint[] }> {
  const counter = vf.handle<bigint>('counter');
  let conflicts = 0;
  let highest = counter.version();
  const versions: bigint[] = [];
  const seen = (v: bigint, what: string): void => {
    assert.ok(v >= highest, `${what}: version ${v} after ${highest}: the client went back`);
    highest = v;
  };
  for (let i = 0; i < count; i++) {
    for (;;) {
      const version = counter.version();
      seen(version, 'read');
      const value = counter.get();
      try {
        const r = await vf.mutate('counter', value + 1n, { expectedVersion: version });
        assert.ok(r.version > version, `committed ${r.version} above the expected ${version}`);
        seen(r.version, 'commit');
        seen(counter.version(), 'after the commit');
        versions.push(r.version);
        break;
      } catch (err) {
        if (!isCommyError(err, 'CONFLICT')) throw err;
        conflicts++;
        await new Promise((resolve) => setTimeout(resolve, 1)); // let the newer value arrive
      }
    }
  }
  return { conflicts, versions };
}

for (const mode of ['update', 'cas'] as const) {
  test(`remote compare-and-set against a local process incrementing the same variable (${mode}): no increment lost, versions never go back`, { timeout: 180_000 }, async (t) => {
    const g = guard(t);
    const s = await startClientServer(t);
    const local = await s.connect({ mode: 'local' });
    const lvf = await local.getVirtualServiceFile('acme', `cas-${mode}`);
    assert.equal(lvf.mode, 'local');
    await lvf.registerVariable(new VariableMetadata('counter', -1, 8, VariableType.U64));
    const path = lvf.filePath!;
    const remote = await s.connect({ mode: 'remote' });
    const rvf = await remote.getVirtualServiceFile('acme', `cas-${mode}`);
    // The remote side's change events carry versions too: they never go back either.
    const events: bigint[] = [];
    const stop = rvf.changes();
    const watching = (async () => {
      for await (const ev of stop) if (ev.changedVariables.includes('counter')) events.push(ev.version);
    })();

    const remoteN = 500;
    const writer = startChild('attack-local-incr', [path, mode], t);
    await writer.next('ready');
    writer.send({ type: 'go' }); // it increments until told to stop: throughout the remote loop
    const { conflicts, versions } = await casLoop(rvf, remoteN);
    writer.send({ type: 'stop' });
    const done = await writer.next<{ increments: number; conflicts: number }>('done');
    await writer.exited;
    const localN = done.increments;
    t.diagnostic(`remote conflicts ${conflicts}; local increments ${localN}, conflicts ${done.conflicts}`);

    assert.equal(lvf.get('counter'), BigInt(localN + remoteN), 'every increment of both sides is in the file');
    assert.equal(new Set(versions).size, remoteN, 'each remote commit has its own version');
    for (let i = 1; i < versions.length; i++) assert.ok(versions[i]! > versions[i - 1]!, 'commits are ordered by version');
    // And the remote client ends on the file's value and version.
    const expected = lvf.handle('counter').version();
    await new Promise<void>((resolve, reject) => {
      const deadline = Date.now() + 30_000;
      const poll = (): void => {
        if (rvf.get('counter') === BigInt(localN + remoteN) && rvf.handle('counter').version() === expected) resolve();
        else if (Date.now() > deadline) reject(new Error(`the remote client is stuck at ${rvf.get('counter')} v${rvf.handle('counter').version()}, the file has ${localN + remoteN} v${expected}`));
        else setTimeout(poll, 20);
      };
      poll();
    });
    await rvf.close();
    await watching;
    for (let i = 1; i < events.length; i++) assert.ok(events[i]! >= events[i - 1]!, `change events went back: ${events[i - 1]} then ${events[i]}`);
    await g.check();
  });
}
