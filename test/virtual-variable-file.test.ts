import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { statSync } from 'node:fs';
import { VirtualVariableFile, VariableMetadata, VariableType, CommyError } from '../src/index.js';
import { tempDir } from './helpers/temp.js';

async function fresh(t: Parameters<typeof tempDir>[0], options = {}): Promise<VirtualVariableFile> {
  const vf = await VirtualVariableFile.open(join(tempDir(t), 'svc.mem'), { create: true, ...options });
  t.after(() => vf.close());
  return vf;
}

test('creates a 0600 file and reports local mode', async (t) => {
  const vf = await fresh(t);
  assert.equal(vf.mode, 'local');
  assert.equal(statSync(vf.filePath!).mode & 0o777, 0o600);
  assert.match(vf.serviceId, /^file:[0-9a-f]{32}$/);
  assert.equal(vf.version, 0n);
  assert.deepEqual(vf.variables(), []);
});

test('open without create on a missing file is FILE_NOT_FOUND', async (t) => {
  await assert.rejects(VirtualVariableFile.open(join(tempDir(t), 'nope.mem')), { code: 'FILE_NOT_FOUND' });
});

test('typed get/set round-trips every type', async (t) => {
  const vf = await fresh(t);
  const cases: [string, number, number, unknown][] = [
    ['u64', VariableType.U64, 8, 18446744073709551615n],
    ['i64', VariableType.I64, 8, -9223372036854775808n],
    ['f64', VariableType.F64, 8, Math.PI],
    ['u32', VariableType.U32, 4, 4294967295],
    ['i32', VariableType.I32, 4, -2147483648],
    ['f32', VariableType.F32, 4, 1.5],
    ['u16', VariableType.U16, 2, 65535],
    ['i16', VariableType.I16, 2, -32768],
    ['u8', VariableType.U8, 1, 255],
    ['i8', VariableType.I8, 1, -128],
    ['flag', VariableType.Bool, 1, true],
    ['label', VariableType.String, 16, 'héllo wörld'],
    ['blob', VariableType.Bytes, 5, new Uint8Array([1, 2, 3, 4, 5])],
  ];
  for (const [name, type, size] of cases) await vf.registerVariable(new VariableMetadata(name, -1, size, type as never));
  for (const [name, , , value] of cases) vf.set(name, value as never);
  for (const [name, , , value] of cases) assert.deepEqual(vf.get(name), value, name);
  // Numbers are accepted for 64-bit integers too; reads give bigint.
  vf.set('u64', 42);
  assert.equal(vf.get('u64'), 42n);
});

test('little-endian layout at the registered offset', async (t) => {
  const vf = await fresh(t);
  await vf.registerVariable(new VariableMetadata('counter', 16, 8, VariableType.U64));
  vf.set('counter', 0x0102030405060708n);
  assert.deepEqual([...vf.bytes().subarray(16, 24)], [8, 7, 6, 5, 4, 3, 2, 1]);
  await vf.writeVariable('counter', new Uint8Array([0, 0, 0, 0, 0, 0, 0, 42]));
  assert.deepEqual([...(await vf.readVariableSlice('counter'))], [0, 0, 0, 0, 0, 0, 0, 42]);
  assert.equal(vf.get('counter'), 42n << 56n);
});

test('allocation, idempotent re-registration, conflicts', async (t) => {
  const vf = await fresh(t);
  const a = await vf.registerVariable(new VariableMetadata('a', -1, 3, VariableType.Bytes));
  const b = await vf.registerVariable(new VariableMetadata('b', -1, 8, VariableType.F64));
  assert.equal(a.offset, 0);
  assert.equal(b.offset, 8, 'allocations are 8-byte aligned');
  const again = await vf.registerVariable(new VariableMetadata('b', -1, 8, VariableType.F64));
  assert.equal(again.offset, 8);
  await vf.registerVariable(new VariableMetadata('b', 8, 8, VariableType.F64));
  await assert.rejects(vf.registerVariable(new VariableMetadata('b', 8, 8, VariableType.U64)), { code: 'TYPE_MISMATCH' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('b', 16, 8, VariableType.F64)), { code: 'INVALID_OFFSET' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('c', 4, 8, VariableType.U64)), { code: 'INVALID_OFFSET' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('c', -2, 8, VariableType.U64)), { code: 'INVALID_OFFSET' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('c', 0.5, 8, VariableType.U64)), { code: 'INVALID_OFFSET' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('c', -1, 4, VariableType.U64)), { code: 'TYPE_MISMATCH' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('c', -1, 8, 99 as never)), { code: 'TYPE_MISMATCH' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('c', -1, 65537, VariableType.Bytes)), { code: 'VALUE_TOO_LARGE' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('c', -1, 0, VariableType.Bytes)), { code: 'VALUE_TOO_LARGE' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('c', 64 * 1024 * 1024, 8, VariableType.U64)), { code: 'INVALID_OFFSET' });
  assert.deepEqual(vf.variables().map((v) => v.name), ['a', 'b']);
});

test('invalid names never reach the directory', async (t) => {
  const vf = await fresh(t);
  const before = vf.version;
  for (const name of ['../x', 'a/b', '', 'x'.repeat(65), 'nul\0byte', '.hidden', '-dash', 'sp ace', 'ünï']) {
    await assert.rejects(vf.registerVariable(new VariableMetadata(name, -1, 8, VariableType.U64)), { code: 'INVALID_NAME' }, JSON.stringify(name));
    assert.throws(() => vf.get(name), { code: 'INVALID_NAME' });
  }
  await vf.registerVariable(new VariableMetadata('x'.repeat(64), -1, 8, VariableType.U64));
  assert.equal(vf.version, before + 1n);
  assert.equal(vf.variables().length, 1);
});

test('bad values are refused and change nothing', async (t) => {
  const vf = await fresh(t);
  await vf.registerVariable(new VariableMetadata('n', -1, 1, VariableType.U8));
  await vf.registerVariable(new VariableMetadata('s', -1, 4, VariableType.String));
  await vf.registerVariable(new VariableMetadata('raw', -1, 4, VariableType.Bytes));
  vf.set('n', 7);
  vf.set('s', 'abcd');
  const version = vf.version;
  const snapshot = vf.bytes().slice(0, 24);
  assert.throws(() => vf.set('n', 256), { code: 'VALUE_TOO_LARGE' });
  assert.throws(() => vf.set('n', -1), { code: 'VALUE_TOO_LARGE' });
  assert.throws(() => vf.set('n', 1.5), { code: 'TYPE_MISMATCH' });
  assert.throws(() => vf.set('n', 'seven'), { code: 'TYPE_MISMATCH' });
  assert.throws(() => vf.set('s', 'abcde'), { code: 'VALUE_TOO_LARGE' });
  assert.throws(() => vf.set('s', 'ééé'), { code: 'VALUE_TOO_LARGE' });
  assert.throws(() => vf.set('raw', new Uint8Array(5)), { code: 'VALUE_TOO_LARGE' });
  await assert.rejects(vf.writeVariable('raw', new Uint8Array(5)), { code: 'VALUE_TOO_LARGE' });
  await assert.rejects(vf.writeVariable('raw', 'text' as never), { code: 'TYPE_MISMATCH' });
  assert.throws(() => vf.set('missing', 1), { code: 'VARIABLE_NOT_FOUND' });
  await assert.rejects(vf.readVariableSlice('missing'), { code: 'VARIABLE_NOT_FOUND' });
  assert.equal(vf.version, version);
  assert.deepEqual(vf.bytes().slice(0, 24), snapshot);
  assert.equal(vf.get('n'), 7);
  assert.equal(vf.get('s'), 'abcd');
});

test('shorter values are zero-padded', async (t) => {
  const vf = await fresh(t);
  await vf.registerVariable(new VariableMetadata('s', -1, 8, VariableType.String));
  vf.set('s', 'longtext');
  vf.set('s', 'ab');
  assert.equal(vf.get('s'), 'ab');
  assert.deepEqual([...(await vf.readVariableSlice('s'))], [97, 98, 0, 0, 0, 0, 0, 0]);
});

test('handles: hot path, versions, update', async (t) => {
  const vf = await fresh(t);
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.F64));
  const h = vf.handle<number>('x');
  h.set(1.25);
  assert.equal(h.get(), 1.25);
  const v1 = h.version();
  assert.equal(v1, vf.version);
  assert.equal(h.update((x) => x * 2), 2.5);
  assert.equal(h.get(), 2.5);
  assert.ok(h.version() > v1);
  assert.throws(() => h.update(() => { throw new Error('boom'); }), /boom/);
  assert.throws(() => h.update(() => 'nope' as never), { code: 'TYPE_MISMATCH' });
  h.set(3); // the lock was released after each failed update
  assert.equal(h.get(), 3);
});

test('handle(name, type): the value type is inferred from the variable type and checked', async (t) => {
  const vf = await fresh(t);
  await vf.registerVariable(new VariableMetadata('temp', -1, 8, VariableType.F64));
  await vf.registerVariable(new VariableMetadata('count', -1, 8, VariableType.U64));
  await vf.registerVariable(new VariableMetadata('label', -1, 8, VariableType.String));
  const temp = vf.handle('temp', VariableType.F64);
  temp.set(temp.get() + 1.5); // number, inferred: no cast
  const count = vf.handle('count', VariableType.U64);
  assert.equal(count.update((n) => n + 2n), 2n); // bigint, inferred
  const label: string = vf.handle('label', VariableType.String).get();
  assert.deepEqual([vf.get('temp'), vf.get('count'), label], [1.5, 2n, '']);
  assert.throws(() => vf.handle('count', VariableType.F64), (e: unknown) => e instanceof CommyError && e.code === 'TYPE_MISMATCH' && /count is U64, not F64/.test(e.message));
  assert.throws(() => vf.handle('missing', VariableType.F64), { code: 'VARIABLE_NOT_FOUND' });
  // Checked by the compiler, never run: the inferred types refuse the wrong values.
  const typesOnly = (): void => {
    // @ts-expect-error a U64 handle takes bigint
    count.set(1.5);
    // @ts-expect-error an F64 handle gives number
    const wrong: bigint = temp.get();
    void wrong;
  };
  void typesOnly;
});

test('applications do not construct a VirtualVariableFile; open() passes only the public options on', async (t) => {
  assert.throws(() => new VirtualVariableFile({}), { code: 'TYPE_MISMATCH' });
  assert.throws(() => new VirtualVariableFile(null as never), { code: 'TYPE_MISMATCH' });
  const path = join(tempDir(t), 'plain.mem');
  await (await VirtualVariableFile.open(path, { create: true })).close();
  // `expect` is the server's check of a file's header; from open() it is not an option, so it is not applied.
  const vf = await VirtualVariableFile.open(path, { expect: { tenant: 'other', service: 'svc' } } as never);
  t.after(() => vf.close());
  assert.equal(vf.mode, 'local');
  await assert.rejects(VirtualVariableFile.open(path, 'nope' as never), { code: 'TYPE_MISMATCH' });
});

test('compareRanges and findChangedVariablesFromDiff', async (t) => {
  const vf = await fresh(t);
  await vf.registerVariable(new VariableMetadata('a', 0, 8, VariableType.U64));
  await vf.registerVariable(new VariableMetadata('b', 8, 8, VariableType.U64));
  await vf.registerVariable(new VariableMetadata('c', 16, 4, VariableType.Bytes));
  const current = vf.bytes();
  const shadow = vf.shadowBytes();
  assert.deepEqual(VirtualVariableFile.compareRanges(current, shadow), []);
  current[9] = 1; // a raw write into b
  current[18] = 2; // and into c
  const ranges = VirtualVariableFile.compareRanges(current, shadow);
  assert.deepEqual(ranges, [[9, 10], [18, 19]]);
  assert.deepEqual(vf.findChangedVariablesFromDiff(ranges), ['b', 'c']);
  vf.syncShadow();
  assert.deepEqual(VirtualVariableFile.compareRanges(vf.bytes(), vf.shadowBytes()), []);
});

test('flush publishes raw writes as changes with versions', async (t) => {
  const vf = await fresh(t);
  await vf.registerVariable(new VariableMetadata('a', -1, 8, VariableType.U64));
  await vf.registerVariable(new VariableMetadata('b', -1, 8, VariableType.U64));
  const hb = vf.handle('b');
  const before = hb.version();
  const it = vf.changes();
  vf.bytes()[8] = 5;
  await vf.flush();
  const ev = (await it.next()).value!;
  assert.deepEqual(ev.changedVariables, ['b']);
  assert.deepEqual(ev.byteRanges, [[8, 16]]);
  assert.ok(hb.version() > before);
  assert.equal(hb.get(), 5n);
  await it.return!();
});

test('use after close throws NOT_CONNECTED and never touches memory', async (t) => {
  const vf = await fresh(t);
  await vf.registerVariable(new VariableMetadata('x', -1, 8, VariableType.U64));
  const h = vf.handle('x');
  const view = vf.bytes();
  await vf.close();
  await vf.close();
  assert.equal(view.length, 0, 'views over the mapping are detached');
  assert.throws(() => h.get(), (e: unknown) => e instanceof CommyError && e.code === 'NOT_CONNECTED');
  assert.throws(() => h.set(1n), { code: 'NOT_CONNECTED' });
  assert.throws(() => vf.get('x'), { code: 'NOT_CONNECTED' });
  assert.throws(() => vf.bytes(), { code: 'NOT_CONNECTED' });
  assert.throws(() => vf.version, { code: 'NOT_CONNECTED' });
  await assert.rejects(vf.readVariableSlice('x'), { code: 'NOT_CONNECTED' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('y', -1, 8, VariableType.U64)), { code: 'NOT_CONNECTED' });
});

test('reopening sees the same variables and values', async (t) => {
  const path = join(tempDir(t), 'persist.mem');
  const a = await VirtualVariableFile.open(path, { create: true });
  await a.registerVariable(new VariableMetadata('kept', -1, 16, VariableType.String));
  a.set('kept', 'still here');
  await a.close();
  const b = await VirtualVariableFile.open(path);
  t.after(() => b.close());
  assert.deepEqual(b.variables().map((v) => [v.name, v.offset, v.size, v.typeId]), [['kept', 0, 16, VariableType.String]]);
  assert.equal(b.get('kept'), 'still here');
});

test('growth: the file grows as variables are added, views stay valid', async (t) => {
  const vf = await fresh(t, { maxVariables: 4096 });
  const early = await vf.registerVariable(new VariableMetadata('early', -1, 8, VariableType.U64));
  const h = vf.handle('early');
  h.set(99n);
  const sizeBefore = statSync(vf.filePath!).size;
  for (let i = 0; i < 100; i++) await vf.registerVariable(new VariableMetadata(`big${i}`, -1, 65536, VariableType.Bytes));
  assert.ok(statSync(vf.filePath!).size > sizeBefore + 100 * 65536);
  assert.equal(h.get(), 99n);
  assert.equal(early.offset, 0);
  vf.set('big99', new Uint8Array(65536).fill(7));
  assert.equal((vf.get('big99') as Uint8Array)[65535], 7);
});

test('limits: directory full and file full', async (t) => {
  const vf = await fresh(t, { maxVariables: 2, maxFileSize: 4096 + 2 * 128 + 8192 + 3840 });
  await assert.rejects(VirtualVariableFile.open(join(tempDir(t), 'bad.mem'), { create: true, maxFileSize: 1000 }), { code: 'VALUE_TOO_LARGE' });
  await vf.registerVariable(new VariableMetadata('a', -1, 8192, VariableType.Bytes));
  await assert.rejects(vf.registerVariable(new VariableMetadata('b', -1, 8192, VariableType.Bytes)), { code: 'VALUE_TOO_LARGE' });
  await vf.registerVariable(new VariableMetadata('b', -1, 8, VariableType.U64));
  await assert.rejects(vf.registerVariable(new VariableMetadata('c', -1, 8, VariableType.U64)), { code: 'VALUE_TOO_LARGE' });
  assert.equal(vf.variables().length, 2);
});
