import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AuthCredentials, Client, VariableType } from '../src/index.js';
import { ScriptedServer, send } from './helpers/scripted-server.js';

type Def = [number, string, number, number, number, number];
const u64 = (index: number, name: string, offset: number, version: number): Def => [index, name, offset, 8, VariableType.U64, version];

/** Settles within `ms`, or says it hung (the bug this file is about made close() wait forever). */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<PromiseSettledResult<T>> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), ms)));
  const settled = Promise.allSettled([p]).then(([r]) => r!);
  const result = await Promise.race([settled, hung]);
  clearTimeout(timer);
  assert.notEqual(result, 'hung', `${what} did not settle within ${ms} ms`);
  return result as PromiseSettledResult<T>;
}

// Found as a rare client.close() hang in the lifecycle test: a write made offline to a variable that a
// reset then removed is resent after the reconnection; its acknowledgement found no directory entry, the ack
// handler threw, and the report never settled, so flush() waited for its deadline and close() forever.
test('the acknowledgement of a resent write to a variable the resync removed settles it: flush() and close() end', { timeout: 90_000 }, async (t) => {
  const server = new ScriptedServer();
  const url = await server.start();
  t.after(() => server.close());
  const errors: unknown[] = [];
  const initializing = Client.initialize(url, 'acme', AuthCredentials.apiKey('ops:s3cret'), {
    mode: 'remote',
    requestTimeoutMs: 60_000,
    onError: (err) => errors.push(err),
    reconnect: { initialDelayMs: 5, maxDelayMs: 20 },
  });
  const ws1 = (await server.accept()).ws;
  const client = await initializing;
  const opening = client.getVirtualServiceFile('acme', 'svc');
  const sub1 = await server.next('Subscription');
  send(ws1, 'Snapshot', sub1.msg.id, { sid: 1, serviceId: 'acme/svc', version: 10, fileId: 'f1', variables: [u64(0, 'gone', 0, 5), u64(1, 'keep', 8, 6)], data: new Uint8Array(16), readOnly: false });
  const vf = await opening;
  // Written as the connection dies, before the client knows: the report is sent into the dying socket, fails
  // NOT_CONNECTED, and waits to be resent under its operation id.
  ws1.terminate();
  vf.set('gone', 5n);
  const flushing = vf.flush();
  const ws2 = (await server.accept()).ws;
  const sub2 = await server.next('Subscription');
  // The file was replaced meanwhile: a full snapshot without `gone`.
  send(ws2, 'Snapshot', sub2.msg.id, { sid: 2, serviceId: 'acme/svc', version: 3, fileId: 'f2', variables: [u64(1, 'keep', 8, 2)], data: new Uint8Array(16), readOnly: false, reset: 'file replaced' });
  let report = await server.next('ReportVariableChanges');
  while (report.ws !== ws2) report = await server.next('ReportVariableChanges'); // the first try may have reached ws1
  assert.deepEqual(report.msg.body.changes.map(([index]) => index), [0], 'the offline write is resent after the resync');
  // The server skips a removed variable (version 0) and acknowledges the rest of the report.
  send(ws2, 'VariableChangesAcknowledged', report.msg.id, { serviceId: 'acme/svc', count: 1, version: 3, versions: [0] });

  await within(15_000, 'flush()', flushing);
  assert.deepEqual(vf.variables().map((v) => v.name), ['keep']);
  const closing = client.close();
  const unsubscribe = await server.next('Unsubscribe');
  send(ws2, 'Unsubscribed', unsubscribe.msg.id, { sid: 2 });
  const closed = await within(15_000, 'client.close()', closing);
  assert.equal(closed.status, 'fulfilled');
  // The lost connection is heard (NOT_CONNECTED); nothing else: an ack handler that threw would show here.
  assert.deepEqual(errors.filter((e) => (e as { code?: string }).code !== 'NOT_CONNECTED'), [], 'no handler threw');
});
