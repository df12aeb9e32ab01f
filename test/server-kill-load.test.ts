import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VariableMetadata, VariableType } from '../src/index.js';
import { startChild, type Child } from './helpers/child.js';
import { reconnectingClient, serverIn, until } from './helpers/server-process.js';
import { tempDir } from './helpers/temp.js';

/**
 * A server killed (-9) and restarted, twice, on the same port and data directory while a local client (the
 * server's file mapped in another process) and two remote clients (two more processes) write their own
 * variables as fast as they can, and a remote subscriber (a fifth process) watches. Nobody is told about the
 * restarts: every client must reconnect by itself, and once the writers stop, every client (each writer and the
 * subscriber) must read the last value each writer wrote, with the same version as the server. The figures
 * (writes made, reconnection and convergence times) are printed; only behaviour is asserted.
 */

interface StateMsg {
  type: 'state';
  state: string;
  at: number;
}

interface LoadChild {
  name: string;
  child: Child;
  role: 'writer' | 'subscriber';
  vars: string[];
  states: StateMsg[];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('kill -9 and restart the server under write load from local AND remote clients at once: every client reconnects by itself and ends on the exact final values', { timeout: 180_000 }, async (t) => {
  const dataDir = tempDir(t);
  let server = await serverIn(t, dataDir);
  const port = new URL(server.url).port;
  const url = server.url;

  const owners = { local: ['L0', 'L1', 'L2', 'L3'], remoteA: ['A0', 'A1', 'A2', 'A3'], remoteB: ['B0', 'B1', 'B2', 'B3'] };
  const allVars = Object.values(owners).flat();
  {
    // The layout, registered once before the load starts (registration needs the server: NOT_CONNECTED while it is down).
    const setup = await reconnectingClient(t, url);
    const vf = await setup.getVirtualServiceFile('acme', 'load');
    for (const name of allVars) await vf.registerVariable(new VariableMetadata(name, -1, 8, VariableType.U64));
    await setup.close();
  }

  const specs: { name: string; mode: 'local' | 'remote'; role: 'writer' | 'subscriber'; vars: string[]; style?: 'await' | 'nowait' }[] = [
    { name: 'local', mode: 'local', role: 'writer', vars: owners.local, style: 'nowait' },
    { name: 'remoteA', mode: 'remote', role: 'writer', vars: owners.remoteA, style: 'await' },
    { name: 'remoteB', mode: 'remote', role: 'writer', vars: owners.remoteB, style: 'nowait' },
    { name: 'subscriber', mode: 'remote', role: 'subscriber', vars: [] },
  ];
  const clients: LoadChild[] = [];
  for (const spec of specs) {
    const child = startChild('load-client', [url, spec.mode, 'load', spec.role, ...spec.vars], t);
    const states: StateMsg[] = [];
    child.proc.on('message', (m: { type?: string }) => {
      if (m.type === 'state') states.push(m as StateMsg);
    });
    const ready = await child.next<{ mode: string }>('ready');
    assert.equal(ready.mode, spec.mode, `${spec.name} maps the file (local) or syncs over the WebSocket (remote)`);
    clients.push({ name: spec.name, child, role: spec.role, vars: spec.vars, states });
  }
  const writers = clients.filter((c) => c.role === 'writer');
  /** Writes made so far by each writer, and the round each has reached (the value its variables have at least). */
  const rounds: Record<string, string> = {};
  const counts = async (): Promise<Record<string, number>> => {
    const out: Record<string, number> = {};
    for (const w of writers) {
      w.child.send({ type: 'count' });
      const reply = await w.child.next<{ writes: number; round: string }>('count');
      out[w.name] = reply.writes;
      rounds[w.name] = reply.round;
    }
    return out;
  };
  for (const spec of specs) {
    const c = clients.find((x) => x.name === spec.name)!;
    if (c.role === 'writer') c.child.send({ type: 'start', style: spec.style, intervalMs: 2 });
  }

  await sleep(1500); // load with the server up
  const figures: string[] = [];
  for (const cycle of [1, 2]) {
    const beforeKill = await counts();
    server.child.kill('SIGKILL');
    await server.child.exited;
    const killedAt = Date.now();
    // Nobody is told: each client notices the loss by itself.
    await until(() => clients.every((c) => c.states.some((s) => s.state === 'reconnecting' && s.at >= killedAt - 50)), 'every client to notice the loss', 60_000);
    await sleep(800); // the writers go on with the server down
    const whileDown = await counts();
    assert.ok(whileDown.local! > beforeKill.local!, 'the local writer keeps writing into its mapping while the server is down');
    assert.ok(whileDown.remoteB! > beforeKill.remoteB!, 'a remote writer keeps writing into its buffer while reconnecting');

    // What was written while the server was down (at least these values): every client must catch up with it.
    const downValues: Record<string, string> = Object.assign({}, ...writers.map((w) => Object.fromEntries(w.vars.map((name) => [name, rounds[w.name]!]))));

    server = await serverIn(t, dataDir, port);
    assert.equal(server.url, url, 'restarted where the clients look for it');
    const restartedAt = Date.now();
    for (const c of clients) c.child.send({ type: 'atLeast', values: downValues });
    await until(() => clients.every((c) => c.states.some((s) => s.state === 'open' && s.at >= restartedAt - 50)), 'every client to reconnect by itself', 60_000);
    const reconnectMs = clients.map((c) => `${c.name} ${c.states.find((s) => s.state === 'open' && s.at >= restartedAt - 50)!.at - restartedAt} ms`);
    const caughtUpMs: string[] = [];
    for (const c of clients) caughtUpMs.push(`${c.name} ${(await c.child.next<{ at: number }>('caught-up', 90_000)).at - restartedAt} ms`);
    await sleep(1500); // the writers go on against the new server
    const afterRestart = await counts();
    for (const w of writers) assert.ok(afterRestart[w.name]! > whileDown[w.name]!, `${w.name} writes again after the restart`);
    figures.push(
      `cycle ${cycle}: writes before the kill ${JSON.stringify(beforeKill)}, while down ${JSON.stringify(whileDown)}, 1.5 s after the restart ${JSON.stringify(afterRestart)}; ` +
        `after the restart: reconnected ${reconnectMs.join(', ')}; caught up with every write made while the server was down ${caughtUpMs.join(', ')}`,
    );
  }

  // Stop the writers: each flushes until acknowledged and reports the last value it wrote to each variable.
  const stopped: Record<string, { writes: number; finals: Record<string, string>; failedFlushes: number }> = {};
  for (const w of writers) w.child.send({ type: 'stop' });
  for (const w of writers) stopped[w.name] = await w.child.next('stopped');
  const expected: Record<string, string> = Object.assign({}, ...writers.map((w) => stopped[w.name]!.finals));
  assert.deepEqual(Object.keys(expected).sort(), [...allVars].sort());
  const stoppedAt = Date.now();

  // Every client, each writer and the subscriber, ends on exactly those values.
  for (const c of clients) c.child.send({ type: 'expect', values: expected });
  const converged: Record<string, { at: number; state: string; versions: Record<string, string> }> = {};
  for (const c of clients) converged[c.name] = await c.child.next('converged', 120_000);
  for (const c of clients) assert.equal(converged[c.name]!.state, 'open', `${c.name} is open`);

  // The server has them too (a fresh client's snapshot), and every client has each value with the server's version.
  const reader = await reconnectingClient(t, url);
  const rv = await reader.getVirtualServiceFile('acme', 'load');
  const serverValues = Object.fromEntries(allVars.map((name) => [name, String(rv.get(name))]));
  assert.deepEqual(serverValues, expected, "the server's values are the writers' last writes");
  const serverVersions = Object.fromEntries(allVars.map((name) => [name, String(rv.handle(name).version())]));
  for (const c of clients) assert.deepEqual(converged[c.name]!.versions, serverVersions, `${c.name} has the server's version of every variable`);

  const totalWrites = writers.reduce((n, w) => n + stopped[w.name]!.writes, 0);
  figures.push(
    `writes: ${writers.map((w) => `${w.name} ${stopped[w.name]!.writes} (${stopped[w.name]!.failedFlushes} flushes failed and were retried)`).join(', ')}; total ${totalWrites}`,
    `final values: ${JSON.stringify(expected)}`,
    `converged after the writers stopped: ${clients.map((c) => `${c.name} ${Math.max(0, converged[c.name]!.at - stoppedAt)} ms`).join(', ')}`,
  );
  for (const line of figures) {
    t.diagnostic(line);
    console.log(`server-kill-load: ${line}`);
  }

  for (const c of clients) c.child.send({ type: 'quit' });
  await reader.close();
  await Promise.all(clients.map((c) => c.child.exited));
  server.child.send({ type: 'quit' });
  await server.child.exited;
});
