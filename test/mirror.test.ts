import assert from 'node:assert/strict';
import { existsSync, lstatSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { test } from 'node:test';
import { AuthCredentials, Client, CommyError, ErrorCode, VariableMetadata, VariableType } from '../src/index.js';
import { browserPlatform } from '../src/client/browser-platform.js';
import { currentPlatform, registerPlatform } from '../src/client/platform.js';
import { startClientServer, VIEWER_KEY } from './helpers/client-server.js';
import { startChild } from './helpers/child.js';
import { reconnectingClient, serverIn, until } from './helpers/server-process.js';
import { tempDir } from './helpers/temp.js';

/**
 * Mirror files (docs/client.md, "Mirror files"): a remote client's buffer backed by a service file that other
 * processes of its machine open with VirtualVariableFile.open(vf.mirrorPath). Real server, real separate
 * processes; every wait is on a behaviour, bounded generously.
 */

const u64 = (name: string): VariableMetadata => new VariableMetadata(name, -1, 8, VariableType.U64);

test('a write by another process into the mirror file reaches the server and another remote client', async (t) => {
  const s = await startClientServer(t);
  const dir = tempDir(t, 'commy-mirror-');
  const errors: CommyError[] = [];
  const owner = await s.connect({ mirror: { dir }, onError: (e) => errors.push(e) });
  const vf = await owner.getVirtualServiceFile('acme', 'plant');
  await vf.registerVariable(u64('counter'));
  vf.set('counter', 5n);
  await vf.flush();

  const path = vf.mirrorPath;
  assert.equal(vf.mode, 'remote');
  assert.ok(path !== undefined, 'a remote file of a mirrored client has a mirror file');
  assert.equal(dirname(path), dir);
  assert.match(basename(path), new RegExp(`^acme\\.plant\\.${process.pid}\\.\\d+\\.[0-9a-f]{16}\\.commy$`));

  const subscriber = await s.connect();
  const seen = await subscriber.getVirtualServiceFile('acme', 'plant');
  await until(() => seen.get<bigint>('counter') === 5n, 'the subscriber to start from 5');

  const writer = startChild('mirror-writer', [path], t);
  const { variables } = await writer.next<{ variables: string[] }>('ready');
  assert.deepEqual(variables, ['counter'], 'the mirror has the server variables');
  writer.send({ type: 'wait', name: 'counter', value: '5' });
  await writer.next('seen'); // the owner's own value is in the file

  writer.send({ type: 'set', name: 'counter', value: '42' });
  await writer.next('set-done');
  await until(() => seen.get<bigint>('counter') === 42n, 'the subscriber to receive the mirror write');
  assert.equal(vf.get('counter'), 42n, "the owner's buffer holds it too");
  const fresh = await (await s.connect()).getVirtualServiceFile('acme', 'plant');
  assert.equal(fresh.get('counter'), 42n, 'the server has it: a new subscriber starts from it');

  writer.send({ type: 'quit' });
  await writer.exited;
  assert.deepEqual(errors, []);
});

test('writes of other remote clients, and variables registered later, reach the mirror file', async (t) => {
  const s = await startClientServer(t);
  const dir = tempDir(t, 'commy-mirror-');
  const owner = await s.connect({ mirror: { dir } });
  const vf = await owner.getVirtualServiceFile('acme', 'plant');
  await vf.registerVariable(u64('counter'));
  const path = vf.mirrorPath!;

  const writer = startChild('mirror-writer', [path], t);
  await writer.next('ready');

  const other = await s.connect();
  const ovf = await other.getVirtualServiceFile('acme', 'plant');
  ovf.set('counter', 7n);
  await ovf.flush();
  writer.send({ type: 'wait', name: 'counter', value: '7' });
  await writer.next('seen');

  // A variable the owner hears of in a SyncBatch: registered in the mirror at the server's offset.
  await ovf.registerVariable(new VariableMetadata('pad', -1, 24, VariableType.Bytes));
  const late = await ovf.registerVariable(u64('late'));
  ovf.set('late', 99n);
  await ovf.flush();
  writer.send({ type: 'wait', name: 'late', value: '99' });
  await writer.next('seen');
  await until(() => vf.variables().some((m) => m.name === 'late'), 'the owner to know late');
  assert.equal(vf.variables().find((m) => m.name === 'late')!.offset, late.offset);

  // The owner's own typed write lands in the mirror at once (no round trip needed for local readers).
  vf.set('counter', 8n);
  writer.send({ type: 'wait', name: 'counter', value: '8' });
  await writer.next('seen');

  // Both ways again: the mirror process writes the late variable, the other client receives it.
  writer.send({ type: 'set', name: 'late', value: '100' });
  await writer.next('set-done');
  await until(() => ovf.get<bigint>('late') === 100n, 'the other client to receive late = 100');

  // A variable registered in the mirror by a local process is registered on the server at the same offset.
  writer.send({ type: 'register', name: 'local' });
  const { offset } = await writer.next<{ offset: number }>('registered');
  writer.send({ type: 'set', name: 'local', value: '17' });
  await writer.next('set-done');
  await until(() => ovf.variables().some((m) => m.name === 'local'), 'the other client to hear of local');
  assert.equal(ovf.variables().find((m) => m.name === 'local')!.offset, offset);
  await until(() => ovf.get<bigint>('local') === 17n, 'the other client to receive local = 17');

  writer.send({ type: 'quit' });
  await writer.exited;
});

test('the mirror file is 0600, removed on vf.close() and on client.close(); local files have none', async (t) => {
  const s = await startClientServer(t);
  const dir = tempDir(t, 'commy-mirror-');
  const owner = await s.connect({ mirror: { dir } });
  const a = await owner.getVirtualServiceFile('acme', 'alpha');
  const b = await owner.getVirtualServiceFile('acme', 'beta');
  const pathA = a.mirrorPath!;
  const pathB = b.mirrorPath!;
  assert.notEqual(pathA, pathB);
  assert.equal(statSync(pathA).mode & 0o777, 0o600);
  assert.equal(statSync(pathB).mode & 0o777, 0o600);
  assert.equal(statSync(dir).mode & 0o777, 0o700);

  // A value set and not yet flushed by the owner: closing sends it, then the file goes.
  await a.registerVariable(u64('x'));
  a.set('x', 3n);
  await a.close();
  assert.equal(existsSync(pathA), false, 'vf.close() removes the mirror file');
  assert.equal(a.mirrorPath, undefined);
  const check = await (await s.connect()).getVirtualServiceFile('acme', 'alpha');
  assert.equal(check.get('x'), 3n);

  assert.equal(existsSync(pathB), true);
  await owner.close();
  assert.equal(existsSync(pathB), false, 'client.close() removes every mirror file of the client');
  assert.deepEqual(readdirSync(dir), []);

  // The default directory, under XDG_CACHE_HOME.
  const cache = tempDir(t, 'commy-cache-');
  const before = process.env.XDG_CACHE_HOME;
  process.env.XDG_CACHE_HOME = cache;
  t.after(() => {
    if (before === undefined) delete process.env.XDG_CACHE_HOME;
    else process.env.XDG_CACHE_HOME = before;
  });
  const byDefault = await s.connect({ mirror: true });
  const d = await byDefault.getVirtualServiceFile('acme', 'gamma');
  assert.equal(dirname(d.mirrorPath!), join(cache, 'commy_virtual_files'));
  assert.equal(statSync(join(cache, 'commy_virtual_files')).mode & 0o777, 0o700);
  await byDefault.close();

  // A file mapped locally is the server's own file: nothing to mirror.
  const local = await Client.initialize(s.url, 'acme', AuthCredentials.apiKey('ops:s3cret'), { mode: 'local', mirror: { dir } });
  const lvf = await local.getVirtualServiceFile('acme', 'plant');
  assert.equal(lvf.mode, 'local');
  assert.equal(lvf.mirrorPath, undefined);
  assert.deepEqual(readdirSync(dir), []);
  await local.close();
});

test('a mirror file left by a killed client is removed at the next start; a live process keeps its own', async (t) => {
  const s = await startClientServer(t);
  const dir = tempDir(t, 'commy-mirror-');

  const killed = startChild('mirror-owner', [s.url, 'plant', dir], t);
  const dead = await killed.next<{ mirrorPath: string; pid: number }>('ready');
  const alive = startChild('mirror-owner', [s.url, 'plant', dir], t);
  const live = await alive.next<{ mirrorPath: string; pid: number }>('ready');
  killed.kill('SIGKILL');
  await killed.exited;
  assert.equal(existsSync(dead.mirrorPath), true, 'kill -9 leaves the mirror file behind');

  // Beside them: a symbolic link with a mirror's name and a dead owner (never followed, never removed), and
  // a file whose name is not a mirror's.
  const target = join(tempDir(t, 'commy-target-'), 'precious');
  writeFileSync(target, 'keep me');
  const link = join(dir, `acme.plant.${dead.pid}.1.0123456789abcdef.commy`);
  symlinkSync(target, link);
  writeFileSync(join(dir, 'notes.txt'), 'not a mirror');

  const next = await s.connect({ mirror: { dir } });
  const vf = await next.getVirtualServiceFile('acme', 'plant');
  assert.equal(existsSync(dead.mirrorPath), false, "the killed client's mirror file is removed");
  assert.equal(existsSync(live.mirrorPath), true, "the live client's mirror file is kept");
  assert.equal(existsSync(vf.mirrorPath!), true);
  assert.equal(lstatSync(link).isSymbolicLink(), true, 'a symbolic link is never removed');
  assert.equal(existsSync(target), true);
  assert.equal(existsSync(join(dir, 'notes.txt')), true);

  // The live process's mirror still works: a write there reaches the client that just started.
  const writer = startChild('mirror-writer', [live.mirrorPath], t);
  await writer.next('ready');
  writer.send({ type: 'set', name: 'counter', value: '11' });
  await writer.next('set-done');
  await until(() => vf.get<bigint>('counter') === 11n, 'the write into the live mirror to reach the other client');
  writer.send({ type: 'quit' });
  await writer.exited;

  alive.send({ type: 'quit' });
  await alive.exited;
  assert.equal(existsSync(live.mirrorPath), false, 'closing removes it');
});

test('writes into the mirror while the client is offline are sent once it is back', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const dir = tempDir(t, 'commy-mirror-');
  const first = await serverIn(t, dataDir);
  const port = new URL(first.url).port;
  const owner = await reconnectingClient(t, first.url, { mirror: { dir } });
  const vf = await owner.getVirtualServiceFile('acme', 'phoenix');
  await vf.registerVariable(u64('n'));
  vf.set('n', 1n);
  await vf.flush();
  const writer = startChild('mirror-writer', [vf.mirrorPath!], t);
  await writer.next('ready');

  first.child.kill('SIGKILL');
  await first.child.exited;
  await until(() => owner.state === 'reconnecting', "state 'reconnecting'");
  writer.send({ type: 'set', name: 'n', value: '2' });
  await writer.next('set-done');
  await until(() => vf.get<bigint>('n') === 2n, 'the offline buffer to take the mirror write');

  const second = await serverIn(t, dataDir, port);
  await until(() => owner.state === 'open', "state 'open'");
  await vf.flush();
  const other = await reconnectingClient(t, second.url);
  assert.equal((await other.getVirtualServiceFile('acme', 'phoenix')).get('n'), 2n, 'the server has the value written offline');
  writer.send({ type: 'quit' });
  await writer.exited;
});

test("a read-only key's mirror: another process's write is refused and undone in the mirror", async (t) => {
  const s = await startClientServer(t);
  const dir = tempDir(t, 'commy-mirror-');
  const admin = await s.connect();
  const avf = await admin.getVirtualServiceFile('acme', 'plant');
  await avf.registerVariable(u64('counter'));
  avf.set('counter', 5n);
  await avf.flush();

  const errors: CommyError[] = [];
  const viewer = await s.connect({ mirror: { dir }, onError: (e) => errors.push(e) }, VIEWER_KEY);
  const vf = await viewer.getVirtualServiceFile('acme', 'plant');
  const writer = startChild('mirror-writer', [vf.mirrorPath!], t);
  await writer.next('ready');
  writer.send({ type: 'set', name: 'counter', value: '6' });
  await writer.next('set-done');
  await until(() => errors.some((e) => e.code === ErrorCode.PERMISSION_DENIED), 'PERMISSION_DENIED to onError');
  writer.send({ type: 'wait', name: 'counter', value: '5' });
  await writer.next('seen'); // the server's value is back in the mirror
  assert.equal(vf.get('counter'), 5n);
  assert.equal(avf.get('counter'), 5n);
  writer.send({ type: 'quit' });
  await writer.exited;
});

test('removals: one at the server leaves the mirror, one in the mirror reaches the server', async (t) => {
  const s = await startClientServer(t);
  const dir = tempDir(t, 'commy-mirror-');
  const errors: CommyError[] = [];
  const owner = await s.connect({ mirror: { dir }, onError: (e) => errors.push(e) });
  const vf = await owner.getVirtualServiceFile('acme', 'plant');
  await vf.registerVariable(u64('temp'));
  await vf.registerVariable(u64('keep'));
  await vf.registerVariable(u64('spare'));
  const writer = startChild('mirror-writer', [vf.mirrorPath!], t);
  await writer.next('ready');
  const other = await s.connect();
  const ovf = await other.getVirtualServiceFile('acme', 'plant');

  await ovf.removeVariable('temp');
  writer.send({ type: 'wait-gone', name: 'temp' });
  await writer.next('gone');
  // A barrier: a later write through the mirror has arrived, so the removal was not undone meanwhile.
  writer.send({ type: 'set', name: 'keep', value: '4' });
  await writer.next('set-done');
  await until(() => ovf.get<bigint>('keep') === 4n, 'keep = 4 to arrive');
  assert.equal(ovf.variables().some((m) => m.name === 'temp'), false, 'the mirror never registers a removed variable again');

  writer.send({ type: 'remove', name: 'spare' });
  await writer.next('removed');
  await until(() => !ovf.variables().some((m) => m.name === 'spare'), 'the removal in the mirror to reach the other client');
  assert.equal(vf.variables().some((m) => m.name === 'spare'), false);
  writer.send({ type: 'quit' });
  await writer.exited;
  assert.deepEqual(errors, []);
});

test('mirror is refused on a platform without files, and checked', async (t) => {
  assert.throws(() => new Client('ws://127.0.0.1:1', { mirror: 'yes' as unknown as boolean }), (e: unknown) => e instanceof CommyError && e.code === ErrorCode.TYPE_MISMATCH);
  assert.throws(() => new Client('ws://127.0.0.1:1', { mirror: { dir: '' } }), (e: unknown) => e instanceof CommyError && e.code === ErrorCode.TYPE_MISMATCH);
  const previous = currentPlatform();
  registerPlatform(browserPlatform);
  t.after(() => registerPlatform(previous));
  assert.throws(() => new Client('ws://127.0.0.1:1', { mirror: true }), (e: unknown) => e instanceof CommyError && e.code === ErrorCode.FILE_NOT_FOUND);
  new Client('ws://127.0.0.1:1', { mirror: false }); // no mirror asked: fine anywhere
});
