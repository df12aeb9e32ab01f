import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import { CommyError, ErrorCode } from '../src/core/errors.js';
import { encodeFrame } from '../src/protocol/frame-codec.js';
import { MessageType, type Message } from '../src/protocol/messages.js';
import { Connection, MAX_RUNNING_REQUESTS, type MessageHandler } from '../src/server/connection.js';
import type { Lane } from '../src/server/handlers/index.js';
import { DEFAULT_LIMITS } from '../src/server/limits.js';
import { TurnBudget } from '../src/server/turn-budget.js';
import { RawClient, errorCode } from './helpers/raw-client.js';

/**
 * The connection's two lanes, over a real WebSocket, with a handler made for the test (the session's
 * handlers have no cancellable request yet): ReadVariable stands for an ordered request that waits on a
 * gate, Query for a cancellable one that runs until aborted, QueryCancel for an immediate cancel.
 */
class LaneHandler implements MessageHandler {
  readonly authenticated = true;
  conn!: Connection;
  readonly aborted: unknown[] = [];
  private openGate!: () => void;
  readonly gate = new Promise<void>((resolve) => (this.openGate = resolve));
  closedCalls = 0;
  cancels = 0;
  /** Padding in each cancel's reply (to fill a client's socket that does not read). */
  cancelReplyBytes = 0;

  laneOf(type: number): Lane {
    if (type === MessageType.Query) return 'cancellable';
    if (type === MessageType.QueryCancel) return 'immediate';
    return 'ordered';
  }

  async handle(m: Message, signal: AbortSignal): Promise<Uint8Array | undefined> {
    if (m.type === 'ReadVariable') {
      await this.gate;
      return encodeFrame('VariableValue', m.id, { name: m.body.name, value: new Uint8Array(0), version: 0 });
    }
    if (m.type === 'QueryCancel') {
      this.cancels++;
      const cancelled = this.conn.cancel(Number((m.body as { id: number }).id));
      // The answer (any reply type will do for the lanes): whether a running request was found.
      return encodeFrame('VariableValue', m.id, { name: cancelled ? 'cancelled' : 'none', value: new Uint8Array(this.cancelReplyBytes), version: 0 });
    }
    if (m.type === 'Query') {
      await new Promise<void>((_resolve, reject) =>
        signal.addEventListener('abort', () => {
          this.aborted.push(signal.reason);
          reject(signal.reason);
        }),
      );
    }
    return undefined;
  }

  release(): void {
    this.openGate();
  }

  closed(): void {
    this.closedCalls++;
  }
}

async function laneServer(t: { after(fn: () => void | Promise<void>): void }, limits = DEFAULT_LIMITS): Promise<{ handler: LaneHandler; client: RawClient; server: () => WebSocket }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => wss.once('listening', resolve));
  const handler = new LaneHandler();
  let socket: WebSocket | undefined;
  wss.on('connection', (ws) => {
    socket = ws;
    handler.conn = new Connection(ws, { limits, redact: '/nowhere', onError: (err) => assert.fail(String(err)), turns: new TurnBudget(2) });
    handler.conn.attach(handler);
  });
  const client = await RawClient.connect(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
  t.after(() => new Promise<void>((resolve) => {
    client.close();
    wss.close(() => resolve());
  }));
  return { handler, client, server: () => socket! };
}

const read = { tenant: 'a', service: 's', name: 'x' };

test('an immediate cancel overtakes an ordered request that waits', async (t) => {
  const { handler, client } = await laneServer(t);
  const order: string[] = [];
  const slow = client.request('ReadVariable', read).then((m) => order.push(m.type));
  const cancel = await client.request('QueryCancel', { id: 99 });
  order.push(`${cancel.type}:cancel`);
  assert.equal(cancel.type === 'VariableValue' && cancel.body.name, 'none');
  handler.release();
  await slow;
  assert.deepEqual(order, ['VariableValue:cancel', 'VariableValue']);
});

test('a cancellable request runs beside the ordered lane and ends with ABORTED when cancelled', async (t) => {
  const { handler, client } = await laneServer(t);
  handler.release();
  const query = client.request('Query', { tenant: 'a' });
  // The ordered request after it is answered while the query still runs.
  assert.equal((await client.request('ReadVariable', read)).type, 'VariableValue');
  const queryId = 1;
  const found = await client.request('QueryCancel', { id: queryId });
  assert.equal(found.type === 'VariableValue' && found.body.name, 'cancelled');
  const answer = await query;
  assert.equal(errorCode(answer), ErrorCode.ABORTED);
  assert.ok(handler.aborted[0] instanceof CommyError && handler.aborted[0].code === ErrorCode.ABORTED);
  // Finished: a second cancel finds nothing.
  const gone = await client.request('QueryCancel', { id: queryId });
  assert.equal(gone.type === 'VariableValue' && gone.body.name, 'none');
});

test('cancellable requests are bounded per connection, and closing the socket aborts the running ones', async (t) => {
  const { handler, client } = await laneServer(t);
  handler.release();
  const running = Array.from({ length: MAX_RUNNING_REQUESTS }, () => client.request('Query', { tenant: 'a' }).catch(() => undefined));
  const over = await client.request('Query', { tenant: 'a' });
  assert.equal(errorCode(over), ErrorCode.RATE_LIMITED);
  assert.equal((await client.request('ReadVariable', read)).type, 'VariableValue'); // the ordered lane still moves
  client.close();
  await Promise.all(running);
  const deadline = Date.now() + 30_000;
  while (handler.closedCalls === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(handler.closedCalls, 1);
  assert.equal(handler.aborted.length, MAX_RUNNING_REQUESTS);
  assert.ok(handler.aborted.every((r) => r instanceof CommyError && r.code === ErrorCode.CLOSED));
});

test('a flood of immediate requests from a client that does not read stays within the output budget, and none is lost', async (t) => {
  const budget = 256 * 1024;
  const { handler, client, server } = await laneServer(t, { ...DEFAULT_LIMITS, maxBufferedBytes: budget });
  handler.cancelReplyBytes = 16 * 1024;
  const count = 2000; // 32 MB of replies: far past what the loopback socket buffers hold
  client.ws.pause();
  const replies = Array.from({ length: count }, () => client.request('QueryCancel', { id: 1 }));
  let maxBuffered = 0;
  let last = -1;
  let stableSince = Date.now();
  const deadline = Date.now() + 60_000;
  // Until the server stops taking frames (it paused the socket) for a while.
  while (Date.now() - stableSince < 1000 && Date.now() < deadline) {
    maxBuffered = Math.max(maxBuffered, server().bufferedAmount);
    if (handler.cancels !== last) {
      last = handler.cancels;
      stableSince = Date.now();
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.ok(handler.cancels < count, `the server kept reading: ${handler.cancels} of ${count} handled`);
  assert.ok(maxBuffered <= budget + 4 * handler.cancelReplyBytes, `output grew to ${maxBuffered} bytes past a ${budget}-byte budget`);
  client.ws.resume();
  const answered = await Promise.all(replies);
  assert.equal(answered.filter((m) => m.type === 'VariableValue').length, count);
});
