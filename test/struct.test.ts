import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { openSync, readFileSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { CommyError, VariableMetadata, VariableType, VirtualVariableFile, type StructValue } from '../src/index.js';
import { decodeFrame, encodeFrame } from '../src/protocol/frame-codec.js';
import type { Message, RegisterVariableBody, VariableDef, WireField } from '../src/protocol/messages.js';
import { codecOf } from '../src/core/struct-codec.js';
import { definitionProblem } from '../src/core/variable-rules.js';
import { inspectFile } from '../src/local/file-report.js';
import { decodeLayout, encodeLayout } from '../src/local/layout-records.js';
import { metadataOfDef } from '../src/protocol/variable-def.js';
import { E, ENTRY_SIZE, FORMAT_VERSION, H, STRUCT_FORMAT_VERSION, entryOffset } from '../src/local/file-format.js';
import { startChild } from './helpers/child.js';
import { runCli } from './helpers/cli.js';
import { startClientServer, VIEWER_KEY } from './helpers/client-server.js';
import { RawClient } from './helpers/raw-client.js';
import { scriptedClient, send } from './helpers/scripted-server.js';
import { until } from './helpers/server-process.js';
import { tempDir } from './helpers/temp.js';

/**
 * Struct variables (VariableType.Struct, docs/client.md "Struct variables"): named fields packed in declared
 * order, the layout stored in the service file and sent with every definition, every client decoding the same
 * object. Real files, real servers on 127.0.0.1, real processes.
 */

const pos = (name = 'pos'): VariableMetadata => VariableMetadata.struct(name, { x: VariableType.F64, y: VariableType.F64 });

async function embedded(t: Parameters<typeof tempDir>[0], options: { maxVariables?: number } = {}): Promise<{ path: string; vf: VirtualVariableFile }> {
  const path = join(tempDir(t), 'svc.mem');
  const vf = await VirtualVariableFile.open(path, { create: true, ...options });
  t.after(() => vf.close());
  return { path, vf };
}

function patch(path: string, offset: number, bytes: Uint8Array): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

// ---- declaring a struct ----------------------------------------------------------------------------------

test('VariableMetadata.struct: offset -1, the size is the sum of the fields, the fields frozen in declared order', () => {
  const meta = VariableMetadata.struct('entity', {
    id: VariableType.U64,
    name: { type: VariableType.String, size: 16 },
    blob: { type: VariableType.Bytes, size: 3 },
    hp: { type: VariableType.I16 },
    alive: VariableType.Bool,
  });
  assert.equal(meta.typeId, VariableType.Struct);
  assert.equal(meta.typeId, 13);
  assert.equal(meta.offset, -1);
  assert.equal(meta.size, 8 + 16 + 3 + 2 + 1);
  assert.deepEqual(meta.fields?.map((f) => [f.name, f.typeId, f.size]), [
    ['id', VariableType.U64, 8],
    ['name', VariableType.String, 16],
    ['blob', VariableType.Bytes, 3],
    ['hp', VariableType.I16, 2],
    ['alive', VariableType.Bool, 1],
  ]);
  assert.ok(Object.isFrozen(meta.fields) && meta.fields!.every((f) => Object.isFrozen(f)));
  assert.equal(VariableMetadata.struct('p', { x: VariableType.F64 }, 64).offset, 64);
});

test('a struct declaration that cannot be a layout is refused with a stable code', () => {
  const cases: [string, () => unknown, string][] = [
    ['no fields', () => VariableMetadata.struct('s', {}), 'TYPE_MISMATCH'],
    ['not an object', () => VariableMetadata.struct('s', [VariableType.U8] as never), 'TYPE_MISMATCH'],
    ['a String without its size', () => VariableMetadata.struct('s', { name: VariableType.String }), 'TYPE_MISMATCH'],
    ['a Bytes without its size', () => VariableMetadata.struct('s', { raw: { type: VariableType.Bytes } }), 'TYPE_MISMATCH'],
    ['a fixed type with another size', () => VariableMetadata.struct('s', { x: { type: VariableType.F64, size: 4 } }), 'TYPE_MISMATCH'],
    ['a struct inside a struct', () => VariableMetadata.struct('s', { inner: { type: VariableType.Struct, size: 8 } }), 'TYPE_MISMATCH'],
    ['an unknown type', () => VariableMetadata.struct('s', { x: 99 as never }), 'TYPE_MISMATCH'],
    ['a field name with /', () => VariableMetadata.struct('s', { 'a/b': VariableType.U8 }), 'INVALID_NAME'],
    ['an empty field name', () => VariableMetadata.struct('s', { '': VariableType.U8 }), 'INVALID_NAME'],
    ['a field name of digits (JavaScript would reorder it)', () => VariableMetadata.struct('s', { b: VariableType.U8, 7: VariableType.U8 }), 'INVALID_NAME'],
    ['a 65-character field name', () => VariableMetadata.struct('s', { ['f'.repeat(65)]: VariableType.U8 }), 'INVALID_NAME'],
    ['65 fields', () => VariableMetadata.struct('s', Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`f${i}`, VariableType.U8]))), 'VALUE_TOO_LARGE'],
    ['10,000 fields', () => VariableMetadata.struct('s', Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`f${i}`, VariableType.U8]))), 'VALUE_TOO_LARGE'],
  ];
  for (const [what, declare, code] of cases) assert.throws(declare, { code }, what);
  // 64 fields are fine: the bound is inclusive.
  assert.equal(VariableMetadata.struct('s', Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`f${i}`, VariableType.U8]))).size, 64);
});

test('metadata built by hand: a Struct needs fields that add up to its size, and no other type has fields', async (t) => {
  const { vf } = await embedded(t);
  const fields = [{ name: 'x', typeId: VariableType.F64, size: 8 }] as const;
  await assert.rejects(vf.registerVariable(new VariableMetadata('a', -1, 16, VariableType.Struct)), { code: 'TYPE_MISMATCH' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('b', -1, 16, VariableType.Struct, fields)), { code: 'TYPE_MISMATCH' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('c', -1, 8, VariableType.F64, fields)), { code: 'TYPE_MISMATCH' });
  await assert.rejects(vf.registerVariable(new VariableMetadata('d', -1, 8, VariableType.Struct, [{ name: 'x/y', typeId: VariableType.F64, size: 8 }])), { code: 'INVALID_NAME' });
  assert.deepEqual((await vf.registerVariable(new VariableMetadata('e', -1, 8, VariableType.Struct, fields))).fields, fields);
  assert.deepEqual(vf.variables().map((v) => v.name), ['e']);
});

// ---- typed access, embedded ------------------------------------------------------------------------------

test('get/set/handle().update with plain objects: every type of field, 64-bit integers as bigint', async (t) => {
  const { vf } = await embedded(t);
  await vf.registerVariable(pos());
  await vf.registerVariable(
    VariableMetadata.struct('all', {
      u64: VariableType.U64, i64: VariableType.I64, f64: VariableType.F64, u32: VariableType.U32, i32: VariableType.I32, f32: VariableType.F32,
      u16: VariableType.U16, i16: VariableType.I16, u8: VariableType.U8, i8: VariableType.I8, ok: VariableType.Bool,
      label: { type: VariableType.String, size: 8 }, raw: { type: VariableType.Bytes, size: 4 },
    }),
  );
  assert.deepEqual(vf.get('pos'), { x: 0, y: 0 }, 'a new struct is all zeros');
  vf.set('pos', { x: 1.5, y: 2 });
  assert.deepEqual(vf.get('pos'), { x: 1.5, y: 2 });

  const value: StructValue = {
    u64: 2n ** 64n - 1n, i64: -(2n ** 63n), f64: Math.PI, u32: 0xffffffff, i32: -0x80000000, f32: 0.5,
    u16: 0xffff, i16: -0x8000, u8: 255, i8: -128, ok: true, label: 'héllo', raw: Uint8Array.of(1, 2),
  };
  vf.set('all', value);
  assert.deepEqual(vf.get('all'), { ...value, raw: Uint8Array.of(1, 2, 0, 0) }, 'a shorter Bytes field is zero-padded');
  vf.set('all', { ...value, label: 'ab' });
  assert.equal(vf.get<StructValue>('all').label, 'ab', 'a shorter string leaves no stale bytes');

  const h = vf.handle('pos', VariableType.Struct);
  const next = h.update((p) => ({ ...p, x: (p.x as number) + 1 }));
  assert.deepEqual(next, { x: 2.5, y: 2 });
  assert.deepEqual(h.get(), { x: 2.5, y: 2 });
  const typed = vf.handle<{ x: number; y: number }>('pos');
  typed.set({ x: 7, y: 8 });
  assert.equal(typed.get().x + typed.get().y, 15);
  assert.throws(() => vf.handle('pos', VariableType.F64), { code: 'TYPE_MISMATCH' });
  const { version } = await vf.mutate('pos', { x: 9, y: 9 }, { expectedVersion: h.version() });
  assert.equal(version, h.version());
  await assert.rejects(vf.mutate('pos', { x: 0, y: 0 }, { expectedVersion: version - 1n }), { code: 'CONFLICT' });
  assert.deepEqual(vf.get('pos'), { x: 9, y: 9 });
});

test('set checks every field before writing anything: missing or extra field, wrong type, out of range', async (t) => {
  const { vf } = await embedded(t);
  await vf.registerVariable(VariableMetadata.struct('s', { a: VariableType.U8, b: VariableType.U8, name: { type: VariableType.String, size: 4 }, constructor: VariableType.U8 }));
  const good = { a: 1, b: 2, name: 'ok', constructor: 3 };
  vf.set('s', good);
  const version = vf.handle('s').version();
  const bad: [unknown, string][] = [
    [{ a: 9, name: 'x', constructor: 3 }, 'TYPE_MISMATCH'], // b missing
    [{ a: 9, b: 9, name: 'x' }, 'TYPE_MISMATCH'], // `constructor` missing: Object.prototype's does not count
    [{ ...good, a: 9, extra: 1 }, 'TYPE_MISMATCH'],
    [{ ...good, a: 9, b: 'two' }, 'TYPE_MISMATCH'],
    [{ ...good, a: 9, b: 256 }, 'VALUE_TOO_LARGE'],
    [{ ...good, a: 9, name: 'too long' }, 'VALUE_TOO_LARGE'],
    [null, 'TYPE_MISMATCH'],
    [[1, 2, 'x', 3], 'TYPE_MISMATCH'],
    [Uint8Array.of(1, 2, 3, 4, 5, 6, 7), 'TYPE_MISMATCH'],
    [5, 'TYPE_MISMATCH'],
  ];
  for (const [value, code] of bad) {
    assert.throws(() => vf.set('s', value as StructValue), (e: unknown) => e instanceof CommyError && e.code === code, JSON.stringify(value));
  }
  assert.deepEqual(vf.get('s'), good, 'nothing was written: the first field (a: 9) of every refused value included');
  assert.equal(vf.handle('s').version(), version);
  assert.throws(() => vf.handle('s').update(() => ({ ...good, b: -1 })), { code: 'VALUE_TOO_LARGE' });
  assert.deepEqual(vf.get('s'), good);
});

// ---- the layout in the file ------------------------------------------------------------------------------

test('the layout is in the file: another mapping decodes the same object; the same layout again is a no-op, another is TYPE_MISMATCH', async (t) => {
  const { path, vf } = await embedded(t);
  await vf.registerVariable(VariableMetadata.struct('e', { id: VariableType.U32, name: { type: VariableType.String, size: 8 } }));
  vf.set('e', { id: 7, name: 'seven' });
  const other = await VirtualVariableFile.open(path);
  t.after(() => other.close());
  assert.deepEqual(other.get('e'), { id: 7, name: 'seven' });
  assert.deepEqual(other.variables()[0]!.fields, vf.variables()[0]!.fields);
  assert.equal(other.layoutHash, vf.layoutHash);

  const again = await other.registerVariable(VariableMetadata.struct('e', { id: VariableType.U32, name: { type: VariableType.String, size: 8 } }));
  assert.equal(again.offset, vf.variables()[0]!.offset);
  for (const different of [
    VariableMetadata.struct('e', { name: { type: VariableType.String, size: 8 }, id: VariableType.U32 }), // the same fields, another order
    VariableMetadata.struct('e', { id: VariableType.I32, name: { type: VariableType.String, size: 8 } }),
    VariableMetadata.struct('e', { ID: VariableType.U32, name: { type: VariableType.String, size: 8 } }),
    new VariableMetadata('e', -1, 12, VariableType.Bytes),
  ]) {
    await assert.rejects(other.registerVariable(different), { code: 'TYPE_MISMATCH' });
  }
  assert.deepEqual(vf.get('e'), { id: 7, name: 'seven' });
});

test('the layout changes the layout hash; the same definitions hash alike in every mapping', async (t) => {
  const a = await embedded(t);
  const b = await embedded(t);
  await a.vf.registerVariable(VariableMetadata.struct('p', { x: VariableType.F64 }));
  await b.vf.registerVariable(VariableMetadata.struct('p', { y: VariableType.F64 }));
  assert.notEqual(a.vf.layoutHash, b.vf.layoutHash, 'the same name, offset, size and type, other fields');
});

test('format version: a file stays version 2 until its first struct, then version 3; structs with one layout share one record', async (t) => {
  const { path, vf } = await embedded(t, { maxVariables: 64 });
  await vf.registerVariable(new VariableMetadata('plain', -1, 8, VariableType.U64));
  let page = readFileSync(path).subarray(0, 4096);
  assert.equal(page.readUInt32LE(H.FORMAT_VERSION), FORMAT_VERSION);
  assert.equal(page.readUInt32LE(H.LAYOUT_SLOTS), 0);

  for (let i = 0; i < 20; i++) await vf.registerVariable(pos(`Position.${i}`));
  page = readFileSync(path).subarray(0, 4096);
  assert.equal(page.readUInt32LE(H.FORMAT_VERSION), STRUCT_FORMAT_VERSION);
  assert.equal(page.readUInt32LE(H.LAYOUT_SLOTS), 1, 'twenty structs of one layout: one record of one slot');
  const file = readFileSync(path);
  assert.equal(file.readUInt32LE(entryOffset(1) + E.LAYOUT), 63, 'the record sits in the top slot');
  assert.equal(file.readUInt32LE(entryOffset(20) + E.LAYOUT), 63);

  await vf.registerVariable(VariableMetadata.struct('big', Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`field_${i}_${'n'.repeat(50)}`, VariableType.U8]))));
  const slots = readFileSync(path).readUInt32LE(H.LAYOUT_SLOTS);
  assert.ok(slots > 30, `a 64-field layout of long names spans many slots (${slots})`);
  const reopened = await VirtualVariableFile.open(path);
  t.after(() => reopened.close());
  assert.equal(reopened.variables().length, 22);
  assert.equal(reopened.variables()[21]!.fields!.length, 64);
});

test('the directory is shared by variables and layout records: full is VALUE_TOO_LARGE, and nothing is published', async (t) => {
  const { path, vf } = await embedded(t, { maxVariables: 8 });
  let distinct = 0;
  let refused: unknown;
  for (; distinct < 10; distinct++) {
    try {
      await vf.registerVariable(VariableMetadata.struct(`s${distinct}`, { [`f${distinct}`]: VariableType.U8 }));
    } catch (err) {
      refused = err;
      break;
    }
  }
  assert.equal(distinct, 4, 'four structs of four layouts fill eight slots');
  assert.ok(refused instanceof CommyError && refused.code === 'VALUE_TOO_LARGE');
  const reopened = await VirtualVariableFile.open(path);
  t.after(() => reopened.close());
  assert.deepEqual(reopened.variables().map((v) => v.name), ['s0', 's1', 's2', 's3']);
});

test('a removed struct keeps its record (its tombstone names it); the name takes another layout; the file still opens', async (t) => {
  const { path, vf } = await embedded(t);
  await vf.registerVariable(pos());
  vf.set('pos', { x: 1, y: 2 });
  await vf.removeVariable('pos');
  await vf.registerVariable(VariableMetadata.struct('pos', { x: VariableType.I32, y: VariableType.I32, z: VariableType.I32 }));
  assert.deepEqual(vf.get('pos'), { x: 0, y: 0, z: 0 });
  const reopened = await VirtualVariableFile.open(path);
  t.after(() => reopened.close());
  assert.deepEqual(reopened.get('pos'), { x: 0, y: 0, z: 0 });
  const report = inspectFile(path);
  assert.deepEqual(report.variables.map((v) => [v.name, v.state, v.fields?.length]), [['pos', 'removed', 2], ['pos', 'live', 3]]);
});

test('a service file with a corrupt layout is refused with INVALID_FILE, never a crash', async (t) => {
  const make = async (): Promise<string> => {
    const { path, vf } = await embedded(t, { maxVariables: 64 });
    await vf.registerVariable(pos());
    await vf.close();
    return path;
  };
  const record = entryOffset(63);
  const corruptions: [string, (p: string) => void][] = [
    ['a field count of 10,000', (p) => patch(p, record + 4, Uint8Array.of(0x10, 0x27))],
    ['a field name with /', (p) => patch(p, record + 8 + 6, Buffer.from('/'))],
    ['a nested struct field', (p) => patch(p, record + 8, Uint8Array.of(VariableType.Struct))],
    ['field sizes that do not add up to the size', (p) => patch(p, record + 8 + 2, u32(4))],
    ['a field size of 4 GiB', (p) => patch(p, record + 8 + 2, u32(0xffffffff))],
    ['a record length past the directory', (p) => patch(p, record, u32(1 << 20))],
    ['a reference into the variables', (p) => patch(p, entryOffset(0) + E.LAYOUT, u32(0))],
    ['a reference outside the layout area', (p) => patch(p, entryOffset(0) + E.LAYOUT, u32(62))],
    ['a layout area larger than the directory', (p) => patch(p, H.LAYOUT_SLOTS, u32(64))],
  ];
  for (const [what, corrupt] of corruptions) {
    const path = await make();
    corrupt(path);
    await assert.rejects(VirtualVariableFile.open(path), { code: 'INVALID_FILE' }, what);
  }
  assert.equal(ENTRY_SIZE, 128);
});

test('commy inspect shows a struct value as its fields', async (t) => {
  const { path, vf } = await embedded(t);
  await vf.registerVariable(VariableMetadata.struct('p', { x: VariableType.F64, tag: { type: VariableType.String, size: 8 }, n: VariableType.U64 }));
  vf.set('p', { x: 1.5, tag: 'a"b', n: 7n });
  const report = inspectFile(path);
  assert.deepEqual(report.variables[0]!.value, { x: 1.5, tag: 'a"b', n: 7n });
  const { code, stdout } = await runCli(['inspect', path], t);
  assert.equal(code, 0);
  assert.match(stdout, /p\s+Struct\s+0\s+24\s.*\{x: 1\.5, tag: "a\\"b", n: 7\}/);
  const json = await runCli(['inspect', path, '--json'], t);
  const variable = JSON.parse(json.stdout).variables[0];
  assert.deepEqual(variable.value, { x: 1.5, tag: 'a"b', n: '7' });
  assert.deepEqual(variable.fields.map((f: { name: string }) => f.name), ['x', 'tag', 'n']);
});

// ---- a struct read is never torn --------------------------------------------------------------------------

test('1,000,000 struct writes {a: i, label: "n<i>", b: i} from one process, read by two others: never torn', { timeout: 300_000 }, async (t) => {
  const { path, vf } = await embedded(t);
  await vf.registerVariable(VariableMetadata.struct('pair', { a: VariableType.U32, label: { type: VariableType.String, size: 48 }, b: VariableType.F64 }));
  await vf.registerVariable(new VariableMetadata('stop', -1, 1, VariableType.Bool));
  const writes = 1_000_000;
  const writer = startChild('struct-writer', [path, String(writes)], t);
  const readers = [startChild('struct-reader', [path], t), startChild('struct-reader', [path], t)];
  await Promise.all([writer.next('ready'), ...readers.map((r) => r.next('ready'))]);
  writer.send({ type: 'go' });
  assert.equal((await writer.next<{ count: number }>('done', 240_000)).count, writes);
  for (const reader of readers) {
    const r = await reader.next<{ reads: number; torn: number; changes: number; last: number; example: string }>('result', 240_000);
    assert.equal(r.torn, 0, `torn reads: ${JSON.stringify(r)}`);
    assert.equal(r.last, writes, 'the reader ends on the final value');
    assert.ok(r.changes > 10, `the readers overlapped the writer: ${JSON.stringify(r)}`);
  }
  assert.deepEqual(vf.get('pair'), { a: writes, label: `n${writes}`, b: writes });
});

// ---- remote ----------------------------------------------------------------------------------------------

test('remote and local clients of one service decode the same object; writes go every way', async (t) => {
  const s = await startClientServer(t);
  const writer = await (await s.connect()).getVirtualServiceFile('acme', 'ecs');
  await writer.registerVariable(VariableMetadata.struct('Position.1', { x: VariableType.F64, y: VariableType.F64, tag: { type: VariableType.String, size: 8 } }));
  writer.set('Position.1', { x: 1.5, y: 2, tag: 'one' });
  await writer.flush();

  const reader = await (await s.connect()).getVirtualServiceFile('acme', 'ecs');
  const local = await (await s.connect({ mode: 'local' })).getVirtualServiceFile('acme', 'ecs');
  assert.equal(local.mode, 'local');
  for (const vf of [reader, local]) {
    assert.deepEqual(vf.get('Position.1'), { x: 1.5, y: 2, tag: 'one' });
    assert.deepEqual(vf.variables()[0]!.fields, writer.variables()[0]!.fields);
    assert.equal(vf.layoutHash, writer.layoutHash);
  }

  local.set('Position.1', { x: 3, y: 4, tag: 'local' });
  await until(() => (writer.get('Position.1') as StructValue).tag === 'local' && (reader.get('Position.1') as StructValue).tag === 'local', 'the local write to reach both remote clients');
  assert.deepEqual(reader.get('Position.1'), { x: 3, y: 4, tag: 'local' });

  reader.handle('Position.1', VariableType.Struct).update((p) => ({ ...p, x: (p.x as number) + 1 }));
  await reader.flush();
  await until(() => (local.get('Position.1') as StructValue).x === 4 && (writer.get('Position.1') as StructValue).x === 4, 'the remote update to reach the others');
  const { version } = await writer.mutate('Position.1', { x: 10, y: 10, tag: 'cas' }, { expectedVersion: writer.handle('Position.1').version() });
  assert.ok(version > 0n);
  await until(() => (local.get('Position.1') as StructValue).tag === 'cas', 'the mutation to reach the mapping');
  assert.throws(() => reader.set('Position.1', { x: 1, y: 2 }), { code: 'TYPE_MISMATCH' }, 'a missing field, caught on the client');

  // Registering the same layout again is a no-op everywhere; another layout is refused, by the server too.
  await reader.registerVariable(VariableMetadata.struct('Position.1', { x: VariableType.F64, y: VariableType.F64, tag: { type: VariableType.String, size: 8 } }));
  await assert.rejects(reader.registerVariable(VariableMetadata.struct('Position.1', { x: VariableType.F32, y: VariableType.F64, tag: { type: VariableType.String, size: 8 } })), { code: 'TYPE_MISMATCH' });
  const fresh = await (await s.connect()).getVirtualServiceFile('acme', 'ecs-other');
  await fresh.registerVariable(VariableMetadata.struct('p', { x: VariableType.F64 }));
  const other = await (await s.connect()).getVirtualServiceFile('acme', 'ecs-other');
  await assert.rejects(other.registerVariable(VariableMetadata.struct('q', { x: VariableType.F64 }, 4)), { code: 'INVALID_OFFSET' }, 'overlap');
});

test('a read-only local client and another process on a mirror file decode the same struct', async (t) => {
  const s = await startClientServer(t);
  const owner = await (await s.connect({ mirror: { dir: tempDir(t, 'commy-mirror-') } })).getVirtualServiceFile('acme', 'shared');
  await owner.registerVariable(pos());
  owner.set('pos', { x: 0.5, y: -3 });
  await owner.flush();

  const viewer = await (await s.connect({ mode: 'local' }, VIEWER_KEY)).getVirtualServiceFile('acme', 'shared');
  assert.equal(viewer.mode, 'local');
  assert.deepEqual(viewer.get('pos'), { x: 0.5, y: -3 });
  await viewer.registerVariable(pos()); // the same layout: a no-op, no right needed
  assert.throws(() => viewer.set('pos', { x: 1, y: 1 }), { code: 'PERMISSION_DENIED' });

  const mirror = await VirtualVariableFile.open(owner.mirrorPath!);
  t.after(() => mirror.close());
  await until(() => mirror.variables().length === 1 && (mirror.get('pos') as StructValue).y === -3, 'the struct in the mirror file');
  assert.deepEqual(mirror.variables()[0]!.fields, owner.variables()[0]!.fields);
  mirror.set('pos', { x: 9, y: 9 });
  await until(() => (viewer.get('pos') as StructValue).x === 9, 'the mirror write to reach the server file');
});

test('remote: a struct registered later arrives with its layout; query returns struct values', async (t) => {
  const s = await startClientServer(t);
  const client = await s.connect();
  const watcher = await client.getVirtualServiceFile('acme', 'late');
  const admin = await (await s.connect()).getVirtualServiceFile('acme', 'late');
  await admin.registerVariable(pos());
  admin.set('pos', { x: -1, y: 0.25 });
  await admin.flush();
  await until(() => watcher.variables().length === 1 && (watcher.get('pos') as StructValue).y === 0.25, 'the definition and value in a SyncBatch');
  assert.deepEqual(watcher.variables()[0]!.fields?.map((f) => f.name), ['x', 'y']);

  const found: unknown[] = [];
  for await (const page of client.query({ tenant: 'acme', services: ['late'], values: true })) {
    for (const service of page.services) for (const v of service.variables) found.push([v.metadata.name, v.metadata.fields?.length, v.value]);
  }
  assert.deepEqual(found, [['pos', 2, { x: -1, y: 0.25 }]]);
});

test('a local process writing pairs through the server file: a remote client never sees a torn struct', { timeout: 120_000 }, async (t) => {
  const s = await startClientServer(t);
  const owner = await (await s.connect({ mode: 'local' })).getVirtualServiceFile('acme', 'pairs');
  await owner.registerVariable(VariableMetadata.struct('pair', { a: VariableType.U32, label: { type: VariableType.String, size: 48 }, b: VariableType.F64 }));
  await owner.registerVariable(new VariableMetadata('stop', -1, 1, VariableType.Bool));
  await owner.registerVariable(new VariableMetadata('halt', -1, 1, VariableType.Bool));
  const remote = await (await s.connect()).getVirtualServiceFile('acme', 'pairs');
  let torn = 0;
  let seen = 0;
  let last = 0;
  const writer = startChild('struct-writer', [owner.filePath!, '0'], t); // writes until `halt`
  await writer.next('ready');
  const events = remote.changes();
  writer.send({ type: 'go' });
  let written: number | undefined;
  for await (const ev of events) {
    if (ev.changedVariables.includes('pair')) {
      const { a, label, b } = remote.get('pair') as StructValue;
      if (a !== b || label !== `n${String(a)}` || (a as number) < last) torn++;
      if (a !== last) seen++;
      last = a as number;
    }
    if (seen === 50 && !(remote.get('halt') as boolean)) {
      remote.set('halt', true); // enough values seen mid-stream: let the writer finish
      void writer.next<{ count: number }>('done').then((d) => {
        written = d.count;
        // The final value's event may have come before the writer said it was done: then none is left to wait for.
        if (last === written) void events.return?.();
      });
    }
    if (written !== undefined && last === written) break;
  }
  assert.equal(torn, 0);
  assert.ok(seen >= 50, `it saw values while they were written (${seen})`);
  assert.deepEqual(remote.get('pair'), { a: written, label: `n${written}`, b: written }, 'and ends on the final value');
});

// ---- the wire ----------------------------------------------------------------------------------------------

async function rawSession(url: string, protocol: number): Promise<{ raw: RawClient; sid: number }> {
  const raw = await RawClient.connect(url);
  const auth = await raw.request('Authenticate', { tenant: 'acme', method: 'apiKey', credential: 'ops:s3cret', protocol });
  assert.equal(auth.type, 'Authenticated');
  const snap = await raw.request('Subscription', { tenant: 'acme', service: 'wire', create: true });
  assert.equal(snap.type, 'Snapshot');
  return { raw, sid: (snap as Message & { type: 'Snapshot' }).body.sid };
}

function errorCode(m: Message): string | undefined {
  return m.type === 'Error' ? m.body.errorCode : undefined;
}

test('the wire: protocol 3 definitions carry the fields; a protocol 2 client is sent the struct as Bytes', async (t) => {
  const s = await startClientServer(t);
  const vf = await (await s.connect()).getVirtualServiceFile('acme', 'wire');
  await vf.registerVariable(pos());
  const v3 = await rawSession(s.url, 3);
  const v2 = await rawSession(s.url, 2);
  const defOf = async (raw: RawClient): Promise<VariableDef> => {
    const snap = await raw.request('Subscription', { tenant: 'acme', service: 'wire' });
    assert.equal(snap.type, 'Snapshot');
    return (snap as Message & { type: 'Snapshot' }).body.variables[0]!;
  };
  assert.deepEqual((await defOf(v3.raw)).slice(0, 5), [0, 'pos', 0, 16, VariableType.Struct]);
  assert.deepEqual((await defOf(v3.raw))[6], [['x', VariableType.F64, 8], ['y', VariableType.F64, 8]]);
  const old = await defOf(v2.raw);
  assert.equal(old.length, 6, 'six elements, as protocol 2 decoders demand');
  assert.deepEqual(old.slice(0, 5), [0, 'pos', 0, 16, VariableType.Bytes]);
  const reg = await v3.raw.request('RegisterVariable', { sid: v3.sid, name: 'pos', offset: -1, size: 16, typeId: VariableType.Struct, fields: [['x', VariableType.F64, 8], ['y', VariableType.F64, 8]] });
  assert.equal(reg.type, 'VariableRegistered', 'the same layout again: a no-op');
  await v2.raw.request('Unsubscribe', { sid: v2.sid });
});

test('a hostile layout in RegisterVariable gets a stable error code, and the connection goes on', async (t) => {
  const s = await startClientServer(t);
  const { raw, sid } = await rawSession(s.url, 3);
  const register = (fields: WireField[] | undefined, size: number, typeId: number = VariableType.Struct): Promise<Message> => {
    const body: RegisterVariableBody = { sid, name: 'h', offset: -1, size, typeId };
    if (fields !== undefined) body.fields = fields;
    return raw.request('RegisterVariable', body);
  };
  const many = (n: number): WireField[] => Array.from({ length: n }, (_, i) => [`f${i}`, VariableType.U8, 1]);
  const cases: [string, Promise<Message>, string][] = [
    ['10,000 fields (refused from its headers, before decoding)', register(many(10_000), 10_000), 'MESSAGE_TOO_LARGE'],
    ['65 fields', register(many(65), 65), 'INVALID_MESSAGE'],
    ['a field that is not a triple', register([['x', VariableType.F64]] as unknown as WireField[], 8), 'INVALID_MESSAGE'],
    ['a 65-character field name', register([['f'.repeat(65), VariableType.U8, 1]], 1), 'INVALID_MESSAGE'],
    ['field sizes overflowing', register([['a', VariableType.Bytes, 0xffffffff], ['b', VariableType.Bytes, 0xffffffff]], 0xffffffff), 'VALUE_TOO_LARGE'],
    ['a field name with /', register([['a/b', VariableType.F64, 8]], 8), 'INVALID_NAME'],
    ['a field name twice', register([['a', VariableType.F64, 8], ['a', VariableType.F64, 8]], 16), 'INVALID_NAME'],
    ['a size not matching the fields', register([['x', VariableType.F64, 8], ['y', VariableType.F64, 8]], 24), 'TYPE_MISMATCH'],
    ['a fixed field of another size', register([['x', VariableType.F64, 4]], 4), 'TYPE_MISMATCH'],
    ['a struct field', register([['x', VariableType.Struct, 8]], 8), 'TYPE_MISMATCH'],
    ['an unknown field type', register([['x', 200, 8]], 8), 'TYPE_MISMATCH'],
    ['no field', register([], 8), 'TYPE_MISMATCH'],
    ['a Struct without fields', register(undefined, 8), 'TYPE_MISMATCH'],
    ['fields on a U64', register([['x', VariableType.U64, 8]], 8, VariableType.U64), 'TYPE_MISMATCH'],
    ['a struct over the variable size limit', register([['a', VariableType.Bytes, 65536], ['b', VariableType.U8, 1]], 65537), 'VALUE_TOO_LARGE'],
  ];
  for (const [what, reply, code] of cases) assert.equal(errorCode(await reply), code, what);
  const ok = await register([['x', VariableType.F64, 8]], 8);
  assert.equal(ok.type, 'VariableRegistered', 'the connection goes on, and nothing was registered before');
  assert.deepEqual((ok as Message & { type: 'VariableRegistered' }).body.def[6], [['x', VariableType.F64, 8]]);
});

test('frame shape: a definition with more than 64 fields, or malformed ones, is INVALID_MESSAGE before anything uses it', () => {
  const def = (fields: unknown): VariableDef => [0, 'p', 0, 8, VariableType.Struct, 1, fields as WireField[]];
  const snapshot = (d: VariableDef) => encodeFrame('Snapshot', 1, { sid: 1, serviceId: 'a/b', version: 1, variables: [d], data: new Uint8Array(0), readOnly: false });
  assert.equal(decodeFrame(snapshot(def([['x', VariableType.F64, 8]]))).type, 'Snapshot');
  for (const bad of [Array.from({ length: 65 }, (_, i) => [`f${i}`, 9, 1]), [['x', 3]], [[1, 3, 8]], [['x', 3, -1]], [['x', 256, 8]], [['x', 3, 2 ** 32]], 'x', {}]) {
    assert.throws(() => decodeFrame(snapshot(def(bad))), { code: 'INVALID_MESSAGE' }, JSON.stringify(bad));
  }
  const eight = [0, 'p', 0, 8, VariableType.Struct, 1, [['x', 3, 8]], 'extra'] as unknown as VariableDef;
  assert.throws(() => decodeFrame(snapshot(eight)), { code: 'INVALID_MESSAGE' });
});

test('a client given a hostile struct definition reports it, ignores that variable, and keeps the others', async (t) => {
  const { server, ws, client, errors } = await scriptedClient(t);
  const opening = client.getVirtualServiceFile('acme', 'svc');
  const sub = await server.next('Subscription');
  const data = new Uint8Array(40);
  new DataView(data.buffer).setFloat64(0, 2.5, true);
  const variables: VariableDef[] = [
    [0, 'good', 0, 8, VariableType.Struct, 1, [['x', VariableType.F64, 8]]],
    [1, 'sizes', 8, 8, VariableType.Struct, 1, [['x', VariableType.F64, 8], ['y', VariableType.F64, 8]]],
    [2, 'slash', 16, 8, VariableType.Struct, 1, [['a/b', VariableType.F64, 8]]],
    [3, 'bare', 24, 8, VariableType.Struct, 1],
    [4, 'nested', 32, 8, VariableType.Struct, 1, [['s', VariableType.Struct, 8]]],
  ];
  send(ws, 'Snapshot', sub.msg.id, { sid: 1, serviceId: 'acme/svc', version: 1, variables, data, readOnly: false, fileId: 'f' });
  const vf = await opening;
  assert.deepEqual(vf.variables().map((v) => v.name), ['good']);
  assert.deepEqual(vf.get('good'), { x: 2.5 });
  assert.deepEqual(errors.map((e) => e.code), ['INVALID_MESSAGE', 'INVALID_MESSAGE', 'INVALID_MESSAGE', 'INVALID_MESSAGE']);
});

// ---- fuzz: what a file or a peer may say ---------------------------------------------------------------

const fieldName = fc.stringMatching(/^[A-Za-z][A-Za-z0-9._-]{0,20}$/);
const fieldType = fc.constantFrom<[number, number | undefined]>(
  [VariableType.U64, 8], [VariableType.I64, 8], [VariableType.F64, 8], [VariableType.U32, 4], [VariableType.I32, 4], [VariableType.F32, 4],
  [VariableType.U16, 2], [VariableType.I16, 2], [VariableType.U8, 1], [VariableType.I8, 1], [VariableType.Bool, 1],
  [VariableType.String, undefined], [VariableType.Bytes, undefined],
);
const validFields = fc
  .uniqueArray(fc.tuple(fieldName, fieldType, fc.integer({ min: 1, max: 40 })), { minLength: 1, maxLength: 64, selector: ([name]) => name })
  .map((list) => list.map(([name, [typeId, fixed], size]) => ({ name, typeId: typeId as never, size: fixed ?? size })));

test('fuzz: a layout record round-trips, and any bytes as a record decode to a valid layout or to nothing', () => {
  fc.assert(
    fc.property(validFields, (fields) => {
      assert.deepEqual(decodeLayout(encodeLayout(fields)), fields);
    }),
    { numRuns: 2_000, interruptAfterTimeLimit: 10_000 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, honestLength) => {
      const record = Buffer.from(bytes);
      if (honestLength && record.length >= 4) record.writeUInt32LE(record.length, 0);
      const fields = decodeLayout(record);
      if (fields !== undefined) assert.equal(definitionProblem(new VariableMetadata('v', -1, fields.reduce((n, f) => n + f.size, 0), VariableType.Struct, fields)), undefined);
    }),
    { numRuns: 20_000, interruptAfterTimeLimit: 10_000 },
  );
});

test('fuzz: any fields in a definition are refused with a CommyError or make a codec whose zero value round-trips', () => {
  const anyField = fc.tuple(fc.string({ maxLength: 70 }), fc.integer({ min: 0, max: 255 }), fc.oneof(fc.integer({ min: 0, max: 64 }), fc.constant(0xffffffff)));
  fc.assert(
    fc.property(fc.array(anyField, { maxLength: 70 }), fc.integer({ min: 0, max: 2 ** 32 - 1 }), (fields, size) => {
      const frame = encodeFrame('VariableRegistered', 1, { sid: 1, def: [0, 'v', 0, size, VariableType.Struct, 1, fields] });
      let def: VariableDef;
      try {
        const m = decodeFrame(frame);
        assert.equal(m.type, 'VariableRegistered');
        def = (m as Message & { type: 'VariableRegistered' }).body.def;
      } catch (err) {
        assert.ok(err instanceof CommyError && err.code === 'INVALID_MESSAGE');
        return;
      }
      const meta = metadataOfDef(def);
      const problem = definitionProblem(meta);
      if (problem !== undefined) return assert.ok(problem instanceof CommyError);
      const codec = codecOf(meta);
      const zero = new Uint8Array(meta.size);
      const value = codec.load(new DataView(zero.buffer), 0);
      const out = new Uint8Array(meta.size).fill(0xff);
      codec.store(new DataView(out.buffer), 0, codec.check(value));
      assert.deepEqual(out, zero);
    }),
    { numRuns: 5_000, interruptAfterTimeLimit: 10_000 },
  );
});
