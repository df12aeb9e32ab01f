import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { VirtualVariableFile, VariableMetadata, VariableType } from '../src/index.js';
import { startChild } from './helpers/child.js';
import { tempDir } from './helpers/temp.js';

async function serviceWith(t: Parameters<typeof tempDir>[0], vars: [string, number, number][], options = {}): Promise<[string, VirtualVariableFile]> {
  const path = join(tempDir(t), 'shared.mem');
  const vf = await VirtualVariableFile.open(path, { create: true, ...options });
  t.after(() => vf.close());
  for (const [name, size, type] of vars) await vf.registerVariable(new VariableMetadata(name, -1, size, type as never));
  return [path, vf];
}

async function tornTest(t: Parameters<typeof tempDir>[0], size: number, writes: number): Promise<void> {
  const [path] = await serviceWith(t, [['rec', size, VariableType.Bytes], ['stop', 1, VariableType.Bool]]);
  const writer = startChild('torn-writer', [path, String(writes)], t);
  const readers = [startChild('torn-reader', [path], t), startChild('torn-reader', [path], t)];
  await Promise.all([writer.next('ready'), ...readers.map((r) => r.next('ready'))]);
  writer.send({ type: 'go' });
  const done = await writer.next<{ count: number }>('done', 240_000);
  assert.equal(done.count, writes);
  for (const reader of readers) {
    const r = await reader.next<{ reads: number; torn: number; changes: number; last: number }>('result', 240_000);
    assert.equal(r.torn, 0, `torn reads: ${JSON.stringify(r)}`);
    assert.equal(r.last, writes, 'the reader ends on the final value');
    assert.ok(r.changes > 10, `readers overlapped the writer: ${JSON.stringify(r)}`);
  }
}

test('1,000,000 checksummed 32-byte writes, two reader processes: 0 torn reads', { timeout: 300_000 }, async (t) => {
  await tornTest(t, 32, 1_000_000);
});

// 32-byte copies are nearly atomic on x86, so they rarely tear even unprotected; 4 KiB copies tear
// readily without the seqlock, which is what makes this test able to fail.
test('100,000 checksummed 4 KiB writes, two reader processes: 0 torn reads', { timeout: 300_000 }, async (t) => {
  await tornTest(t, 4096, 100_000);
});

test('two writer processes each increment a counter 100,000 times: exact total', { timeout: 300_000 }, async (t) => {
  const [path, vf] = await serviceWith(t, [['counter', 8, VariableType.U64]]);
  const kids = [startChild('counter', [path, '100000'], t), startChild('counter', [path, '100000'], t)];
  await Promise.all(kids.map((k) => k.next('ready')));
  for (const k of kids) k.send({ type: 'go' });
  await Promise.all(kids.map((k) => k.next('done', 240_000)));
  assert.equal(vf.get('counter'), 200_000n);
});

test('growth: 10,000 variables registered while another process reads', { timeout: 300_000 }, async (t) => {
  const [path, vf] = await serviceWith(t, [['rec', 32, VariableType.Bytes]]);
  const { makeRecord } = await import('./fixtures/checksum.js');
  vf.set('rec', makeRecord(7, new Uint8Array(32)));
  const sizeBefore = vf.bytes().length;
  const grower = startChild('grower', [path, '10000'], t);
  const reader = startChild('growth-reader', [path, '10000'], t);
  await Promise.all([grower.next('ready'), reader.next('ready')]);
  grower.send({ type: 'go' });
  await grower.next('done', 240_000);
  const r = await reader.next<{ seen: number; final: number; bad: number; sweeps: number }>('result', 240_000);
  assert.equal(r.bad, 0, JSON.stringify(r));
  assert.equal(r.seen, 10_000);
  assert.equal(r.final, 10_000);
  assert.ok(r.sweeps > 1, 'the reader read while the file grew');
  assert.equal(vf.variables().length, 10_001);
  assert.equal(vf.get('v9999'), 9999n * 3n + 1n);
  assert.ok(vf.bytes().length > sizeBefore, 'this process sees the grown data region without remapping');
});

test('kill -9 of a writer holding the lock mid-write: readers and the next writer recover', { timeout: 120_000 }, async (t) => {
  const [path, vf] = await serviceWith(t, [['blob', 1024, VariableType.Bytes], ['other', 8, VariableType.U64]]);
  vf.set('blob', new Uint8Array(1024).fill(1));
  const holder = startChild('lock-holder', [path, 'blob'], t);
  await holder.next('locked');
  holder.kill('SIGKILL');
  await holder.exited;
  vf.set('other', 5n); // other variables are never blocked
  const started = performance.now();
  const value = vf.get<Uint8Array>('blob'); // waits out the stale lock (documented: staleMs, 500 ms by default)
  const waited = performance.now() - started;
  assert.ok(waited < 10_000, `recovered in ${waited} ms`);
  assert.equal(value[0], 0xee, 'the half-written value is what the dead writer left');
  assert.equal(vf.isTorn('blob'), true, 'and it is flagged as torn');
  vf.set('blob', new Uint8Array(1024).fill(2));
  assert.equal(vf.isTorn('blob'), false, 'a complete write clears the flag');
  assert.deepEqual(vf.get('blob'), new Uint8Array(1024).fill(2));
});

test('kill -9 of a writer at a random point: the next writer never hangs', { timeout: 120_000 }, async (t) => {
  const [path, vf] = await serviceWith(t, [['blob', 65536, VariableType.Bytes]]);
  for (let round = 0; round < 3; round++) {
    const writer = startChild('busy-writer', [path, 'blob'], t);
    await writer.next('started');
    await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
    writer.kill('SIGKILL');
    await writer.exited;
    const value = vf.get<Uint8Array>('blob');
    const uniform = value.every((b) => b === value[0]);
    assert.ok(uniform || vf.isTorn('blob'), 'a value is either whole or flagged torn');
    vf.set('blob', new Uint8Array(65536).fill(0xab));
    assert.equal(vf.isTorn('blob'), false);
    assert.ok((vf.get('blob') as Uint8Array).every((b) => b === 0xab));
  }
});

test('changes made in another process arrive as events; ping-pong both ways', { timeout: 120_000 }, async (t) => {
  const [path, vf] = await serviceWith(t, [['ping', 8, VariableType.I64], ['pong', 8, VariableType.I64], ['quiet', 8, VariableType.I64]]);
  const echo = startChild('change-echo', [path, 'report'], t);
  await echo.next('ready');
  const events = vf.changes();
  for (let i = 1n; i <= 50n; i++) {
    vf.set('ping', i);
    for (;;) {
      const ev = (await events.next()).value!;
      assert.equal(ev.filePath, vf.filePath);
      assert.equal(ev.serviceId, vf.serviceId);
      if (ev.changedVariables.includes('pong') && vf.get('pong') === i) break;
    }
  }
  const seen = await echo.next<{ changed: string[] }>('event');
  assert.deepEqual(seen.changed, ['ping']);
  echo.send({ type: 'set', name: 'quiet', value: '77' });
  for (;;) {
    const ev = (await events.next()).value!;
    if (ev.changedVariables.includes('quiet')) {
      assert.equal(vf.get('quiet'), 77n);
      assert.ok(ev.version <= vf.version);
      const q = vf.variables().find((v) => v.name === 'quiet')!;
      assert.deepEqual(ev.byteRanges.find((r: [number, number]) => r[0] === q.offset), [q.offset, q.offset + 8]);
      break;
    }
  }
  vf.set('ping', -1n);
  await echo.exited;
  await events.return!();
});

test('a variable registered in another process shows up as a change', { timeout: 120_000 }, async (t) => {
  const [path, vf] = await serviceWith(t, [['rec', 32, VariableType.Bytes]]);
  const events = vf.changes();
  const grower = startChild('grower', [path, '3'], t);
  await grower.next('ready');
  grower.send({ type: 'go' });
  const names = new Set<string>();
  while (!(names.has('v0') && names.has('v1') && names.has('v2'))) {
    for (const n of (await events.next()).value!.changedVariables) names.add(n);
  }
  await grower.next('done'); // the event for v2's registration may come before its first value
  assert.equal(vf.get('v2'), 7n);
  await events.return!();
});

test('a directory corrupted by another writer: the watching process warns and lives on', { timeout: 60_000 }, async (t) => {
  const [path, vf] = await serviceWith(t, [['x', 8, VariableType.U64]]);
  const other = await VirtualVariableFile.open(path);
  t.after(() => other.close());
  const events = vf.changes();
  const warned = new Promise<Error>((resolve) => process.once('warning', resolve));
  const { openSync, writeSync, closeSync } = await import('node:fs');
  const { H } = await import('../src/local/file-format.js');
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.from([0xff, 0xff, 0xff, 0x7f]), 0, 4, H.VAR_COUNT); // varCount far past the directory
  closeSync(fd);
  other.set('x', 1n); // wakes vf's watcher, whose scan now finds the corrupt directory
  const warning = await warned;
  assert.equal((warning as Error & { code?: string }).code, 'INVALID_FILE', 'the warning is the CommyError itself');
  assert.match(warning.message, /corrupt/);
  assert.throws(() => vf.variables(), { code: 'INVALID_FILE' }, 'the corruption is reported to callers too');
  await events.return!();
});
