import { test } from 'node:test';
import type { Socket } from 'node:net';
import assert from 'node:assert/strict';
import { encodeFrame } from '../src/protocol/frame-codec.js';
import { TurnBudget } from '../src/server/turn-budget.js';
import { RawClient } from './helpers/raw-client.js';
import { startServer } from './helpers/server.js';

function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

test('turn budget: within the slice work goes on at once; past it, it waits for the next turn, after what the loop had queued', async () => {
  const budget = new TurnBudget(2);
  let macrotaskRan = false;
  setImmediate(() => (macrotaskRan = true)); // queued on the loop before this turn's handling: it goes first
  assert.equal(budget.take(), undefined, 'the first of a turn starts its slice');
  assert.equal(budget.take(), undefined);
  busy(5);
  const wait = budget.take();
  assert.ok(wait instanceof Promise, 'past the slice');
  assert.equal(budget.take(), wait, 'every late comer waits for the same next turn');
  const first = await Promise.race([wait.then(() => 'deferred'), Promise.resolve().then(() => 'microtask')]);
  assert.equal(first, 'microtask', 'the deferred work does not run in this turn');
  await wait;
  assert.ok(macrotaskRan, 'the deferred work ran after the loop turned');
  assert.equal(budget.take(), undefined, 'a new turn, a new slice');
});

test("a burst of 20,000 frames from one connection does not hold up another connection's request", { timeout: 120_000 }, async (t) => {
  const server = await startServer(t, { limits: { rateLimit: { messagesPerSecond: 1_000_000, burst: 1_000_000 } } });
  const flood = await RawClient.connect(server.url);
  const victim = await RawClient.connect(server.url);
  t.after(() => flood.close());
  t.after(() => victim.close());
  await flood.auth('acme', 'ops:s3cret');
  await victim.auth('acme', 'ops:s3cret');
  // Each answered with an error (no such variable): cheap frames, but 20,000 of them, sent at once.
  const N = 20_000;
  let answered = 0;
  let answeredBeforeVictim = -1;
  const allAnswered = new Promise<void>((resolve) =>
    flood.ws.on('message', () => {
      if (++answered === N) resolve();
    }),
  );
  // All in one write (ws's socket corked around the sends), so the server reads them in one go.
  const socket = (flood.ws as unknown as { _socket: Socket })._socket;
  socket.cork();
  for (let i = 1; i <= N; i++) flood.ws.send(encodeFrame('ReadVariable', i, { tenant: 'acme', service: 'nothing-here', name: 'x' }));
  socket.uncork();
  await new Promise((resolve) => setTimeout(resolve, 20)); // the burst is in the server's socket buffer by now
  const reply = await victim.request('ReadVariable', { tenant: 'acme', service: 'nothing-here', name: 'y' });
  answeredBeforeVictim = answered;
  assert.equal(reply.type, 'Error');
  await allAnswered;
  // Served in turns shared by every connection, the victim is answered after a few slices of the flood (tens to
  // hundreds of its frames here); without them, after every frame of the chunks read at once (3,600 here).
  assert.ok(answeredBeforeVictim < N / 10, `the victim was answered after ${answeredBeforeVictim} of the flood's ${N} frames`);
});
