import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { effect, type ReadonlySignal } from '@preact/signals-core';
import { CommyError, VariableMetadata, VariableType, VirtualVariableFile, type VariableTypeId } from '../src/index.js';
import { decodes, reactiveStats } from '../src/internal.js';
import { startChild, type Child } from './helpers/child.js';
import { startClientServer } from './helpers/client-server.js';
import { reconnectingClient, serverIn, until } from './helpers/server-process.js';
import { tempDir } from './helpers/temp.js';

/**
 * Reactive views (docs/client.md, "Reactive views"): vf.signal(), vf.signalMap() and vf.staleness(), watched
 * with effects of @preact/signals-core, in local mode (another process writing through the mapped file) and
 * remote mode (another client writing through the server).
 */

type Test = Parameters<typeof tempDir>[0];

/** Every value an effect saw of `sig`, in order; the effect is disposed after the test (or by `dispose`). */
function observe<T>(t: Test, sig: ReadonlySignal<T>): { seen: T[]; dispose: () => void } {
  const seen: T[] = [];
  const dispose = effect(() => {
    seen.push(sig.value);
  });
  t.after(dispose);
  return { seen, dispose };
}

async function embedded(t: Test, vars: [string, number, VariableTypeId][]): Promise<[string, VirtualVariableFile]> {
  const path = join(tempDir(t), 'reactive.mem');
  const vf = await VirtualVariableFile.open(path, { create: true });
  t.after(() => vf.close());
  for (const [name, size, type] of vars) await vf.registerVariable(new VariableMetadata(name, -1, size, type));
  return [path, vf];
}

/** entity-peer: another process that registers, sets and removes F64 variables in the file at `path`. */
async function peerOn(t: Test, path: string): Promise<(op: 'register' | 'set' | 'remove', name: string, value?: number) => Promise<void>> {
  const peer: Child = startChild('entity-peer', [path], t);
  await peer.next('ready');
  t.after(() => peer.send({ type: 'quit' }));
  return async (op, name, value) => {
    peer.send({ type: 'do', op, name, value });
    await peer.next('done');
  };
}

const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b);
const code = (c: string) => (err: unknown) => err instanceof CommyError && err.code === c;

test('lazy: a signal nobody reads decodes nothing however often its variable changes; a read decodes once, and the same value keeps its object', async (t) => {
  const [, vf] = await embedded(t, [['blob', 4, VariableType.Bytes], ['n', 8, VariableType.F64]]);
  const blob = vf.signal<Uint8Array>('blob');
  const n = observe(t, vf.signal<number>('n')); // a watched signal: the file's change listener runs
  const before = decodes.count;
  for (let i = 0; i < 100; i++) vf.set('blob', bytes(i, i, i, i));
  vf.set('n', 1);
  await until(() => n.seen.at(-1) === 1, 'the effect sees n = 1 (so the events of every write were delivered)');
  assert.equal(decodes.count - before, 1, 'only n was decoded (once, for its change); blob, unread, not at all');

  const first = blob.value;
  assert.deepEqual(first, bytes(99, 99, 99, 99));
  assert.equal(decodes.count - before, 2, 'reading blob decodes it once');
  assert.equal(blob.value, first, 'read again with no change: the same object, no decode');
  assert.equal(blob.peek(), first);
  assert.equal(decodes.count - before, 2);

  vf.set('blob', bytes(99, 99, 99, 99)); // a new version, the same bytes
  assert.equal(blob.value, first, 'an equal value keeps the object the signal shows');
  vf.set('blob', bytes(1, 2, 3, 4));
  const second = blob.value;
  assert.notEqual(second, first);
  assert.deepEqual(second, bytes(1, 2, 3, 4));
});

test('local: effects hear a write by another process through the mapped file, and this process\'s own writes show at once', { timeout: 60_000 }, async (t) => {
  const [path, vf] = await embedded(t, [['x', 8, VariableType.F64], ['y', 8, VariableType.F64]]);
  const peer = await peerOn(t, path);
  const x = vf.signal<number>('x');
  const seen = observe(t, x).seen;
  assert.deepEqual(seen, [0]);

  await peer('set', 'x', 1.5);
  await until(() => seen.at(-1) === 1.5, 'the effect sees the other process\'s write');

  vf.set('x', 2.5);
  assert.equal(x.value, 2.5, 'a read right after this process\'s set() shows it, as get() does');
  await until(() => seen.at(-1) === 2.5, 'the effect runs for the own write (with the watcher\'s event)');
  await peer('set', 'y', 7); // another variable: x's effect does not run
  await peer('set', 'x', 3.5);
  await until(() => seen.at(-1) === 3.5, 'the effect sees the next write');
  assert.deepEqual(seen, [0, 1.5, 2.5, 3.5], 'one run per change of x, none for y');
});

test('local: signalMap follows entities another process registers, writes and removes', { timeout: 60_000 }, async (t) => {
  const [path, vf] = await embedded(t, [['Position.a', 8, VariableType.F64], ['Velocity.a', 8, VariableType.F64]]);
  const peer = await peerOn(t, path);
  const positions = vf.signalMap<number>('Position.*');
  const seen = observe(t, positions).seen;
  const latest = (): ReadonlyMap<string, number> => seen.at(-1)!;
  assert.deepEqual([...latest()], [['Position.a', 0]]);

  await peer('register', 'Position.b');
  await peer('set', 'Position.b', 2);
  await until(() => latest().get('Position.b') === 2, 'the map has the new entity and its value');
  const runs = seen.length;
  const before = latest();
  await peer('set', 'Velocity.a', 9); // outside the glob
  await peer('set', 'Position.a', 1);
  await until(() => latest().get('Position.a') === 1, 'the map shows the entity\'s new value');
  assert.equal(seen.length, runs + 1, 'Velocity.a did not re-run the effect; Position.a did, once');
  assert.notEqual(latest(), before, 'a change gives a new Map');

  await peer('remove', 'Position.a');
  await until(() => !latest().has('Position.a'), 'the removed entity leaves the map');
  assert.deepEqual([...latest()], [['Position.b', 2]]);
  assert.deepEqual([...positions.value], [['Position.b', 2]]);
});

test('remote: effects hear another client\'s writes; own writes run them at once; signalMap keeps the objects of unchanged entities', { timeout: 60_000 }, async (t) => {
  const s = await startClientServer(t);
  const a = await (await s.connect()).getVirtualServiceFile('acme', 'game');
  const b = await (await s.connect()).getVirtualServiceFile('acme', 'game');
  await b.registerVariable(new VariableMetadata('x', -1, 8, VariableType.F64));
  for (const e of ['Position.p', 'Position.q']) await b.registerVariable(new VariableMetadata(e, -1, 4, VariableType.Bytes));
  await b.registerVariable(new VariableMetadata('Velocity.p', -1, 4, VariableType.Bytes));
  await until(() => a.variables().length === 4, 'a knows every variable');

  const x = a.signal<number>('x');
  const xs = observe(t, x).seen;
  b.set('x', 1);
  await until(() => xs.at(-1) === 1, 'a\'s effect sees b\'s write');
  a.set('x', 2);
  assert.equal(xs.at(-1), 2, 'an own set() runs the effect before it returns');
  assert.equal(x.value, 2);

  const positions = a.signalMap<Uint8Array>('Position.*');
  const maps = observe(t, positions).seen;
  const latest = (): ReadonlyMap<string, Uint8Array> => maps.at(-1)!;
  assert.deepEqual([...latest().keys()], ['Position.p', 'Position.q']);
  b.set('Position.p', bytes(1, 1, 1, 1));
  b.set('Position.q', bytes(2, 2, 2, 2));
  await until(() => latest().get('Position.q')?.[0] === 2 && latest().get('Position.p')?.[0] === 1, 'a\'s map shows both values');
  const before = latest();
  const q = before.get('Position.q');
  b.set('Position.p', bytes(3, 3, 3, 3));
  await until(() => latest().get('Position.p')?.[0] === 3, 'a\'s map shows p\'s new value');
  assert.notEqual(latest(), before, 'a new Map');
  assert.equal(latest().get('Position.q'), q, 'q did not change: the same Uint8Array');

  const runs = maps.length;
  const shown = latest();
  b.set('Velocity.p', bytes(5, 5, 5, 5)); // outside the glob
  b.set('x', 3);
  await until(() => xs.at(-1) === 3, 'a has heard of both writes (one batch, in order)');
  assert.equal(maps.length, runs, 'a change outside the glob does not re-run the map\'s effect');
  assert.equal(positions.value, shown, 'nor change its identity');

  await b.removeVariable('Position.p');
  await until(() => !latest().has('Position.p'), 'the removed entity leaves a\'s map');
  await b.registerVariable(new VariableMetadata('Position.r', -1, 4, VariableType.Bytes));
  await until(() => latest().has('Position.r'), 'a registered entity joins it');
  assert.deepEqual([...latest().keys()], ['Position.q', 'Position.r']);
  assert.equal(latest().get('Position.q'), q, 'q kept its object through both');
});

test('local client of a server: a remote client\'s write reaches the effect through the server\'s file', { timeout: 60_000 }, async (t) => {
  const s = await startClientServer(t);
  const local = await (await s.connect({ mode: 'local' })).getVirtualServiceFile('acme', 'plant');
  assert.equal(local.mode, 'local');
  const remote = await (await s.connect()).getVirtualServiceFile('acme', 'plant');
  await remote.registerVariable(new VariableMetadata('temp', -1, 8, VariableType.F64));
  await until(() => local.variables().length === 1, 'the local client sees the variable');
  const seen = observe(t, local.signal<number>('temp')).seen;
  remote.set('temp', 21.5);
  await until(() => seen.at(-1) === 21.5, 'the local client\'s effect sees the remote write');
  assert.deepEqual(local.staleness('temp'), { versionsBehind: 0, ms: 0 }, 'a local copy is the file: never behind');
});

test('many signals share one change listener, held only while one is watched; unwatched, a read still sees the current value', { timeout: 60_000 }, async (t) => {
  const s = await startClientServer(t);
  const a = await (await s.connect()).getVirtualServiceFile('acme', 'shared');
  const b = await (await s.connect()).getVirtualServiceFile('acme', 'shared');
  for (const name of ['x', 'y', 'Position.e']) await b.registerVariable(new VariableMetadata(name, -1, 8, VariableType.F64));
  await until(() => a.variables().length === 3, 'a knows every variable');

  const x = a.signal<number>('x');
  const y = a.signal<number>('y');
  const map = a.signalMap<number>('Position.*');
  assert.deepEqual(reactiveStats(a), { listeners: 0, watched: 0 }, 'signals nobody watches hold nothing');
  const watchers = [observe(t, x), observe(t, x), observe(t, y), observe(t, map)];
  const held = reactiveStats(a)!;
  assert.equal(held.listeners, 2, 'one change listener and one own-write listener for every signal of the file');
  assert.equal(held.watched, 4, 'x, y, the map and its one member');

  watchers[0]!.dispose();
  assert.equal(reactiveStats(a)!.listeners, 2, 'x is still watched by the second effect');
  for (const w of watchers.slice(1)) w.dispose();
  assert.deepEqual(reactiveStats(a), { listeners: 0, watched: 0 }, 'disposed: no listener left');

  b.set('x', 4);
  b.set('Position.e', 5);
  await until(() => x.value === 4, 'an unwatched signal\'s read shows the current value');
  await until(() => map.value.get('Position.e') === 5, 'so does an unwatched map\'s');
  assert.equal(watchers[0]!.seen.at(-1), 0, 'a disposed effect hears nothing');
});

test('close: the signals keep their last value and stop listening; signal() of an unknown name is VARIABLE_NOT_FOUND', { timeout: 60_000 }, async (t) => {
  const [, vf] = await embedded(t, [['x', 8, VariableType.F64], ['Position.a', 8, VariableType.F64]]);
  assert.throws(() => vf.signal('nope'), code('VARIABLE_NOT_FOUND'));
  assert.throws(() => vf.signalMap(''), code('INVALID_MESSAGE'));
  assert.throws(() => vf.staleness('nope'), code('VARIABLE_NOT_FOUND'));
  assert.deepEqual(vf.staleness('x'), { versionsBehind: 0, ms: 0 });
  vf.set('x', 1);
  const x = vf.signal<number>('x');
  const map = vf.signalMap<number>('Position.*');
  const seen = observe(t, x).seen;
  observe(t, map);
  await vf.close();
  assert.deepEqual(reactiveStats(vf), { listeners: 0, watched: 3 }, 'the effects still watch x, the map and its member; nothing listens');
  assert.equal(x.value, 1, 'the last value stays');
  assert.deepEqual([...map.value], [['Position.a', 0]]);
  assert.deepEqual(seen, [1]);
  assert.throws(() => vf.signal('x'), code('NOT_CONNECTED'));
  assert.throws(() => vf.signalMap('*'), code('NOT_CONNECTED'));
});

test('a removed variable\'s signal keeps its last value, and follows the name when it is registered again', async (t) => {
  const [, vf] = await embedded(t, [['x', 8, VariableType.F64]]);
  vf.set('x', 1);
  const x = vf.signal<number>('x');
  const seen = observe(t, x).seen;
  await vf.removeVariable('x');
  assert.equal(x.value, 1);
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.F64));
  vf.set('x', 2);
  assert.equal(x.value, 2);
  await until(() => seen.at(-1) === 2, 'the effect sees the new variable\'s value');
});

test('a remote file\'s signals live through a server restart: a write made offline shows at once, a change after the reconnection reaches the effect', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const vf = await (await reconnectingClient(t, first.url)).getVirtualServiceFile('acme', 'phoenix');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.F64));
  const n = vf.signal<number>('n');
  const seen = observe(t, n).seen;

  first.child.kill('SIGKILL');
  await first.child.exited;
  vf.set('n', 1); // offline: into the buffer, and into the signal at once
  assert.equal(seen.at(-1), 1);

  const second = await serverIn(t, dataDir, new URL(first.url).port);
  await vf.flush();
  const other = await (await reconnectingClient(t, second.url)).getVirtualServiceFile('acme', 'phoenix');
  assert.equal(other.get('n'), 1, 'the offline write reached the restarted server');
  other.set('n', 2);
  await until(() => seen.at(-1) === 2, 'the effect hears a change made after the reconnection');
  assert.equal(n.value, 2);
});

test('staleness: a remote copy held back by the server\'s tick is behind by the versions it lacks, for the variables it lacks, then current', { timeout: 60_000 }, async (t) => {
  const s = await startClientServer(t, { tick: 4000 }); // the window in which the reader is behind
  const writer = await (await s.connect()).getVirtualServiceFile('acme', 'slow');
  for (const name of ['x', 'y']) await writer.registerVariable(new VariableMetadata(name, -1, 8, VariableType.F64));
  const reader = await (await s.connect()).getVirtualServiceFile('acme', 'slow'); // both variables in its snapshot
  assert.deepEqual(reader.staleness('x'), { versionsBehind: 0, ms: 0 });
  const had = reader.handle('x').version();

  writer.set('x', 1);
  writer.set('x', 2);
  await writer.flush();
  const latest = writer.handle('x').version();
  await until(() => reader.staleness('x').versionsBehind > 0, 'the reader hears that it is behind on x');
  assert.equal(reader.get('x'), 0, 'the update itself is still held back');
  const behind = reader.staleness('x');
  assert.equal(behind.versionsBehind, Number(latest - had), 'behind by the versions between its copy and the server\'s');
  assert.ok(behind.ms >= 0 && Number.isFinite(behind.ms));
  assert.ok(reader.staleness('x').ms >= behind.ms, 'and for longer as time goes by');
  assert.deepEqual(reader.staleness('y'), { versionsBehind: 0, ms: 0 }, 'y did not change: it is current');

  await until(() => reader.get('x') === 2, 'the held-back batch arrives');
  assert.deepEqual(reader.staleness('x'), { versionsBehind: 0, ms: 0 }, 'current again');
  assert.deepEqual(writer.staleness('x'), { versionsBehind: 0, ms: 0 }, 'the writer has its own write');
});
