import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { MessageType, type Message } from '../src/protocol/messages.js';
import { decodeFrame } from '../src/protocol/frame-codec.js';
import { VariableType } from '../src/index.js';
import { RawClient, errorCode } from './helpers/raw-client.js';
import { startServer } from './helpers/server.js';

/**
 * Random and half-valid frames from an authenticated client: every one gets an answer that is an error with
 * a code (or a proper reply), never an internal error; the server stays up and other clients are unaffected.
 */
test('fuzz: random frames never break the server or other clients', { timeout: 180_000 }, async (t) => {
  const internal: unknown[] = [];
  const server = await startServer(t, { onError: (err) => internal.push(err), limits: { rateLimit: { messagesPerSecond: 1e6, burst: 1e6 } } });
  const victim = await RawClient.connect(server.url);
  t.after(() => victim.close());
  await victim.auth('acme', 'ops:s3cret');
  const sid = (await victim.request('Subscription', { tenant: 'acme', service: 'fuzz', create: true })).body as { sid: number };
  await victim.request('RegisterVariable', { sid: sid.sid, name: 'v', offset: -1, size: 8, typeId: VariableType.U64 });

  const attacker = await RawClient.connect(server.url);
  t.after(() => attacker.close());
  await attacker.auth('acme', 'ops:s3cret');
  const packr = new Packr({ useRecords: false });
  const types = Object.values(MessageType);
  const text = fc.oneof(fc.constantFrom('acme', 'fuzz', 'v', 'beta', '../x', '', 'a/b', 'x'.repeat(70)), fc.string({ maxLength: 20 }));
  const value = fc.oneof(text, fc.integer({ min: -5, max: 1 << 20 }), fc.uint8Array({ maxLength: 70 }), fc.boolean(), fc.constant(null), fc.array(fc.anything(), { maxLength: 3 }));
  const body = fc.dictionary(
    fc.constantFrom('tenant', 'service', 'name', 'sid', 'offset', 'size', 'typeId', 'value', 'changes', 'create', 'variables', 'method', 'credential', 'protocol', 'notify'),
    value,
    { maxKeys: 8 },
  );
  const frames = fc.sample(
    fc.oneof(
      fc.tuple(fc.constantFrom(...types), body).map(([type, b]) => packr.pack([type, 7, b])),
      fc.tuple(fc.constantFrom(MessageType.ReportVariableChanges), fc.array(fc.tuple(fc.integer({ min: -1, max: 5 }), fc.uint8Array({ maxLength: 12 })), { maxLength: 4 })).map(([type, changes]) =>
        packr.pack([type, 7, { sid: sid.sid, changes }]),
      ),
      fc.uint8Array({ maxLength: 64 }),
    ),
    { numRuns: 3000, seed: 42 },
  );
  // Every frame gets exactly one answer: the reply to request 7, or an Error with id 0 when not even the
  // request id could be read. Pushes (SyncBatch, VariablesUpdated) for subscriptions the fuzz made are skipped.
  const inbox: Message[] = [];
  let wake: (() => void) | undefined;
  attacker.ws.on('message', (data: Buffer) => {
    inbox.push(decodeFrame(data, 1 << 26));
    wake?.();
  });
  const answer = async (hex: string): Promise<Message> => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const i = inbox.findIndex((m) => m.id === 7 || (m.id === 0 && m.type === 'Error'));
      if (i >= 0) return inbox.splice(0, i + 1).pop()!;
      assert.ok(Date.now() < deadline, `no answer to frame ${hex}`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 100);
      });
    }
  };
  for (const frame of frames) {
    const hex = Buffer.from(frame).toString('hex');
    attacker.ws.send(frame);
    const reply = await answer(hex);
    assert.notEqual(errorCode(reply), 'INTERNAL_ERROR', `frame ${hex} → INTERNAL_ERROR`);
  }
  assert.deepEqual(internal, [], 'no internal error reached the server');
  // The victim's service still works end to end.
  const value8 = new Uint8Array(8).fill(3);
  assert.equal((await victim.request('WriteVariable', { tenant: 'acme', service: 'fuzz', name: 'v', value: value8 })).type, 'VariableChangesAcknowledged');
  const read = await victim.request('ReadVariable', { tenant: 'acme', service: 'fuzz', name: 'v' });
  assert.deepEqual([...(read.body as { value: Uint8Array }).value], [...value8]);
});
