import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { WebSocketServer } from 'ws';
import { CommyError, ErrorCode } from '../src/core/errors.js';
import { encodeFrame } from '../src/protocol/frame-codec.js';
import { MessageType, type Message } from '../src/protocol/messages.js';
import { Connection, MAX_RUNNING_REQUESTS, type MessageHandler } from '../src/server/connection.js';
import type { Lane } from '../src/server/handlers/index.js';
import { DEFAULT_LIMITS } from '../src/server/limits.js';
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
      const cancelled = this.conn.cancel(Number((m.body as { id: number }).id));
      return encodeFrame('QueryResponse', m.id, { cancelled });
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

async function laneServer(t: { after(fn: () => void | Promise<void>): void }): Promise<{ handler: LaneHandler; client: RawClient }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => wss.once('listening', resolve));
  const handler = new LaneHandler();
  wss.on('connection', (ws) => {
    handler.conn = new Connection(ws, { limits: DEFAULT_LIMITS, redact: '/nowhere', onError: (err) => assert.fail(String(err)) });
    handler.conn.attach(handler);
  });
  const client = await RawClient.connect(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
  t.after(() => new Promise<void>((resolve) => {
    client.close();
    wss.close(() => resolve());
  }));
  return { handler, client };
}

const read = { tenant: 'a', service: 's', name: 'x' };

test('an immediate cancel overtakes an ordered request that waits', async (t) => {
  const { handler, client } = await laneServer(t);
  const order: string[] = [];
  const slow = client.request('ReadVariable', read).then((m) => order.push(m.type));
  const cancel = await client.request('QueryCancel', { id: 99 });
  order.push(cancel.type);
  assert.deepEqual(cancel.body, { cancelled: false });
  handler.release();
  await slow;
  assert.deepEqual(order, ['QueryResponse', 'VariableValue']);
});

test('a cancellable request runs beside the ordered lane and ends with ABORTED when cancelled', async (t) => {
  const { handler, client } = await laneServer(t);
  handler.release();
  const query = client.request('Query', {});
  // The ordered request after it is answered while the query still runs.
  assert.equal((await client.request('ReadVariable', read)).type, 'VariableValue');
  const queryId = 1;
  assert.deepEqual((await client.request('QueryCancel', { id: queryId })).body, { cancelled: true });
  const answer = await query;
  assert.equal(errorCode(answer), ErrorCode.ABORTED);
  assert.ok(handler.aborted[0] instanceof CommyError && handler.aborted[0].code === ErrorCode.ABORTED);
  // Finished: a second cancel finds nothing.
  assert.deepEqual((await client.request('QueryCancel', { id: queryId })).body, { cancelled: false });
});

test('cancellable requests are bounded per connection, and closing the socket aborts the running ones', async (t) => {
  const { handler, client } = await laneServer(t);
  handler.release();
  const running = Array.from({ length: MAX_RUNNING_REQUESTS }, () => client.request('Query', {}).catch(() => undefined));
  const over = await client.request('Query', {});
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
