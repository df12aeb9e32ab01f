import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VariableType } from '../src/core/variable-type.js';
import { encodeFrame } from '../src/protocol/frame-codec.js';
import type { Message } from '../src/protocol/messages.js';
import { RawClient, errorCode } from './helpers/raw-client.js';
import { startServer } from './helpers/server.js';

/** Query over a real socket: pages under one request id, and QueryCancel before and during the stream. */

async function signedIn(t: { after(fn: () => void): void }, url: string, key = 'ops:s3cret'): Promise<RawClient> {
  const c = await RawClient.connect(url);
  t.after(() => c.close());
  assert.equal((await c.auth('acme', key)).type, 'Authenticated');
  return c;
}

/** Creates `service` holding `count` Bytes variables of `size` bytes. */
async function fill(c: RawClient, service: string, count: number, size: number): Promise<void> {
  const snap = await c.request('Subscription', { tenant: 'acme', service, create: true });
  assert.ok(snap.type === 'Snapshot');
  const regs = Array.from({ length: count }, (_, i) => c.request('RegisterVariable', { sid: snap.body.sid, name: `v${i}`, offset: -1, size, typeId: VariableType.Bytes }));
  for (const r of await Promise.all(regs)) assert.equal(r.type, 'VariableRegistered');
  await c.request('Unsubscribe', { sid: snap.body.sid });
}

/** Every message with request id `id`, until the last page or an error. */
async function answers(c: RawClient, id: number, first: Message): Promise<Message[]> {
  const out = [first];
  while (out.at(-1)!.type === 'QueryResponse' && (out.at(-1)!.body as { more: boolean }).more) out.push(await c.push((m) => m.id === id));
  return out;
}

test('query: the services a key may read, their definitions and values, in pages under the request id', async (t) => {
  const server = await startServer(t, { limits: { maxFrameBytes: 64 * 1024, maxVariableBytes: 16 * 1024 } });
  const ops = await signedIn(t, server.url);
  await fill(ops, 'dash-a', 40, 1024);
  await fill(ops, 'secret', 2, 8);
  const dash = await signedIn(t, server.url, 'dash:dash'); // reads dash-* only
  const first = await dash.request('Query', { tenant: 'acme', values: true });
  const pages = await answers(dash, first.id, first);
  assert.ok(pages.length > 1, 'more than one page');
  const parts = pages.flatMap((p) => (p.type === 'QueryResponse' ? p.body.services : []));
  assert.deepEqual([...new Set(parts.map((s) => s.service))], ['dash-a']);
  const names = parts.flatMap((s) => s.variables.map((d) => d[1]));
  assert.equal(new Set(names).size, 40);
  assert.ok(parts.every((s) => s.values?.length === s.variables.length && s.values.every((u) => u[2].length === 1024)));
  const filtered = await ops.request('Query', { tenant: 'acme', services: ['sec*'], variables: ['v1'] });
  assert.ok(filtered.type === 'QueryResponse' && !filtered.body.more);
  assert.deepEqual(filtered.body.services.map((s) => [s.service, s.variables.map((d) => d[1]), s.values]), [['secret', ['v1'], undefined]]);
  // What each key may write is said per service (an inspector offers editing only there).
  assert.ok(parts.every((s) => s.writable === true), 'dash writes dash-*');
  const viewer = await signedIn(t, server.url, 'viewer:view');
  const seen = await viewer.request('Query', { tenant: 'acme' });
  assert.ok(seen.type === 'QueryResponse');
  assert.deepEqual(seen.body.services.map((s) => [s.service, s.writable]), [['dash-a', false], ['secret', false]]);
  assert.ok(filtered.body.services.every((s) => s.writable === true));
});

test('query: a cancel pipelined right behind its Query stops it before any page', async (t) => {
  const server = await startServer(t);
  const ops = await signedIn(t, server.url);
  await fill(ops, 's', 3, 8);
  const query = ops.request('Query', { tenant: 'acme' });
  ops.ws.send(encodeFrame('QueryCancel', 0, { id: ops.lastRequestId }));
  assert.equal(errorCode(await query), 'ABORTED');
  assert.equal((await ops.request('Query', { tenant: 'acme' })).type, 'QueryResponse', 'the connection goes on');
});

test('query: QueryCancel mid-stream ends it with ABORTED, and no page follows', async (t) => {
  const server = await startServer(t, { limits: { maxBufferedBytes: 256 * 1024 } });
  const ops = await signedIn(t, server.url);
  await fill(ops, 'big', 600, 64 * 1024); // 39 MB of values: far more than loopback socket buffers hold
  const reader = await signedIn(t, server.url);
  const received: Message[] = [];
  const first = reader.request('Query', { tenant: 'acme', values: true });
  const id = reader.lastRequestId;
  reader.ws.pause(); // the server stops once its output budget and the socket buffers are full
  await new Promise((r) => setTimeout(r, 500));
  reader.ws.send(encodeFrame('QueryCancel', 0, { id }));
  reader.ws.resume();
  const page1 = await first;
  received.push(...(await answers(reader, page1.id, page1)));
  const last = received.at(-1)!;
  assert.equal(errorCode(last), 'ABORTED');
  const pages = received.filter((m) => m.type === 'QueryResponse').length;
  assert.ok(pages < Math.ceil((600 * 64 * 1024) / (512 * 1024)), `all ${pages} pages came: the cancel did not stop the stream`);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(reader.pushes.filter((m) => m.id === page1.id).length, 0, 'nothing after the error');
});

test('client.query: every page in a for-await loop, typed values; aborting mid-stream ends the loop at once', async (t) => {
  const { startClientServer } = await import('./helpers/client-server.js');
  const { VariableMetadata } = await import('../src/index.js');
  const { connect } = await startClientServer(t, { limits: { maxFrameBytes: 64 * 1024, maxVariableBytes: 16 * 1024 } });
  const client = await connect();
  for (const service of ['q1', 'q2']) {
    const vf = await client.getVirtualServiceFile('acme', service);
    for (let i = 0; i < 50; i++) await vf.registerVariable(new VariableMetadata(`v${i}`, -1, 8, VariableType.U64));
    vf.set('v7', 7n);
    await vf.flush();
  }
  let pages = 0;
  const seen = new Map<string, bigint | undefined>();
  for await (const page of client.query({ tenant: 'acme', values: true })) {
    pages++;
    for (const s of page.services) for (const v of s.variables) seen.set(`${s.service}/${v.metadata.name}`, v.value as bigint | undefined);
  }
  assert.ok(pages >= 1);
  assert.equal(seen.size, 100);
  assert.equal(seen.get('q2/v7'), 7n);
  // Aborted after the first page: the loop ends, and the connection goes on.
  const small = await connect({}, 'ops:s3cret');
  const controller = new AbortController();
  let iterations = 0;
  for await (const page of small.query({ tenant: 'acme', values: true }, { signal: controller.signal })) {
    assert.ok(page.services.length > 0);
    iterations++;
    controller.abort();
  }
  assert.equal(iterations, 1, 'the loop ends at the abort');
  let none = 0;
  for await (const _page of small.query({ tenant: 'acme' }, { signal: controller.signal })) none++; // aborted already
  assert.equal(none, 0);
  const after = await small.getVirtualServiceFile('acme', 'q1');
  assert.equal(after.get('v7'), 7n);
  // Leaving the loop early cancels too.
  for await (const _page of small.query({ tenant: 'acme' })) break;
  await assert.rejects(async () => {
    for await (const _page of small.query({ tenant: 'nope' })) void _page;
  }, { code: 'PERMISSION_DENIED' });
});
