import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AuthCredentials, Client, VariableMetadata, VariableType } from '../src/index.js';
import { startChild } from './helpers/child.js';
import { tempDir } from './helpers/temp.js';

/** What a request that times out at the client leaves behind at a server that was only slow (SIGSTOPped). */

test('a Subscription that timed out at the client does not stay open at the server', async (t) => {
  const server = startChild('server-process', [tempDir(t)], t);
  const { url } = await server.next<{ url: string }>('ready');
  t.after(() => server.kill('SIGCONT'));
  const key = AuthCredentials.apiKey('ops:s3cret');
  const writer = await Client.initialize(url, 'acme', key, { mode: 'remote' });
  t.after(() => writer.close());
  await (await writer.getVirtualServiceFile('acme', 'orphan')).registerVariable(new VariableMetadata('x', -1, 8, VariableType.F64));
  const slow = await Client.initialize(url, 'acme', key, { mode: 'remote', requestTimeoutMs: 500, onError: () => {} });
  t.after(() => slow.close());
  server.kill('SIGSTOP');
  await assert.rejects(slow.getVirtualServiceFile('acme', 'orphan'), { code: 'TIMEOUT' });
  server.kill('SIGCONT');
  // The late Snapshot comes first; the client answers it with Unsubscribe; the server handles a connection's
  // requests in order, so once the last of these replies is in, that Unsubscribe has been handled.
  await slow.getVirtualServiceFile('acme', 'other');
  await slow.getVirtualServiceFile('acme', 'third');
  server.send({ type: 'stats' });
  const { subscriptions } = await server.next<{ subscriptions: number }>('stats');
  // writer: orphan; slow: other and third. Not the timed-out one.
  assert.equal(subscriptions, 3);
});
