import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VariableMetadata, VariableType, VirtualVariableFile, type Client, type CommyError, type FileChangeEvent } from '../src/index.js';
import { diffRangesJs } from '../src/core/byte-diff.js';
import { Connection } from '../src/client/connection.js';
import { RemoteFileAccessor } from '../src/client/remote-accessor.js';
import type { TransportEvents, TransportFactory } from '../src/client/transport.js';
import { decodeFrame, encodeFrame } from '../src/protocol/frame-codec.js';
import type { Message, MessageBodies, MessageOf, MessageTypeName, VariableDef } from '../src/protocol/messages.js';
import { startClientServer as startServer, VIEWER_KEY } from './helpers/client-server.js';

/** Waits (on the client's change queue) until `check` holds. */
async function until(client: Client, check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await client.waitForFileChange({ timeoutMs: 200 });
  }
}

async function withVars(vf: VirtualVariableFile, vars: [string, number, number][]): Promise<void> {
  for (const [name, size, type] of vars) await vf.registerVariable(new VariableMetadata(name, -1, size, type as never));
}

test('remote: snapshot, typed set/get, flush resolves on the acknowledgement', async (t) => {
  const s = await startServer(t);
  const client = await s.connect();
  const vf = await client.getVirtualServiceFile('acme', 'plant');
  assert.equal(vf.mode, 'remote');
  assert.equal(vf.serviceId, 'acme/plant');
  assert.equal(vf.filePath, undefined);
  await withVars(vf, [['temp', 8, VariableType.F64], ['count', 8, VariableType.U64], ['label', 16, VariableType.String], ['on', 1, VariableType.Bool]]);
  assert.deepEqual(vf.variables().map((v) => v.name), ['temp', 'count', 'label', 'on']);

  const temp = vf.handle<number>('temp');
  temp.set(21.5);
  vf.set('count', 7n);
  vf.set('label', 'héllo');
  vf.set('on', true);
  assert.equal(temp.get(), 21.5, 'get() sees a set() at once, before any acknowledgement');
  assert.equal(vf.get('label'), 'héllo');
  const before = vf.version;
  await vf.flush();
  assert.ok(vf.version > before, 'the acknowledgement carries the new service version');
  assert.ok(temp.version() > 0n);
  assert.deepEqual(vf.bytes(), vf.shadowBytes(), 'after the ack nothing is pending');

  // The server holds the values: another client's snapshot starts from them.
  const other = await s.connect();
  const vf2 = await other.getVirtualServiceFile('acme', 'plant');
  assert.equal(vf2.get('temp'), 21.5);
  assert.equal(vf2.get('count'), 7n);
  assert.equal(vf2.get('label'), 'héllo');
  assert.equal(vf2.get('on'), true);
  assert.deepEqual([...(await vf2.readVariableSlice('count'))], [7, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual([...(await client.readVariable('acme', 'plant', 'count'))], [7, 0, 0, 0, 0, 0, 0, 0]);
});

test('remote: registering the same layout again is a no-op; a different one is refused', async (t) => {
  const s = await startServer(t);
  const vf = await (await s.connect()).getVirtualServiceFile('acme', 'layout');
  const meta = await vf.registerVariable(new VariableMetadata('x', 16, 4, VariableType.U32));
  assert.deepEqual([meta.offset, meta.size], [16, 4]);
  assert.equal((await vf.registerVariable(new VariableMetadata('x', -1, 4, VariableType.U32))).offset, 16);
  await assert.rejects(vf.registerVariable(new VariableMetadata('x', -1, 4, VariableType.I32)), { code: 'TYPE_MISMATCH' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('x', 8, 4, VariableType.U32)), { code: 'INVALID_OFFSET' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('y', 18, 4, VariableType.U32)), { code: 'INVALID_OFFSET' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('bad/name', -1, 4, VariableType.U32)), { code: 'INVALID_NAME' });
  assert.throws(() => vf.get('nope'), { code: 'VARIABLE_NOT_FOUND' });
  assert.throws(() => vf.set('x', 'text'), { code: 'TYPE_MISMATCH' });
  assert.throws(() => vf.set('x', 2 ** 32), { code: 'VALUE_TOO_LARGE' });
  assert.equal(vf.get('x'), 0, 'a refused value changes nothing');
});

test('remote → remote: every update arrives and the final values are exact', async (t) => {
  const s = await startServer(t);
  const writer = await s.connect();
  const reader = await s.connect();
  const w = await writer.getVirtualServiceFile('acme', 'feed');
  await withVars(w, [['n', 8, VariableType.U64], ['text', 32, VariableType.String], ['blob', 3000, VariableType.Bytes]]);
  const r = await reader.getVirtualServiceFile('acme', 'feed');
  const n = w.handle<bigint>('n');
  const blob = new Uint8Array(3000);
  for (let i = 1; i <= 2000; i++) {
    n.set(BigInt(i));
    if (i % 100 === 0) {
      blob.fill(i & 0xff);
      w.set('blob', blob);
      w.set('text', `step ${i}`);
      await w.flush();
    } else if (i % 7 === 0) {
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  await w.flush();
  await until(reader, () => r.get('n') === 2000n, 'n = 2000 at the reader');
  assert.equal(r.get('text'), 'step 2000');
  assert.deepEqual(r.get('blob'), new Uint8Array(3000).fill(2000 & 0xff));
  assert.deepEqual(r.bytes(), w.bytes(), 'both buffers are byte for byte the same');
  assert.equal(r.handle('n').version(), w.handle('n').version());
});

test('two remote writers on one variable converge to the same final value', async (t) => {
  const s = await startServer(t);
  const [a, b] = [await s.connect(), await s.connect()];
  const va = await a.getVirtualServiceFile('acme', 'race');
  await withVars(va, [['x', 8, VariableType.U64], ['y', 8, VariableType.U64]]);
  const vb = await b.getVirtualServiceFile('acme', 'race');
  for (let round = 0; round < 20; round++) {
    // Both write in the same turns, so their reports and the echoes of each other's writes cross on the wire.
    for (let i = 0; i < 50; i++) {
      va.set('x', BigInt(round * 1000 + i));
      vb.set('x', BigInt(round * 1000 + 500 + i));
      vb.set('y', BigInt(i));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await Promise.all([va.flush(), vb.flush()]);
  }
  const server = await a.readVariable('acme', 'race', 'x');
  const final = new DataView(server.buffer, server.byteOffset).getBigUint64(0, true);
  await until(a, () => va.get('x') === final, 'a to converge');
  await until(b, () => vb.get('x') === final, 'b to converge');
  // Nothing more is in flight: a settled state stays settled.
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(va.get('x'), final);
  assert.equal(vb.get('x'), final);
  assert.equal(va.get('y'), 49n);
  assert.deepEqual(va.bytes(), vb.bytes());
});

test('writeVariable resolves once visible to other clients; readVariableSlice is a copy', async (t) => {
  const s = await startServer(t);
  const [a, b] = [await s.connect(), await s.connect()];
  const va = await a.getVirtualServiceFile('acme', 'wv');
  await withVars(va, [['raw', 4, VariableType.Bytes]]);
  const vb = await b.getVirtualServiceFile('acme', 'wv');
  await va.writeVariable('raw', new Uint8Array([1, 2]));
  assert.deepEqual([...(await a.readVariable('acme', 'wv', 'raw'))], [1, 2, 0, 0], 'zero-padded, applied at the server');
  await until(b, () => (vb.get('raw') as Uint8Array)[1] === 2, 'b to see the write');
  const copy = await va.readVariableSlice('raw');
  copy[0] = 99;
  assert.equal((await va.readVariableSlice('raw'))[0], 1);
  await assert.rejects(va.writeVariable('raw', new Uint8Array(5)), { code: 'VALUE_TOO_LARGE' });
  await va.writeVariable('raw', new Uint8Array([1, 2])); // the value the server already holds: nothing to send
});

test('raw writes into bytes() are sent by flush(); a big flush is split into several frames', async (t) => {
  const s = await startServer(t);
  const a = await s.connect({ maxFrameBytes: 4096 });
  const b = await s.connect();
  const va = await a.getVirtualServiceFile('acme', 'raw');
  const vars: [string, number, number][] = [];
  for (let i = 0; i < 40; i++) vars.push([`v${i}`, 1000, VariableType.Bytes]);
  await withVars(va, vars);
  const vb = await b.getVirtualServiceFile('acme', 'raw');
  const bytes = va.bytes();
  for (let i = 0; i < bytes.length; i++) bytes[i] = ((i * 7) % 251) + 1;
  assert.deepEqual(VirtualVariableFile.compareRanges(va.bytes(), va.shadowBytes()), [[0, 40 * 1000]], 'raw writes are pending until flush()');
  await va.flush(); // 40,000 bytes in 4 KiB frames
  await until(b, () => vb.bytes().every((x, i) => x === ((i * 7) % 251) + 1), 'b to see every raw byte');
  assert.deepEqual(va.bytes(), va.shadowBytes());
});

test('a read-only key: typed writes fail at once, a raw write is refused by the server and undone', async (t) => {
  const s = await startServer(t);
  const ops = await s.connect();
  const vo = await ops.getVirtualServiceFile('acme', 'ro');
  await withVars(vo, [['x', 8, VariableType.U64]]);
  vo.set('x', 5n);
  await vo.flush();

  const errors: CommyError[] = [];
  const viewer = await s.connect({ mode: 'remote', onError: (e) => errors.push(e) }, VIEWER_KEY);
  const vf = await viewer.getVirtualServiceFile('acme', 'ro');
  assert.equal(vf.mode, 'remote');
  assert.equal(vf.get('x'), 5n);
  assert.throws(() => vf.set('x', 6n), { code: 'PERMISSION_DENIED' });
  await assert.rejects(vf.writeVariable('x', new Uint8Array(8)), { code: 'PERMISSION_DENIED' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('new', -1, 8, VariableType.U64)), { code: 'PERMISSION_DENIED' });
  assert.equal(vf.get('x'), 5n);

  vf.bytes()[0] = 9; // a raw write: only the server can refuse it
  assert.equal(vf.get('x'), 9n);
  await assert.rejects(vf.flush(), { code: 'PERMISSION_DENIED' });
  assert.equal(vf.get('x'), 5n, 'the local buffer is restored from the shadow');
  assert.deepEqual(vf.bytes(), vf.shadowBytes());
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(errors, [], 'an awaited failure is not reported twice');
  await assert.rejects(viewer.writeVariable('acme', 'ro', 'x', new Uint8Array(8)), { code: 'PERMISSION_DENIED' });
});

test('change events: one per batch, sorted ranges, the service version; also for this client\'s own writes', async (t) => {
  const s = await startServer(t);
  const [a, b] = [await s.connect(), await s.connect()];
  const va = await a.getVirtualServiceFile('acme', 'ev');
  await withVars(va, [['p', 8, VariableType.U64], ['q', 8, VariableType.U64]]);
  const vb = await b.getVirtualServiceFile('acme', 'ev');
  const seen: FileChangeEvent[] = [];
  const iterator = vb.changes();
  const reading = (async () => {
    for await (const ev of iterator) {
      seen.push(ev);
      if (vb.get('q') === 2n) break;
    }
  })();
  va.set('q', 2n);
  va.set('p', 1n);
  await va.flush();
  await reading;
  const last = seen[seen.length - 1]!;
  assert.equal(last.serviceId, 'acme/ev');
  assert.equal(last.filePath, '');
  assert.deepEqual(last.changedVariables, ['p', 'q']);
  assert.deepEqual(last.byteRanges, [[0, 8], [8, 16]]);
  assert.equal(last.version, vb.version);
  // The writer hears its own change too (its acknowledgement is the event), like a local file's watcher does.
  let own: FileChangeEvent | null = null;
  for (let i = 0; i < 10 && own === null; i++) {
    const ev = await a.waitForFileChange({ timeoutMs: 1000 });
    if (ev?.changedVariables.includes('q')) own = ev;
  }
  assert.ok(own !== null, 'the writer got an event for its own write');
});

test('use after close: NOT_CONNECTED, never a crash', async (t) => {
  const s = await startServer(t);
  const client = await s.connect();
  const vf = await client.getVirtualServiceFile('acme', 'closing');
  await withVars(vf, [['x', 8, VariableType.U64]]);
  const h = vf.handle<bigint>('x');
  h.set(3n); // sent by close(), which flushes first
  await vf.close();
  assert.equal(vf.closed, true);
  assert.equal(await client.readVariable('acme', 'closing', 'x').then((b) => b[0]), 3);
  for (const fn of [() => vf.get('x'), () => vf.set('x', 1n), () => h.get(), () => h.set(1n), () => vf.bytes(), () => vf.variables(), () => vf.version, () => vf.handle('x')]) {
    assert.throws(fn, { code: 'NOT_CONNECTED' });
  }
  await assert.rejects(vf.flush(), { code: 'NOT_CONNECTED' });
  await assert.rejects(vf.writeVariable('x', new Uint8Array(8)), { code: 'NOT_CONNECTED' });
  await assert.rejects(vf.readVariableSlice('x'), { code: 'NOT_CONNECTED' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('y', -1, 8, VariableType.U64)), { code: 'NOT_CONNECTED' });
  await vf.close(); // idempotent
});

// ---- the sync rules, against a scripted server (no socket): every interleaving chosen by the test ----

interface Scripted {
  vf: VirtualVariableFile;
  sent: Message[];
  errors: CommyError[];
  push<K extends MessageTypeName>(type: K, id: number, body: MessageBodies[K]): void;
  /** The next frame the client sent (after letting the end-of-turn flush run). */
  next(): Promise<Message>;
  lose(): void;
}

type After = { after(fn: () => unknown): void };

async function scripted(t: After, variables: VariableDef[], data: Uint8Array, options: { maxFrameBytes?: number; requestTimeoutMs?: number } = {}): Promise<Scripted> {
  const sent: Message[] = [];
  const errors: CommyError[] = [];
  let events: TransportEvents | undefined;
  const factory: TransportFactory = async (_url, ev) => {
    events = ev;
    return { isOpen: true, send: (frame) => sent.push(decodeFrame(frame)), close: async () => {} };
  };
  const conn = await Connection.open('ws://scripted', factory, {
    requestTimeoutMs: options.requestTimeoutMs ?? 5000,
    maxFrameBytes: options.maxFrameBytes ?? 1 << 20,
    maxIncomingBytes: 1 << 24,
    onPush: (m) => {
      if (m.type === 'SyncBatch') accessor?.onBatch(m.body);
    },
    onClosed: (reason) => accessor?.detach(reason),
    onError: (e) => errors.push(e),
  });
  t.after(() => conn.close()); // drops the requests the script never answers (and their timers)
  let accessor: RemoteFileAccessor | undefined;
  let opIds = 0;
  const push = <K extends MessageTypeName>(type: K, id: number, body: MessageBodies[K]): void => events!.frame(encodeFrame(type, id, body));
  const subscribing = RemoteFileAccessor.subscribe(
    {
      conn,
      maxFrameBytes: options.maxFrameBytes ?? 1 << 20,
      requestTimeoutMs: options.requestTimeoutMs ?? 5000,
      maxChangesPerReport: 4096,
      diff: (a, b) => diffRangesJs(a, b),
      onError: (e) => errors.push(e),
      route: noop,
      nextOpId: () => ++opIds,
    },
    'acme',
    'svc',
  );
  const sub = sent.shift()!;
  assert.equal(sub.type, 'Subscription');
  push('Snapshot', sub.id, { sid: 1, serviceId: 'acme/svc', version: 1, variables, data, readOnly: false });
  accessor = await subscribing;
  return {
    vf: new VirtualVariableFile(accessor),
    sent,
    errors,
    push,
    async next() {
      await new Promise((resolve) => setImmediate(resolve));
      const m = sent.shift();
      assert.ok(m !== undefined, 'the client sent a frame');
      return m;
    },
    lose: () => events!.closed(1006, 'gone'),
  };
}

function noop(): void {}

const X: VariableDef = [0, 'x', 0, 8, VariableType.U64, 1];
const Y: VariableDef = [1, 'y', 8, 8, VariableType.U64, 1];
const u64 = (n: number): Uint8Array => new Uint8Array(new BigUint64Array([BigInt(n)]).buffer);

test('sync rules: an update ordered after our write wins; one ordered before it is dropped', async (t) => {
  const s = await scripted(t, [X, Y], new Uint8Array(16));
  s.vf.set('x', 5n);
  const report = (await s.next()) as MessageOf<'ReportVariableChanges'>;
  assert.equal(report.type, 'ReportVariableChanges');
  assert.deepEqual(report.body.changes.map(([i, b]) => [i, [...b]]), [[0, [...u64(5)]]]);
  // Another client's write, committed after ours (version 3 > our 2), arrives before our ack.
  s.push('SyncBatch', 0, { sid: 1, version: 3, updates: [[0, 3, u64(7)], [1, 3, u64(1)]] });
  assert.equal(s.vf.get('x'), 5n, 'our pending value stays until the ack decides');
  assert.equal(s.vf.get('y'), 1n, 'a variable with nothing pending takes the update at once');
  s.push('VariableChangesAcknowledged', report.id, { serviceId: 'acme/svc', changedVariables: ['x'], version: 2 });
  assert.equal(s.vf.get('x'), 7n, 'the server ordered the other write last: it wins');
  assert.deepEqual(s.vf.bytes(), s.vf.shadowBytes());

  s.vf.set('x', 9n);
  const second = (await s.next()) as MessageOf<'ReportVariableChanges'>;
  s.push('SyncBatch', 0, { sid: 1, version: 4, updates: [[0, 4, u64(8)]] }); // committed before ours (5)
  s.push('VariableChangesAcknowledged', second.id, { serviceId: 'acme/svc', changedVariables: ['x'], version: 5 });
  assert.equal(s.vf.get('x'), 9n, 'ours was ordered last: it stays');
  assert.equal(s.vf.handle('x').version(), 5n);
  s.push('SyncBatch', 0, { sid: 1, version: 5, updates: [[0, 5, u64(9)]] }); // the echo of our own write
  assert.equal(s.vf.get('x'), 9n);
  assert.equal(s.vf.version, 5n);
});

test('sync rules: with per-change versions, an update ordered between two changes of one report wins', async (t) => {
  const s = await scripted(t, [X, Y], new Uint8Array(16));
  s.vf.set('x', 5n);
  s.vf.set('y', 6n);
  const report = (await s.next()) as MessageOf<'ReportVariableChanges'>;
  assert.deepEqual(report.body.changes.map(([i]) => i), [0, 1]);
  // A local process wrote x (version 3) between the server's writes of our x (2) and our y (4).
  s.push('SyncBatch', 0, { sid: 1, version: 3, updates: [[0, 3, u64(7)]] });
  s.push('VariableChangesAcknowledged', report.id, { serviceId: 'acme/svc', changedVariables: ['x', 'y'], version: 4, versions: [2, 4] });
  assert.equal(s.vf.get('x'), 7n, 'the local write came after ours: it is the server value');
  assert.equal(s.vf.get('y'), 6n);
  assert.equal(s.vf.handle('x').version(), 3n);
  assert.equal(s.vf.handle('y').version(), 4n);
  assert.deepEqual(s.vf.bytes(), s.vf.shadowBytes());
});

test('sync rules: a refused report restores the value, then applies what the server sent meanwhile', async (t) => {
  const s = await scripted(t, [X, Y], new Uint8Array(16));
  s.vf.set('x', 5n);
  const flushed = s.vf.flush();
  const report = (await s.next()) as MessageOf<'ReportVariableChanges'>;
  s.push('Error', report.id, { errorCode: 'PERMISSION_DENIED', message: 'no' });
  await assert.rejects(flushed, { code: 'PERMISSION_DENIED' });
  assert.equal(s.vf.get('x'), 0n, 'restored from the shadow');

  s.vf.set('x', 6n);
  const again = (await s.next()) as MessageOf<'ReportVariableChanges'>;
  s.push('SyncBatch', 0, { sid: 1, version: 2, updates: [[0, 2, u64(4)]] });
  s.push('Error', again.id, { errorCode: 'VALUE_TOO_LARGE', message: 'no' });
  assert.equal(s.vf.get('x'), 4n, 'ours never happened: the stashed update applies');
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(s.errors.map((e) => e.code), ['VALUE_TOO_LARGE'], 'only the failure nobody awaited goes to onError');
});

test('sync rules: a value changed again while in flight is sent again, even back to the confirmed value', async (t) => {
  const s = await scripted(t, [X], new Uint8Array(8));
  s.vf.set('x', 1n);
  const r1 = (await s.next()) as MessageOf<'ReportVariableChanges'>;
  s.vf.set('x', 0n); // back to what the server confirmed, while 1 is in flight
  const flushed = s.vf.flush(); // goes out when r1 is answered: one wave in flight at a time
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(s.sent.length, 0);
  s.push('VariableChangesAcknowledged', r1.id, { serviceId: 'acme/svc', changedVariables: ['x'], version: 2 });
  assert.equal(s.vf.get('x'), 0n, 'the newer local value stays');
  const r2 = s.sent.shift() as MessageOf<'ReportVariableChanges'>;
  assert.deepEqual([...r2.body.changes[0]![1]], [...u64(0)]);
  s.push('VariableChangesAcknowledged', r2.id, { serviceId: 'acme/svc', changedVariables: ['x'], version: 3 });
  await flushed;
  assert.equal(s.vf.get('x'), 0n);
  assert.deepEqual(s.vf.bytes(), s.vf.shadowBytes());
  await s.vf.flush();
  assert.equal(s.sent.length, 0, 'nothing left to send');
});

test('sync rules: a flush larger than a frame goes as several reports; a too-large one fails alone', async (t) => {
  const defs: VariableDef[] = [];
  for (let i = 0; i < 10; i++) defs.push([i, `b${i}`, i * 600, 600, VariableType.Bytes, 1]);
  const s = await scripted(t, defs, new Uint8Array(6000), { maxFrameBytes: 2048 });
  for (let i = 0; i < 10; i++) s.vf.set(`b${i}`, new Uint8Array(600).fill(i + 1));
  const flushed = s.vf.flush();
  const reports = s.sent.splice(0) as MessageOf<'ReportVariableChanges'>[];
  assert.ok(reports.length >= 4, `${reports.length} frames`);
  assert.deepEqual(reports.flatMap((r) => r.body.changes.map(([i]) => i)), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  for (const r of reports) s.push('VariableChangesAcknowledged', r.id, { serviceId: 'acme/svc', changedVariables: [], version: 2 });
  await flushed;

  const big = await scripted(t, [[0, 'big', 0, 4000, VariableType.Bytes, 1], Y.map((v, i) => (i === 2 ? 4000 : v)) as VariableDef], new Uint8Array(4008), { maxFrameBytes: 2048 });
  big.vf.set('big', new Uint8Array(4000).fill(1));
  big.vf.set('y', 3n);
  await assert.rejects(big.vf.flush(), { code: 'MESSAGE_TOO_LARGE' });
  assert.deepEqual(big.vf.get('big'), new Uint8Array(4000), 'the refused change is undone');
  assert.equal(big.vf.get('y'), 3n, 'the other change went out');
  assert.equal(big.sent.length, 1);
});

// Changed with reconnection: a TIMEOUT used to undo the write; its outcome is unknown, so it now stays pending
// and its late acknowledgement settles it.
test('sync rules: TIMEOUT is not a refusal: the value stays, the late ack settles it; a lost connection (no reconnect) rejects and ends the file', async (t) => {
  const s = await scripted(t, [X], new Uint8Array(8), { requestTimeoutMs: 50 });
  s.vf.set('x', 1n);
  const flushed = s.vf.flush();
  const r1 = (await s.next()) as MessageOf<'ReportVariableChanges'>;
  assert.equal(typeof r1.body.opId, 'number', 'every report carries an operation id');
  await assert.rejects(flushed, { code: 'TIMEOUT' });
  assert.equal(s.vf.get('x'), 1n, 'not undone');
  assert.notDeepEqual(s.vf.bytes(), s.vf.shadowBytes(), 'still pending');
  s.vf.set('x', 2n);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(s.sent.length, 0, 'later writes wait behind the report whose outcome is unknown');
  s.push('VariableChangesAcknowledged', r1.id, { serviceId: 'acme/svc', count: 1, version: 2, versions: [2] }); // late
  const r2 = (await s.next()) as MessageOf<'ReportVariableChanges'>;
  assert.deepEqual([...r2.body.changes[0]![1]], [...u64(2)]);
  assert.ok(r2.body.opId! > r1.body.opId!, 'a new write, a new operation id');
  const pending = s.vf.writeVariable('x', u64(3));
  s.push('VariableChangesAcknowledged', r2.id, { serviceId: 'acme/svc', count: 1, version: 3, versions: [3] });
  await new Promise((resolve) => setImmediate(resolve));
  s.lose(); // the scripted client does what a Client with reconnect: false does: it ends the file
  await assert.rejects(pending, { code: 'NOT_CONNECTED' });
  assert.throws(() => s.vf.get('x'), { code: 'NOT_CONNECTED' });
});

test('sync rules: while a background report is in flight, later sets wait for its ack and go as one report', async (t) => {
  const s = await scripted(t, [X, Y], new Uint8Array(16));
  s.vf.set('x', 1n);
  const r1 = (await s.next()) as MessageOf<'ReportVariableChanges'>;
  for (let i = 2; i <= 5; i++) {
    s.vf.set('x', BigInt(i));
    s.vf.set('y', BigInt(i * 10));
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.equal(s.sent.length, 0, 'nothing more on the wire while r1 is unanswered');
  s.push('VariableChangesAcknowledged', r1.id, { serviceId: 'acme/svc', changedVariables: ['x'], version: 2 });
  const r2 = s.sent.shift() as MessageOf<'ReportVariableChanges'>;
  assert.deepEqual(r2.body.changes.map(([i, b]) => [i, [...b]]), [[0, [...u64(5)]], [1, [...u64(50)]]], 'only the latest values');
  const flushed = s.vf.flush(); // resolves with r2's ack
  s.push('VariableChangesAcknowledged', r2.id, { serviceId: 'acme/svc', changedVariables: ['x', 'y'], version: 4 });
  await flushed;
  assert.deepEqual(s.vf.bytes(), s.vf.shadowBytes());
});

test('sync rules: RATE_LIMITED keeps the value and sends it again after a pause', async (t) => {
  const s = await scripted(t, [X], new Uint8Array(8));
  s.vf.set('x', 7n);
  const r1 = (await s.next()) as MessageOf<'ReportVariableChanges'>;
  s.push('Error', r1.id, { errorCode: 'RATE_LIMITED', message: 'slow down' });
  s.push('SyncBatch', 0, { sid: 1, version: 2, updates: [[0, 2, u64(3)]] }); // someone else's write meanwhile
  assert.equal(s.vf.get('x'), 7n, 'not restored: the value is still on its way');
  await new Promise((resolve) => setTimeout(resolve, 80));
  const r2 = s.sent.shift() as MessageOf<'ReportVariableChanges'>;
  assert.ok(r2 !== undefined, 'sent again');
  assert.deepEqual([...r2.body.changes[0]![1]], [...u64(7)]);
  s.push('VariableChangesAcknowledged', r2.id, { serviceId: 'acme/svc', changedVariables: ['x'], version: 3 });
  assert.equal(s.vf.get('x'), 7n, 'ours was ordered after the other write');
  assert.deepEqual(s.errors, [], 'a retried report is not an error');
});
