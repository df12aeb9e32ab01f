import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AuthCredentials, Client, VariableMetadata, VariableType } from '../src/index.js';
import { Server } from '../src/server/index.js';
import { createServerLogger } from '../src/server/logger.js';
import { CutProxy } from './helpers/cut-proxy.js';
import { FAST_RECONNECT, OPS, until } from './helpers/server-process.js';
import { TEST_TENANTS } from './helpers/server.js';
import { tempDir } from './helpers/temp.js';

/** A real server behind a CutProxy; `cleanup` closes (after the test, in order) what the test adds first, then the proxy and the server. */
async function proxiedServer(t: Parameters<typeof tempDir>[0] & { after(fn: () => Promise<void>): void }): Promise<{ server: Server; proxy: CutProxy; cleanup: (() => Promise<void>)[] }> {
  const cleanup: (() => Promise<void>)[] = [];
  t.after(async () => {
    for (const close of cleanup) await close();
  });
  const server = await Server.start({
    host: '127.0.0.1',
    port: 0,
    dataDir: tempDir(t),
    config: { tenants: TEST_TENANTS, audit: { enabled: false } },
    logger: createServerLogger('warn'),
  });
  const proxy = await CutProxy.start(server.port);
  cleanup.push(() => proxy.close(), () => server.close());
  return { server, proxy, cleanup };
}

/**
 * The minimal reproduction of what test/resume-property.test.ts found: a mutation whose answer is lost with
 * the connection is resent after the reconnection under its operation id, and the server answers it from its
 * memory of ids with the version it committed then. If the variable was written again meanwhile (by another
 * client, the resumed snapshot bringing the newer value; or by this client, its later write acknowledged with a
 * higher version), that late answer must not put the mutation's older value and version back over the newer
 * ones: the server has the newer value and thinks this client has it too, so nothing would ever correct it
 * (the client stuck behind the server for good, its version gone back: "Convergence" and "Monotonic versions
 * per client" in docs/client.md). Both fail today: the committed value goes to Reconciler.update(), which
 * overwrites a variable with nothing pending whatever the version (src/client/remote/reconciler.ts, update();
 * called from the mutation's `committed` in src/client/remote/remote-file-accessor.ts).
 */
test('a mutation resent after a lost answer does not put its older value back over a newer write the resume brought', { timeout: 60_000 }, async (t) => {
  const { server, proxy, cleanup } = await proxiedServer(t);

  const other = await Client.initialize(server.url, 'acme', AuthCredentials.apiKey('ops:s3cret'), { mode: 'remote', reconnect: false });
  cleanup.unshift(() => other.close());
  const ovf = await other.getVirtualServiceFile('acme', 'late-reply');
  await ovf.registerVariable(new VariableMetadata('a', -1, 8, VariableType.U64));

  const client = await Client.initialize(proxy.url, 'acme', OPS, { mode: 'remote', reconnect: FAST_RECONNECT, onError: () => {} });
  cleanup.unshift(() => client.close());
  const vf = await client.getVirtualServiceFile('acme', 'late-reply');

  // The Mutate reaches the server and is applied; its answer is lost with the connection.
  proxy.blackhole = true;
  const mutating = vf.mutate('a', 1n);
  await until(() => ovf.get('a') === 1n, 'the mutation to be applied at the server');
  const committed = ovf.handle('a').version();
  proxy.offline = true;
  proxy.cut();
  proxy.blackhole = false;

  // Another client writes the variable while this one is away.
  ovf.set('a', 2n);
  await ovf.flush();
  const latest = ovf.handle('a').version();
  assert.ok(latest > committed);

  // Back: the resumed snapshot brings a = 2; the mutation, resent under its id, is answered with its old version.
  proxy.offline = false;
  assert.equal((await mutating).version, committed, 'applied once: answered with the version it committed');
  await until(() => client.state === 'open', 'the client to be open again');
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.deepEqual(
    { value: vf.get('a'), version: vf.handle('a').version() },
    { value: 2n, version: latest },
    "the client holds the server's last write of a, not the mutation's older value",
  );
});

test("a mutation resent after a lost answer does not put its older value back over the client's own later write", { timeout: 60_000 }, async (t) => {
  const { server, proxy, cleanup } = await proxiedServer(t);
  const client = await Client.initialize(proxy.url, 'acme', OPS, { mode: 'remote', reconnect: FAST_RECONNECT, onError: () => {} });
  cleanup.unshift(() => client.close());
  const vf = await client.getVirtualServiceFile('acme', 'late-reply-own');
  await vf.registerVariable(new VariableMetadata('a', -1, 8, VariableType.U64));
  const reader = await Client.initialize(server.url, 'acme', OPS, { mode: 'remote', reconnect: false });
  cleanup.unshift(() => reader.close());
  const rv = await reader.getVirtualServiceFile('acme', 'late-reply-own');

  proxy.blackhole = true; // the Mutate is applied; its answer is lost with the connection
  const mutating = vf.mutate('a', 1n);
  await until(() => rv.get('a') === 1n, 'the mutation to be applied at the server');
  proxy.offline = true;
  proxy.cut();
  proxy.blackhole = false;
  vf.set('a', 2n); // written after the mutation, while offline: sent once the client is back
  proxy.offline = false;
  const { version: committed } = await mutating;
  await vf.flush();
  await until(() => rv.get('a') === 2n, 'the later write to reach the reader');
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(rv.get('a'), 2n, 'the server applied the mutation, then the later write');
  assert.ok(rv.handle('a').version() > committed);
  assert.deepEqual(
    { value: vf.get('a'), version: vf.handle('a').version() },
    { value: rv.get('a'), version: rv.handle('a').version() },
    "the client holds the server's last write of a (its own), not the mutation's older value",
  );
});
