import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCode } from '../src/core/errors.js';
import { VariableType } from '../src/core/variable-type.js';
import { decodeFrame, encodeFrame } from '../src/protocol/frame-codec.js';
import type { Message, MessageBodies, MessageTypeName } from '../src/protocol/messages.js';
import { createAuditLog } from '../src/server/audit.js';
import { Authenticator } from '../src/server/auth.js';
import { loadConfig } from '../src/server/config.js';
import { DEFAULT_LIMITS } from '../src/server/limits.js';
import { PermissionsCache } from '../src/server/permissions.js';
import { OpLedger } from '../src/server/op-ledger.js';
import { ServiceRegistry } from '../src/server/service-registry.js';
import { Session, type SessionLink } from '../src/server/session.js';
import { TEST_TENANTS } from './helpers/server.js';
import { tempDir } from './helpers/temp.js';

/**
 * The server's handlers without a socket, as ws tests its receiver: a Session over a link that records the
 * frames it is given, with a real registry (real files), real authentication and real permissions.
 */
class RecordingLink implements SessionLink {
  readonly frames: Message[] = [];
  open = true;
  closedWith: number | undefined;
  send(frame: Uint8Array): void {
    this.frames.push(decodeFrame(frame, 64 * 1024 * 1024));
  }
  overBudget(): boolean {
    return false;
  }
  outputRoom(): Promise<void> {
    return Promise.resolve();
  }
  readonly cancelled: number[] = [];
  cancel(id: number): void {
    this.cancelled.push(id);
  }
  close(code: number): void {
    this.open = false;
    this.closedWith = code;
  }
  /** Frames pushed (request id 0) of `type`, taken out of the record. */
  take<K extends MessageTypeName>(type: K): Extract<Message, { type: K }>[] {
    const out = this.frames.filter((m): m is Extract<Message, { type: K }> => m.type === type && m.id === 0);
    for (const m of out) this.frames.splice(this.frames.indexOf(m), 1);
    return out;
  }
}

type Harnessed = { after(fn: () => void | Promise<void>): void };

function world(t: Harnessed) {
  const config = loadConfig({ tenants: TEST_TENANTS, audit: { enabled: false } });
  const registry = new ServiceRegistry(tempDir(t), DEFAULT_LIMITS, { tick: 'immediate', maxFrameBytes: DEFAULT_LIMITS.maxFrameBytes });
  const ctx = {
    registry,
    ledger: OpLedger.of(DEFAULT_LIMITS),
    authenticator: new Authenticator(config.tenants),
    permissions: new PermissionsCache(DEFAULT_LIMITS),
    audit: createAuditLog({ enabled: false }),
    limits: DEFAULT_LIMITS,
    onError: (err: unknown) => assert.fail(String(err)),
  };
  const sessions: Session[] = [];
  t.after(() => {
    for (const s of sessions) s.closed();
    registry.close();
  });
  let nextId = 1;
  return {
    registry,
    session(): { session: Session; link: RecordingLink; ask<K extends MessageTypeName>(type: K, body: MessageBodies[K]): Promise<Message> } {
      const link = new RecordingLink();
      const session = new Session(link, ctx, { source: '127.0.0.1', authenticated() {} });
      sessions.push(session);
      /** Handles one request as the connection would: the reply, or the error it would be answered with. */
      const ask = async <K extends MessageTypeName>(type: K, body: MessageBodies[K]): Promise<Message> => {
        const id = nextId++;
        const message = decodeFrame(encodeFrame(type, id, body));
        try {
          const reply = await session.handle(message, new AbortController().signal);
          if (reply !== undefined) return decodeFrame(reply);
          const sent = link.frames.find((m) => m.id === id);
          assert.ok(sent !== undefined, `no reply to ${type}`);
          link.frames.splice(link.frames.indexOf(sent), 1);
          return sent;
        } catch (err) {
          return { type: 'Error', id, body: { errorCode: (err as { code: ErrorCode }).code, message: String(err) } };
        }
      };
      return { session, link, ask };
    },
  };
}

const errorOf = (m: Message): string | undefined => (m.type === 'Error' ? m.body.errorCode : undefined);
const u64 = (n: bigint): Uint8Array => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n, true);
  return b;
};

type World = ReturnType<typeof world>;

/** A session signed in with `credential` (of tenant acme). */
async function signedIn(w: World, credential: string): Promise<ReturnType<World['session']>> {
  const session = w.session();
  const ok = await session.ask('Authenticate', { tenant: 'acme', method: 'apiKey', credential, protocol: 1 });
  assert.equal(ok.type, 'Authenticated');
  return session;
}

/** An admin session subscribed to a new service `name` holding u64 variables `vars`; its ask and sid. */
async function adminOf(w: World, name: string, vars: readonly string[]): Promise<ReturnType<World['session']> & { sid: number }> {
  const admin = await signedIn(w, 's3cret');
  const snap = await admin.ask('Subscription', { tenant: 'acme', service: name, create: true });
  assert.ok(snap.type === 'Snapshot');
  for (const v of vars) await admin.ask('RegisterVariable', { sid: snap.body.sid, name: v, offset: -1, size: 8, typeId: VariableType.U64 });
  return { ...admin, sid: snap.body.sid };
}

async function until(what: string, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('handlers: nothing but Authenticate before authentication; a bad key is AUTH_FAILED', async (t) => {
  const { ask, session } = world(t).session();
  assert.equal(errorOf(await ask('ReadVariable', { tenant: 'acme', service: 's', name: 'x' })), ErrorCode.AUTH_FAILED);
  assert.equal(errorOf(await ask('Authenticate', { tenant: 'acme', method: 'apiKey', credential: 'wrong', protocol: 1 })), ErrorCode.AUTH_FAILED);
  assert.equal(session.authenticated, false);
  const ok = await ask('Authenticate', { tenant: 'acme', method: 'apiKey', credential: 's3cret', protocol: 1 });
  assert.equal(ok.type, 'Authenticated');
  assert.equal(session.authenticated, true);
  assert.equal(errorOf(await ask('Query', { tenant: 'beta' })), ErrorCode.PERMISSION_DENIED);
  assert.equal(errorOf(await ask('SyncBatch', { sid: 1, version: 1, updates: [] })), ErrorCode.INVALID_MESSAGE);
});

test('handlers: subscribe, register, report; the ack carries versions and the value is in the file', async (t) => {
  const w = world(t);
  const { ask } = w.session();
  await ask('Authenticate', { tenant: 'acme', method: 'apiKey', credential: 's3cret', protocol: 1 });
  const snap = await ask('Subscription', { tenant: 'acme', service: 'svc', create: true });
  assert.equal(snap.type, 'Snapshot');
  const sid = snap.type === 'Snapshot' ? snap.body.sid : 0;
  const reg = await ask('RegisterVariable', { sid, name: 'x', offset: -1, size: 8, typeId: VariableType.U64 });
  assert.equal(reg.type, 'VariableRegistered');
  const ack = await ask('ReportVariableChanges', { sid, changes: [[0, u64(41n)]] });
  assert.ok(ack.type === 'VariableChangesAcknowledged' && ack.body.count === 1 && ack.body.versions?.length === 1);
  const file = w.registry.get('acme', 'svc', false).file;
  assert.equal(file.readValue(file.entry('x')), 41n);
  assert.equal(errorOf(await ask('ReportVariableChanges', { sid, changes: [[0, new Uint8Array(9)]] })), ErrorCode.VALUE_TOO_LARGE);
  assert.equal(errorOf(await ask('ReportVariableChanges', { sid, changes: [[5, u64(1n)]] })), ErrorCode.VARIABLE_NOT_FOUND);
  const read = await ask('ReadVariable', { tenant: 'acme', service: 'svc', name: 'x' });
  assert.ok(read.type === 'VariableValue' && read.body.version === ack.body.version);
});

test('handlers: a read-only key is refused writes and registrations, and told so in its snapshot', async (t) => {
  const w = world(t);
  await adminOf(w, 'ro', []);
  const viewer = await signedIn(w, 'view');
  const snap = await viewer.ask('Subscription', { tenant: 'acme', service: 'ro' });
  assert.ok(snap.type === 'Snapshot' && snap.body.readOnly);
  const sid = snap.type === 'Snapshot' ? snap.body.sid : 0;
  assert.equal(errorOf(await viewer.ask('RegisterVariable', { sid, name: 'y', offset: -1, size: 8, typeId: VariableType.U64 })), ErrorCode.PERMISSION_DENIED);
  assert.equal(errorOf(await viewer.ask('WriteVariable', { tenant: 'acme', service: 'ro', name: 'y', value: u64(1n) })), ErrorCode.PERMISSION_DENIED);
  assert.equal(errorOf(await viewer.ask('Subscription', { tenant: 'acme', service: 'new', create: true })), ErrorCode.PERMISSION_DENIED);
});

test('handlers: a subscription filter applies to the snapshot, to new definitions and to updates alike', async (t) => {
  const w = world(t);
  const admin = await adminOf(w, 'f', ['temp', 'humidity']);
  const reader = await signedIn(w, 'view');
  const snap = await reader.ask('Subscription', { tenant: 'acme', service: 'f', variables: ['temp*'] });
  assert.ok(snap.type === 'Snapshot');
  assert.deepEqual(snap.body.variables.map((d) => d[1]), ['temp']);
  // New definitions: only the wanted one is announced; updates: only wanted variables. temp is written last, so
  // anything the filter let through wrongly would come before it or with it.
  await admin.ask('RegisterVariable', { sid: admin.sid, name: 'temp2', offset: -1, size: 8, typeId: VariableType.U64 });
  await admin.ask('RegisterVariable', { sid: admin.sid, name: 'hum2', offset: -1, size: 8, typeId: VariableType.U64 });
  await admin.ask('ReportVariableChanges', { sid: admin.sid, changes: [[1, u64(5n)], [3, u64(9n)]] });
  await admin.ask('ReportVariableChanges', { sid: admin.sid, changes: [[0, u64(21n)]] });
  await until('the reader gets temp', () => reader.link.frames.some((m) => m.type === 'SyncBatch' && m.body.updates.some((u) => u[0] === 0)));
  const batches = reader.link.take('SyncBatch');
  const defs = batches.flatMap((b) => b.body.defs ?? []).map((d) => d[1]);
  const updated = batches.flatMap((b) => b.body.updates.map((u) => u[0]));
  assert.deepEqual(defs, ['temp2']);
  // temp2 comes with its first value (zeros) after its definition; humidity and hum2 never come.
  assert.deepEqual([...new Set(updated)].sort(), [0, 2]);
});

test('handlers: a notify subscription gets names, not values', async (t) => {
  const w = world(t);
  const admin = await adminOf(w, 'n', ['x']);
  const watcher = await signedIn(w, 'view');
  const snap = await watcher.ask('Subscription', { tenant: 'acme', service: 'n', notify: true });
  assert.ok(snap.type === 'Snapshot' && snap.body.data.length === 0 && snap.body.variables.length === 1);
  await admin.ask('ReportVariableChanges', { sid: admin.sid, changes: [[0, u64(3n)]] });
  await until('the watcher is told', () => watcher.link.frames.some((m) => m.type === 'VariablesUpdated'));
  const [pushed] = watcher.link.take('VariablesUpdated');
  assert.deepEqual(pushed!.body.variables, ['x']);
  assert.deepEqual(watcher.link.take('SyncBatch'), []);
});

test('handlers: closing the session ends its subscriptions and lets the service go', async (t) => {
  const w = world(t);
  const { ask, session } = w.session();
  await ask('Authenticate', { tenant: 'acme', method: 'apiKey', credential: 's3cret', protocol: 1 });
  await ask('Subscription', { tenant: 'acme', service: 'c', create: true });
  const host = w.registry.get('acme', 'c', false);
  assert.equal(host.subscriberCount, 1);
  session.closed();
  assert.equal(host.subscriberCount, 0);
  assert.equal(session.subscriptions.size, 0);
});

test('handlers: Mutate commits with a version, and with expectedVersion is compare-and-set (CONFLICT changes nothing)', async (t) => {
  const w = world(t);
  const admin = await adminOf(w, 'cas', ['n']);
  const first = await admin.ask('Mutate', { sid: admin.sid, index: 0, value: u64(1n) });
  assert.ok(first.type === 'MutationResponse' && first.body.index === 0);
  const v1 = first.type === 'MutationResponse' ? first.body.version : 0;
  const ok = await admin.ask('Mutate', { sid: admin.sid, index: 0, value: u64(2n), expectedVersion: v1 });
  assert.ok(ok.type === 'MutationResponse' && ok.body.version > v1);
  const stale = await admin.ask('Mutate', { sid: admin.sid, index: 0, value: u64(3n), expectedVersion: v1 });
  assert.equal(errorOf(stale), ErrorCode.CONFLICT);
  const file = w.registry.get('acme', 'cas', false).file;
  assert.equal(file.readValue(file.entry('n')), 2n);
  assert.equal(errorOf(await admin.ask('Mutate', { sid: admin.sid, index: 0, value: new Uint8Array(9) })), ErrorCode.VALUE_TOO_LARGE);
  const viewer = await signedIn(w, 'view');
  const vsnap = await viewer.ask('Subscription', { tenant: 'acme', service: 'cas' });
  assert.ok(vsnap.type === 'Snapshot');
  assert.equal(errorOf(await viewer.ask('Mutate', { sid: vsnap.body.sid, index: 0, value: u64(9n) })), ErrorCode.PERMISSION_DENIED);
});

test('handlers: a write retried with the same opId is applied once, across connections of the same clientKey', async (t) => {
  const w = world(t);
  const clientKey = 'k'.repeat(16);
  const first = w.session();
  await first.ask('Authenticate', { tenant: 'acme', method: 'apiKey', credential: 's3cret', protocol: 1, clientKey });
  const snap = await first.ask('Subscription', { tenant: 'acme', service: 'ops', create: true });
  assert.ok(snap.type === 'Snapshot');
  await first.ask('RegisterVariable', { sid: snap.body.sid, name: 'n', offset: -1, size: 8, typeId: VariableType.U64 });
  const ack = await first.ask('ReportVariableChanges', { sid: snap.body.sid, changes: [[0, u64(5n)]], opId: 7 });
  assert.equal(ack.type, 'VariableChangesAcknowledged');
  const file = w.registry.get('acme', 'ops', false).file;
  const version = file.entryVersion(file.entry('n'));
  // The same op on the same connection: the first answer, nothing applied again.
  const again = await first.ask('ReportVariableChanges', { sid: snap.body.sid, changes: [[0, u64(5n)]], opId: 7 });
  assert.deepEqual(again.body, ack.body);
  // The same id on another value is another write: refused, not answered as if it had been applied.
  assert.equal(errorOf(await first.ask('ReportVariableChanges', { sid: snap.body.sid, changes: [[0, u64(6n)]], opId: 7 })), ErrorCode.INVALID_MESSAGE);
  // After a reconnect (a new connection, same key and clientKey): still the first answer.
  first.session.closed();
  const second = w.session();
  await second.ask('Authenticate', { tenant: 'acme', method: 'apiKey', credential: 's3cret', protocol: 1, clientKey });
  const snap2 = await second.ask('Subscription', { tenant: 'acme', service: 'ops' });
  assert.ok(snap2.type === 'Snapshot');
  assert.deepEqual((await second.ask('ReportVariableChanges', { sid: snap2.body.sid, changes: [[0, u64(5n)]], opId: 7 })).body, ack.body);
  assert.equal(file.readValue(file.entry('n')), 5n);
  assert.equal(file.entryVersion(file.entry('n')), version);
  // Another client's op 7 is its own.
  const other = await signedIn(w, 's3cret');
  const snap3 = await other.ask('Subscription', { tenant: 'acme', service: 'ops' });
  assert.ok(snap3.type === 'Snapshot');
  await other.ask('Mutate', { sid: snap3.body.sid, index: 0, value: u64(8n), opId: 7 });
  assert.equal(file.readValue(file.entry('n')), 8n);
  // A failed op is not remembered: its retry runs (and may succeed).
  const v = Number(file.entryVersion(file.entry('n')));
  assert.equal(errorOf(await second.ask('Mutate', { sid: snap2.body.sid, index: 0, value: u64(9n), opId: 8, expectedVersion: v - 1 })), ErrorCode.CONFLICT);
  const retried = await second.ask('Mutate', { sid: snap2.body.sid, index: 0, value: u64(9n), opId: 8, expectedVersion: v });
  assert.equal(retried.type, 'MutationResponse');
});

test('handlers: a resume gets only what changed since its point, or a full snapshot that says why', async (t) => {
  const w = world(t);
  const admin = await adminOf(w, 'res', ['a', 'b']);
  await admin.ask('ReportVariableChanges', { sid: admin.sid, changes: [[0, u64(1n)], [1, u64(2n)]] });
  const reader = await signedIn(w, 'view');
  const first = await reader.ask('Subscription', { tenant: 'acme', service: 'res' });
  assert.ok(first.type === 'Snapshot' && first.body.fileId !== undefined && first.body.resumed === undefined);
  const point = { version: first.body.version, fileId: first.body.fileId };
  await admin.ask('ReportVariableChanges', { sid: admin.sid, changes: [[1, u64(20n)]] });
  // Batches say how far they vouch: up to the last write here.
  await until('the reader gets b', () => reader.link.frames.some((m) => m.type === 'SyncBatch'));
  const [batch] = reader.link.take('SyncBatch');
  const file = w.registry.get('acme', 'res', false).file;
  assert.equal(batch!.body.version, Number(file.entryVersion(file.entry('b'))));

  const resumed = await reader.ask('Subscription', { tenant: 'acme', service: 'res', since: point });
  assert.ok(resumed.type === 'Snapshot' && resumed.body.resumed === true && resumed.body.reset === undefined);
  const defs = new Map(resumed.body.variables.map((d) => [d[1], d]));
  assert.ok(defs.get('a')![5] <= point.version && defs.get('b')![5] > point.version, 'every definition, with its version');
  const view = new DataView(resumed.body.data.buffer, resumed.body.data.byteOffset, resumed.body.data.byteLength);
  assert.equal(view.getBigUint64(defs.get('b')![2], true), 20n, 'the changed value is there');
  assert.ok(resumed.body.data.length <= defs.get('b')![2] + 8);

  const replaced = await reader.ask('Subscription', { tenant: 'acme', service: 'res', since: { ...point, fileId: 'not-this-file' } });
  assert.ok(replaced.type === 'Snapshot' && replaced.body.resumed === undefined && /replaced/.test(replaced.body.reset ?? ''));
  const ahead = await reader.ask('Subscription', { tenant: 'acme', service: 'res', since: { ...point, version: point.version + 1000 } });
  assert.ok(ahead.type === 'Snapshot' && /before the resume point/.test(ahead.body.reset ?? ''));
  const full = new DataView(ahead.body.data.buffer, ahead.body.data.byteOffset, ahead.body.data.byteLength);
  assert.equal(full.getBigUint64(defs.get('a')![2], true), 1n, 'a reset carries every value');
});
