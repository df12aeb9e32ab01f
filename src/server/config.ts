import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { CommyError, ErrorCode } from '../core/errors.js';
import { assertGlobs } from '../core/glob.js';
import { MAX_NAME_LENGTH, isValidName } from '../core/names.js';
import { DEFAULT_MAX_VARIABLES, INITIAL_DATA_CAPACITY, MAX_MAX_FILE_SIZE, PAGE_SIZE, dataStartFor } from '../local/file-format.js';
import { DEFAULT_DURABILITY } from './durability.js';
import { isScryptHash } from './key-hash.js';
import { resolveGroup } from './file-policy.js';
import { DEFAULT_LIMITS, FRAME_HEADROOM, type Limits } from './limits.js';

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 9000;
export const DEFAULT_DATA_DIR = './commy-data';

export class ConfigError extends CommyError {
  /** The first offending field, e.g. `tenants.acme.keys[0].read` ('' for the whole file). */
  readonly field: string;

  constructor(field: string, message: string, options?: { cause?: unknown }) {
    super(ErrorCode.CONFIG_INVALID, message, options);
    this.name = 'ConfigError';
    this.field = field;
  }
}

/**
 * The server's configuration: a JSON file (or the same object), validated strictly so that a typo is an
 * error naming the field rather than a setting silently ignored. docs/operations.md is the reference.
 * The schemas below are the only statement of each shape: the exported types are inferred from them.
 */

// ---- schema ----

const name = (what: string) => z.string().refine(isValidName, {
  message: `invalid ${what}: expected 1-${MAX_NAME_LENGTH} characters of [A-Za-z0-9._-] starting with a letter or digit`,
});
const globs = z.array(z.string().min(1, 'expected a non-empty glob')).default([]);
const secret = z
  .string()
  .min(1, 'expected a non-empty secret')
  // Checked here so that a mangled hash is refused at start-up instead of being taken for a plain secret.
  .refine((s) => !s.startsWith('scrypt$') || isScryptHash(s), {
    message: 'malformed scrypt hash: expected scrypt$N$r$p$salt$hash as printed by `commy hash-key`',
  });
const positiveInt = z.number().int().positive();
// The service file format's own bounds (src/local/file-format.ts), checked now rather than at the first service creation.
const MIN_SERVICE_FILE_BYTES = dataStartFor(DEFAULT_MAX_VARIABLES) + INITIAL_DATA_CAPACITY;
const serviceFileBytes = positiveInt
  .min(MIN_SERVICE_FILE_BYTES)
  .max(MAX_MAX_FILE_SIZE)
  .refine((n) => n % PAGE_SIZE === 0, { message: `expected a multiple of ${PAGE_SIZE}` });

const keySchema = z.strictObject({
  id: name('key id'),
  /** Plain text, or an scrypt hash made by `commy hash-key` (`scrypt$N$r$p$salt$hash`). */
  secret,
  read: globs,
  write: globs,
  admin: globs,
  /** false: this key may not map service files (GetServiceFilePath → HYBRID_ACCESS_DENIED; clients go remote). */
  hybrid: z.boolean().optional(),
});
const jwtSchema = z.strictObject({
  secret: z.string().min(1, 'expected a non-empty secret'),
  issuer: z.string().min(1).optional(),
  audience: z.string().min(1).optional(),
});
/** Give a tenant's service files to a Unix group (docs/security.md); default: the server's user only. */
const filesSchema = z.strictObject({
  /** A group name (from /etc/group) or a numeric gid. */
  group: z.union([z.string().min(1), z.number().int().nonnegative()]),
  mode: z.enum(['0640', '0660']).optional(),
});
const tenantSchema = z
  .strictObject({ keys: z.array(keySchema).default([]), jwt: jwtSchema.optional(), files: filesSchema.optional() })
  .superRefine((tenant, ctx) => {
    if (tenant.files !== undefined && resolveGroup(tenant.files.group) === undefined) {
      ctx.addIssue({ code: 'custom', path: ['files', 'group'], message: `unknown group ${JSON.stringify(tenant.files.group)}` });
    }
    const seen = new Set<string>();
    tenant.keys.forEach((key, i) => {
      if (seen.has(key.id)) ctx.addIssue({ code: 'custom', path: ['keys', i, 'id'], message: `duplicate key id "${key.id}"` });
      seen.add(key.id);
    });
  });
// `satisfies`: every field of Limits, and nothing else, can be configured; a new limit must be added here too.
const limitsSchema = z.strictObject({
  maxFrameBytes: positiveInt.optional(),
  maxVariableBytes: positiveInt.optional(),
  maxServiceFileBytes: serviceFileBytes.optional(),
  maxNameLength: positiveInt.max(MAX_NAME_LENGTH).optional(),
  maxConnections: positiveInt.optional(),
  authTimeoutMs: positiveInt.optional(),
  maxSubscriptionsPerConnection: positiveInt.optional(),
  rateLimit: z.strictObject({ messagesPerSecond: z.number().positive().optional(), burst: positiveInt.optional() }).optional(),
  maxBufferedBytes: positiveInt.optional(),
  maxInputBytesPerSecond: positiveInt.optional(),
  slowConsumerTimeoutMs: positiveInt.optional(),
  closeGraceMs: positiveInt.optional(),
  maxUnauthenticatedConnections: positiveInt.optional(),
  maxUnauthenticatedPerIp: positiveInt.optional(),
  maxConnectionsPerIp: positiveInt.optional(),
  maxChangesPerReport: positiveInt.optional(),
  maxPatterns: positiveInt.optional(),
  maxPatternLength: positiveInt.optional(),
  maxServicesPerTenant: positiveInt.optional(),
  maxVariablesPerTenant: positiveInt.optional(),
  maxBytesPerTenant: positiveInt.optional(),
  maxOpenServices: positiveInt.optional(),
  serviceIdleMs: z.number().int().nonnegative().optional(),
  maxConcurrentAuth: positiveInt.optional(),
  opIdTtlMs: positiveInt.optional(),
  maxOpIdsPerClient: positiveInt.optional(),
  maxOpIdWeight: positiveInt.optional(),
  opJournalBytes: positiveInt.min(64 * 1024).max(1024 * 1024 * 1024).multipleOf(8).optional(),
} satisfies Record<keyof Limits, z.ZodType>);
const auditSchema = z.strictObject({
  /** Unset: <dataDir>/audit.log; "-" means stdout (server.ts). */
  file: z.string().min(1).optional(),
  /** Audited unless turned off. */
  enabled: z.boolean().default(true),
  /** Rotate past this many bytes; unset: the audit log's default (100 MiB). */
  maxBytes: positiveInt.optional(),
  /** Rotated files kept (audit.log.1 …); unset: the audit log's default (5). */
  maxFiles: z.number().int().min(0).optional(),
});
const clusterSchema = z.strictObject({
  /** The Redis every node shares (docs/cluster.md): redis://[user:pass@]host:port[/db], rediss:// for TLS. */
  redis: z.string().regex(/^rediss?:\/\/./, 'expected a redis:// or rediss:// URL'),
  /** Unique in the cluster and the same across this node's restarts (its data directory is its own). */
  nodeId: name('node id'),
  /** Entries kept per service stream (approximately); a node further behind loads a snapshot. */
  streamLength: positiveInt.min(100).default(100_000),
  /** How long Redis remembers an operation id (a retry after that is applied again). */
  opIdTtlMs: positiveInt.default(10 * 60_000),
});
const configSchema = z.strictObject({
  host: z.string().min(1).default(DEFAULT_HOST),
  port: z.number().int().min(0).max(65535).default(DEFAULT_PORT),
  // No default here: resolvePaths would resolve it against the config file's directory, and the default is
  // relative to the current directory.
  dataDir: z.string().min(1).optional(),
  tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1) }).optional(),
  tenants: z.record(name('tenant name'), tenantSchema).default({}),
  // Partial, and no defaults: merged over DEFAULT_LIMITS, or over a running config's limits (withLimits).
  limits: limitsSchema.optional(),
  tick: z.union([z.literal('immediate'), z.number().nonnegative()]).default('immediate'),
  audit: auditSchema.default({ enabled: true }),
  /** When acknowledged writes reach the disk (durability.ts): before each ack, every syncIntervalMs, or as the kernel likes. */
  /** Bearer token for the per-tenant series of GET /metrics (without it, totals only): at least 16 characters. */
  metricsToken: z.string().min(16).optional(),
  /** The server's log (not the audit log): pino levels; connection lifecycle lines are at debug. */
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  durability: z.enum(['ack', 'periodic', 'none']).default(DEFAULT_DURABILITY.mode),
  syncIntervalMs: positiveInt.default(DEFAULT_DURABILITY.intervalMs),
  /** Several servers on one Redis (docs/cluster.md); absent: a single server, no Redis. */
  cluster: clusterSchema.optional(),
});

// ---- types ----
// z.output (= z.infer): the shapes after parsing, defaults applied (`read: []`, `audit.enabled: true`, …).
// z.input would be what a file may leave out; only LimitsInput needs that view.

export type KeyConfig = z.output<typeof keySchema>;
export type JwtConfig = z.output<typeof jwtSchema>;
export type FilesConfig = z.output<typeof filesSchema>;
export type TenantConfig = z.output<typeof tenantSchema>;
export type AuditConfig = z.output<typeof auditSchema>;
export type ClusterConfig = z.output<typeof clusterSchema>;
/** Limits as a config file or `Server.start({ limits })` gives them: any subset, `rateLimit` too. */
export type LimitsInput = z.input<typeof limitsSchema>;
type ParsedConfig = z.output<typeof configSchema>;
/** A loaded config: the schema's output, plus the two defaults the schema cannot apply (see configSchema). */
export type ServerConfig = Omit<ParsedConfig, 'dataDir' | 'limits'> & { dataDir: string; limits: Limits };

// ---- loading ----

/**
 * `string`: path to a JSON file (relative paths inside it resolve against its directory);
 * object: already parsed (a ServerConfig is accepted too, and comes back equal); undefined: defaults.
 */
export function loadConfig(input?: string | Record<string, unknown> | ServerConfig): ServerConfig {
  const config = readConfig(input);
  assertLimitsAgree(config.limits);
  return config;
}

/**
 * loadConfig without the checks that relate one limit to another: for Server.start, which applies its own
 * `limits` over the file's first and checks the result (assertLimitsAgree).
 */
export function readConfig(input?: string | Record<string, unknown> | ServerConfig): ServerConfig {
  if (input === undefined) return withDefaults(parse({}));
  if (typeof input === 'string') {
    const file = resolve(input);
    return withDefaults(resolvePaths(parse(readJson(file)), dirname(file)));
  }
  return withDefaults(parse(input));
}

/** True for an object loadConfig produced (or one shaped like it): lets Server.start skip re-loading. */
export function isServerConfig(value: unknown): value is ServerConfig {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Partial<Record<keyof ServerConfig, unknown>>;
  return (
    typeof v.host === 'string' &&
    typeof v.port === 'number' &&
    typeof v.dataDir === 'string' &&
    typeof v.tenants === 'object' && v.tenants !== null &&
    typeof v.limits === 'object' && v.limits !== null &&
    typeof (v.limits as Partial<Limits>).maxFrameBytes === 'number' &&
    typeof v.audit === 'object' && v.audit !== null &&
    typeof (v.audit as Partial<AuditConfig>).enabled === 'boolean'
  );
}

/** A tenant `dev` with one all-powerful key and a fresh secret: what `commy serve` runs with when no tenant is configured. */
export function defaultDevTenant(): { config: TenantConfig; apiKey: string } {
  const secret = randomBytes(24).toString('base64url');
  const config: TenantConfig = { keys: [{ id: 'dev', secret, read: ['*'], write: ['*'], admin: ['*'] }] };
  return { config, apiKey: `dev:${secret}` };
}

function readJson(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('', `cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError('', `config file ${file} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

function parse(input: unknown): ParsedConfig {
  const result = configSchema.safeParse(input);
  if (result.success) return result.data;
  const issues = result.error.issues.flatMap(describeIssue);
  const shown = issues.slice(0, 5).map((i) => (i.field ? `${i.field}: ${i.message}` : i.message));
  if (issues.length > 5) shown.push(`and ${issues.length - 5} more`);
  throw new ConfigError(issues[0]?.field ?? '', `invalid config: ${shown.join('; ')}`);
}

/**
 * `base` with `overrides` (e.g. `Server.start({ limits })`) applied: checked by the same schema as the config
 * file's `limits` (CONFIG_INVALID naming the field) and merged as deeply, so `{ rateLimit: { burst: 5 } }`
 * keeps the configured rate.
 */
export function withLimits(base: Limits, overrides: unknown): Limits {
  return mergeLimits(base, parse({ limits: overrides }).limits ?? {});
}

function mergeLimits(base: Limits, limits: NonNullable<ParsedConfig['limits']>): Limits {
  return {
    ...base,
    ...definedOnly(limits),
    rateLimit: { ...base.rateLimit, ...definedOnly(limits.rateLimit ?? {}) },
  };
}

function withDefaults(raw: ParsedConfig): ServerConfig {
  const config: ServerConfig = {
    host: raw.host,
    port: raw.port,
    dataDir: raw.dataDir ?? DEFAULT_DATA_DIR,
    tenants: raw.tenants,
    limits: mergeLimits(DEFAULT_LIMITS, raw.limits ?? {}),
    tick: raw.tick,
    // The fields given and no others: the audit log's own defaults (100 MiB, 5 files) stay its own.
    audit: { enabled: raw.audit.enabled, ...definedOnly(raw.audit) },
    logLevel: raw.logLevel,
    ...(raw.metricsToken !== undefined ? { metricsToken: raw.metricsToken } : {}),
    durability: raw.durability,
    syncIntervalMs: raw.syncIntervalMs,
    ...(raw.cluster !== undefined ? { cluster: { ...raw.cluster } } : {}),
  };
  assertKeyGlobs(config);
  if (raw.tls) config.tls = { ...raw.tls };
  return config;
}

/**
 * Limits that contradict each other are refused at start: the largest variable must fit one frame with the
 * message around it, or a variable could be registered that no WriteVariable, report, update or query page
 * could carry (CONFIG_INVALID, naming limits.maxFrameBytes).
 */
export function assertLimitsAgree(limits: Limits): void {
  const needed = limits.maxVariableBytes + FRAME_HEADROOM;
  if (limits.maxFrameBytes >= needed) return;
  throw new ConfigError(
    'limits.maxFrameBytes',
    `invalid config: limits.maxFrameBytes: ${limits.maxFrameBytes} bytes cannot carry the largest variable: it must be at least ` +
      `limits.maxVariableBytes (${limits.maxVariableBytes}) + ${FRAME_HEADROOM} = ${needed}; raise maxFrameBytes or lower maxVariableBytes`,
  );
}

/** A key whose globs break the pattern limits would be refused at every login: refuse it at start instead. */
function assertKeyGlobs(config: ServerConfig): void {
  for (const [tenant, t] of Object.entries(config.tenants)) {
    t.keys.forEach((key, i) => {
      for (const action of ['read', 'write', 'admin'] as const) {
        try {
          assertGlobs(key[action], config.limits);
        } catch (err) {
          throw new ConfigError(fieldPath(['tenants', tenant, 'keys', i, action]), `invalid config: ${fieldPath(['tenants', tenant, 'keys', i, action])}: ${(err as Error).message}`);
        }
      }
    });
  }
}

/** Paths written in a config file mean "next to the file", not "wherever the server was started". */
function resolvePaths(raw: ParsedConfig, base: string): ParsedConfig {
  const out: ParsedConfig = { ...raw };
  if (raw.dataDir !== undefined) out.dataDir = resolve(base, raw.dataDir);
  if (raw.tls) out.tls = { cert: resolve(base, raw.tls.cert), key: resolve(base, raw.tls.key) };
  if (raw.audit.file !== undefined && raw.audit.file !== '-') out.audit = { ...raw.audit, file: resolve(base, raw.audit.file) };
  return out;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

// ---- messages ----

interface Issue {
  field: string;
  message: string;
}

function describeIssue(issue: z.core.$ZodIssue): Issue[] {
  const field = fieldPath(issue.path);
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((k) => ({ field: fieldPath([...issue.path, k]), message: 'unknown field' }));
  }
  if (issue.code === 'invalid_key') {
    return [{ field, message: issue.issues[0]?.message ?? issue.message }];
  }
  return [{ field, message: issue.message.replace(/^Invalid input: /, '') }];
}

/** `['tenants', 'acme', 'keys', 0, 'read']` → `tenants.acme.keys[0].read`; odd keys are quoted: `tenants["../x"]`. */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (typeof seg === 'string' && /^[A-Za-z0-9_][A-Za-z0-9_-]*$/.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(String(seg))}]`;
  }
  return out;
}
