#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import { isCommyError } from './core/errors.js';
import { hashKey } from './server/key-hash.js';
import { ConfigError, defaultDevTenant, loadConfig, type ServerConfig } from './server/config.js';
import { loadTls, selfSignedTls, type TlsMaterial } from './server/tls.js';

/** Exit codes: 2 for a usage or configuration mistake, 1 for anything that went wrong at run time. */
const EXIT_CONFIG = 2;
const EXIT_FAILURE = 1;

interface ServeFlags {
  config?: string;
  host?: string;
  port?: number;
  data?: string;
  tlsSelfSigned?: boolean;
  tick?: 'immediate' | number;
  durability?: 'ack' | 'periodic' | 'none';
  logLevel?: ServerConfig['logLevel'];
  cluster?: string;
  nodeId?: string;
}

function program(): Command {
  const cli = new Command('commy')
    .description('Commy: typed variables in memory-mapped service files, shared locally and over WebSocket.')
    .version(packageVersion())
    .showHelpAfterError()
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT_CONFIG));
  cli
    .command('serve')
    .description('run the server (with no tenant configured: a tenant "dev" with a fresh API key, printed once)')
    .option('--config <file>', 'JSON config file (docs/operations.md)')
    .option('--host <host>', 'interface to listen on (default 127.0.0.1)')
    .option('--port <port>', 'port to listen on, 0 for any free one (default 9000)', parsePort)
    .option('--data <dir>', 'directory for service files (default ./commy-data)')
    .option('--tls-self-signed', 'serve wss:// with a throwaway self-signed certificate (development only)')
    .option('--tick <tick>', "'immediate' or milliseconds between update batches", parseTick)
    .option('--log-level <level>', 'fatal, error, warn, info (default), debug (one line per connection lifecycle event), trace or silent', parseLogLevel)
    .option('--durability <mode>', "'ack' (sync before acknowledging), 'periodic' (default: every syncIntervalMs) or 'none'", parseDurability)
    .option('--cluster <redis-url>', 'run as a node of a cluster on this Redis (docs/cluster.md); needs --node-id')
    .option('--node-id <id>', "this node's name in the cluster: unique, and the same across restarts")
    .action((flags: ServeFlags) => serve(flags));
  cli
    .command('hash-key')
    .description('print an scrypt hash of a secret for the config file (reads one line from stdin without the argument)')
    .argument('[secret]', 'the secret; prefer stdin, which keeps it out of shell history')
    .action((secret: string | undefined) => printHash(secret));
  cli
    .command('inspect')
    .description("what a service file holds: header, variables, versions, values (read-only, no locks: safe on a live server's file)")
    .argument('<file>', 'a service file (e.g. commy-data/<tenant>/<service>.mem)')
    .option('--json', 'print JSON (bigints as strings, bytes as hex)')
    .action((file: string, flags: { json?: boolean }) => inspect(file, flags.json === true));
  cli
    .command('stats')
    .description("the server's metrics as a table that refreshes, like redis-cli --stat")
    .argument('<url>', 'the server, e.g. ws://127.0.0.1:9000 (its /metrics is read over http or https)')
    .option('--interval <s>', 'seconds between rows', parseSeconds, 1)
    .option('--count <n>', 'rows to print; 0: until interrupted', parseCount, 0)
    .action((url: string, flags: { interval: number; count: number }) => stats(url, flags));
  cli
    .command('bench')
    .description('a load generator against a running server: publishers write, subscribers watch; prints throughput and latency percentiles')
    .argument('<url>', 'the server, e.g. ws://127.0.0.1:9000')
    .requiredOption('--tenant <tenant>', 'tenant to authenticate to')
    .option('--key <key>', 'API key id:secret (default: $COMMY_KEY); it needs admin on the service to register its variables')
    .option('--service <name>', 'service to use (created if missing)', 'bench')
    .option('--pubs <n>', 'publishers, each writing its own variable', parseCount, 1)
    .option('--subs <n>', 'subscribers, each watching every variable', parseCount, 1)
    .option('--rate <n>', 'writes per second per publisher; 0: as fast as acknowledged', parseCount, 1000)
    .option('--size <bytes>', 'bytes per value (at least 8)', parseCount, 16)
    .option('--duration <s>', 'seconds measured', parseCount, 10)
    .option('--warmup <s>', 'seconds of warm-up first, not measured', parseCount, 2)
    .option('--mode <mode>', "'remote' (over WebSocket) or 'auto' (mapped when on the server's machine)", 'remote')
    .action((url: string, flags: BenchFlags) => bench(url, flags));
  return cli;
}

// ---- serve ----

async function serve(flags: ServeFlags): Promise<void> {
  let config: ServerConfig;
  let tls: TlsMaterial | undefined;
  try {
    config = withFlags(loadConfig(flags.config), flags);
    tls = flags.tlsSelfSigned ? undefined : config.tls && loadTls(config.tls);
  } catch (err) {
    return fail(err, EXIT_CONFIG);
  }
  if (Object.keys(config.tenants).length === 0) {
    const dev = defaultDevTenant();
    config.tenants = { dev: dev.config };
    console.log(`commy: tenant "dev" API key: ${dev.apiKey}`);
  }
  if (flags.tlsSelfSigned) {
    tls = await selfSignedTls([config.host]);
    console.error('commy: serving TLS with a self-signed certificate: for development only');
  }
  try {
    const { Server } = await import('./server/index.js');
    const server = await Server.start({ host: config.host, port: config.port, dataDir: config.dataDir, config, tls });
    console.log(`commy: listening on ${server.url}`);
    stopOn(['SIGINT', 'SIGTERM'], () => server.close());
  } catch (err) {
    return fail(err, isCommyError(err, 'CONFIG_INVALID') ? EXIT_CONFIG : EXIT_FAILURE);
  }
}

function withFlags(config: ServerConfig, flags: ServeFlags): ServerConfig {
  const out: ServerConfig = { ...config };
  if (flags.host !== undefined) out.host = flags.host;
  if (flags.port !== undefined) out.port = flags.port;
  if (flags.data !== undefined) out.dataDir = flags.data;
  if (flags.tick !== undefined) out.tick = flags.tick;
  if (flags.durability !== undefined) out.durability = flags.durability;
  if (flags.logLevel !== undefined) out.logLevel = flags.logLevel;
  if (flags.cluster !== undefined || flags.nodeId !== undefined) out.cluster = clusterOf(config, flags);
  return out;
}

/** `--cluster` and `--node-id` over the config file's `cluster` (both needed when the file has none). */
function clusterOf(config: ServerConfig, flags: ServeFlags): ServerConfig['cluster'] {
  const redis = flags.cluster ?? config.cluster?.redis;
  const nodeId = flags.nodeId ?? config.cluster?.nodeId;
  if (redis === undefined || nodeId === undefined) {
    throw new ConfigError(redis === undefined ? 'cluster.redis' : 'cluster.nodeId', 'invalid config: --cluster and --node-id go together (or with a config file whose cluster gives the other)');
  }
  return loadConfig({ cluster: { ...config.cluster, redis, nodeId } }).cluster;
}

/** A clean stop answers, broadcasts, closes and syncs within seconds; past this it gives up (exit 1). */
const STOP_TIMEOUT_MS = 20_000;

/** The first signal closes cleanly (within STOP_TIMEOUT_MS); a second one while closing means "now". */
function stopOn(signals: NodeJS.Signals[], close: () => Promise<void>): void {
  let closing = false;
  const onSignal = () => {
    if (closing) process.exit(EXIT_FAILURE);
    closing = true;
    setTimeout(() => {
      console.error(`commy: not stopped cleanly within ${STOP_TIMEOUT_MS / 1000} s; exiting anyway`);
      process.exit(EXIT_FAILURE);
    }, STOP_TIMEOUT_MS).unref();
    close().then(
      () => process.exit(0),
      (err: unknown) => fail(err, EXIT_FAILURE),
    );
  };
  for (const s of signals) process.on(s, onSignal);
}

function parsePort(value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || port > 65535) throw new InvalidArgumentError('expected an integer 0..65535');
  return port;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

function parseLogLevel(value: string): ServerConfig['logLevel'] {
  const level = LOG_LEVELS.find((l) => l === value);
  if (level === undefined) throw new InvalidArgumentError(`expected one of ${LOG_LEVELS.join(', ')}`);
  return level;
}

function parseDurability(value: string): 'ack' | 'periodic' | 'none' {
  if (value === 'ack' || value === 'periodic' || value === 'none') return value;
  throw new InvalidArgumentError("expected 'ack', 'periodic' or 'none'");
}

function parseTick(value: string): 'immediate' | number {
  if (value === 'immediate') return value;
  const ms = Number(value);
  if (value.trim() === '' || !Number.isFinite(ms) || ms < 0) throw new InvalidArgumentError("expected 'immediate' or a number of milliseconds");
  return ms;
}

// ---- hash-key ----

async function printHash(secret: string | undefined): Promise<void> {
  const value = secret ?? (await readLine());
  if (value === '') return fail(new Error('hash-key: empty secret'), EXIT_CONFIG);
  console.log(await hashKey(value));
}

/** The first line of stdin, without its line ending. */
async function readLine(): Promise<string> {
  if (process.stdin.isTTY) process.stderr.write('secret: ');
  let text = '';
  for await (const chunk of process.stdin) {
    text += String(chunk);
    const eol = text.indexOf('\n');
    if (eol >= 0) {
      process.stdin.destroy();
      return text.slice(0, eol).replace(/\r$/, '');
    }
  }
  return text.replace(/\r$/, '');
}

// ---- inspect ----

async function inspect(file: string, json: boolean): Promise<void> {
  try {
    const { printInspect } = await import('./cli/inspect.js');
    printInspect(file, json);
  } catch (err) {
    fail(err, EXIT_FAILURE);
  }
}

// ---- stats ----

async function stats(url: string, flags: { interval: number; count: number }): Promise<void> {
  const { printStats } = await import('./cli/stats.js');
  try {
    await printStats({ url, intervalS: flags.interval, count: flags.count });
  } catch (err) {
    fail(err instanceof Error && 'cause' in err && err.cause instanceof Error ? new Error(`${err.message}: ${err.cause.message}`) : err, EXIT_FAILURE);
  }
}

function parseSeconds(value: string): number {
  const s = Number(value);
  if (!Number.isFinite(s) || s <= 0) throw new InvalidArgumentError('expected a number of seconds above 0');
  return s;
}

// ---- bench ----

interface BenchFlags {
  tenant: string;
  key?: string;
  service: string;
  pubs: number;
  subs: number;
  rate: number;
  size: number;
  duration: number;
  warmup: number;
  mode: string;
}

async function bench(url: string, flags: BenchFlags): Promise<void> {
  const key = flags.key ?? process.env.COMMY_KEY;
  if (key === undefined || key === '') return fail(new Error('bench: give --key or set COMMY_KEY'), EXIT_CONFIG);
  if (flags.mode !== 'remote' && flags.mode !== 'auto') return fail(new Error("bench: --mode is 'remote' or 'auto'"), EXIT_CONFIG);
  const { runBench, formatBench } = await import('./cli/bench.js');
  const options = {
    url, tenant: flags.tenant, key, service: flags.service, publishers: flags.pubs, subscribers: flags.subs,
    rate: flags.rate, size: flags.size, durationS: flags.duration, warmupS: flags.warmup, mode: flags.mode as 'remote' | 'auto',
  };
  try {
    console.log(formatBench(options, await runBench(options)));
    process.exit(0);
  } catch (err) {
    fail(err, EXIT_FAILURE);
  }
}

function parseCount(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('expected a whole number');
  return n;
}

// ---- shared ----

function fail(err: unknown, code: number): never {
  const message = isCommyError(err) || err instanceof Error ? err.message : String(err);
  console.error(`commy: ${message}`);
  process.exit(code);
}

function packageVersion(): string {
  try {
    // dist/src/cli.js → the package root's package.json
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

await program().parseAsync(process.argv);
