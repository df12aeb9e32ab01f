import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import type { WebSocket } from 'ws';
import { AuthCredentials, Client, VirtualVariableFile, VariableType } from '../src/index.js';
import { Connection } from '../src/client/connection.js';
import { openWsTransport } from '../src/client/ws-transport.js';
import { decodeFrame } from '../src/protocol/frame-codec.js';
import { createAuditLog } from '../src/server/audit.js';
import { Server } from '../src/server/index.js';
import { OpLedger } from '../src/server/op-ledger.js';
import { once } from './helpers/ledger.js';
import type { Message, VariableDef } from '../src/protocol/messages.js';
import { startChild } from './helpers/child.js';
import { CutProxy } from './helpers/cut-proxy.js';
import { RawClient } from './helpers/raw-client.js';
import { ScriptedServer, send as scriptedSend } from './helpers/scripted-server.js';
import { startServer, TEST_TENANTS } from './helpers/server.js';
import { tempDir } from './helpers/temp.js';

/**
 * Attacks on the speed work: the broadcaster's rounds (shared SyncBatch bytes with the sid patched per
 * subscriber, slices, conflation, retries), the op-id ledger's queues, the shared compiled permissions, batched
 * audit lines and the client's single sweeper timer. Every test asserts behaviour, never timing.
 */

type Snap = Extract<Message, { type: 'Snapshot' }>['body'];
type Push = Message;

async function until(check: () => boolean, what: () => string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out: ${what()}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** `*` and `?` only (the globs these tests use). */
function globMatch(glob: string, name: string): boolean {
  return new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`).test(name);
}

/** A raw connection that keeps every frame it gets, in order (replies included), for checking afterwards. */
interface Wire {
  name: string;
  client: RawClient;
  /** Pushes (request id 0), in order. */
  frames: Push[];
  /** Every frame, replies included, in order. */
  all: Message[];
  /** The largest frame received, in bytes. */
  maxFrame: number;
}

async function wire(url: string, name: string, tenants: [string, string][], protocol: 1 | 2): Promise<Wire> {
  const client = await RawClient.connect(url);
  const w: Wire = { name, client, frames: [], all: [], maxFrame: 0 };
  // Keeps pushes in arrival order (replies are read through the request promises), and every frame in order.
  client.ws.on('message', (data: Buffer) => {
    w.maxFrame = Math.max(w.maxFrame, data.length);
    w.all.push(decodeFrame(data, 64 * 1024 * 1024));
    for (const m of client.pushes.splice(0)) w.frames.push(m);
  });
  for (const [tenant, credential] of tenants) {
    const r = await client.request('Authenticate', { tenant, method: 'apiKey', credential, protocol });
    assert.equal(r.type, 'Authenticated', JSON.stringify(r.body));
  }
  return w;
}

/** One subscription as its wire sees it: what its snapshot defined, what its filter allows. */
interface Sub {
  wire: Wire;
  sid: number;
  tenant: string;
  service: string;
  globs: string[] | undefined;
  snapshot: Snap;
}

async function subscribe(w: Wire, tenant: string, service: string, globs?: string[], notify = false): Promise<Sub> {
  const r = await w.client.request('Subscription', { tenant, service, ...(globs !== undefined ? { variables: globs } : {}), ...(notify ? { notify: true } : {}) });
  assert.equal(r.type, 'Snapshot', JSON.stringify(r.body));
  const snapshot = r.body as Snap;
  // Chunked snapshots: the chunks are pushes for this sid (checked with the rest).
  return { wire: w, sid: snapshot.sid, tenant, service, globs, snapshot };
}

const MARK: Record<string, number> = { acme: 0xa1, beta: 0xb2 };

/** Variable `name`'s value in round `round` of `tenant`: [tenant mark, id, round lo, round hi, fill…]. */
function valueOf(tenant: string, id: number, round: number, size: number): Uint8Array {
  const v = new Uint8Array(size).fill(round & 0xff);
  v[0] = MARK[tenant]!;
  v[1] = id;
  v[2] = round & 0xff;
  v[3] = round >> 8;
  return v;
}

/**
 * Replays one subscription's frames (its snapshot, then every push on its wire with its sid) and checks each:
 * only variables its filter allows and it was told of, only its tenant's bytes, versions rising per variable,
 * removals honoured. Returns the round each variable ended on.
 */
function replay(sub: Sub, ids: Map<string, number>, problems: string[]): Map<string, number> {
  const wants = (name: string) => sub.globs === undefined || sub.globs.some((g) => globMatch(g, name));
  const known = new Map<number, string>();
  const versions = new Map<string, number>();
  const rounds = new Map<string, number>();
  const where = `${sub.wire.name} sid ${sub.sid} (${sub.tenant}/${sub.service} ${JSON.stringify(sub.globs)})`;
  const define = (d: VariableDef) => {
    if (!wants(d[1])) problems.push(`${where}: told of ${d[1]}, outside its filter`);
    if (known.has(d[0]) && known.get(d[0]) !== d[1]) problems.push(`${where}: index ${d[0]} redefined as ${d[1]}`);
    known.set(d[0], d[1]);
  };
  for (const d of sub.snapshot.variables) define(d);
  const look = (index: number, version: number, bytes: Uint8Array) => {
    const name = known.get(index);
    if (name === undefined) return problems.push(`${where}: update for index ${index} it was never told of`);
    if (!wants(name)) problems.push(`${where}: update for ${name}, outside its filter`);
    if (bytes.every((b) => b === 0)) return; // a variable's first value (registered, never written yet)
    if (bytes[0] !== MARK[sub.tenant]) return problems.push(`${where}: ${name} carries bytes of another tenant (${bytes[0]})`);
    if (bytes[1] !== ids.get(name)) problems.push(`${where}: ${name} carries the bytes of variable id ${bytes[1]}`);
    const before = versions.get(name);
    // The same version twice is harmless (a value read after a newer write than the change that marked it is
    // sent again when that write's own change comes); going back is not.
    if (before !== undefined && version < before) problems.push(`${where}: ${name} version ${version} after ${before}`);
    versions.set(name, version);
    rounds.set(name, bytes[2]! | (bytes[3]! << 8));
  };
  for (const m of sub.wire.frames) {
    if (m.type === 'SyncBatch' && m.body.sid === sub.sid) {
      for (const i of m.body.removed ?? []) {
        const name = known.get(i);
        if (name === undefined) problems.push(`${where}: removal of index ${i} it never knew`);
        known.delete(i);
        if (name !== undefined) rounds.delete(name);
      }
      for (const d of m.body.defs ?? []) define(d);
      for (const [index, version, bytes] of m.body.updates) look(index, version, bytes);
    } else if (m.type === 'SnapshotChunk' && m.body.sid === sub.sid) {
      for (const d of m.body.defs ?? []) define(d);
    }
  }
  return rounds;
}

/** Every push on the wire names one of the wire's own subscriptions. */
function checkSids(w: Wire, subs: Sub[], problems: string[]): void {
  const mine = new Set(subs.filter((s) => s.wire === w).map((s) => s.sid));
  for (const m of w.frames) {
    if ((m.type === 'SyncBatch' || m.type === 'SnapshotChunk' || m.type === 'VariablesUpdated') && !mine.has(m.body.sid as number)) {
      problems.push(`${w.name}: a ${m.type} for sid ${m.body.sid}, not one of its subscriptions ${[...mine].join(',')}`);
    }
  }
}

test('a mixed fan-out round: filters, two tenants, both protocol versions, shared and split batches, a stalled reader, registration and removal mid-stream: each subscription gets exactly its own', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t, {
    config: { tenants: TEST_TENANTS, audit: { enabled: false }, limits: { maxFrameBytes: 256 * 1024, maxBufferedBytes: 256 * 1024 } },
  });
  const SMALL = 30;
  const BIG = 6;
  const BIG_SIZE = 60 * 1024;
  const ids = new Map<string, number>();
  const files = new Map<string, VirtualVariableFile>();
  const admin = await wire(server.url, 'admin', [['acme', 'ops:s3cret'], ['beta', 'beta-secret']], 2);
  t.after(() => admin.client.close());
  for (const tenant of ['acme', 'beta']) {
    const r = await admin.client.request('Subscription', { tenant, service: 'mix', create: true });
    const sid = (r.body as Snap).sid;
    const reg = async (name: string, size: number, id: number) => {
      ids.set(name, id);
      const ok = await admin.client.request('RegisterVariable', { sid, name, offset: -1, size, typeId: VariableType.Bytes });
      assert.equal(ok.type, 'VariableRegistered', JSON.stringify(ok.body));
    };
    for (let i = 0; i < SMALL; i++) await reg(`s${i}`, 16, i);
    for (let i = 0; i < BIG; i++) await reg(`b${i}`, BIG_SIZE, 100 + i);
    for (let i = 0; i < 3; i++) await reg(`r${i}`, 16, 200 + i);
    const path = ((await admin.client.request('GetServiceFilePath', { tenant, service: 'mix' })).body as { filePath: string }).filePath;
    const vf = await VirtualVariableFile.open(path);
    t.after(() => vf.close());
    files.set(tenant, vf);
  }
  ids.set('s99', 99);

  const subs: Sub[] = [];
  const wires: Wire[] = [];
  const open = async (name: string, tenants: [string, string][], protocol: 1 | 2) => {
    const w = await wire(server.url, name, tenants, protocol);
    t.after(() => w.client.close());
    wires.push(w);
    return w;
  };
  // Two subscriptions to one service with different filters on one connection, and the other tenant's service
  // of the same name on it too.
  const multi = await open('multi', [['acme', 'ops:s3cret'], ['beta', 'beta-secret']], 1);
  subs.push(await subscribe(multi, 'acme', 'mix', ['s1*']));
  subs.push(await subscribe(multi, 'acme', 'mix', ['b*', 's0']));
  subs.push(await subscribe(multi, 'beta', 'mix'));
  subs.push(await subscribe(multi, 'acme', 'mix', ['s?']));
  // Names-only subscriptions (a local client's): VariablesUpdated pushes, under their own sids, within their filters.
  const notified = [await subscribe(multi, 'acme', 'mix', ['s1*'], true), await subscribe(multi, 'beta', 'mix', ['b*'], true)];
  const viewer = await open('viewer', [['acme', 'view']], 2);
  subs.push(await subscribe(viewer, 'acme', 'mix'));
  for (let i = 0; i < 10; i++) {
    const w = await open(`same-${i}`, [['acme', i % 3 === 0 ? 'view' : 'ops:s3cret']], i % 2 === 0 ? 1 : 2);
    subs.push(await subscribe(w, 'acme', 'mix', ['s*'])); // identical dirty sets: one shared batch per slice
    if (i % 4 === 0) subs.push(await subscribe(w, 'acme', 'mix', ['s*'])); // and twice on one connection
  }
  const betaOnly = await open('beta-only', [['beta', 'beta-secret']], 2);
  subs.push(await subscribe(betaOnly, 'beta', 'mix', ['s*', 'b1']));
  // A reader that stops reading for a while: its updates conflate, the others go on.
  const stalled = await open('stalled', [['acme', 'ops:s3cret']], 2);
  subs.push(await subscribe(stalled, 'acme', 'mix'));
  const stalledSocket = (stalled.client.ws as WebSocket & { _socket: { pause(): void; resume(): void } })._socket;
  // A remote writer of r0..r2 (its own writes are never echoed to it unless someone else wrote since).
  const writer = await open('writer', [['acme', 'ops:s3cret']], 2);
  const writerSub = await subscribe(writer, 'acme', 'mix');
  subs.push(writerSub);
  const rIndex = (n: number) => writerSub.snapshot.variables.find((d) => d[1] === `r${n}`)![0];

  const last = new Map<string, number>(); // `${tenant}/${name}` → last round written
  const ROUNDS = 60;
  let removedS5 = false;
  for (let round = 1; round <= ROUNDS; round++) {
    if (round === 10) stalledSocket.pause();
    if (round === 45) stalledSocket.resume();
    for (const tenant of ['acme', 'beta']) {
      const vf = files.get(tenant)!;
      for (let i = 0; i < SMALL; i++) {
        if (removedS5 && tenant === 'acme' && i === 5) continue;
        vf.set(`s${i}`, valueOf(tenant, i, round, 16));
        last.set(`${tenant}/s${i}`, round);
      }
      if (round % 4 === 0 || round === ROUNDS || (tenant === 'acme' && round >= 10 && round < 45)) {
        for (let i = 0; i < BIG; i++) {
          vf.set(`b${i}`, valueOf(tenant, 100 + i, round, BIG_SIZE));
          last.set(`${tenant}/b${i}`, round);
        }
      }
    }
    if (round === 20) {
      const sid = (await admin.client.request('Subscription', { tenant: 'acme', service: 'mix' })).body as Snap;
      const ok = await admin.client.request('RegisterVariable', { sid: sid.sid, name: 's99', offset: -1, size: 16, typeId: VariableType.Bytes });
      assert.equal(ok.type, 'VariableRegistered');
      const gone = await admin.client.request('RemoveVariable', { sid: sid.sid, name: 's5' });
      assert.equal(gone.type, 'VariableRemoved', JSON.stringify(gone.body));
      removedS5 = true;
      last.delete('acme/s5');
    }
    if (round >= 20) {
      files.get('acme')!.set('s99', valueOf('acme', 99, round, 16));
      last.set('acme/s99', round);
    }
    const changes: [number, Uint8Array][] = [0, 1, 2].map((n) => [rIndex(n), valueOf('acme', 200 + n, round, 16)]);
    const ack = await writer.client.request('ReportVariableChanges', { sid: writerSub.sid, changes });
    assert.equal(ack.type, 'VariableChangesAcknowledged', JSON.stringify(ack.body));
    for (const n of [0, 1, 2]) last.set(`acme/r${n}`, round);
    if (round % 3 !== 0) await new Promise((resolve) => setImmediate(resolve)); // sometimes rounds merge, sometimes not
  }

  const problems: string[] = [];
  const behind = (): string[] => {
    const out: string[] = [];
    for (const sub of subs) {
      const got = replay(sub, ids, []);
      const wants = (name: string) => sub.globs === undefined || sub.globs.some((g) => globMatch(g, name));
      for (const [key, round] of last) {
        const [tenant, name] = key.split('/') as [string, string];
        if (tenant !== sub.tenant || !wants(name)) continue;
        if (sub === writerSub && name.startsWith('r')) continue; // its own writes: acknowledged, not echoed
        if (got.get(name) !== round) out.push(`${sub.wire.name} sid ${sub.sid}: ${name} at ${got.get(name)}, want ${round}`);
      }
    }
    return out;
  };
  await until(() => behind().length === 0, () => behind().slice(0, 10).join('\n'), 60_000);
  for (const sub of subs) replay(sub, ids, problems);
  for (const w of wires) checkSids(w, [...subs, ...notified], problems);
  for (const n of notified) {
    const pushes = multi.frames.filter((m) => m.type === 'VariablesUpdated' && m.body.sid === n.sid);
    if (pushes.length === 0) problems.push(`notify sid ${n.sid} got no VariablesUpdated`);
    for (const m of pushes) {
      if (m.type !== 'VariablesUpdated') continue;
      if (m.body.serviceId !== `${n.tenant}/mix`) problems.push(`notify sid ${n.sid} (${n.tenant}) told of ${m.body.serviceId}`);
      for (const name of m.body.variables) if (!n.globs!.some((g) => globMatch(g, name))) problems.push(`notify sid ${n.sid} told of ${name}`);
    }
    if (multi.frames.some((m) => m.type === 'SyncBatch' && m.body.sid === n.sid)) problems.push(`notify sid ${n.sid} got values`);
  }
  for (const w of wires) if (w.maxFrame > 256 * 1024) problems.push(`${w.name}: a ${w.maxFrame}-byte frame, over the 256 KiB frame limit`);
  // (The stalled reader is usually held back and conflated here (~12 MB sent while it reads nothing); how much the
  // kernel's socket buffers absorb first varies by machine, so that is not asserted: fan-out.test.ts does.)
  // The writer's own writes come back only as its acknowledgements.
  const echoes = writer.frames.filter((m) => m.type === 'SyncBatch' && m.body.updates.some(([i]) => [0, 1, 2].map(rIndex).includes(i)));
  if (echoes.length > 0) problems.push(`the writer got ${echoes.length} batches echoing its own acknowledged writes`);
  // The removed variable reached every subscription that knew it.
  for (const sub of subs.filter((s) => s.tenant === 'acme' && s.snapshot.variables.some((d) => d[1] === 's5'))) {
    const told = sub.wire.frames.some((m) => m.type === 'SyncBatch' && m.body.sid === sub.sid && (m.body.removed ?? []).length > 0);
    if (!told) problems.push(`${sub.wire.name} sid ${sub.sid} was never told s5 was removed`);
  }
  assert.deepEqual(problems, []);
});

/**
 * A TCP proxy for one client that reads the server's WebSocket frames (unmasked, unfragmented) and, once armed,
 * forwards frames up to and including the first one `cutAfter` picks, then drops the connection: what a
 * connection lost in the middle of a burst of frames looks like to the client. Later connections pass through.
 */
class FrameCutProxy {
  cutAfter: ((m: Message) => boolean) | undefined;
  cuts = 0;
  private readonly server: import('node:net').Server;

  private constructor(net: typeof import('node:net'), targetPort: number) {
    this.server = net.createServer((down) => {
      down.on('error', () => {});
      const up = net.connect(targetPort, '127.0.0.1');
      up.on('error', () => {});
      down.on('data', (chunk) => up.write(chunk));
      let pending = Buffer.alloc(0);
      let upgraded = false;
      let dead = false;
      up.on('data', (chunk: Buffer) => {
        if (dead) return;
        pending = Buffer.concat([pending, chunk]);
        if (!upgraded) {
          const end = pending.indexOf('\r\n\r\n');
          if (end < 0) return;
          down.write(pending.subarray(0, end + 4));
          pending = pending.subarray(end + 4);
          upgraded = true;
        }
        for (;;) {
          if (pending.length < 2) return;
          let len = pending[1]! & 0x7f;
          let at = 2;
          if (len === 126) {
            if (pending.length < 4) return;
            len = pending.readUInt16BE(2);
            at = 4;
          } else if (len === 127) {
            if (pending.length < 10) return;
            len = Number(pending.readBigUInt64BE(2));
            at = 10;
          }
          if (pending.length < at + len) return;
          const frame = pending.subarray(0, at + len);
          const payload = pending.subarray(at, at + len);
          pending = pending.subarray(at + len);
          down.write(frame);
          const pick = this.cutAfter;
          if (pick !== undefined && (frame[0]! & 0x0f) === 2 && pick(decodeFrame(payload, 64 * 1024 * 1024))) {
            this.cutAfter = undefined;
            this.cuts++;
            dead = true;
            // Whatever was written reaches the client; nothing after it does.
            down.end(() => down.destroy());
            up.destroy();
            return;
          }
        }
      });
      const end = () => {
        down.destroy();
        up.destroy();
      };
      down.on('close', end);
      up.on('close', () => {
        if (!dead) end();
      });
    });
  }

  static async start(targetPort: number): Promise<FrameCutProxy> {
    const net = await import('node:net');
    const proxy = new FrameCutProxy(net, targetPort);
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

test('a change set too large for one frame is split; the connection lost after the first part: the resumed client still ends with every value', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t, {
    config: { tenants: TEST_TENANTS, audit: { enabled: false }, limits: { maxFrameBytes: 256 * 1024 } },
  });
  const admin = await RawClient.connect(server.url);
  t.after(() => admin.close());
  await admin.auth('acme', 'ops:s3cret');
  const sid = ((await admin.request('Subscription', { tenant: 'acme', service: 'split', create: true })).body as Snap).sid;
  const BIG = 6;
  const SIZE = 60 * 1024;
  for (let i = 0; i < BIG; i++) {
    assert.equal((await admin.request('RegisterVariable', { sid, name: `b${i}`, offset: -1, size: SIZE, typeId: VariableType.Bytes })).type, 'VariableRegistered');
  }
  const path = ((await admin.request('GetServiceFilePath', { tenant: 'acme', service: 'split' })).body as { filePath: string }).filePath;
  const local = await VirtualVariableFile.open(path);
  t.after(() => local.close());

  const proxy = await FrameCutProxy.start(server.port);
  t.after(() => proxy.close());
  const client = await Client.initialize(proxy.url, 'acme', AuthCredentials.apiKey('ops:s3cret'), { mode: 'remote', onError: () => {}, reconnect: { initialDelayMs: 10, maxDelayMs: 100 } });
  t.after(() => client.close());
  const vf = await client.getVirtualServiceFile('acme', 'split');
  const states: string[] = [];
  client.on('state', (state) => states.push(state));
  // Cut right after a SyncBatch that carries some of the six values but not all of them: the first part of a split.
  proxy.cutAfter = (m) => m.type === 'SyncBatch' && m.body.updates.length > 0 && m.body.updates.length < BIG;
  for (let i = 0; i < BIG; i++) local.set(`b${i}`, new Uint8Array(SIZE).fill(7)); // one turn: one change set of 360 KiB
  await until(() => proxy.cuts === 1, () => 'the split batch to be cut');
  await until(() => states.includes('reconnecting') && client.state === 'open', () => `client ${client.state} after ${states.join(',')}`);
  const stale = () => Array.from({ length: BIG }, (_, i) => `b${i}`).filter((n) => (vf.get(n) as Uint8Array)[0] !== 7);
  // Given time to resume and apply whatever the server sends; nothing else changes meanwhile.
  const deadline = Date.now() + 3_000;
  while (stale().length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.deepEqual(stale(), [], 'variables the resumed client never got');
});

// ---- audit: batched lines, SIGTERM, a full disk ----------------------------------------------------------

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));

/** `commy serve --config` with the test tenants and `audit`, in its own process; its URL from what it prints. */
async function serveWith(t: Parameters<typeof tempDir>[0], audit: Record<string, unknown>): Promise<{ url: string; dir: string; exited: Promise<number | null>; proc: ReturnType<typeof spawn> }> {
  const dir = tempDir(t, 'commy-attack-serve-');
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ port: 0, dataDir: 'data', tenants: TEST_TENANTS, audit }));
  const proc = spawn(process.execPath, [CLI, 'serve', '--config', join(dir, 'config.json')], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code, signal) => resolve(code ?? (signal === null ? null : -1))));
  t.after(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  proc.stderr!.resume();
  let url = '';
  for await (const line of createInterface({ input: proc.stdout! })) {
    url ||= /listening on (\S+)/.exec(line)?.[1] ?? '';
    if (url !== '') break;
  }
  proc.stdout!.resume();
  assert.match(url, /^ws:\/\/127\.0\.0\.1:\d+$/);
  return { url, dir, exited, proc };
}

/** Resolves with the exit code, or 'still running' after `ms`. */
function exitWithin(exited: Promise<number | null>, ms: number): Promise<number | null | 'still running'> {
  return Promise.race([exited, new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), ms).unref())]);
}

test('SIGTERM while writes are still in flight from many connections, the audit file rotating all along: every acknowledged write has its audit line', { timeout: 120_000 }, async (t) => {
  const server = await serveWith(t, { file: 'audit.log', maxBytes: 64 * 1024, maxFiles: 10_000 });
  const writers = await Promise.all(Array.from({ length: 8 }, async (_, i) => {
    const c = await RawClient.connect(server.url);
    assert.equal((await c.auth('acme', 'ops:s3cret')).type, 'Authenticated');
    if (i === 0) {
      const sid = ((await c.request('Subscription', { tenant: 'acme', service: 'audited', create: true })).body as Snap).sid;
      for (let v = 0; v < 8; v++) await c.request('RegisterVariable', { sid, name: `v${v}`, offset: -1, size: 8, typeId: VariableType.U64 });
    }
    return c;
  }));
  let acked = 0;
  let stop = false;
  // Each writer keeps 20 writes in flight until the server goes away; only acknowledged ones are counted.
  const loops = writers.map(async (c, i) => {
    let n = 0;
    while (!stop && c.ws.readyState === c.ws.OPEN) {
      let failed = false;
      const batch = Array.from({ length: 20 }, () =>
        c.request('WriteVariable', { tenant: 'acme', service: 'audited', name: `v${i}`, value: new Uint8Array(8).fill(++n & 0xff) }).then(
          (m) => {
            if (m.type === 'VariableChangesAcknowledged') acked++;
            else failed = true;
          },
          () => (failed = true),
        ),
      );
      await Promise.all(batch);
      if (failed) break;
    }
  });
  await until(() => acked >= 3000, () => `${acked} writes acknowledged`);
  server.proc.kill('SIGTERM');
  const code = await exitWithin(server.exited, 30_000);
  stop = true;
  writers.forEach((c) => c.close());
  await Promise.all(loops);
  assert.equal(code, 0, 'SIGTERM closes the server cleanly');
  const files = readdirSync(server.dir).filter((f) => f.startsWith('audit.log'));
  assert.ok(files.length >= 3, `the audit file rotated (${files.length} files)`);
  const lines = files.flatMap((f) => readFileSync(join(server.dir, f), 'utf8').split('\n')).filter((l) => l.includes('"VariablesChanged"'));
  assert.ok(lines.length >= acked, `${acked} writes acknowledged, ${lines.length} audit lines`);
  for (const l of lines) JSON.parse(l); // whole lines only
});

test('a burst of 50,000 audit lines, then close(): every line is written, whole', { timeout: 60_000 }, async (t) => {
  const file = join(tempDir(t), 'audit.log');
  const warnings: string[] = [];
  const log = createAuditLog({ enabled: true, file, logger: { warn: (_f, msg) => warnings.push(msg) } });
  for (let i = 0; i < 50_000; i++) log.record({ event: 'VariablesChanged', clientId: 'c', keyId: 'k', tenant: 'acme', service: 's', variables: [`v${i}`] });
  await log.close();
  log.record({ event: 'VariablesChanged', clientId: 'c', keyId: 'k', tenant: 'acme', service: 's', variables: ['after close'] }); // dropped, never thrown
  const seen = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as { variables: string[] }).variables[0]);
  assert.equal(seen.length, 50_000);
  assert.equal(new Set(seen).size, 50_000);
  assert.deepEqual(warnings, []);
});

test('an audit file that cannot be created is refused at start (CONFIG_INVALID), never a crash', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'plain-file'), '');
  for (const file of ['/sys/commy-attack/audit.log', join(dir, 'plain-file', 'audit.log')]) {
    await assert.rejects(
      Server.start({ host: '127.0.0.1', port: 0, dataDir: join(dir, 'data'), config: { tenants: TEST_TENANTS, audit: { enabled: true, file } } }),
      { code: 'CONFIG_INVALID' },
      file,
    );
  }
});

test('an audit file on a full disk: the server goes on serving, and SIGTERM still ends it', { timeout: 60_000 }, async (t) => {
  const server = await serveWith(t, { file: '/dev/full' });
  const c = await RawClient.connect(server.url);
  t.after(() => c.close());
  assert.equal((await c.auth('acme', 'ops:s3cret')).type, 'Authenticated');
  const sid = ((await c.request('Subscription', { tenant: 'acme', service: 'full', create: true })).body as Snap).sid;
  assert.equal((await c.request('RegisterVariable', { sid, name: 'x', offset: -1, size: 8, typeId: VariableType.U64 })).type, 'VariableRegistered');
  for (let i = 0; i < 200; i++) {
    const m = await c.request('WriteVariable', { tenant: 'acme', service: 'full', name: 'x', value: new Uint8Array(8).fill(i) });
    assert.equal(m.type, 'VariableChangesAcknowledged');
  }
  await new Promise((resolve) => setTimeout(resolve, 300)); // the periodic flush has tried (and failed) to write
  assert.equal((await c.request('ReadVariable', { tenant: 'acme', service: 'full', name: 'x' })).type, 'VariableValue', 'still serving');
  c.close();
  server.proc.kill('SIGTERM');
  const code = await exitWithin(server.exited, 5_000);
  assert.notEqual(code, 'still running', 'the server never exited after SIGTERM');
});

// ---- the client's one sweeper timer ---------------------------------------------------------------------

async function silentConnection(t: Parameters<typeof tempDir>[0], requestTimeoutMs: number, onPush: (m: Message) => void = () => {}): Promise<{ conn: Connection; scripted: ScriptedServer }> {
  const scripted = new ScriptedServer();
  const url = await scripted.start();
  t.after(() => scripted.close());
  const conn = await Connection.open(url, openWsTransport, {
    requestTimeoutMs,
    maxFrameBytes: 1024 * 1024,
    maxIncomingBytes: 64 * 1024 * 1024,
    onPush,
    onClosed: () => {},
    onError: () => {},
  });
  t.after(() => conn.close());
  return { conn, scripted };
}

test('client: 3,000 requests to a server that never answers, sent in waves, each ends in TIMEOUT and none before its own deadline', { timeout: 60_000 }, async (t) => {
  const TIMEOUT = 400;
  const { conn } = await silentConnection(t, TIMEOUT);
  const outcomes: Promise<{ code: string | undefined; early: boolean }>[] = [];
  for (let wave = 0; wave < 6; wave++) {
    for (let i = 0; i < 500; i++) {
      const sent = performance.now();
      outcomes.push(
        conn.request('ReadVariable', { tenant: 'acme', service: 's', name: 'x' }, 'VariableValue').then(
          () => ({ code: 'answered', early: false }),
          (err: { code?: string }) => ({ code: err.code, early: performance.now() - sent < TIMEOUT - 1 }),
        ),
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 70 * (wave % 3)));
  }
  const results = await Promise.all(outcomes);
  assert.deepEqual([...new Set(results.map((r) => r.code))], ['TIMEOUT']);
  assert.equal(results.filter((r) => r.early).length, 0, 'timed out before the request timeout');
});

test('client: a streamed answer whose pages each come within the timeout never times out, however long the whole stream takes; its silence after a page does', { timeout: 60_000 }, async (t) => {
  const TIMEOUT = 600;
  const { conn, scripted } = await silentConnection(t, TIMEOUT);
  const pages: boolean[] = [];
  const done = new Promise<string>((resolve) => {
    conn.call('Query', { tenant: 'acme' }, 'QueryResponse', {
      reply: (body) => pages.push(body.more),
      more: (body) => body.more,
      fail: (err) => resolve(err.code),
    });
  });
  const { ws, msg } = await scripted.next('Query');
  // 10 pages 200 ms apart: 2 s in all, over 3 × the timeout; then silence.
  for (let i = 0; i < 10; i++) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    // Unrelated requests meanwhile: each time out on their own, the stream's deadline moves with its pages.
    void conn.request('ReadVariable', { tenant: 'acme', service: 's', name: 'x' }, 'VariableValue').catch(() => {});
    scriptedSend(ws, 'QueryResponse', msg.id, { services: [], more: true });
  }
  assert.equal(await done, 'TIMEOUT', 'the stream ends when its pages stop');
  assert.equal(pages.length, 10, 'every page was delivered before the stream timed out');
});

test('client: close() with thousands of requests pending rejects them all with NOT_CONNECTED and leaves no timer running', { timeout: 60_000 }, async (t) => {
  const { conn } = await silentConnection(t, 30_000);
  const timersBefore = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const outcomes = Array.from({ length: 5000 }, () => conn.request('ReadVariable', { tenant: 'acme', service: 's', name: 'x' }, 'VariableValue').then(() => 'answered', (err: { code?: string }) => err.code));
  await conn.close();
  assert.deepEqual([...new Set(await Promise.all(outcomes))], ['NOT_CONNECTED']);
  await new Promise((resolve) => setImmediate(resolve));
  const timersAfter = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  assert.ok(timersAfter <= timersBefore, `timers before ${timersBefore}, after ${timersAfter}`);
});

test('client (commy/internal Connection): requests re-sent from their TIMEOUT handler, forever: the timers stay few', { timeout: 60_000 }, async (t) => {
  const { conn } = await silentConnection(t, 100);
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = timers();
  let timeouts = 0;
  // Two callers that each send again at once when their request times out (Connection.call's handlers run
  // synchronously in the sweep).
  const chain = (name: string): void => {
    conn.call('ReadVariable', { tenant: 'acme', service: 's', name }, 'VariableValue', {
      reply: () => {},
      fail: (err) => {
        if (err.code !== 'TIMEOUT') return;
        timeouts++;
        chain(name);
      },
    });
  };
  chain('a');
  await new Promise((resolve) => setTimeout(resolve, 30));
  chain('b');
  await until(() => timeouts >= 40, () => `${timeouts} timeouts`);
  const during = timers() - before;
  await conn.close();
  await new Promise((resolve) => setImmediate(resolve));
  const after = timers() - before;
  assert.ok(during <= 3, `${during} timers running for 2 pending requests after ${timeouts} timeouts`);
  assert.ok(after <= 0, `${after} timer(s) left running after close(): the process cannot exit until they fire`);
});

test('client (commy/internal Connection): a stream whose page handler throws still times out, never waits forever', { timeout: 60_000 }, async (t) => {
  const { conn, scripted } = await silentConnection(t, 300);
  let failed: string | undefined;
  conn.call('Query', { tenant: 'acme' }, 'QueryResponse', {
    reply: () => {
      throw new Error('a page handler with a bug');
    },
    fail: (err) => (failed = err.code),
    more: (body) => body.more,
  });
  const { ws, msg } = await scripted.next('Query');
  scriptedSend(ws, 'QueryResponse', msg.id, { services: [], more: true }); // then silence
  await until(() => failed !== undefined, () => 'the stream never ended');
  assert.equal(failed, 'TIMEOUT');
});

// ---- the op-id ledger ------------------------------------------------------------------------------------

test('ledger: many identities that each wrote a burst, then once more, keep no more than a constant factor of what is remembered', { timeout: 60_000 }, async () => {
  let now = 0;
  const ledger = new OpLedger({ ttlMs: 1000, maxPerClient: 10_000, maxWeight: 1_000_000 }, () => now);
  const IDS = 300;
  for (let c = 0; c < IDS; c++) {
    for (let op = 1; op <= 1000; op++) await once(ledger, 'acme', `acme/ops/client-${c}`, op, 'w', async () => ({ versions: [op] }), () => 2);
  }
  now = 500;
  for (let c = 0; c < IDS; c++) await once(ledger, 'acme', `acme/ops/client-${c}`, 5000, 'w', async () => ({ versions: [1] }), () => 2);
  now = 1200; // the bursts are past their time; each identity's last write is not
  await once(ledger, 'acme', 'acme/ops/someone-else', 1, 'w', async () => ({ versions: [1] }), () => 2);
  assert.equal(ledger.size, IDS + 1, 'what is remembered: each identity\'s last write');
  assert.ok(ledger.queued <= 4 * ledger.size + 4 * 1024, `${ledger.queued} entries held for ${ledger.size} remembered`);
});

test('ledger: op ids reused at a high rate, failing ops, many identities and TTL expiry: retries answered from memory exactly while remembered, and the memory stays bounded', { timeout: 60_000 }, async () => {
  let now = 0;
  const ledger = new OpLedger({ ttlMs: 10_000, maxPerClient: 50, maxWeight: 400 }, () => now);
  let runs = 0;
  const ok = (v: number) => async () => {
    runs++;
    return v;
  };
  for (let step = 0; step < 40_000; step++) {
    now += 1;
    const identity = `acme/ops/c${step % 37}`;
    const opId = (step % 91) + 1; // reused over and over
    const fail = step % 13 === 0;
    const op = fail ? async () => Promise.reject(new Error('refused')) : ok(step);
    await once(ledger, 'acme', identity, opId, `w ${step % 91}`, op, () => 1).catch(() => undefined);
    // Another tenant is never pushed out by acme.
    if (step === 39_000) await once(ledger, 'beta', 'beta/ops/k', 1, 'w', ok(-1), () => 1);
  }
  assert.ok(ledger.size <= 400 + 1, `remembered ${ledger.size}`);
  assert.ok(ledger.queued <= 4 * ledger.size + 4 * 1024 + 37 * 1024, `queued ${ledger.queued}`);
  const before = runs;
  assert.equal(await once(ledger, 'beta', 'beta/ops/k', 1, 'w', ok(-2), () => 1), -1, 'beta\'s op is still answered from memory');
  assert.equal(runs, before);
  // The newest of acme's is remembered, an old one is run again.
  const last = 39_999;
  assert.equal(await once(ledger, 'acme', `acme/ops/c${last % 37}`, (last % 91) + 1, `w ${last % 91}`, ok(-3), () => 1), last);
  now += 20_000;
  assert.equal(await once(ledger, 'acme', `acme/ops/c${last % 37}`, (last % 91) + 1, `w ${last % 91}`, ok(-4), () => 1), -4, 'expired: run again');
});

// ---- permissions shared between connections -------------------------------------------------------------

const JWT_SECRET = 'attack-speed-jwt-secret-of-some-length';

function jwtFor(claims: Record<string, unknown>): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('5m').sign(new TextEncoder().encode(JWT_SECRET));
}

test('permissions stay exact per connection among many connections sharing compiled grants: API keys, JWTs with a key\'s id and narrower or wider claims, two tenants on one connection', { timeout: 60_000 }, async (t) => {
  const tenants = {
    ...TEST_TENANTS,
    acme: { ...TEST_TENANTS.acme, keys: [...TEST_TENANTS.acme.keys, { id: 'nomap', secret: 'nomap', read: ['*'], write: ['*'], admin: [], hybrid: false }], jwt: { secret: JWT_SECRET } },
  };
  const server = await startServer(t, { config: { tenants, audit: { enabled: false } } });
  const admin = await RawClient.connect(server.url);
  t.after(() => admin.close());
  await admin.auth('acme', 'ops:s3cret');
  for (const service of ['main', 'dash-1']) {
    const sid = ((await admin.request('Subscription', { tenant: 'acme', service, create: true })).body as Snap).sid;
    await admin.request('RegisterVariable', { sid, name: 'x', offset: -1, size: 8, typeId: VariableType.U64 });
  }
  type Who = { label: string; auth: (c: RawClient) => Promise<Message>; read: string[]; write: string[]; map: boolean };
  const apiKey = (credential: string) => (c: RawClient) => c.request('Authenticate', { tenant: 'acme', method: 'apiKey', credential, protocol: 2 });
  const jwt = (claims: Record<string, unknown>) => async (c: RawClient) => c.request('Authenticate', { tenant: 'acme', method: 'jwt', credential: await jwtFor({ tenant: 'acme', ...claims }), protocol: 2 });
  const kinds: Who[] = [
    { label: 'ops key', auth: apiKey('ops:s3cret'), read: ['main', 'dash-1'], write: ['main', 'dash-1'], map: true },
    { label: 'viewer key', auth: apiKey('viewer:view'), read: ['main', 'dash-1'], write: [], map: true },
    { label: 'dash key', auth: apiKey('dash:dash'), read: ['dash-1'], write: ['dash-1'], map: true },
    { label: 'no-map key', auth: apiKey('nomap:nomap'), read: ['main', 'dash-1'], write: ['main', 'dash-1'], map: false },
    { label: 'jwt sub ops, read-only', auth: jwt({ sub: 'ops', read: ['*'] }), read: ['main', 'dash-1'], write: [], map: true },
    { label: 'jwt sub viewer, writes dash-*', auth: jwt({ sub: 'viewer', read: ['*'], write: ['dash-*'] }), read: ['main', 'dash-1'], write: ['dash-1'], map: true },
    { label: 'jwt sub ops, same claims as the ops key', auth: jwt({ sub: 'ops', read: ['*'], write: ['*'], admin: ['*'] }), read: ['main', 'dash-1'], write: ['main', 'dash-1'], map: true },
    { label: 'jwt without claims', auth: jwt({}), read: [], write: [], map: true },
  ];
  // 8 kinds × 6 connections, authenticated in an interleaved order so equal grants are compiled once and shared.
  const conns: { who: Who; c: RawClient }[] = [];
  for (let round = 0; round < 6; round++) {
    for (const who of round % 2 === 0 ? kinds : [...kinds].reverse()) {
      const c = await RawClient.connect(server.url);
      t.after(() => c.close());
      const r = await who.auth(c);
      assert.equal(r.type, 'Authenticated', `${who.label}: ${JSON.stringify(r.body)}`);
      conns.push({ who, c });
    }
  }
  // A connection that authenticates as viewer for acme and ops for beta: acme stays read-only on it.
  const mixed = await RawClient.connect(server.url);
  t.after(() => mixed.close());
  await mixed.auth('acme', 'viewer:view');
  await mixed.auth('beta', 'beta-secret');
  conns.push({ who: kinds[1]!, c: mixed });
  const problems: string[] = [];
  await Promise.all(
    conns.map(async ({ who, c }, n) => {
      for (const service of ['main', 'dash-1']) {
        const w = await c.request('WriteVariable', { tenant: 'acme', service, name: 'x', value: new Uint8Array([n]) });
        const mayWrite = who.write.includes(service);
        if ((w.type === 'VariableChangesAcknowledged') !== mayWrite) problems.push(`${who.label} #${n}: write ${service} → ${w.type} ${JSON.stringify(w.body)}`);
        const r = await c.request('ReadVariable', { tenant: 'acme', service, name: 'x' });
        const mayRead = who.read.includes(service);
        if ((r.type === 'VariableValue') !== mayRead) problems.push(`${who.label} #${n}: read ${service} → ${r.type}`);
        const s = await c.request('Subscription', { tenant: 'acme', service });
        if ((s.type === 'Snapshot') !== mayRead) problems.push(`${who.label} #${n}: subscribe ${service} → ${s.type}`);
        if (s.type === 'Snapshot') {
          const snap = s.body as Snap;
          if (snap.readOnly !== !mayWrite) problems.push(`${who.label} #${n}: snapshot of ${service} says readOnly ${snap.readOnly}`);
          const reg = await c.request('RegisterVariable', { sid: snap.sid, name: `y${n}`, offset: -1, size: 8, typeId: VariableType.U64 });
          const mayAdmin = who.label === 'ops key' || who.label === 'jwt sub ops, same claims as the ops key' || (who.label === 'dash key' && service === 'dash-1');
          if ((reg.type === 'VariableRegistered') !== mayAdmin) problems.push(`${who.label} #${n}: register in ${service} → ${reg.type}`);
          const rep = await c.request('ReportVariableChanges', { sid: snap.sid, changes: [[snap.variables.find((d) => d[1] === 'x')![0], new Uint8Array([n])]] });
          if ((rep.type === 'VariableChangesAcknowledged') !== mayWrite) problems.push(`${who.label} #${n}: report to ${service} → ${rep.type}`);
        }
        if (mayRead) {
          const p = await c.request('GetServiceFilePath', { tenant: 'acme', service });
          if ((p.type === 'ServiceFilePath') !== who.map) problems.push(`${who.label} #${n}: file path of ${service} → ${p.type}`);
          if (p.type === 'ServiceFilePath' && (p.body as { readOnly: boolean }).readOnly !== !mayWrite) problems.push(`${who.label} #${n}: file of ${service} readOnly wrong`);
        }
      }
      // Another tenant: only the mixed connection is authenticated for it.
      const other = await c.request('ReadVariable', { tenant: 'beta', service: 'main', name: 'x' });
      if (c !== mixed && other.type !== 'Error') problems.push(`${who.label} #${n}: reached tenant beta`);
    }),
  );
  assert.deepEqual(problems, []);
});

// ---- broadcasts against local processes, churn and damage -----------------------------------------------

/** Creates `service` with `vars` (Bytes of the given sizes) through `c`; returns the subscription and the file path. */
async function serviceWith(c: RawClient, tenant: string, service: string, vars: [string, number][]): Promise<{ sid: number; path: string }> {
  const sid = ((await c.request('Subscription', { tenant, service, create: true })).body as Snap).sid;
  for (const [name, size] of vars) {
    const r = await c.request('RegisterVariable', { sid, name, offset: -1, size, typeId: VariableType.Bytes });
    assert.equal(r.type, 'VariableRegistered', JSON.stringify(r.body));
  }
  const path = ((await c.request('GetServiceFilePath', { tenant, service })).body as { filePath: string }).filePath;
  return { sid, path };
}

/** The last value each subscription (by sid) got for directory index `index`, from its wire's pushes. */
function lastValue(w: Wire, sid: number, index: number): Uint8Array | undefined {
  let v: Uint8Array | undefined;
  for (const m of w.frames) {
    if (m.type !== 'SyncBatch' || m.body.sid !== sid) continue;
    for (const [i, , bytes] of m.body.updates) if (i === index) v = bytes;
  }
  return v;
}

test('a variable held mid-write by a live local process holds back nobody and nothing else; once its holder dies, every subscriber gets it', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t);
  const admin = await RawClient.connect(server.url);
  t.after(() => admin.close());
  await admin.auth('acme', 'ops:s3cret');
  const { path } = await serviceWith(admin, 'acme', 'held', [['x', 64], ['y', 8]]);
  assert.equal((await admin.request('WriteVariable', { tenant: 'acme', service: 'held', name: 'x', value: new Uint8Array(64).fill(1) })).type, 'VariableChangesAcknowledged');
  const holder = startChild('lock-holder', [path, 'x'], t);
  await holder.next('locked');
  const subs: Sub[] = [];
  for (let i = 0; i < 30; i++) {
    const w = await wire(server.url, `sub-${i}`, [['acme', i % 2 === 0 ? 'ops:s3cret' : 'view']], i % 2 === 0 ? 2 : 1);
    t.after(() => w.client.close());
    subs.push(await subscribe(w, 'acme', 'held'));
  }
  const xIndex = subs[0]!.snapshot.variables.find((d) => d[1] === 'x')![0];
  const yIndex = subs[0]!.snapshot.variables.find((d) => d[1] === 'y')![0];
  // One subscriber leaves while x is still held (its retry timer must go with it).
  const leaver = subs.pop()!;
  assert.equal((await leaver.wire.client.request('Unsubscribe', { sid: leaver.sid })).type, 'Unsubscribed');
  for (let i = 1; i <= 200; i++) {
    const ack = await admin.request('WriteVariable', { tenant: 'acme', service: 'held', name: 'y', value: new Uint8Array(8).fill(i) });
    assert.equal(ack.type, 'VariableChangesAcknowledged');
  }
  await until(() => subs.every((s) => lastValue(s.wire, s.sid, yIndex)?.[0] === 200), () => 'every subscriber to get the last y while x is held');
  assert.ok(subs.every((s) => lastValue(s.wire, s.sid, xIndex) === undefined), 'x is not sent while it is held mid-write');
  holder.kill('SIGKILL');
  await holder.exited;
  // Recovered (after the lock policy's staleMs) by the server's own retries: what the dead writer left.
  await until(() => subs.every((s) => lastValue(s.wire, s.sid, xIndex) !== undefined), () => `${subs.filter((s) => lastValue(s.wire, s.sid, xIndex) === undefined).length} subscribers never got x`);
  assert.equal(server.subscriptionCount, subs.length + 1);
  assert.equal(leaver.wire.frames.filter((m) => m.type === 'SyncBatch' && m.body.sid === leaver.sid && m.body.updates.some(([i]) => i === xIndex)).length, 0);
});

test('subscriptions made and dropped in a tight loop (pipelined, never awaited) during writes, rounds on a 2 ms tick: no push for a sid after its Unsubscribed, the last one converges, none leak', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t, { tick: 2 });
  const admin = await RawClient.connect(server.url);
  t.after(() => admin.close());
  await admin.auth('acme', 'ops:s3cret');
  const NAMES = ['a', 'b', 'c', 'd'];
  await serviceWith(admin, 'acme', 'churn', NAMES.map((n) => [n, 8]));
  const wires: Wire[] = [];
  for (let i = 0; i < 8; i++) {
    const w = await wire(server.url, `churn-${i}`, [['acme', 'ops:s3cret']], i % 2 === 0 ? 1 : 2);
    t.after(() => w.client.close());
    wires.push(w);
  }
  let stop = false;
  let written = 0;
  const writerLoop = (async () => {
    while (!stop) {
      written++;
      for (const n of NAMES) void admin.request('WriteVariable', { tenant: 'acme', service: 'churn', name: n, value: new Uint8Array(8).fill(written & 0xff) });
      await admin.request('ReadVariable', { tenant: 'acme', service: 'churn', name: 'a' });
    }
  })();
  const finals = await Promise.all(
    wires.map(async (w, n) => {
      let sidGuess = 0;
      for (let k = 0; k < 60; k++) {
        const globs = k % 3 === 0 ? undefined : [NAMES[(k + n) % 4]!, '?'];
        void w.client.request('Subscription', { tenant: 'acme', service: 'churn', ...(globs ? { variables: globs } : {}) });
        sidGuess++;
        // Half dropped before their snapshot is even sent, half after a turn.
        if (k % 2 === 1) await new Promise((resolve) => setImmediate(resolve));
        void w.client.request('Unsubscribe', { sid: sidGuess });
      }
      return subscribe(w, 'acme', 'churn', n % 2 === 0 ? undefined : ['b', 'd']);
    }),
  );
  await new Promise((resolve) => setTimeout(resolve, 200));
  stop = true;
  await writerLoop;
  const finalValue = written & 0xff;
  for (const sub of finals) {
    const wants = sub.snapshot.variables.filter((d) => sub.globs === undefined || sub.globs.includes(d[1]));
    await until(
      () => wants.every((d) => (lastValue(sub.wire, sub.sid, d[0]) ?? sub.snapshot.data.subarray(d[2], d[2] + 8))[0] === finalValue),
      () => `${sub.wire.name} not on the last value ${finalValue}`,
    );
  }
  const problems: string[] = [];
  for (const w of wires) {
    const ended = new Set<number>();
    for (const m of w.all) {
      if (m.type === 'Unsubscribed' && m.id !== 0) ended.add(m.body.sid);
      if ((m.type === 'SyncBatch' || m.type === 'SnapshotChunk') && ended.has(m.body.sid)) problems.push(`${w.name}: a ${m.type} for sid ${m.body.sid} after its Unsubscribed`);
    }
  }
  assert.deepEqual(problems, []);
  await until(() => server.subscriptionCount === wires.length + 1, () => `${server.subscriptionCount} subscriptions held, want ${wires.length + 1}`);
});

test('connections that vanish in the middle of a chunked snapshot while the service is written: their subscriptions are let go, the others converge', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t, { config: { tenants: TEST_TENANTS, audit: { enabled: false }, limits: { maxFrameBytes: 128 * 1024, maxBufferedBytes: 128 * 1024 } } });
  const admin = await RawClient.connect(server.url);
  t.after(() => admin.close());
  await admin.auth('acme', 'ops:s3cret');
  const vars: [string, number][] = Array.from({ length: 40 }, (_, i) => [`v${i}`, 32 * 1024]);
  const { path } = await serviceWith(admin, 'acme', 'bulky', [...vars, ['n', 8]]);
  const local = await VirtualVariableFile.open(path);
  t.after(() => local.close());
  let n = 0;
  const ticker = setInterval(() => {
    n++;
    local.set('n', new Uint8Array(8).fill(n & 0xff));
    local.set(`v${n % 40}`, new Uint8Array(32 * 1024).fill(n & 0xff));
  }, 2);
  t.after(() => clearInterval(ticker));
  const vanishing = await Promise.all(
    Array.from({ length: 12 }, async (_, i) => {
      const c = await RawClient.connect(server.url);
      await c.auth('acme', 'ops:s3cret');
      const socket = (c.ws as WebSocket & { _socket: { pause(): void; resume(): void } })._socket;
      socket.pause(); // reads nothing: the snapshot's chunks pile up at the server's output budget
      void c.request('Subscription', { tenant: 'acme', service: 'bulky' }).catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 20 + 10 * i));
      if (i % 2 === 0) c.ws.terminate();
      else {
        socket.resume(); // reads again, and closes in the middle of the chunks
        c.close();
      }
      return c;
    }),
  );
  void vanishing;
  const staying = await wire(server.url, 'staying', [['acme', 'ops:s3cret']], 2);
  t.after(() => staying.client.close());
  const sub = await subscribe(staying, 'acme', 'bulky');
  clearInterval(ticker);
  const last = n & 0xff;
  local.set('n', new Uint8Array(8).fill(0xfe));
  const nIndex = sub.snapshot.variables.find((d) => d[1] === 'n')![0];
  await until(() => lastValue(staying, sub.sid, nIndex)?.[0] === 0xfe, () => `staying at ${lastValue(staying, sub.sid, nIndex)?.[0]} (last ${last})`);
  await until(() => server.subscriptionCount === 2, () => `${server.subscriptionCount} subscriptions held, want 2`);
  await until(() => server.connectionCount === 2, () => `${server.connectionCount} connections held, want 2`);
});

test('a service file truncated by a local process while rounds run to many subscribers: they are all told INVALID_FILE, another service goes on, the server lives', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t);
  const admin = await RawClient.connect(server.url);
  t.after(() => admin.close());
  await admin.auth('acme', 'ops:s3cret');
  const victim = await serviceWith(admin, 'acme', 'victim', [['blob', 4096], ['pad', 4096]]);
  await serviceWith(admin, 'acme', 'healthy', [['y', 8]]);
  const writer = startChild('busy-writer', [victim.path, 'blob'], t);
  await writer.next('started');
  const subs: Sub[] = [];
  const healthy: Sub[] = [];
  for (let i = 0; i < 20; i++) {
    const w = await wire(server.url, `w-${i}`, [['acme', 'ops:s3cret']], i % 2 === 0 ? 1 : 2);
    t.after(() => w.client.close());
    subs.push(await subscribe(w, 'acme', 'victim'));
    if (i % 4 === 0) healthy.push(await subscribe(w, 'acme', 'healthy'));
  }
  const blobIndex = subs[0]!.snapshot.variables.find((d) => d[1] === 'blob')![0];
  await until(() => subs.every((s) => lastValue(s.wire, s.sid, blobIndex) !== undefined), () => 'broadcasts of the busy writer to reach everyone');
  const r = spawnSync(process.execPath, ['-e', `require('node:fs').truncateSync(${JSON.stringify(victim.path)}, 4096)`]);
  assert.equal(r.status, 0, String(r.stderr));
  const told = (s: Sub) => s.wire.frames.some((m) => m.type === 'Unsubscribed' && m.body.sid === s.sid && m.body.errorCode === 'INVALID_FILE');
  await until(() => subs.every(told), () => `${subs.filter((s) => !told(s)).length} subscribers not told`);
  writer.kill('SIGKILL');
  for (let i = 1; i <= 20; i++) assert.equal((await admin.request('WriteVariable', { tenant: 'acme', service: 'healthy', name: 'y', value: new Uint8Array(8).fill(i) })).type, 'VariableChangesAcknowledged');
  const yIndex = healthy[0]!.snapshot.variables.find((d) => d[1] === 'y')![0];
  await until(() => healthy.every((s) => lastValue(s.wire, s.sid, yIndex)?.[0] === 20), () => 'the healthy service to reach its subscribers');
  assert.ok(healthy.every((s) => !s.wire.frames.some((m) => m.type === 'Unsubscribed' && m.body.sid === s.sid)), 'the healthy service was not ended');
});

// ---- op ids across a reconnection -----------------------------------------------------------------------

/**
 * A TCP proxy whose client side can be dropped while the server side stays open (a half-open connection: the
 * server has not noticed yet, as after a network failure), and whose server sides can be dropped later.
 */
class HalfCutProxy {
  private constructor(
    private readonly server: import('node:net').Server,
    private readonly pairs: { down: import('node:net').Socket; up: import('node:net').Socket }[],
  ) {}

  static async start(targetPort: number): Promise<HalfCutProxy> {
    const net = await import('node:net');
    const pairs: { down: import('node:net').Socket; up: import('node:net').Socket }[] = [];
    const server = net.createServer((down) => {
      const up = net.connect(targetPort, '127.0.0.1');
      down.on('error', () => {});
      up.on('error', () => {});
      const pair = { down, up };
      pairs.push(pair);
      down.on('data', (chunk) => {
        if (!up.destroyed) up.write(chunk);
      });
      up.on('data', (chunk) => {
        if (!down.destroyed) down.write(chunk);
      });
      up.on('close', () => down.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return new HalfCutProxy(server, pairs);
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  /** The client loses every connection it has now; the server keeps its ends. Returns their server sides. */
  dropClientSides(): import('node:net').Socket[] {
    const ups: import('node:net').Socket[] = [];
    for (const pair of this.pairs.splice(0)) {
      pair.down.destroy();
      ups.push(pair.up);
    }
    return ups;
  }

  close(): Promise<void> {
    for (const pair of this.pairs.splice(0)) {
      pair.down.destroy();
      pair.up.destroy();
    }
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

test('a write resent after a reconnection while the server still runs the first attempt on the half-open old connection: applied once, and acknowledged', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t);
  const admin = await RawClient.connect(server.url);
  t.after(() => admin.close());
  await admin.auth('acme', 'ops:s3cret');
  const { path } = await serviceWith(admin, 'acme', 'halfopen', [['x', 8], ['y', 8]]);
  const holder = startChild('lock-holder', [path, 'x'], t);
  await holder.next('locked'); // x is held mid-write: the write below waits at the server

  const proxy = await HalfCutProxy.start(server.port);
  t.after(() => proxy.close());
  const client = await Client.initialize(proxy.url, 'acme', AuthCredentials.apiKey('ops:s3cret'), { mode: 'remote', onError: () => {}, reconnect: { initialDelayMs: 10, maxDelayMs: 100 } });
  t.after(() => client.close());
  const states: string[] = [];
  client.on('state', (s) => states.push(s));
  const vf = await client.getVirtualServiceFile('acme', 'halfopen');
  vf.set('x', new Uint8Array(8).fill(42));
  let flushed: string | undefined;
  void vf.flush().then(
    () => (flushed = 'acknowledged'),
    (err: { code?: string }) => (flushed = err.code),
  );
  await new Promise((resolve) => setTimeout(resolve, 300)); // the report waits at the server for x's lock
  const oldServerSides = proxy.dropClientSides(); // the client's network goes; the server has not noticed
  await until(() => states.includes('reconnecting') && client.state === 'open', () => `client ${client.state} after ${states.join(',')}`);
  await new Promise((resolve) => setTimeout(resolve, 300)); // its resend (same op id) waits for the first attempt
  for (const up of oldServerSides) up.destroy(); // now the server notices the old connection is gone
  await new Promise((resolve) => setTimeout(resolve, 300));
  holder.kill('SIGKILL'); // x's lock is free again (recovered after the lock policy's staleMs)
  await holder.exited;
  const xNow = async () => ((await admin.request('ReadVariable', { tenant: 'acme', service: 'halfopen', name: 'x' })).body as { value: Uint8Array }).value[0];
  const deadline = Date.now() + 4_000;
  while ((flushed === undefined || (await xNow()) !== 42) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(await xNow(), 42, 'the write was never applied');
  assert.equal(flushed, 'acknowledged');
  // And the client's writes go on.
  vf.set('y', new Uint8Array(8).fill(7));
  await vf.flush();
  assert.equal(((await admin.request('ReadVariable', { tenant: 'acme', service: 'halfopen', name: 'y' })).body as { value: Uint8Array }).value[0], 7);
});

test('wire level: a retry (same clientKey and op id) on a live connection is never answered with the NOT_CONNECTED of the first attempt\'s dead connection', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t);
  const admin = await RawClient.connect(server.url);
  t.after(() => admin.close());
  await admin.auth('acme', 'ops:s3cret');
  const { path } = await serviceWith(admin, 'acme', 'retry', [['x', 8]]);
  const holder = startChild('lock-holder', [path, 'x'], t);
  await holder.next('locked');
  const clientKey = 'attack-speed-client-key-0001';
  const connectAs = async () => {
    const c = await RawClient.connect(server.url);
    t.after(() => c.close());
    const r = await c.request('Authenticate', { tenant: 'acme', method: 'apiKey', credential: 'ops:s3cret', protocol: 2, clientKey });
    assert.equal(r.type, 'Authenticated');
    return c;
  };
  const first = await connectAs();
  const write = { tenant: 'acme', service: 'retry', name: 'x', value: new Uint8Array(8).fill(9), opId: 77 };
  void first.request('WriteVariable', write).catch(() => undefined);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const second = await connectAs(); // the same client, reconnected; the server has not noticed the first is gone
  const retry = second.request('WriteVariable', write);
  await new Promise((resolve) => setTimeout(resolve, 200));
  first.ws.terminate();
  await new Promise((resolve) => setTimeout(resolve, 300));
  holder.kill('SIGKILL');
  const answer = await retry;
  assert.equal(answer.type, 'VariableChangesAcknowledged', `the live retry was answered ${answer.type} ${JSON.stringify(answer.body)}`);
});

test('600 subscriptions with five different filters on six connections, rounds cut into slices while writes go on: each one ends on every value it wants and on nothing else', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const admin = await RawClient.connect(server.url);
  t.after(() => admin.close());
  await admin.auth('acme', 'ops:s3cret');
  const ids = new Map<string, number>();
  const vars: [string, number][] = [];
  for (let i = 0; i < 40; i++) {
    vars.push([`s${i}`, 16]);
    ids.set(`s${i}`, i);
  }
  for (let i = 0; i < 3; i++) {
    vars.push([`b${i}`, 2048]);
    ids.set(`b${i}`, 100 + i);
  }
  const { path } = await serviceWith(admin, 'acme', 'wide', vars);
  const local = await VirtualVariableFile.open(path);
  t.after(() => local.close());
  const FILTERS: (string[] | undefined)[] = [undefined, ['s1*'], ['s?'], ['b*', 's0'], ['s2?', 's3']];
  const subs: Sub[] = [];
  const wires: Wire[] = [];
  for (let c = 0; c < 6; c++) {
    const w = await wire(server.url, `conn-${c}`, [['acme', c % 2 === 0 ? 'ops:s3cret' : 'view']], c % 2 === 0 ? 2 : 1);
    t.after(() => w.client.close());
    wires.push(w);
    const made = await Promise.all(Array.from({ length: 100 }, (_, k) => subscribe(w, 'acme', 'wide', FILTERS[(c + k) % FILTERS.length])));
    subs.push(...made);
  }
  const last = new Map<string, number>();
  const ROUNDS = 40;
  for (let round = 1; round <= ROUNDS; round++) {
    for (let i = 0; i < 40; i++) {
      if ((i + round) % 3 === 0) continue; // each round changes a different two thirds
      local.set(`s${i}`, valueOf('acme', i, round, 16));
      last.set(`s${i}`, round);
    }
    if (round % 5 === 0 || round === ROUNDS) {
      for (let i = 0; i < 3; i++) {
        local.set(`b${i}`, valueOf('acme', 100 + i, round, 2048));
        last.set(`b${i}`, round);
      }
    }
    // A request between rounds: answered while the broadcast to 600 goes on in slices.
    assert.equal((await admin.request('ReadVariable', { tenant: 'acme', service: 'wide', name: 's1' })).type, 'VariableValue');
  }
  const behind = (): string[] => {
    const out: string[] = [];
    for (const sub of subs) {
      const got = replay(sub, ids, []);
      for (const [name, round] of last) {
        const wants = sub.globs === undefined || sub.globs.some((g) => globMatch(g, name));
        if (wants && got.get(name) !== round) out.push(`${sub.wire.name} sid ${sub.sid} ${JSON.stringify(sub.globs)}: ${name} at ${got.get(name)}, want ${round}`);
      }
    }
    return out;
  };
  await until(() => behind().length === 0, () => `${behind().length} behind, e.g. ${behind().slice(0, 5).join('; ')}`, 60_000);
  const problems: string[] = [];
  for (const sub of subs) replay(sub, ids, problems);
  for (const w of wires) checkSids(w, subs, problems);
  assert.deepEqual(problems.slice(0, 20), []);
});

test('variables removed by a local process while rounds read them, over and over: no internal error, and no subscriber ever misses the last value of the others', { timeout: 60_000 }, async (t) => {
  const errors: unknown[] = [];
  const server = await startServer(t, { onError: (err) => errors.push(err) });
  const admin = await RawClient.connect(server.url);
  t.after(() => admin.close());
  await admin.auth('acme', 'ops:s3cret');
  const stable = Array.from({ length: 20 }, (_, i) => `k${i}`);
  const { path } = await serviceWith(admin, 'acme', 'churning', stable.map((n) => [n, 8]));
  const subs: Sub[] = [];
  for (let c = 0; c < 4; c++) {
    const w = await wire(server.url, `conn-${c}`, [['acme', 'ops:s3cret']], 2);
    t.after(() => w.client.close());
    subs.push(...(await Promise.all(Array.from({ length: 50 }, () => subscribe(w, 'acme', 'churning')))));
  }
  const index = new Map(subs[0]!.snapshot.variables.map((d) => [d[1], d[0]]));
  const missing = (value: number) => subs.filter((s) => stable.some((n) => lastValue(s.wire, s.sid, index.get(n)!)?.[0] !== value));
  const churn = startChild('attack-speed-churn', [path, '14000'], t);
  await churn.next('ready');
  const local = await VirtualVariableFile.open(path);
  t.after(() => local.close());
  // Each round writes the others once and waits for every subscriber to have them (nothing writes them again
  // meanwhile: an update lost now is lost for good). The churn goes on all along.
  const started = Date.now();
  let stuck = '';
  for (let round = 1; round <= 250 && Date.now() - started < 6_000 && stuck === ''; round++) {
    for (const name of stable) local.set(name, new Uint8Array(8).fill(round));
    const deadline = Date.now() + 3_000;
    while (missing(round).length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    if (missing(round).length > 0) stuck = `round ${round}: ${missing(round).length} subscribers never got it`;
  }
  churn.send({ type: 'stop' });
  const { registered } = await churn.next<{ registered: number }>('done');
  assert.equal(stuck, '', `${registered} registrations churned; ${errors.length} internal errors`);
  assert.deepEqual(errors.map(String).slice(0, 5), [], `${registered} registrations churned`);
});

test('subscribing (and querying values) while a local process removes variables: never refused because some other variable went away meanwhile', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t);
  const admin = await RawClient.connect(server.url);
  t.after(() => admin.close());
  await admin.auth('acme', 'ops:s3cret');
  const { path } = await serviceWith(admin, 'acme', 'churned', Array.from({ length: 20 }, (_, i): [string, number] => [`k${i}`, 8]));
  const churn = startChild('attack-speed-churn', [path, '14000'], t);
  await churn.next('ready');
  const c = await RawClient.connect(server.url);
  t.after(() => c.close());
  await c.auth('acme', 'ops:s3cret');
  const refusals: string[] = [];
  const started = Date.now();
  let n = 0;
  while (Date.now() - started < 2000) {
    n++;
    const r = await c.request('Subscription', { tenant: 'acme', service: 'churned' });
    if (r.type !== 'Snapshot') refusals.push(`Subscription: ${JSON.stringify(r.body)}`);
    else await c.request('Unsubscribe', { sid: (r.body as Snap).sid });
    const q = await c.request('Query', { tenant: 'acme', services: ['churned'], values: true });
    if (q.type !== 'QueryResponse') refusals.push(`Query: ${JSON.stringify(q.body)}`);
  }
  churn.send({ type: 'stop' });
  await churn.next('done');
  assert.deepEqual(refusals.slice(0, 5), [], `${refusals.length} of ${n} refused`);
});

test('a variable whose writer dies mid-write just after writing it, the connection lost meanwhile: the resumed client still gets its value', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t);
  const admin = await RawClient.connect(server.url);
  t.after(() => admin.close());
  await admin.auth('acme', 'ops:s3cret');
  const { path } = await serviceWith(admin, 'acme', 'diedmid', [['x', 64], ['y', 8]]);
  const proxy = await CutProxy.start(server.port);
  t.after(() => proxy.close());
  const client = await Client.initialize(proxy.url, 'acme', AuthCredentials.apiKey('ops:s3cret'), { mode: 'remote', onError: () => {}, reconnect: { initialDelayMs: 10, maxDelayMs: 100 } });
  t.after(() => client.close());
  const states: string[] = [];
  client.on('state', (s) => states.push(s));
  const vf = await client.getVirtualServiceFile('acme', 'diedmid');
  const writer = startChild('attack-speed-write-then-hold', [path, 'x', '7'], t);
  await writer.next('holding'); // x = 7 written (a new version), then held mid-write: the server's round finds it busy
  assert.equal((await admin.request('WriteVariable', { tenant: 'acme', service: 'diedmid', name: 'y', value: new Uint8Array(8).fill(1) })).type, 'VariableChangesAcknowledged');
  await until(() => (vf.get('y') as Uint8Array)[0] === 1, () => 'the batch with y (its resume point covers x\'s change)');
  proxy.cut();
  await until(() => states.includes('reconnecting') && client.state === 'open', () => `client ${client.state}`);
  writer.kill('SIGKILL');
  await writer.exited;
  const serverX = async () => ((await admin.request('ReadVariable', { tenant: 'acme', service: 'diedmid', name: 'x' })).body as { value: Uint8Array }).value;
  const deadline = Date.now() + 3_000;
  let want = await serverX(); // what the dead writer left (recovered after staleMs)
  while (Date.now() < deadline && Buffer.compare(Buffer.from(vf.get('x') as Uint8Array), Buffer.from(want)) !== 0) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    want = await serverX();
  }
  assert.deepEqual([...(vf.get('x') as Uint8Array)].slice(0, 4), [...want].slice(0, 4), 'the client never got x');
});
