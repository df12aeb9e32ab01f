import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCommyError, VariableMetadata, VariableType, type Client, type VirtualVariableFile } from '../src/index.js';
import { startClientServer } from './helpers/client-server.js';
import { reconnectingClient, serverIn, until } from './helpers/server-process.js';
import { tempDir } from './helpers/temp.js';
import { guard } from './helpers/guard.js';

/**
 * Attack: vf.subscribe()/vf.unsubscribe() hammered in a tight loop, awaited and not, while another client
 * writes (and the subscriber writes too), with the server killed mid-loop, and against a server whose message
 * rate limit refuses some of the switch's requests. Afterwards every variable inside the final filter must hold
 * the server's value, every call must have settled (resolved, or rejected with a CommyError), nothing may
 * reject unhandled, and the server must not be left holding subscriptions the client gave up.
 */

const NAMES = ['a', 'b', 'c', 'd', 'e'] as const;
const GLOBS = ['a', 'b', 'c', 'd', 'e', '*', '?', '[ab]', 'nope'];

/** A deterministic pseudo-random sequence (no flakiness from the choice of calls). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** The filter model of docs/client.md: undefined is "all"; subscribe adds, unsubscribe removes exact globs. */
class FilterModel {
  globs: string[] | undefined;
  apply(op: 'subscribe' | 'unsubscribe', globs: string[]): void {
    const list = [...new Set(globs)];
    if (op === 'subscribe') {
      if (list.length === 0) return;
      this.globs = this.globs === undefined ? list : [...new Set([...this.globs, ...list])];
    } else {
      const now = this.globs ?? ['*'];
      const next = now.filter((g) => !list.includes(g));
      if (next.length !== now.length) this.globs = next;
    }
  }
  wants(name: string): boolean {
    if (this.globs === undefined) return true;
    return this.globs.some((g) => globMatch(g, name));
  }
}

/** `*` and `?` (docs/protocol.md); anything else is literal. */
function globMatch(glob: string, name: string): boolean {
  const re = new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return re.test(name);
}

/** A writer that keeps changing a..e (U64, ever-growing values) until stopped; resolves with its last values. */
function startWriter(vf: VirtualVariableFile): { stop(): Promise<Map<string, bigint>> } {
  let running = true;
  const last = new Map<string, bigint>();
  const done = (async () => {
    let i = 0n;
    while (running) {
      for (const name of NAMES) {
        i++;
        vf.set(name, i);
        last.set(name, i);
      }
      await vf.flush();
      await new Promise((resolve) => setImmediate(resolve));
    }
  })();
  return {
    async stop() {
      running = false;
      await done;
      return last;
    },
  };
}

async function setUp(vf: VirtualVariableFile): Promise<void> {
  for (const name of [...NAMES, 'mine']) await vf.registerVariable(new VariableMetadata(name, -1, 8, VariableType.U64));
}

type Settled = { op: 'subscribe' | 'unsubscribe'; globs: string[]; ok: boolean; code?: string | undefined; err?: unknown };

function settle(op: 'subscribe' | 'unsubscribe', globs: string[], p: Promise<void>): Promise<Settled> {
  return p.then(
    () => ({ op, globs, ok: true }),
    (err: unknown) => ({ op, globs, ok: false, code: isCommyError(err) ? err.code : undefined, err }),
  );
}

function pick(rand: () => number): { op: 'subscribe' | 'unsubscribe'; globs: string[] } {
  const op = rand() < 0.5 ? 'subscribe' : 'unsubscribe';
  const n = 1 + Math.floor(rand() * 3);
  const globs = Array.from({ length: n }, () => GLOBS[Math.floor(rand() * GLOBS.length)]!);
  return { op, globs };
}

/** Every variable the final filter wants holds the server's value (read by a fresh client). */
async function assertConverged(reader: VirtualVariableFile, model: FilterModel, fresh: Client, service: string): Promise<void> {
  const truth = await fresh.getVirtualServiceFile('acme', service);
  const wanted = NAMES.filter((n) => model.wants(n));
  await until(() => wanted.every((n) => reader.get(n) === truth.get(n)), `the reader's filtered values (${wanted.join(',')}) equal the server's`);
  assert.equal(reader.get('mine'), truth.get('mine'), "the reader's own writes reached the server");
}

test('subscribe/unsubscribe 300 times unawaited while another client writes: every call settles, the filter is the calls in order, values converge', { timeout: 180_000 }, async (t) => {
  const g = guard(t);
  const { connect } = await startClientServer(t);
  const wc = await connect();
  const rc = await connect({ onError: () => {} });
  const w = await wc.getVirtualServiceFile('acme', 'loop');
  await setUp(w);
  const r = await rc.getVirtualServiceFile('acme', 'loop');
  const writer = startWriter(w);
  const rand = rng(1);
  const calls: Promise<Settled>[] = [];
  for (let i = 0; i < 300; i++) {
    const { op, globs } = pick(rand);
    calls.push(settle(op, globs, op === 'subscribe' ? r.subscribe(globs) : r.unsubscribe(globs)));
    r.set('mine', BigInt(i)); // the subscriber writes meanwhile: its outbox is held by every switch
  }
  const results = await Promise.all(calls);
  await writer.stop();
  await r.flush();
  const failures = results.filter((x) => !x.ok);
  assert.deepEqual(failures.map((f) => `${f.code}: ${String(f.err)}`), [], 'no call failed on a healthy connection');
  const model = new FilterModel();
  for (const x of results) if (x.ok) model.apply(x.op, x.globs);
  await assertConverged(r, model, await connect(), 'loop');
  assert.equal(r.get('mine'), 299n);
  await g.check();
});

test('subscribe/unsubscribe 200 times awaited while another client writes: values converge after each switch', { timeout: 180_000 }, async (t) => {
  const g = guard(t);
  const { connect } = await startClientServer(t);
  const wc = await connect();
  const rc = await connect({ onError: () => {} });
  const w = await wc.getVirtualServiceFile('acme', 'awaited');
  await setUp(w);
  const r = await rc.getVirtualServiceFile('acme', 'awaited');
  const writer = startWriter(w);
  const rand = rng(2);
  const model = new FilterModel();
  for (let i = 0; i < 200; i++) {
    const { op, globs } = pick(rand);
    r.set('mine', BigInt(i));
    const before = NAMES.filter((n) => model.wants(n));
    const acked = new Map(NAMES.map((n) => [n, w.handle(n).version()])); // the writer's acknowledged versions now
    await (op === 'subscribe' ? r.subscribe(globs) : r.unsubscribe(globs));
    model.apply(op, globs);
    // docs/client.md: a change that adds globs brings the newly wanted variables' current values with it.
    for (const n of NAMES.filter((x) => model.wants(x) && !before.includes(x))) {
      assert.ok(r.handle(n).version() >= acked.get(n)!, `${n} newly wanted at call ${i}: version ${r.handle(n).version()}, the writer had ${acked.get(n)} acknowledged before the call`);
    }
  }
  await writer.stop();
  await r.flush();
  await assertConverged(r, model, await connect(), 'awaited');
  await g.check();
});

test('subscribe/unsubscribe unawaited while the server is killed and restarted: calls resolve or reject NOT_CONNECTED, then values converge', { timeout: 180_000 }, async (t) => {
  const g = guard(t);
  const dataDir = tempDir(t);
  const first = await serverIn(t, dataDir);
  const port = new URL(first.url).port;
  const wc = await reconnectingClient(t, first.url);
  const rc = await reconnectingClient(t, first.url);
  const w = await wc.getVirtualServiceFile('acme', 'killed');
  await setUp(w);
  const r = await rc.getVirtualServiceFile('acme', 'killed');
  let server = first;
  const rand = rng(3);
  const calls: Promise<Settled>[] = [];
  let stopWriting = false;
  const writing = (async () => {
    let i = 0n;
    while (!stopWriting) {
      for (const name of NAMES) w.set(name, ++i);
      await w.flush().catch(() => {}); // NOT_CONNECTED while the server is down: kept, sent later
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  })();
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 60; i++) {
      const { op, globs } = pick(rand);
      calls.push(settle(op, globs, op === 'subscribe' ? r.subscribe(globs) : r.unsubscribe(globs)));
      r.set('mine', BigInt(round * 1000 + i));
      if (i === 30) {
        server.child.kill('SIGKILL');
        await server.child.exited;
        server = await serverIn(t, dataDir, port);
        // Half the calls are queued while reconnecting (they reject NOT_CONNECTED); the rest run once it is back.
        if (round !== 1) await until(() => rc.state === 'open', 'the reader reconnected');
      }
      if (i % 10 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
  const results = await Promise.all(calls);
  await until(() => rc.state === 'open' && wc.state === 'open', 'both clients open again');
  stopWriting = true;
  await writing;
  await w.flush();
  await r.flush();
  t.diagnostic(`${results.filter((x) => !x.ok).length} of ${results.length} calls rejected NOT_CONNECTED`);
  const odd = results.filter((x) => !x.ok && x.code !== 'NOT_CONNECTED');
  assert.deepEqual(odd.map((f) => `${f.code}: ${String(f.err)}`), [], 'a call fails only with NOT_CONNECTED');
  const model = new FilterModel();
  for (const x of results) if (x.ok) model.apply(x.op, x.globs);
  const fresh = await reconnectingClient(t, server.url);
  await assertConverged(r, model, fresh, 'killed');
  assert.equal(r.get('mine'), 2059n);
  server.child.send({ type: 'quit' });
  await g.check();
});

test('a switch whose Unsubscribe of the old subscription comes past the rate limit still ends it: releasing messages are never refused for rate', { timeout: 60_000 }, async (t) => {
  const g = guard(t);
  // Exactly enough messages for: Authenticate, Subscription, 6 RegisterVariable, and the switch's Subscription.
  // The switch's Unsubscribe of the old sid is the one message past the budget (refilled at 1 per 1000 s).
  const { connect, server } = await startClientServer(t, { limits: { rateLimit: { messagesPerSecond: 0.001, burst: 9 } } });
  const rc = await connect({ onError: () => {} });
  const r = await rc.getVirtualServiceFile('acme', 'leak1');
  await setUp(r);
  assert.equal(server.subscriptionCount, 1);
  await r.subscribe(['a']); // resolves: the new subscription took over
  // The client forgot the old sid (its pushes are dropped) but the server still runs it, and keeps sending.
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(server.subscriptionCount, 1, 'the old subscription was given up by the client: the server must not keep it');
  await g.check();
});

test('hostile arguments to subscribe/unsubscribe reject with a CommyError code and change nothing', { timeout: 60_000 }, async (t) => {
  const g = guard(t);
  const { connect } = await startClientServer(t);
  const c = await connect({ onError: () => {} });
  const vf = await c.getVirtualServiceFile('acme', 'hostile');
  await setUp(vf);
  await vf.subscribe(['a']);
  const bad: unknown[] = ['a', null, undefined, 42, [1], [null], [''], ['x'.repeat(257)], Array.from({ length: 65 }, (_, i) => `g${i}`), { length: 1, 0: 'a' }];
  for (const globs of bad) {
    for (const op of ['subscribe', 'unsubscribe'] as const) {
      let code: string | undefined;
      try {
        await (vf[op] as (g: unknown) => Promise<void>)(globs);
        code = 'resolved';
      } catch (err) {
        code = isCommyError(err) ? err.code : `not a CommyError: ${String(err)}`;
      }
      assert.ok(code === 'TYPE_MISMATCH' || code === 'INVALID_MESSAGE', `${op}(${JSON.stringify(globs)?.slice(0, 40)}): ${code}`);
    }
  }
  // 64 distinct globs fit one call; one more in the filter is refused, and the filter stays as it was.
  await vf.subscribe(Array.from({ length: 63 }, (_, i) => `g${i}`));
  await assert.rejects(vf.subscribe(['one-too-many']), { code: 'INVALID_MESSAGE' });
  // The file still works, with the filter it had: a sits inside it.
  const w = await (await connect()).getVirtualServiceFile('acme', 'hostile');
  w.set('a', 5n);
  await w.flush();
  await until(() => vf.get('a') === 5n, 'a still arrives');
  await g.check();
});

test('vf.close() and client.close() with 50 switches queued: every call settles (done, or NOT_CONNECTED), close returns', { timeout: 120_000 }, async (t) => {
  const g = guard(t);
  const { connect } = await startClientServer(t);
  for (const how of ['file', 'client'] as const) {
    const c = await connect({ onError: () => {} });
    const vf = await c.getVirtualServiceFile('acme', `closing-${how}`);
    await setUp(vf);
    const rand = rng(4);
    const calls: Promise<Settled>[] = [];
    for (let i = 0; i < 50; i++) {
      const { op, globs } = pick(rand);
      calls.push(settle(op, globs, op === 'subscribe' ? vf.subscribe(globs) : vf.unsubscribe(globs)));
      vf.set('mine', BigInt(i));
    }
    await (how === 'file' ? vf.close() : c.close());
    const results = await Promise.all(calls);
    const odd = results.filter((x) => !x.ok && x.code !== 'NOT_CONNECTED');
    assert.deepEqual(odd.map((x) => String(x.err)), [], `${how}: a call fails only with NOT_CONNECTED`);
    assert.throws(() => vf.get('a'), { code: 'NOT_CONNECTED' });
    // What the file held at close was sent first (vf.close() flushes): the server has mine = 49.
    const check = await (await connect()).getVirtualServiceFile('acme', `closing-${how}`);
    assert.equal(check.get('mine'), 49n, `${how}: the writes made between the switches reached the server`);
  }
  await g.check();
});
