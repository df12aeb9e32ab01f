import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { AuthCredentials, Client, VariableType, type CommyError } from '../src/index.js';
import type { VariableDef } from '../src/protocol/messages.js';
import { ScriptedServer, send } from './helpers/scripted-server.js';

/**
 * Attacks on this session's work (issue 12): staleness notices from a hostile server, struct values, the
 * browser surfaces. The journal's own attacks are in attack-journal.test.ts.
 */

const u64 = (n: number): Uint8Array => new Uint8Array(new BigUint64Array([BigInt(n)]).buffer);

async function until(check: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The heap after a full collection (gc exposed for this process through V8's flags). */
function heapAfterGc(): number {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

// ---- a hostile server's SyncPending (type 77) -------------------------------------------------------------

test('a hostile server\'s SyncPending notices (bogus indices by the million, bad shapes, unknown sids) neither grow the client\'s memory nor corrupt its copy', { timeout: 120_000 }, async (t) => {
  const server = new ScriptedServer();
  const url = await server.start();
  t.after(() => server.close());
  const errors: CommyError[] = [];
  const initializing = Client.initialize(url, 'acme', AuthCredentials.apiKey('ops:s3cret'), { mode: 'remote', onError: (e) => errors.push(e) });
  const { ws } = await server.accept();
  const client = await initializing;
  t.after(() => client.close());
  const opening = client.getVirtualServiceFile('acme', 'svc');
  const sub = await server.next('Subscription');
  assert.equal(sub.msg.body.pending, true);
  const variables: VariableDef[] = [[0, 'x', 0, 8, VariableType.U64, 1]];
  send(ws, 'Snapshot', sub.msg.id, { sid: 1, serviceId: 'acme/svc', version: 1, variables, data: u64(1), readOnly: false, fileId: 'f' });
  const vf = await opening;

  const before = heapAfterGc();
  // 40 notices, each naming 60,000 variables the client never heard of (indices it cannot have), at huge versions.
  for (let n = 0; n < 40; n++) {
    const pending: [number, number][] = [];
    for (let i = 0; i < 60_000; i++) pending.push([1 + n * 60_000 + i, 2 ** 52]);
    send(ws, 'SyncPending', 0, { sid: 1, version: 2 ** 52, pending });
  }
  // Shapes the frame check refuses, and a sid the client does not have.
  ws.send(Buffer.from([0x93, 77, 0, 0x82, 0xa3, 0x73, 0x69, 0x64, 1, 0xa7, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0xff])); // version -1
  send(ws, 'SyncPending', 0, { sid: 99, version: 5, pending: [[0, 5]] });
  send(ws, 'SyncPending', 0, { sid: 1, version: 3, pending: [[0, 3]] });
  await until(() => vf.staleness('x').versionsBehind === 2, 'the real notice');
  send(ws, 'SyncBatch', 0, { sid: 1, version: 3, updates: [[0, 3, u64(42)]] });
  await until(() => vf.get('x') === 42n, 'the batch after the notices');
  assert.deepEqual(vf.staleness('x'), { versionsBehind: 0, ms: 0 }, 'current once delivered');
  const grown = heapAfterGc() - before;
  t.diagnostic(`heap grew by ${(grown / 1e6).toFixed(1)} MB after 2.4 million bogus owed entries; errors: ${errors.map((e) => e.code).join(',')}`);
  assert.ok(grown < 40e6, `the client keeps what a hostile server says it owes for variables it does not have: +${(grown / 1e6).toFixed(0)} MB`);
});
