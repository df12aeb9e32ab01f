import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { WebSocket } from 'ws';
import { VariableMetadata, VariableType } from '../src/index.js';
import type { Message } from '../src/protocol/messages.js';
import { startClientServer } from './helpers/client-server.js';
import { RawClient } from './helpers/raw-client.js';
import { TEST_TENANTS } from './helpers/server.js';

/** A subscriber on the wire: every SyncBatch it got, as (version, value) of the one variable watched. */
interface Watcher {
  client: RawClient;
  sid: number;
  index: number;
  seen: { version: number; value: bigint }[];
}

async function watch(url: string, service: string, name: string): Promise<Watcher> {
  const client = await RawClient.connect(url);
  assert.equal((await client.auth('acme', 'ops:s3cret')).type, 'Authenticated');
  const reply = await client.request('Subscription', { tenant: 'acme', service });
  assert.equal(reply.type, 'Snapshot');
  const body = (reply as Extract<Message, { type: 'Snapshot' }>).body;
  const def = body.variables.find((d) => d[1] === name);
  assert.ok(def !== undefined, `${name} is in the snapshot`);
  const w: Watcher = { client, sid: body.sid, index: def[0], seen: [] };
  client.ws.on('message', () => {
    for (const m of client.pushes.splice(0)) {
      if (m.type !== 'SyncBatch' || m.body.sid !== w.sid) continue;
      for (const [index, version, bytes] of m.body.updates) {
        if (index === w.index) w.seen.push({ version, value: Buffer.from(bytes).readBigUInt64LE(0) });
      }
    }
  });
  return w;
}

async function until(check: () => boolean, what: () => string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out: ${what()}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function last(w: Watcher): bigint | undefined {
  return w.seen.at(-1)?.value;
}

/** Versions a subscriber saw only ever go up: a skipped version is conflation, a repeat or a step back is a bug. */
function assertMonotonic(w: Watcher): void {
  for (let i = 1; i < w.seen.length; i++) {
    assert.ok(w.seen[i]!.version > w.seen[i - 1]!.version, `versions ${w.seen[i - 1]!.version} then ${w.seen[i]!.version}`);
  }
}

test('150 subscribers of one variable: every one ends on the last of 1,500 writes, versions only go up, every write is acknowledged', async (t) => {
  const s = await startClientServer(t);
  const writer = await s.connect();
  const vf = await writer.getVirtualServiceFile('acme', 'fan');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  const watchers = await Promise.all(Array.from({ length: 150 }, () => watch(s.url, 'fan', 'n')));
  t.after(() => watchers.forEach((w) => w.client.close()));
  const writes = 1500;
  for (let i = 1; i <= writes; i++) {
    vf.set('n', BigInt(i));
    await vf.flush(); // resolves on the acknowledgement: a lost or starved ack fails the test by timeout
  }
  await until(
    () => watchers.every((w) => last(w) === BigInt(writes)),
    () => `${watchers.filter((w) => last(w) !== BigInt(writes)).length} subscribers not on the final value`,
  );
  for (const w of watchers) assertMonotonic(w);
});

test('a subscriber that stops reading holds nobody back, skips versions, and ends on the final value once it reads again', async (t) => {
  // A small output budget; 400 × 32 KiB is far more than the kernel's socket buffers hold for a stopped reader.
  const s = await startClientServer(t, { config: { tenants: TEST_TENANTS, audit: { enabled: false }, limits: { maxBufferedBytes: 256 * 1024 } } });
  const writer = await s.connect();
  const vf = await writer.getVirtualServiceFile('acme', 'slow');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  await vf.registerVariable(new VariableMetadata('pad', -1, 32 * 1024, VariableType.Bytes));
  const fast = await watch(s.url, 'slow', 'n');
  const stopped = await watch(s.url, 'slow', 'n');
  t.after(() => [fast, stopped].forEach((w) => w.client.close()));
  const socket = (stopped.client.ws as WebSocket & { _socket: { pause(): void; resume(): void } })._socket;
  socket.pause();
  const writes = 400;
  const pad = new Uint8Array(32 * 1024);
  for (let i = 1; i <= writes; i++) {
    pad.fill(i & 0xff);
    vf.set('pad', pad);
    vf.set('n', BigInt(i));
    await vf.flush();
  }
  await until(() => last(fast) === BigInt(writes), () => `fast subscriber at ${last(fast)}`);
  assert.equal(fast.seen.length, writes, 'the subscriber that reads gets every version');
  socket.resume();
  await until(() => last(stopped) === BigInt(writes), () => `stopped subscriber at ${last(stopped)}`);
  assert.ok(stopped.seen.length < writes, `the stopped subscriber was sent ${stopped.seen.length} of ${writes} versions (conflated)`);
  assertMonotonic(fast);
  assertMonotonic(stopped);
});

test('subscribers that leave in the middle of broadcasts (closed sockets, unsubscribes) never stall the others or the server', async (t) => {
  const s = await startClientServer(t);
  const writer = await s.connect();
  const vf = await writer.getVirtualServiceFile('acme', 'churn');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  const watchers = await Promise.all(Array.from({ length: 240 }, () => watch(s.url, 'churn', 'n')));
  t.after(() => watchers.forEach((w) => w.client.close()));
  const leaving = watchers.filter((_, i) => i % 2 === 1);
  const staying = watchers.filter((_, i) => i % 2 === 0);
  const writes = 600;
  for (let i = 1; i <= writes; i++) {
    vf.set('n', BigInt(i));
    const flushed = vf.flush();
    if (i % 5 === 0 && leaving.length > 0) {
      const gone = leaving.pop()!;
      if (i % 10 === 0) gone.client.ws.terminate(); // gone without a word
      else void gone.client.request('Unsubscribe', { sid: gone.sid }); // asked to stop
    }
    await flushed;
  }
  await until(
    () => staying.every((w) => last(w) === BigInt(writes)),
    () => `${staying.filter((w) => last(w) !== BigInt(writes)).length} remaining subscribers not on the final value`,
  );
  for (const w of staying) assertMonotonic(w);
  await until(() => s.server.subscriptionCount === staying.length + 1, () => `${s.server.subscriptionCount} subscriptions held (want ${staying.length + 1})`);
});
