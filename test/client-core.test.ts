import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import WebSocket from 'ws';
import { AuthCredentials, Client, CommyError, VariableMetadata, VariableType, VirtualVariableFile, type ClientOptions } from '../src/browser.js';
import { browserPlatform } from '../src/client/browser-platform.js';
import { currentPlatform, registerPlatform } from '../src/client/platform.js';
import { webSocketTransport, type WebSocketConstructor } from '../src/client/web-socket-transport.js';
import { startServer } from './helpers/server.js';

/** The client core must run where Node does not: these entries' import graphs may not reach Node. */

const OPS_KEY = 'ops:s3cret'; // helpers/client-server.ts has it too, but imports the Node entry
const here = dirname(fileURLToPath(import.meta.url)); // dist/test
const distSrc = resolve(here, '..', 'src');
const NODE_GLOBALS = new Set(['process', 'Buffer', 'require', '__dirname', '__filename', 'setImmediate', 'global']);
const NODE_TYPE_NAMES = new Set(['Buffer', 'NodeJS']);
const NODE_ONLY_DIRS = ['native', 'local', 'server'].map((d) => join(distSrc, d));

interface Finding {
  file: string;
  problem: string;
}

/** Every module specifier of a file: static imports and re-exports, import() calls and import("…") types, require(). */
function specifiersOf(source: ts.SourceFile): string[] {
  const found: string[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      found.push(node.moduleSpecifier.text);
    } else if (ts.isCallExpression(node) && node.arguments.length > 0 && ts.isStringLiteral(node.arguments[0]!)) {
      const callee = node.expression;
      if (callee.kind === ts.SyntaxKind.ImportKeyword || (ts.isIdentifier(callee) && callee.text === 'require')) found.push(node.arguments[0].text);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      found.push(node.argument.literal.text);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** Identifiers that name a Node global as a value (JS) or type (.d.ts); property names and member names do not count. */
function nodeGlobalsIn(source: ts.SourceFile, names: ReadonlySet<string>): string[] {
  const found = new Set<string>();
  const visit = (node: ts.Node): void => {
    if (ts.isIdentifier(node) && names.has(node.text) && !isMemberName(node)) found.add(node.text);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return [...found];
}

/** `x.process`, `{ process: 1 }`, `NodeJS.Buffer`'s right side, a member or local named so: not the global. */
function isMemberName(id: ts.Identifier): boolean {
  const p = id.parent;
  if (ts.isShorthandPropertyAssignment(p)) return false; // `{ process }` reads the global
  if (ts.isQualifiedName(p)) return p.right === id;
  return (p as ts.Node & { name?: ts.Node }).name === id;
}

function isNodeBuiltin(spec: string): boolean {
  return spec.startsWith('node:') || builtinModules.includes(spec) || builtinModules.includes(spec.split('/')[0]!);
}

/** Walks the graph from `entry` (JS or .d.ts), following relative specifiers; returns what it found and what it reached. */
function walk(entry: string, declarations: boolean): { findings: Finding[]; reached: string[]; packages: Set<string> } {
  const findings: Finding[] = [];
  const packages = new Set<string>();
  const seen = new Set<string>();
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.shift()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const name = relative(distSrc, file);
    if (!existsSync(file)) {
      findings.push({ file: name, problem: 'is imported but was not emitted' });
      continue;
    }
    if (NODE_ONLY_DIRS.some((d) => file.startsWith(d + '/'))) findings.push({ file: name, problem: 'is a Node-only module (src/native, src/local or src/server)' });
    const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true, declarations ? ts.ScriptKind.TS : ts.ScriptKind.JS);
    for (const spec of specifiersOf(source)) {
      if (spec.startsWith('.')) {
        queue.push(declarations ? resolve(dirname(file), spec).replace(/\.js$/, '.d.ts') : resolve(dirname(file), spec));
        continue;
      }
      packages.add(spec);
      if (isNodeBuiltin(spec)) findings.push({ file: name, problem: `imports the Node module ${spec}` });
      else if (spec === 'ws' || spec.startsWith('ws/')) findings.push({ file: name, problem: 'imports ws' });
      else if (/\.node$|(^|\/)native\/|bindings|node-gyp-build/.test(spec)) findings.push({ file: name, problem: `imports a native addon (${spec})` });
    }
    for (const global of nodeGlobalsIn(source, declarations ? NODE_TYPE_NAMES : NODE_GLOBALS)) findings.push({ file: name, problem: `uses the Node global ${global}` });
  }
  return { findings, reached: [...seen].map((f) => relative(distSrc, f)), packages };
}

const describe = (findings: Finding[]): string => findings.map((f) => `${f.file} ${f.problem}`).join('\n');

test('the core entry (browser.js) and everything it imports use nothing of Node: no node:*, ws, native addon, process or Buffer', () => {
  const { findings, reached, packages } = walk(join(distSrc, 'browser.js'), false);
  assert.deepEqual(findings, [], describe(findings));
  for (const core of ['client/client.js', 'client/virtual-variable-file.js', 'core/event-queue.js', 'client/web-socket-transport.js']) {
    assert.ok(reached.includes(core), `the walk reaches ${core}`);
  }
  assert.ok(!reached.includes('client/node-platform.js'));
  assert.deepEqual([...packages].sort(), ['@preact/signals-core', 'msgpackr'], 'the only packages it needs (both have a browser build)');
});

test("the core entry's types mention nothing of Node either (a browser project compiles without @types/node)", () => {
  const { findings, reached } = walk(join(distSrc, 'browser.d.ts'), true);
  assert.deepEqual(findings, [], describe(findings));
  assert.ok(reached.includes('client/virtual-variable-file.d.ts'));
});

test('the walk does find Node where it is: the Node entry reaches ws, the native addon and process', () => {
  const problems = describe(walk(join(distSrc, 'index.js'), false).findings);
  assert.match(problems, /imports ws/);
  assert.match(problems, /native/);
  assert.match(problems, /uses the Node global process/);
});

test('package.json: the browser condition points at the core entry, before default; commy/internal exists', () => {
  const pkg = JSON.parse(readFileSync(resolve(here, '..', '..', 'package.json'), 'utf8')) as { exports: Record<string, Record<string, string>> };
  const root = pkg.exports['.']!;
  assert.deepEqual(Object.keys(root), ['types', 'browser', 'default']);
  assert.equal(root.browser, './dist/src/browser.js');
  assert.equal(root.default, './dist/src/index.js');
  assert.equal(pkg.exports['./internal']?.default, './dist/src/internal.js');
  for (const target of [root.browser, root.default, root.types, pkg.exports['./internal']!.default]) {
    assert.ok(existsSync(resolve(here, '..', '..', target!)), `${target} is built`);
  }
});

test('the core without an entry has no platform: a Client says so with a CommyError', () => {
  const script = `import(${JSON.stringify(join(distSrc, 'client', 'client.js'))}).then((m) => {
    try { new m.Client('ws://127.0.0.1:1'); console.log('constructed'); } catch (e) { console.log(e.name, e.code, e.message); }
  });`;
  const out = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(out.status, 0, out.stderr);
  assert.match(out.stdout, /^CommyError INTERNAL_ERROR no Commy client platform is registered/);
});

test('the browser entry registers the browser platform: remote mode only, JS diff, no embedded files', async () => {
  assert.equal(currentPlatform().name, 'browser');
  await assert.rejects(VirtualVariableFile.open('/tmp/anything.mem', { create: true }), { code: 'FILE_NOT_FOUND' });
  assert.deepEqual(VirtualVariableFile.compareRanges(new Uint8Array([1, 2, 3, 4]), new Uint8Array([1, 9, 9, 4])), [[1, 3]]);
  assert.throws(() => new VirtualVariableFile({}), { code: 'TYPE_MISMATCH' }, 'applications do not construct one');
});

test('the core client against a real server over a WHATWG WebSocket (ws standing in for the global one)', async (t) => {
  const clients: Client[] = [];
  // After-hooks run in the order they are added: the clients close before the server does.
  t.after(() => Promise.allSettled(clients.map((c) => c.close())));
  const server = await startServer(t);
  const previous = currentPlatform();
  registerPlatform({ ...browserPlatform, openTransport: webSocketTransport(WebSocket as unknown as WebSocketConstructor) });
  t.after(() => registerPlatform(previous));
  const connect = async (options: ClientOptions): Promise<Client> => {
    const c = await Client.initialize(server.url, 'acme', AuthCredentials.apiKey(OPS_KEY), options);
    clients.push(c);
    return c;
  };
  const fallbacks: CommyError[] = [];
  const client = await connect({ mode: 'auto', onFallback: (reason) => fallbacks.push(reason) });
  const vf = await client.getVirtualServiceFile('acme', 'core');
  assert.equal(vf.mode, 'remote', "'auto' on a platform without local mode is remote");
  assert.deepEqual(fallbacks, [], 'nothing was tried, so nothing fell back');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  const n = vf.handle('n', VariableType.U64);
  n.set(41n);
  await vf.flush();
  assert.equal((await client.readVariable('acme', 'core', 'n'))[0], 41);
  const other = await connect({ mode: 'remote' });
  const seen = await other.getVirtualServiceFile('acme', 'core');
  seen.set('n', 42n);
  await seen.flush();
  for (let ev = await client.waitForFileChange({ timeoutMs: 5000 }); n.get() !== 42n; ev = await client.waitForFileChange({ timeoutMs: 5000 })) {
    assert.ok(ev !== null, 'the other client\'s write arrives');
  }
  const local = new Client(server.url, { mode: 'local' });
  clients.push(local);
  await local.connect();
  await local.authenticate('acme', AuthCredentials.apiKey(OPS_KEY));
  await assert.rejects(local.getVirtualServiceFile('acme', 'core'), { code: 'FILE_NOT_FOUND' });
  await assert.rejects(Client.initialize('ws://127.0.0.1:1', 'acme', AuthCredentials.apiKey(OPS_KEY)), { code: 'NOT_CONNECTED' });
});
