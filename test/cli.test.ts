import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { SignJWT } from 'jose';
import { createInterface } from 'node:readline';
import { AuthCredentials, Client, VariableMetadata, VariableType } from '../src/index.js';
import { startChild } from './helpers/child.js';
import { CLI, runCli, serveCli } from './helpers/cli.js';
import { tempDir } from './helpers/temp.js';


/** Runs `commy serve` on embedded defaults (but port 0) and reads the key and URL it prints. */
async function serve(t: Parameters<typeof tempDir>[0]): Promise<{ url: string; key: string; cwd: string; exited: Promise<number | null>; stop: () => void }> {
  const cwd = tempDir(t, 'commy-serve-');
  return { ...(await serveCli(t, cwd, ['--port', '0'])), cwd };
}

test('commy serve on embedded defaults: a local and a remote process share a variable with the printed key', { timeout: 120_000 }, async (t) => {
  const server = await serve(t);
  const local = await Client.initialize(server.url, 'dev', AuthCredentials.apiKey(server.key));
  const vf = await local.getVirtualServiceFile('dev', 'demo');
  assert.equal(vf.mode, 'local', 'same machine: the server file is mapped');
  assert.ok(vf.filePath!.endsWith(join('commy-data', 'tenants', 'dev', 'demo.mem')), vf.filePath);
  await vf.registerVariable(new VariableMetadata('counter', -1, 8, VariableType.U64));

  const remote = startChild('remote-client', [server.url, 'remote', 'demo', 'dev', server.key], t);
  assert.equal((await remote.next<{ mode: string }>('ready')).mode, 'remote');

  vf.set('counter', 41n); // local → remote
  remote.send({ type: 'wait', name: 'counter', value: '41' });
  await remote.next('seen');

  remote.send({ type: 'set', name: 'counter', value: '42' }); // remote → local
  await remote.next('set-done');
  while (vf.get('counter') !== 42n) await local.waitForFileChange({ timeoutMs: 1000 });

  remote.send({ type: 'quit' });
  await remote.exited;
  await local.close();
  server.stop();
  assert.equal(await server.exited, 0, 'SIGTERM closes the server cleanly');
  // Audited by default, next to the data: who was given the file, and the remote change.
  const audit = readFileSync(join(server.cwd, 'commy-data', 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.ok(audit.some((l) => l.event === 'GetServiceFilePath' && l.keyId === 'dev' && l.service === 'demo'));
  assert.ok(audit.some((l) => l.event === 'VariablesChanged' && (l.variables as string[]).includes('counter')));
});

test('commy serve: a wrong key is refused', { timeout: 60_000 }, async (t) => {
  const server = await serve(t);
  await assert.rejects(Client.initialize(server.url, 'dev', AuthCredentials.apiKey('dev:wrong')), { code: 'AUTH_FAILED' });
  server.stop();
  await server.exited;
});

test('commy serve: audit lines are batched yet reach the file within moments, and SIGTERM loses none of them', { timeout: 120_000 }, async (t) => {
  const server = await serve(t);
  const client = await Client.initialize(server.url, 'dev', AuthCredentials.apiKey(server.key), { mode: 'remote' });
  const vf = await client.getVirtualServiceFile('dev', 'audited');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  const auditFile = join(server.cwd, 'commy-data', 'audit.log');
  const changes = (): number => {
    let text = '';
    try {
      text = readFileSync(auditFile, 'utf8');
    } catch {
      return 0; // not created yet
    }
    return text.split('\n').filter((l) => l.includes('"VariablesChanged"')).length;
  };
  vf.set('n', 1n);
  await vf.flush();
  // One short line is far below the batch size: only the periodic flush writes it while the server runs.
  const deadline = Date.now() + 20_000;
  while (changes() < 1) {
    assert.ok(Date.now() < deadline, 'the audit line of a write never reached the file while the server ran');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  for (let i = 2; i <= 300; i++) {
    vf.set('n', BigInt(i));
    await vf.flush();
  }
  await client.close();
  server.stop(); // at once: whatever is still buffered must be written on the way out
  assert.equal(await server.exited, 0);
  assert.equal(changes(), 300, 'one audit line per acknowledged write');
});

test("commy inspect: a live server's file as the server has it; a variable held mid-write is reported, never waited for", { timeout: 120_000 }, async (t) => {
  const server = await serve(t);
  const client = await Client.initialize(server.url, 'dev', AuthCredentials.apiKey(server.key), { mode: 'remote' });
  t.after(() => client.close());
  const vf = await client.getVirtualServiceFile('dev', 'plant');
  await vf.registerVariable(new VariableMetadata('temp', -1, 8, VariableType.F64));
  await vf.registerVariable(new VariableMetadata('count', -1, 8, VariableType.U64));
  await vf.registerVariable(new VariableMetadata('held', -1, 16, VariableType.Bytes));
  await vf.registerVariable(new VariableMetadata('old', -1, 4, VariableType.I32));
  vf.set('temp', 21.5);
  vf.set('count', 12345678901234n);
  await vf.flush();
  await vf.removeVariable('old');
  const path = join(server.cwd, 'commy-data', 'tenants', 'dev', 'plant.mem');

  const text = await runCli(['inspect', path]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /service +dev\/plant/);
  assert.match(text.stdout, /^0 +temp +F64 .* 21\.5$/m);
  assert.match(text.stdout, /^1 +count +U64 .* 12345678901234$/m);
  assert.match(text.stdout, /^3 +old +I32 .*\(removed\)$/m);

  // A process stopped in the middle of a write to `held`: the others are read, `held` is said to be busy.
  const holder = startChild('lock-holder', [path, 'held'], t);
  await holder.next('locked');
  process.kill(holder.proc.pid!, 'SIGSTOP');
  t.after(() => holder.proc.kill('SIGKILL'));
  const json = await runCli(['inspect', path, '--json']);
  assert.equal(json.code, 0, json.stderr);
  const report = JSON.parse(json.stdout) as { tenant: string; version: string; variables: Array<{ name: string; value?: unknown; version: string; state: string }> };
  const byName = new Map(report.variables.map((v) => [v.name, v]));
  assert.equal(report.tenant, 'dev');
  assert.equal(byName.get('temp')!.value, 21.5);
  assert.equal(byName.get('count')!.value, '12345678901234', 'bigints as strings');
  assert.equal(byName.get('held')!.value, 'busy');
  assert.equal(byName.get('old')!.state, 'removed');
  assert.equal(byName.get('temp')!.version, String(vf.handle('temp').version()));
  assert.ok(BigInt(report.version) >= BigInt(byName.get('count')!.version));

  const missing = await runCli(['inspect', join(server.cwd, 'nope.mem')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^commy: .*nope\.mem/);
});

test('commy bench: publishers and subscribers against commy serve; every subscriber ends on every last value', { timeout: 120_000 }, async (t) => {
  const server = await serve(t);
  const run = await runCli(['bench', server.url, '--tenant', 'dev', '--key', server.key, '--pubs', '2', '--subs', '3', '--rate', '200', '--duration', '2', '--warmup', '1']);
  assert.equal(run.code, 0, run.stderr);
  const writes = Number(/publishers +([\d,]+) writes acknowledged/.exec(run.stdout)?.[1]?.replace(/,/g, ''));
  assert.ok(writes > 0, run.stdout);
  assert.match(run.stdout, /, 0 failed/);
  assert.match(run.stdout, /write → ack +p50 \S+/);
  assert.match(run.stdout, /write → seen +p50 \S+/);
  assert.match(run.stdout, /3 of 3 hold every publisher's last value/);

  const bad = await runCli(['bench', server.url, '--tenant', 'dev', '--key', server.key, '--rate', 'fast']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /expected a whole number/);
  const wrongKey = await runCli(['bench', server.url, '--tenant', 'dev', '--key', 'dev:wrong', '--duration', '1']);
  assert.equal(wrongKey.code, 1);
  assert.match(wrongKey.stderr, /^commy: /m);
});

test('commy serve --log-level debug: one line per connection lifecycle event, and never a secret, key or token in any line', { timeout: 120_000 }, async (t) => {
  const cwd = tempDir(t, 'commy-log-');
  const keySecret = 'plain-Secret-9f3kq';
  const wrongSecret = 'WRONG-guess-123xz';
  const jwtSecret = 'jwt-Secret-77zq-long-enough-for-hs256';
  const config = {
    tenants: { acme: { keys: [{ id: 'ops', secret: keySecret, read: ['*'], write: ['*'], admin: ['*'] }], jwt: { secret: jwtSecret, issuer: 'log.test' } } },
    audit: { enabled: false },
  };
  writeFileSync(join(cwd, 'config.json'), JSON.stringify(config));
  const run = async (level: string) => {
    const proc = spawn(process.execPath, [CLI, 'serve', '--config', join(cwd, 'config.json'), '--port', '0', '--data', join(cwd, `data-${level}`), '--log-level', level], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => proc.kill('SIGKILL'));
    let out = '';
    let err = '';
    proc.stderr!.on('data', (d) => (err += String(d)));
    const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
    let url = '';
    for await (const line of createInterface({ input: proc.stdout! })) {
      out += `${line}\n`;
      url ||= /listening on (\S+)/.exec(line)?.[1] ?? '';
      if (url !== '') break;
    }
    proc.stdout!.on('data', (d) => (out += String(d)));
    const good = await Client.initialize(url, 'acme', AuthCredentials.apiKey(`ops:${keySecret}`), { mode: 'remote', reconnect: false });
    await good.close();
    await assert.rejects(Client.initialize(url, 'acme', AuthCredentials.apiKey(`ops:${wrongSecret}`), { mode: 'remote', reconnect: false }), /AUTH_FAILED|authenticat/i);
    const token = await new SignJWT({ tenant: 'acme', sub: 'robot', read: ['*'] }).setProtectedHeader({ alg: 'HS256' }).setIssuer('log.test').setExpirationTime('5m').sign(new TextEncoder().encode(jwtSecret));
    const viaJwt = await Client.initialize(url, 'acme', AuthCredentials.jwt(token), { mode: 'remote', reconnect: false });
    await viaJwt.close();
    await new Promise((resolve) => setTimeout(resolve, 200)); // the last close is logged
    proc.kill('SIGTERM');
    assert.equal(await exited, 0);
    return { text: out + err, token, lines: err.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string; event?: string; code?: number }) };
  };

  const debug = await run('debug');
  for (const secret of [keySecret, wrongSecret, jwtSecret, debug.token, debug.token.split('.')[2]!]) {
    assert.ok(!debug.text.includes(secret), `a secret reached the log: ${secret.slice(0, 8)}…`);
  }
  const count = (event: string) => debug.lines.filter((l) => l.event === event).length;
  assert.ok(count('connected') >= 3, debug.text);
  assert.ok(count('authenticated') >= 2, 'the key and the token');
  assert.equal(count('auth-failed'), 1);
  assert.ok(count('closed') >= 3, debug.text);
  assert.ok(debug.lines.some((l) => l.event === 'closed' && typeof l.code === 'number'), 'closes carry their code');

  const info = await run('info');
  assert.equal(info.lines.filter((l) => l.event === 'connected').length, 0, 'lifecycle lines are debug');
  assert.equal(info.lines.filter((l) => l.event === 'auth-failed').length, 1, 'a failed authentication is info');
});

test('commy stats: the metrics of commy serve as rows of rates while a client writes', { timeout: 120_000 }, async (t) => {
  const server = await serve(t);
  const client = await Client.initialize(server.url, 'dev', AuthCredentials.apiKey(server.key), { mode: 'remote' });
  t.after(() => client.close());
  const vf = await client.getVirtualServiceFile('dev', 'watched');
  await vf.registerVariable(new VariableMetadata('n', -1, 8, VariableType.U64));
  let writing = true;
  const writes = (async () => {
    for (let i = 1n; writing; i++) {
      vf.set('n', i);
      await vf.flush();
    }
  })();
  const run = await runCli(['stats', server.url, '--interval', '0.5', '--count', '2']);
  writing = false;
  await writes;
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stdout.trim().split('\n');
  assert.equal(lines.length, 3, run.stdout);
  assert.match(lines[0]!, /conns +unauth +in msg\/s +out msg\/s/);
  const cells = lines[1]!.trim().split(/ +/);
  assert.ok(Number(cells[0]) - Number(cells[1]) >= 1, `the client's authenticated connection (the scrape itself is an unauthenticated one): ${lines[1]}`);
  assert.ok(Number(cells[6]) > 0, `acknowledgements per second: ${lines[1]}`);
  assert.match(cells[7]!, /^≤/, 'an ack p50 from the histogram');

  const gone = await runCli(['stats', 'ws://127.0.0.1:1', '--count', '1']);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /^commy: /);
});
