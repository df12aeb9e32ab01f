import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { isCommyError, VariableMetadata, VariableType, type Client, type CommyError, type VirtualVariableFile } from '../src/index.js';
import type { Child } from './helpers/child.js';
import { reconnectingClient, serverIn, until } from './helpers/server-process.js';
import { tempDir } from './helpers/temp.js';
import { guard } from './helpers/guard.js';

/**
 * Attack: the service file is deleted, or replaced by a new service of the same name, while a remote client is
 * offline (server killed, file removed, server restarted on the same data directory).
 *
 * What docs/protocol.md and docs/client.md say is correct: the client resumes with `since: {version, fileId}`;
 * the server answers a full snapshot with `reset` ("the service file was replaced since"); "any other snapshot
 * (reset …) replaces every value"; a snapshot "whose definitions contradict the known ones (the file was
 * replaced by another layout) ends that file with INVALID_FILE"; "a local write not yet acknowledged is kept"
 * and sent after the snapshot (so an offline write does land in the new file: documented, not a bug); "a
 * version names exactly one write", and a compare-and-set "expectedVersion stays valid".
 */

interface Setup {
  dataDir: string;
  port: string;
  client: Client;
  vf: VirtualVariableFile;
  errors: CommyError[];
  server: { child: Child; url: string };
}

/** A client with x and y (U64) written many times (high versions), then the server killed: the client is offline. */
async function offline(t: Parameters<typeof tempDir>[0], service: string): Promise<Setup> {
  const dataDir = tempDir(t);
  const server = await serverIn(t, dataDir);
  const errors: CommyError[] = [];
  const client = await reconnectingClient(t, server.url, { onError: (e) => errors.push(e) });
  const vf = await client.getVirtualServiceFile('acme', service);
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  await vf.registerVariable(new VariableMetadata('y', -1, 8, VariableType.U64));
  for (let i = 1; i <= 200; i++) {
    vf.set('x', BigInt(i));
    vf.set('y', BigInt(1000 + i));
    await vf.flush(); // versions climb well above what a fresh file will have
  }
  server.child.kill('SIGKILL');
  await server.child.exited;
  await until(() => client.state === 'reconnecting', "state 'reconnecting'");
  return { dataDir, port: new URL(server.url).port, client, vf, errors, server };
}

function removeService(dataDir: string, service: string): void {
  rmSync(join(dataDir, 'tenants', 'acme', `${service}.mem`));
}

/** Restarts the server; before our client gets back, another client makes the new service with `define`. */
async function restartWithNewFile(t: Parameters<typeof tempDir>[0], s: Setup, service: string, define: (vf: VirtualVariableFile) => Promise<void>): Promise<{ server: { child: Child; url: string }; other: VirtualVariableFile }> {
  removeService(s.dataDir, service);
  // The other client needs the server before ours finds it: start it on another port first, then on ours.
  const staging = await serverIn(t, s.dataDir);
  const oc = await reconnectingClient(t, staging.url);
  const ovf = await oc.getVirtualServiceFile('acme', service);
  await define(ovf);
  await ovf.flush();
  await oc.close();
  staging.child.send({ type: 'quit' });
  await staging.child.exited;
  const server = await serverIn(t, s.dataDir, s.port);
  const viewer = await reconnectingClient(t, server.url);
  return { server, other: await viewer.getVirtualServiceFile('acme', service) };
}

test('a service replaced by a new one with the same layout: a variable with nothing pending takes the new file\'s value and version', { timeout: 120_000 }, async (t) => {
  const g = guard(t);
  const s = await offline(t, 'same');
  const { server, other } = await restartWithNewFile(t, s, 'same', async (vf) => {
    await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
    await vf.registerVariable(new VariableMetadata('y', -1, 8, VariableType.U64));
    vf.set('y', 7n);
  });
  await until(() => s.client.state === 'open', "state 'open'");
  await until(() => s.vf.get('y') === 7n, "the new file's y");
  assert.equal(s.vf.get('x'), 0n, "the new file's x (never written there), not the old file's 200");
  assert.equal(s.vf.handle('y').version(), other.handle('y').version(), "y's version is the new file's");
  assert.deepEqual(s.vf.bytes(), other.bytes());
  server.child.send({ type: 'quit' });
  await g.check();
});

test('a service replaced while a write of ours was pending: the write lands (documented), and the variable takes the new file\'s versions, so compare-and-set works on', { timeout: 120_000 }, async (t) => {
  const g = guard(t);
  const s = await offline(t, 'pending');
  const oldVersion = s.vf.handle('x').version();
  s.vf.set('x', 999n); // offline: pending across the replacement
  const { server, other } = await restartWithNewFile(t, s, 'pending', async (vf) => {
    await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
    await vf.registerVariable(new VariableMetadata('y', -1, 8, VariableType.U64));
    vf.set('y', 7n);
  });
  await until(() => s.client.state === 'open', "state 'open'");
  await s.vf.flush();
  // Documented: the pending write is kept through the reset and sent to the new file.
  await until(() => other.get('x') === 999n, 'the offline write in the new file');
  const fileVersion = other.handle('x').version();
  t.diagnostic(`x: old file's version ${oldVersion}, new file's ${fileVersion}, the client says ${s.vf.handle('x').version()}`);
  assert.equal(s.vf.get('x'), 999n);
  // The only writer of x now runs a compare-and-set loop: read the version, then the value, mutate.
  let lastError = '';
  let ok = false;
  for (let attempt = 0; attempt < 20 && !ok; attempt++) {
    const h = s.vf.handle<bigint>('x');
    try {
      await s.vf.mutate('x', h.get() + 1n, { expectedVersion: h.version() });
      ok = true;
    } catch (err) {
      lastError = isCommyError(err) ? err.code : String(err);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  assert.ok(ok, `a CAS on x by its only writer failed 20 times in a row (${lastError}): the client keeps x at version ${s.vf.handle('x').version()} (the old file's), the new file has ${fileVersion}`);
  // "A version names exactly one write": after a reset the client's versions are the new file's (the one case
  // where a version may go down, docs/client.md).
  const final = s.vf.get('x');
  await until(() => other.get('x') === final, 'the other client to see the compare-and-set');
  assert.equal(s.vf.handle('x').version(), other.handle('x').version(), "x's version is the new file's");
  server.child.send({ type: 'quit' });
  await g.check();
});

test('a service replaced by one with another layout (x moved to another index): the client takes the new layout, the old x is gone', { timeout: 120_000 }, async (t) => {
  const g = guard(t);
  const s = await offline(t, 'moved');
  const held = s.vf.handle('x');
  const { server, other } = await restartWithNewFile(t, s, 'moved', async (vf) => {
    await vf.registerVariable(new VariableMetadata('pad', -1, 16, VariableType.Bytes));
    await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
    vf.set('x', 41n);
  });
  await until(() => s.client.state === 'open', "state 'open'");
  await until(() => s.vf.variables().some((m) => m.name === 'pad') && s.vf.get('x') === 41n, 'the new layout and its x');
  assert.deepEqual(s.vf.variables().map((m) => m.name), ['pad', 'x']);
  assert.throws(() => held.get(), { code: 'VARIABLE_NOT_FOUND' }, 'a handle on the old x is dead: it was another variable');
  assert.equal(s.vf.layoutHash, other.layoutHash);
  assert.ok(!s.errors.some((e) => e.code === 'INVALID_FILE'));
  server.child.send({ type: 'quit' });
  await g.check();
});

test('a service deleted while offline (recreated empty on reconnect): the client drops the old file\'s variables the new file does not have', { timeout: 120_000 }, async (t) => {
  const g = guard(t);
  const s = await offline(t, 'gone');
  removeService(s.dataDir, 'gone');
  const server = await serverIn(t, s.dataDir, s.port);
  await until(() => s.client.state === 'open', "state 'open'");
  const viewer = await reconnectingClient(t, server.url);
  const truth = await viewer.getVirtualServiceFile('acme', 'gone');
  assert.deepEqual(truth.variables(), [], 'the new file is empty');
  // "Any other snapshot (reset …) replaces every value": x = 200 and y = 1200 are the old file's.
  let x: unknown;
  let failure: string | undefined;
  try {
    x = s.vf.get('x');
  } catch (err) {
    failure = isCommyError(err) ? err.code : String(err);
  }
  assert.ok(failure !== undefined, `the client still shows x = ${String(x)} from the deleted file, with no error and nothing in onError (${s.errors.map((e) => e.code).join(',')})`);
  server.child.send({ type: 'quit' });
  await g.check();
});

test('a service deleted while offline, then another client registers a different variable at the same index: the client gets the new variable, not the old one\'s bytes', { timeout: 120_000 }, async (t) => {
  const g = guard(t);
  const s = await offline(t, 'reused');
  removeService(s.dataDir, 'reused');
  const server = await serverIn(t, s.dataDir, s.port);
  await until(() => s.client.state === 'open', "state 'open'");
  const oc = await reconnectingClient(t, server.url);
  const ovf = await oc.getVirtualServiceFile('acme', 'reused');
  // Index 0 of the new file: a String of 16 bytes at offset 0 (x was a U64 at index 0, offset 0).
  await ovf.registerVariable(new VariableMetadata('label', -1, 16, VariableType.String));
  ovf.set('label', 'ABCDEFGH');
  await ovf.flush();
  await ovf.registerVariable(new VariableMetadata('z', -1, 8, VariableType.U64));
  ovf.set('z', 1n);
  await ovf.flush();
  // Wait until our client has seen the service version of those writes (or was ended with INVALID_FILE).
  const target = ovf.version;
  await until(() => s.errors.some((e) => e.code === 'INVALID_FILE') || (!s.vf.closed && s.vf.version >= target), `service version ${target} (or INVALID_FILE)`);
  t.diagnostic(`our client knows: ${s.vf.closed ? 'closed' : s.vf.variables().map((m) => `${m.name}@${m.offset}:${m.size}`).join(' ')}`);
  let x: unknown;
  try {
    x = s.vf.get('x');
  } catch (err) {
    x = isCommyError(err) ? err.code : String(err);
  }
  const asU64 = new DataView(new TextEncoder().encode('ABCDEFGH').buffer).getBigUint64(0, true);
  assert.notEqual(x, asU64, `x reads the bytes of the new file's 'label' ("ABCDEFGH" as a U64: ${asU64})`);
  server.child.send({ type: 'quit' });
  await g.check();
});

test('a service deleted while offline and reused with another layout: a write of the old variable never lands in the new file\'s other variable', { timeout: 120_000 }, async (t) => {
  const g = guard(t);
  const s = await offline(t, 'clobber');
  removeService(s.dataDir, 'clobber');
  const server = await serverIn(t, s.dataDir, s.port);
  await until(() => s.client.state === 'open', "state 'open'");
  const oc = await reconnectingClient(t, server.url);
  const ovf = await oc.getVirtualServiceFile('acme', 'clobber');
  await ovf.registerVariable(new VariableMetadata('label', -1, 16, VariableType.String)); // index 0, as x was
  ovf.set('label', 'keep me');
  await ovf.flush();
  const target = ovf.version;
  await until(() => s.errors.some((e) => e.code === 'INVALID_FILE') || (!s.vf.closed && s.vf.version >= target), `service version ${target} (or INVALID_FILE)`);
  // Our client still believes in x (U64, index 0). Writing it must not change the new file's `label`.
  let outcome = 'ok';
  try {
    s.vf.set('x', 0x41414141n);
    await s.vf.flush();
  } catch (err) {
    outcome = isCommyError(err) ? err.code : String(err);
  }
  // What the server's file holds now (read by the server, not from a buffer).
  const label = new TextDecoder().decode(await oc.readVariable('acme', 'clobber', 'label')).replace(/\0+$/, '');
  assert.equal(label, 'keep me', `set('x') (${outcome}) overwrote the new file's label with ${JSON.stringify(label)}`);
  server.child.send({ type: 'quit' });
  await g.check();
});
