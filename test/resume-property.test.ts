import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { AuthCredentials, Client, VariableMetadata, VariableType, type CommyError, type VirtualVariableFile } from '../src/index.js';
import { Server } from '../src/server/index.js';
import { createServerLogger } from '../src/server/logger.js';
import { CutProxy } from './helpers/cut-proxy.js';
import { FAST_RECONNECT, OPS, until } from './helpers/server-process.js';
import { TEST_TENANTS } from './helpers/server.js';
import { tempDir } from './helpers/temp.js';

/**
 * Resume as a property: any sequence of writes (set(), flushed or not, and mutate(), compare-and-set or not, by
 * the client under test; by another remote client; by a local client mapping the server's file), connection
 * cuts (their acknowledgements lost or not, the client kept out or let straight back), reconnections and server
 * restarts ends, once the client is open again and has flushed, with the client holding exactly the server's
 * values and versions for every variable (variables registered while it was away included); its versions never
 * go back along the way; and the server's value of each variable is one the order of events allows.
 *
 * The client under test reaches a real in-process server through a TCP proxy (helpers/cut-proxy.ts) that can
 * cut its connection; the other clients connect directly. Every write puts a value never written before.
 *
 * Replay a failure with the seed and path fast-check prints: FC_SEED=… FC_PATH=… node --test dist/test/resume-property.test.js
 * (FC_RUNS sets the number of runs; default 40).
 */

type Cmd =
  | { k: 'cw'; v: number; flush: boolean } // the client under test sets a variable (and awaits flush() if online)
  | { k: 'cm'; v: number; wait: boolean; cas: boolean } // the client under test mutates a variable (awaited if `wait` and online, compare-and-set only then)
  | { k: 'ow'; v: number } // the other remote client writes (set + flush, awaited)
  | { k: 'lw'; v: number } // a local client writes into the mapped file
  | { k: 'reg' } // the other client registers a new variable
  | { k: 'cut'; offline: boolean; loseAcks: boolean; rst: boolean } // the client's connection is cut
  | { k: 'online' } // the client may connect again (no wait)
  | { k: 'settle' } // online, wait until open, await flush()
  | { k: 'pause'; ms: number }
  | { k: 'restart' }; // the server closes and starts again on the same port and data directory

const BASE_VARS = ['a', 'b', 'c'];
const EXTRA_VARS = ['d', 'e'];

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ k: fc.constant('cw' as const), v: fc.nat(9), flush: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('cm' as const), v: fc.nat(9), wait: fc.boolean(), cas: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('ow' as const), v: fc.nat(9) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('lw' as const), v: fc.nat(9) }) },
  { weight: 1, arbitrary: fc.constant({ k: 'reg' as const }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('cut' as const), offline: fc.boolean(), loseAcks: fc.boolean(), rst: fc.boolean() }) },
  { weight: 2, arbitrary: fc.constant({ k: 'online' as const }) },
  { weight: 1, arbitrary: fc.constant({ k: 'settle' as const }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('pause' as const), ms: fc.constantFrom(0, 5, 20, 60) }) },
  { weight: 1, arbitrary: fc.constant({ k: 'restart' as const }) },
);

/** The client's last write to a variable: when it could first reach the server, and when it was known applied. */
interface ClientWrite {
  value: bigint;
  earliestApply: number; // Infinity while the client is kept offline
  ackedAt: number | undefined;
}

/** The values the server may end on for one variable, given the order of events (a set of one when it is decided). */
function allowed(c: ClientWrite | undefined, o: { value: bigint; at: number } | undefined): bigint[] {
  if (c === undefined) return [o?.value ?? 0n];
  if (o === undefined) return [c.value];
  if (o.at < c.earliestApply) return [c.value]; // the other write was applied before ours could reach the server
  if (c.ackedAt !== undefined && c.ackedAt < o.at) return [o.value]; // ours was applied before the other one
  return [c.value, o.value]; // concurrent: either order
}

test('resume property: any sequence of writes (ours, another client\'s, a local one\'s), cuts, reconnects and restarts ends on the server\'s state', { timeout: 300_000 }, async (t) => {
  const dataDir = tempDir(t, 'commy-resume-prop-');
  const serverOptions = { host: '127.0.0.1', dataDir, config: { tenants: TEST_TENANTS, audit: { enabled: false } }, logger: createServerLogger('warn') };
  let server = await Server.start({ ...serverOptions, port: 0 });
  const port = server.port;
  const proxy = await CutProxy.start(port);
  // Closed in this order after the test: the clients, the proxy, the server (whichever is running by then).
  const cleanup: (() => Promise<void>)[] = [() => proxy.close(), () => server.close()];
  t.after(async () => {
    for (const close of cleanup) await close();
  });

  const unexpected: string[] = [];
  const other = await Client.initialize(server.url, 'acme', OPS, { mode: 'remote', reconnect: FAST_RECONNECT, onError: () => {} });
  const local = await Client.initialize(server.url, 'acme', OPS, { mode: 'local', reconnect: FAST_RECONNECT, onError: () => {} });
  cleanup.unshift(() => other.close(), () => local.close());

  const stats = { runs: 0, commands: 0, clientWrites: 0, mutations: 0, conflicts: 0, otherWrites: 0, localWrites: 0, registrations: 0, cuts: 0, cutsLosingAcks: 0, restarts: 0, ambiguous: 0, decided: 0, settleMs: [] as number[] };
  let serial = 0;

  async function run(cmds: Cmd[]): Promise<void> {
    stats.runs++;
    const service = `prop-${serial++}`;
    proxy.offline = false;
    proxy.blackhole = false;
    // A run may end on a restart: the bystanders are back before the next one starts.
    await until(() => other.state === 'open' && local.state === 'open', 'the other and the local client to be open', 60_000);
    const ovf = await other.getVirtualServiceFile('acme', service);
    for (const name of BASE_VARS) await ovf.registerVariable(new VariableMetadata(name, -1, 8, VariableType.U64));
    const lvf = await local.getVirtualServiceFile('acme', service);
    assert.equal(lvf.mode, 'local');
    const errors: CommyError[] = [];
    const client = await Client.initialize(proxy.url, 'acme', OPS, { mode: 'remote', reconnect: FAST_RECONNECT, onError: (e) => errors.push(e) });
    const trace: string[] = [];
    try {
      const cvf = await client.getVirtualServiceFile('acme', service);
      const registered = [...BASE_VARS];
      const cLast = new Map<string, ClientWrite>();
      const oLast = new Map<string, { value: bigint; at: number }>();
      const seenVersion = new Map<string, bigint>();
      const flushes: Promise<unknown>[] = [];
      // Mutations not awaited: a later set() of the same variable may reach the server first
      // (they are concurrent operations), so their values stay possible final values of that variable.
      const pendingMutations: { name: string; value: bigint; done: boolean; promise: Promise<unknown> }[] = [];
      const overtakable = new Map<string, Set<bigint>>();
      const clientWrote = (name: string, w: ClientWrite) => {
        for (const m of pendingMutations) if (m.name === name && !m.done) overtakable.set(name, (overtakable.get(name) ?? new Set()).add(m.value));
        cLast.set(name, w);
      };
      let nextValue = 1n;
      let step = 0;
      const known = (vf: VirtualVariableFile) => {
        const names = new Set(vf.variables().map((m) => m.name));
        return registered.filter((n) => names.has(n));
      };
      const goOnline = () => {
        proxy.offline = false;
        for (const w of cLast.values()) if (w.earliestApply === Infinity) w.earliestApply = step;
      };
      const settle = async () => {
        goOnline();
        const started = Date.now();
        await until(() => client.state === 'open', 'the client to be open again', 60_000);
        await cvf.flush();
        await Promise.allSettled(pendingMutations.map((m) => m.promise));
        stats.settleMs.push(Date.now() - started);
        for (const w of cLast.values()) w.ackedAt ??= step;
      };

      for (const cmd of cmds) {
        step++;
        stats.commands++;
        trace.push(JSON.stringify(cmd));
        switch (cmd.k) {
          case 'cw': {
            const names = known(cvf);
            const name = names[cmd.v % names.length]!;
            const value = nextValue++;
            cvf.set(name, value);
            stats.clientWrites++;
            assert.equal(cvf.get(name), value, 'read your writes');
            const w: ClientWrite = { value, earliestApply: proxy.offline ? Infinity : step, ackedAt: undefined };
            clientWrote(name, w);
            const flushing = cvf.flush();
            flushing.catch(() => {}); // looked at once the run is over
            if (cmd.flush && !proxy.offline) {
              await flushing;
              w.ackedAt = step;
            } else {
              flushes.push(flushing);
            }
            break;
          }
          case 'cm': {
            const names = known(cvf);
            const name = names[cmd.v % names.length]!;
            const value = nextValue++;
            stats.mutations++;
            if (cmd.wait && !proxy.offline) {
              // Awaited: it is applied before the next command, after every earlier write of ours.
              const h = cvf.handle(name);
              const expectedVersion = h.version();
              try {
                const { version } = await cvf.mutate(name, value, cmd.cas ? { expectedVersion } : {});
                assert.ok(version > expectedVersion, 'a mutation commits a version above the one it saw');
                clientWrote(name, { value, earliestApply: step, ackedAt: step });
              } catch (err) {
                if (!(cmd.cas && (err as CommyError).code === 'CONFLICT')) throw err;
                stats.conflicts++; // someone wrote since the version this client had: nothing written
              }
            } else {
              // Not awaited (a cut may lose its answer; offline, it waits for the connection).
              const promise = cvf.mutate(name, value);
              const m = { name, value, done: false, promise };
              void promise.then(() => (m.done = true), () => (m.done = true));
              clientWrote(name, { value, earliestApply: proxy.offline ? Infinity : step, ackedAt: undefined });
              pendingMutations.push(m);
              flushes.push(promise);
            }
            break;
          }
          case 'ow': {
            const names = known(ovf);
            const name = names[cmd.v % names.length]!;
            const value = nextValue++;
            ovf.set(name, value);
            await ovf.flush();
            stats.otherWrites++;
            oLast.set(name, { value, at: step });
            break;
          }
          case 'lw': {
            const names = known(lvf);
            const name = names[cmd.v % names.length]!;
            const value = nextValue++;
            lvf.set(name, value); // straight into the server's file, versioned there and then
            stats.localWrites++;
            oLast.set(name, { value, at: step });
            break;
          }
          case 'reg': {
            const name = EXTRA_VARS.find((n) => !registered.includes(n));
            if (name === undefined) break;
            await ovf.registerVariable(new VariableMetadata(name, -1, 8, VariableType.U64));
            registered.push(name);
            stats.registrations++;
            break;
          }
          case 'cut': {
            stats.cuts++;
            if (cmd.loseAcks) {
              // What the client sent still reaches the server and is applied; the answers are lost.
              stats.cutsLosingAcks++;
              proxy.blackhole = true;
              await new Promise((resolve) => setTimeout(resolve, 30));
            }
            if (cmd.offline) proxy.offline = true;
            proxy.cut(cmd.rst);
            proxy.blackhole = false;
            break;
          }
          case 'online':
            goOnline();
            break;
          case 'settle':
            await settle();
            break;
          case 'pause':
            await new Promise((resolve) => setTimeout(resolve, cmd.ms));
            break;
          case 'restart': {
            stats.restarts++;
            await server.close();
            server = await Server.start({ ...serverOptions, port });
            // The bystanders reconnect before going on (registerVariable() needs the connection); the client under test is not waited for.
            await until(() => other.state === 'open' && local.state === 'open', 'the other and the local client to reconnect', 60_000);
            break;
          }
        }
        // Monotonic versions: the client never goes back to an older version of a variable.
        for (const meta of cvf.variables()) {
          const version = cvf.handle(meta.name).version();
          const before = seenVersion.get(meta.name) ?? 0n;
          assert.ok(version >= before, `${meta.name} went back from version ${before} to ${version} after ${JSON.stringify(cmd)}`);
          seenVersion.set(meta.name, version);
        }
      }

      // The end: the client open again, everything it wrote acknowledged.
      step++;
      await settle();
      const settled = await Promise.allSettled(flushes);
      const failed = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected').map((s) => (s.reason as CommyError).code ?? String(s.reason));
      assert.deepEqual(failed, [], 'every flush() and mutate() made along the way resolves once the client is back');

      // The server's state, through a fresh client's snapshot.
      const fresh = await Client.initialize(server.url, 'acme', OPS, { mode: 'remote', reconnect: false, onError: () => {} });
      try {
        const fvf = await fresh.getVirtualServiceFile('acme', service);
        const serverNames = fvf.variables().map((m) => m.name);
        assert.deepEqual([...serverNames].sort(), [...registered].sort(), 'the server has every variable registered');
        const serverState = () => Object.fromEntries(serverNames.map((n) => [n, `${String(fvf.get(n))}@${fvf.handle(n).version()}`]));
        const stateOf = (vf: VirtualVariableFile) =>
          Object.fromEntries(serverNames.map((n) => [n, vf.variables().some((m) => m.name === n) ? `${String(vf.get(n))}@${vf.handle(n).version()}` : 'missing']));
        const expected = serverState();
        const deadline = Date.now() + 10_000;
        while (JSON.stringify(stateOf(cvf)) !== JSON.stringify(expected) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
        assert.deepEqual(stateOf(cvf), expected, "the client ends on the server's values and versions");
        // The bystanders converge too.
        await until(() => JSON.stringify(stateOf(ovf)) === JSON.stringify(expected), "the other client to hold the server's state", 20_000);
        await until(() => JSON.stringify(stateOf(lvf)) === JSON.stringify(expected), "the local client to hold the server's state", 20_000);
        // And the server's value of each variable is one the order of events allows.
        for (const name of registered) {
          const may = [...new Set([...allowed(cLast.get(name), oLast.get(name)), ...(overtakable.get(name) ?? [])])];
          if (may.length > 1) stats.ambiguous++;
          else stats.decided++;
          const got = fvf.get<bigint>(name);
          assert.ok(may.includes(got), `${name}: the server has ${got}, the order of events allows only ${may.join(' or ')}`);
        }
      } finally {
        await fresh.close();
      }
    } catch (err) {
      (err as Error).message += `\n  commands: [${trace.join(', ')}]\n  client state ${client.state}; errors ${errors.map((e) => e.code).join(',')}`;
      throw err;
    } finally {
      proxy.offline = false;
      await client.close();
      await ovf.close();
      await lvf.close();
    }
    for (const e of errors) if (e.code !== 'NOT_CONNECTED') unexpected.push(`${e.code}: ${e.message}`);
  }

  const seed = process.env.FC_SEED === undefined ? undefined : Number(process.env.FC_SEED);
  const started = Date.now();
  await fc.assert(
    fc.asyncProperty(fc.array(cmdArb, { minLength: 4, maxLength: 40, size: 'large' }), (cmds) => run(cmds)),
    {
      numRuns: Number(process.env.FC_RUNS ?? 40),
      ...(seed === undefined ? {} : { seed }),
      ...(process.env.FC_PATH === undefined ? {} : { path: process.env.FC_PATH }),
      interruptAfterTimeLimit: 90_000,
      markInterruptAsFailure: true,
      includeErrorInReport: true,
    },
  );
  assert.deepEqual(unexpected, [], 'no error other than the connection losses reached onError');
  const sorted = [...stats.settleMs].sort((x, y) => x - y);
  const line =
    `${stats.runs} runs, ${stats.commands} commands in ${Date.now() - started} ms: ${stats.clientWrites} writes by the client (and ${stats.mutations} mutations, ${stats.conflicts} refused by compare-and-set), ${stats.otherWrites} by the other, ` +
    `${stats.localWrites} local, ${stats.registrations} registrations, ${stats.cuts} cuts (${stats.cutsLosingAcks} losing acknowledgements), ${stats.restarts} server restarts; ` +
    `server's final values decided by the order of events ${stats.decided}, one of several ${stats.ambiguous}; ` +
    `settle (open + flush) median ${sorted[Math.floor(sorted.length / 2)] ?? 0} ms, max ${sorted.at(-1) ?? 0} ms`;
  t.diagnostic(line);
  console.log(`resume-property: ${line}`);
});
