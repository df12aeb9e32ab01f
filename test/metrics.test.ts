import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AuthCredentials, Client, VariableMetadata, VariableType } from '../src/index.js';
import { parseExposition } from '../src/core/metrics-text.js';
import { startServer } from './helpers/server.js';
import { OPS } from './helpers/server-process.js';

test('GET /metrics: Prometheus text, every name commy_…, counting what the clients did', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t, { durability: 'ack' });
  const writer = await Client.initialize(server.url, 'acme', OPS, { mode: 'remote', onError: () => {} });
  t.after(() => writer.close());
  const reader = await Client.initialize(server.url, 'acme', OPS, { mode: 'remote', onError: () => {} });
  t.after(() => reader.close());
  const w = await writer.getVirtualServiceFile('acme', 'measured');
  await w.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  const r = await reader.getVirtualServiceFile('acme', 'measured');
  for (let i = 1; i <= 10; i++) {
    w.set('n', BigInt(i));
    await w.flush();
  }
  while (r.get('n') !== 10n) await new Promise((resolve) => setTimeout(resolve, 10));
  await assert.rejects(Client.initialize(server.url, 'acme', AuthCredentials.apiKey('ops:wrong'), { mode: 'remote', reconnect: false }));

  const res = await fetch(`${server.url.replace(/^ws/, 'http')}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  const text = await res.text();
  const names = text.split('\n').filter((l) => l !== '' && !l.startsWith('#')).map((l) => l.split(/[{ ]/, 1)[0]!);
  assert.ok(names.length > 20, text);
  for (const name of names) assert.match(name, /^commy_/, `${name} is not a commy_ name`);
  const m = parseExposition(text);
  assert.ok(m.get('commy_connections{state="authenticated"}')! >= 2, 'the writer and the reader');
  assert.ok(m.get('commy_messages_received_total{type="ReportVariableChanges"}')! >= 10);
  assert.ok(m.get('commy_received_bytes_total{type="ReportVariableChanges"}')! > 0);
  assert.ok(m.get('commy_messages_sent_total{type="VariableChangesAcknowledged"}')! >= 10);
  assert.ok(m.get('commy_messages_sent_total{type="SyncBatch"}')! >= 1, 'the reader was sent the writes');
  assert.ok(m.get('commy_write_ack_seconds_count')! >= 10);
  assert.ok(m.get('commy_sync_batch_updates_count')! >= 1);
  assert.equal(m.get('commy_auth_failures_total{code="AUTH_FAILED"}'), 1);
  assert.ok(m.get('commy_errors_total{code="AUTH_FAILED"}')! >= 1);
  assert.equal(m.get('commy_services_open'), 1);
  assert.equal(m.get('commy_variables'), 1);
  assert.ok(m.get('commy_mapped_bytes')! > 0);
  assert.doesNotMatch(text, /tenant=/, 'no tenant is named without the metrics token');
  assert.ok(m.get('commy_file_syncs_total')! >= 10, "durability 'ack': a sync per acknowledged write");
  assert.ok(m.get('commy_watcher_wakeups_total')! >= 1);
  assert.ok(m.has('commy_output_buffered_bytes{stat="max"}') && m.has('commy_conflated_updates_total'));
  assert.ok(m.has('commy_process_cpu_user_seconds_total'), 'the process metrics, prefixed too');
});

test('GET /metrics with the metrics token: the per-tenant series too; a wrong token gets the totals only', { timeout: 120_000 }, async (t) => {
  const metricsToken = 'a-metrics-token-for-prometheus';
  const { TEST_TENANTS } = await import('./helpers/server.js');
  const server = await startServer(t, { config: { tenants: TEST_TENANTS, audit: { enabled: false }, metricsToken } });
  const client = await Client.initialize(server.url, 'beta', AuthCredentials.apiKey('ops:beta-secret'), { mode: 'remote', onError: () => {} });
  t.after(() => client.close());
  await client.getVirtualServiceFile('beta', 'secret-project');
  const scrape = async (authorization?: string) =>
    parseExposition(await (await fetch(`${server.url.replace(/^ws/, 'http')}/metrics`, authorization === undefined ? {} : { headers: { authorization } })).text());
  const full = await scrape(`Bearer ${metricsToken}`);
  assert.equal(full.get('commy_tenant_services_open{tenant="beta"}'), 1);
  assert.equal(full.get('commy_services_open'), 1);
  for (const wrong of [undefined, 'Bearer not-the-token', metricsToken, `Basic ${metricsToken}`]) {
    const partial = await scrape(wrong);
    assert.equal(partial.get('commy_services_open'), 1);
    assert.ok(![...partial.keys()].some((k) => k.includes('tenant=')), `tenant names for ${String(wrong)}`);
  }
});
