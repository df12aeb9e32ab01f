import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openSync, writeSync, closeSync, ftruncateSync, writeFileSync, readFileSync, statSync } from 'node:fs';
import { VirtualVariableFile, VariableMetadata, VariableType } from '../src/index.js';
import { H, E, HEADER_SIZE, FORMAT_VERSION, STRUCT_FORMAT_VERSION, entryOffset, dataStartFor, DEFAULT_MAX_VARIABLES } from '../src/local/file-format.js';
import { tempDir } from './helpers/temp.js';

async function makeFile(t: Parameters<typeof tempDir>[0]): Promise<string> {
  const path = join(tempDir(t), 'svc.mem');
  const vf = await VirtualVariableFile.open(path, { create: true, tenant: 'acme', service: 'plant-1' });
  await vf.registerVariable(new VariableMetadata('temp', -1, 8, VariableType.F64));
  vf.set('temp', 21.5);
  await vf.close();
  return path;
}

function patch(path: string, offset: number, bytes: Uint8Array): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}

test('the header records magic, version, layout, tenant and service', async (t) => {
  const path = await makeFile(t);
  const buf = readFileSync(path);
  assert.equal(buf.toString('ascii', 0, 8), 'COMMYSVC');
  assert.equal(buf.readUInt32LE(H.FORMAT_VERSION), FORMAT_VERSION);
  assert.equal(buf.readUInt32LE(H.DATA_START), dataStartFor(DEFAULT_MAX_VARIABLES));
  assert.equal(buf.readBigUInt64LE(H.VERSION), 2n, 'one registration and one write');
  assert.equal(buf.readUInt32LE(H.VAR_COUNT), 1);
  const e = entryOffset(0);
  assert.equal(buf.toString('latin1', e + E.NAME, e + E.NAME + 4), 'temp');
  assert.equal(buf.readUInt8(e + E.TYPE_ID), VariableType.F64);
  assert.equal(buf.readBigUInt64LE(e + E.VERSION), 2n);
  assert.equal(buf.readUInt32LE(e + E.SEQ) % 2, 0);
  assert.equal(buf.readInt32LE(e + E.LOCK), 0);
  assert.equal(buf.readDoubleLE(dataStartFor(DEFAULT_MAX_VARIABLES)), 21.5);
  const vf = await VirtualVariableFile.open(path);
  t.after(() => vf.close());
  assert.equal(vf.serviceId, 'acme/plant-1');
});

for (const [what, mutate] of [
  ['wrong magic', (p: string) => patch(p, 0, Buffer.from('NOTCOMMY'))],
  ['a future format version', (p: string) => patch(p, H.FORMAT_VERSION, Buffer.from([STRUCT_FORMAT_VERSION + 1, 0, 0, 0]))],
  // Version 1 watchers slept on a futex that version 2 writers no longer wake (docs/file-format.md, Format versions).
  ['format version 1', (p: string) => patch(p, H.FORMAT_VERSION, Buffer.from([1, 0, 0, 0]))],
  ['a truncated header', (p: string) => { const fd = openSync(p, 'r+'); ftruncateSync(fd, 100); closeSync(fd); }],
  ['a truncated data region', (p: string) => { const fd = openSync(p, 'r+'); ftruncateSync(fd, dataStartFor(DEFAULT_MAX_VARIABLES) + 8); closeSync(fd); }],
  ['an empty file', (p: string) => writeFileSync(p, '')],
  ['a corrupt directory count', (p: string) => patch(p, H.VAR_COUNT, Buffer.from([0xff, 0xff, 0xff, 0x7f]))],
  ['a corrupt directory entry', (p: string) => patch(p, entryOffset(0) + E.NAME, Buffer.from('../x'))],
  ['a corrupt maximum size', (p: string) => patch(p, H.MAX_FILE_SIZE, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]))],
] as const) {
  test(`refuses a file with ${what}: INVALID_FILE, file untouched`, async (t) => {
    const path = await makeFile(t);
    mutate(path);
    const before = readFileSync(path);
    await assert.rejects(VirtualVariableFile.open(path), { code: 'INVALID_FILE' });
    await assert.rejects(VirtualVariableFile.open(path, { create: true }), { code: 'INVALID_FILE' });
    assert.deepEqual(readFileSync(path), before);
  });
}

test('a version 1 file is refused with a message that says why', async (t) => {
  const path = await makeFile(t);
  patch(path, H.FORMAT_VERSION, Buffer.from([1, 0, 0, 0]));
  await assert.rejects(VirtualVariableFile.open(path), (e: Error & { code?: string }) => e.code === 'INVALID_FILE' && /format version 1; this commy reads versions 2 and 3 \(made by an older commy/.test(e.message));
});

test('a path with NUL is refused', async () => {
  await assert.rejects(VirtualVariableFile.open('bad\0path.mem', { create: true }), { code: 'INVALID_NAME' });
});

test('a directory is not a service file', async (t) => {
  await assert.rejects(VirtualVariableFile.open(tempDir(t)), (e: { code?: string }) => e.code === 'FILE_NOT_FOUND' || e.code === 'INVALID_FILE');
});

test('the file starts small and sparse', async (t) => {
  const path = await makeFile(t);
  const st = statSync(path);
  assert.equal(st.size, dataStartFor(DEFAULT_MAX_VARIABLES) + 4096);
  assert.ok(st.blocks * 512 < 64 * 1024, `allocated ${st.blocks * 512} bytes`);
  assert.ok(HEADER_SIZE === 4096);
});
