import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { VirtualVariableFile, VariableMetadata, VariableType, type FileChangeEvent } from '../src/index.js';
import type { SeenEvent } from './fixtures/flush-peer.js';
import { startChild, type Child } from './helpers/child.js';
import { tempDir } from './helpers/temp.js';

/**
 * "A version is a write": a local flush() publishes only raw writes into bytes() that nothing has versioned,
 * so a write carries exactly one version whoever flushes afterwards (docs/client.md, Local mode). Peers are
 * real processes mapping the same file (test/fixtures/flush-peer.ts); a marker variable written last tells a
 * watcher that everything before it has been seen, so nothing here waits on time.
 */

type T = Parameters<typeof tempDir>[0];

const TIMEOUT = { timeout: 120_000 };

/** A flush-peer process: `ask` sends a command and resolves with its answer. */
interface Peer {
  ask<R = Record<string, unknown>>(type: string, args?: Record<string, string>): Promise<R>;
}

interface Versions {
  service: string;
  vars: Record<string, string>;
}

async function service(t: T, names: string[]): Promise<[string, VirtualVariableFile]> {
  const path = join(tempDir(t), 'flush.mem');
  const vf = await VirtualVariableFile.open(path, { create: true });
  t.after(() => vf.close());
  for (const name of names) await vf.registerVariable(new VariableMetadata(name, -1, 8, VariableType.U64));
  return [path, vf];
}

async function peer(t: T, path: string): Promise<Peer> {
  const child: Child = startChild('flush-peer', [path], t);
  await child.next('ready');
  return {
    async ask<R>(type: string, args: Record<string, string> = {}): Promise<R> {
      child.send({ type, ...args });
      return child.next<R>(`${type}-done`);
    },
  };
}

/** Every listed observer's versions of `name` (the test process's own and each peer's): the same `expected`. */
async function assertVersionEverywhere(vf: VirtualVariableFile, peers: Peer[], name: string, expected: string): Promise<void> {
  assert.equal(String(vf.handle(name).version()), expected, `${name} in this process`);
  for (const [i, p] of peers.entries()) {
    const { vars } = await p.ask<Versions>('versions');
    assert.equal(vars[name], expected, `${name} in peer ${i}`);
  }
}

/** The versions of `name` a watcher peer saw, one per event naming it, up to the event naming `marker`. */
async function seenBy(watcher: Peer, name: string, marker: string): Promise<string[]> {
  const { events } = await watcher.ask<{ events: SeenEvent[] }>('events', { until: marker });
  return events.filter((e) => e.changed.includes(name)).map((e) => e.versions[name]!);
}

/** The same from this process's own vf.changes(): the version of each name at each event naming it. */
async function seenHere(events: AsyncIterableIterator<FileChangeEvent>, vf: VirtualVariableFile, names: string[], marker: string): Promise<Record<string, string[]>> {
  const seen: Record<string, string[]> = Object.fromEntries(names.map((n) => [n, []]));
  for await (const ev of events) {
    for (const n of names) if (ev.changedVariables.includes(n)) seen[n]!.push(String(vf.handle(n).version()));
    if (ev.changedVariables.includes(marker)) break;
  }
  return seen;
}

test('a value written once through set() keeps its one version when other processes and this one flush', TIMEOUT, async (t) => {
  const [path, vf] = await service(t, ['x', 'done']);
  const [a, b, watcher] = await Promise.all([peer(t, path), peer(t, path), peer(t, path)]);
  await watcher.ask('watch');
  const here = vf.changes();
  // Every shadow predates the write, so every flush below sees x changed since its shadow.
  await Promise.all([a.ask('flush'), b.ask('flush'), vf.flush()]);
  const before = vf.version;

  const { version } = await a.ask<{ version: string }>('set', { name: 'x', value: '42' });
  await b.ask('flush');
  await a.ask('flush');
  await vf.flush();
  await b.ask('flush');
  await a.ask('set', { name: 'done', value: '1' });

  assert.deepEqual(await seenBy(watcher, 'x', 'done'), [version], 'the watcher process saw one version of x');
  assert.deepEqual((await seenHere(here, vf, ['x'], 'done')).x, [version], 'this process\'s vf.changes() saw one version of x');
  await assertVersionEverywhere(vf, [a, b, watcher], 'x', version);
  assert.equal(vf.version, before + 2n, 'two writes (x, done), two versions');
  assert.equal(vf.get('x'), 42n);
});

test('a raw write into bytes() then flush() is published once, whichever process flushes first', TIMEOUT, async (t) => {
  const [path, vf] = await service(t, ['x', 'y', 'done']);
  const [a, b, watcher] = await Promise.all([peer(t, path), peer(t, path), peer(t, path)]);
  await watcher.ask('watch');
  const here = vf.changes();
  await Promise.all([a.ask('flush'), b.ask('flush'), vf.flush()]);
  const before = vf.version;

  // The writer publishes its raw write; the others then see the same bytes changed, already versioned.
  await a.ask('raw', { name: 'x', value: '7' });
  await a.ask('flush');
  const x = (await a.ask<Versions>('versions')).vars.x!;
  assert.equal(BigInt(x), before + 1n, 'flush() gave the raw write a version');
  await b.ask('flush');
  await vf.flush();
  await a.ask('flush');

  // Another process flushes first: the mapping is shared, so it finds (and publishes) the writer's raw write.
  await a.ask('raw', { name: 'y', value: '9' });
  await b.ask('flush');
  const y = (await b.ask<Versions>('versions')).vars.y!;
  assert.equal(BigInt(y), before + 2n);
  await a.ask('flush');
  await vf.flush();
  await b.ask('flush');
  await a.ask('set', { name: 'done', value: '1' });

  assert.deepEqual(await seenBy(watcher, 'x', 'done'), [x], 'the watcher process saw x once');
  assert.deepEqual(await seenBy(watcher, 'y', 'done'), [y], 'the watcher process saw y once');
  assert.deepEqual(await seenHere(here, vf, ['x', 'y'], 'done'), { x: [x], y: [y] });
  await assertVersionEverywhere(vf, [a, b, watcher], 'x', x);
  await assertVersionEverywhere(vf, [a, b, watcher], 'y', y);
  assert.equal(vf.version, before + 3n, 'three writes (x, y, done), three versions');
  assert.deepEqual([vf.get('x'), vf.get('y')], [7n, 9n]);
});

test('a raw write and an API write to different variables: the raw one gets one version, the API one keeps its own', TIMEOUT, async (t) => {
  const [path, vf] = await service(t, ['api', 'raw', 'done']);
  const [a, b, watcher] = await Promise.all([peer(t, path), peer(t, path), peer(t, path)]);
  await watcher.ask('watch');
  await Promise.all([a.ask('flush'), b.ask('flush'), vf.flush()]);
  const before = vf.version;

  await a.ask('raw', { name: 'raw', value: '5' });
  const { version: api } = await b.ask<{ version: string }>('set', { name: 'api', value: '6' });
  await b.ask('flush'); // b publishes a's raw write: the only unversioned change
  const raw = (await b.ask<Versions>('versions')).vars.raw!;
  await a.ask('flush');
  await vf.flush();
  await a.ask('set', { name: 'done', value: '1' });

  assert.deepEqual(await seenBy(watcher, 'api', 'done'), [api]);
  assert.deepEqual(await seenBy(watcher, 'raw', 'done'), [raw]);
  await assertVersionEverywhere(vf, [a, b, watcher], 'api', api);
  await assertVersionEverywhere(vf, [a, b, watcher], 'raw', raw);
  assert.deepEqual([BigInt(api), BigInt(raw)], [before + 1n, before + 2n]);
  assert.equal(vf.version, before + 3n);
  assert.deepEqual([vf.get('api'), vf.get('raw')], [6n, 5n]);
});

test('a variable both raw-written and written through the API since the last flush keeps the API write\'s version', TIMEOUT, async (t) => {
  const [path, vf] = await service(t, ['x']);
  const a = await peer(t, path);
  await Promise.all([a.ask('flush'), vf.flush()]);
  vf.bytes()[vf.variables()[0]!.offset] = 3; // raw, unpublished
  const { version } = await a.ask<{ version: string }>('set', { name: 'x', value: '4' });
  await vf.flush();
  await a.ask('flush');
  assert.equal(String(vf.handle('x').version()), version, 'no second version for the API write\'s value');
  assert.equal(vf.get('x'), 4n);
});

test('raw writes after an API write, and into a variable registered after the shadow, are still published', async (t) => {
  const [, vf] = await service(t, ['x']);
  const x = vf.variables()[0]!;
  const view = new DataView(vf.bytes().buffer, vf.bytes().byteOffset); // takes the shadow
  vf.set('x', 1n);
  await vf.flush(); // the API write is versioned already: nothing to publish
  const api = vf.handle('x').version();
  assert.equal(vf.version, api);

  view.setBigUint64(x.offset, 2n, true); // a raw write after that flush
  await vf.flush();
  assert.equal(vf.handle('x').version(), api + 1n);

  await vf.flush(); // its own publication is not taken for an API write: a later raw write is published too
  view.setBigUint64(x.offset, 3n, true);
  await vf.flush();
  assert.equal(vf.handle('x').version(), api + 2n);

  // Registration versions the new variable, but writes nothing into it: a raw write there is unpublished.
  const late = await vf.registerVariable(new VariableMetadata('late', -1, 8, VariableType.U64));
  const registered = vf.handle('late').version();
  new DataView(vf.bytes().buffer, vf.bytes().byteOffset).setBigUint64(late.offset, 8n, true);
  await vf.flush();
  assert.equal(vf.handle('late').version(), registered + 1n);
  assert.equal(vf.get('late'), 8n);
  assert.equal(vf.version, registered + 1n);
});
