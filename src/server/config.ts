import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { CommyError, ErrorCode } from '../core/errors.js';
import { assertGlobs } from '../core/glob.js';
import { MAX_NAME_LENGTH, isValidName } from '../core/names.js';
import { DEFAULT_MAX_VARIABLES, INITIAL_DATA_CAPACITY, MAX_MAX_FILE_SIZE, PAGE_SIZE, dataStartFor } from '../local/file-format.js';
import { isScryptHash } from './key-hash.js';
import { resolveGroup, type FilesConfig } from './file-policy.js';
import { DEFAULT_LIMITS, type Limits } from './limits.js';

/**
 * The server's configuration: a JSON file (or the same object), validated strictly so that a typo is an
 * error naming the field rather than a setting silently ignored. docs/operations.md is the reference.
 */
export interface KeyConfig {
  id: string;
  /** Plain text, or an scrypt hash made by `commy hash-key` (`scrypt$N$r$p$salt$hash`). */
  secret: string;
  read: string[];
  write: string[];
  admin: string[];
  /** false: this key may not map service files (GetServiceFilePath → HYBRID_ACCESS_DENIED; clients go remote). */
  hybrid?: boolean;
}
export interface JwtConfig {
  secret: string;
  issuer?: string;
  audience?: string;
}
export interface TenantConfig {
  keys: KeyConfig[];
  jwt?: JwtConfig;
  /** Give this tenant's service files to a Unix group (docs/security.md); default: the server's user only. */
  files?: FilesConfig;
}
export interface AuditConfig {
  enabled: boolean;
  file?: string;
  /** Rotate past this many bytes; unset: the audit log's default (100 MiB). */
  maxBytes?: number;
  /** Rotated files kept (audit.log.1 …); unset: the audit log's default (5). */
  maxFiles?: number;
}
export interface ServerConfig {
  host: string;
  port: number;
  dataDir: string;
  tls?: { cert: string; key: string };
  tenants: Record<string, TenantConfig>;
  limits: Limits;
  tick: 'immediate' | number;
  audit: AuditConfig;
}

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

const keySchema = z.strictObject({ id: name('key id'), secret, read: globs, write: globs, admin: globs, hybrid: z.boolean().optional() });
const jwtSchema = z.strictObject({
  secret: z.string().min(1, 'expected a non-empty secret'),
  issuer: z.string().min(1).optional(),
  audience: z.string().min(1).optional(),
});
const filesSchema = z.strictObject({
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
});
const configSchema = z.strictObject({
  host: z.string().min(1).optional(),
  port: z.number().int().min(0).max(65535).optional(),
  dataDir: z.string().min(1).optional(),
  tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1) }).optional(),
  tenants: z.record(name('tenant name'), tenantSchema).optional(),
  limits: limitsSchema.optional(),
  tick: z.union([z.literal('immediate'), z.number().nonnegative()]).optional(),
  audit: z.strictObject({ file: z.string().min(1).optional(), enabled: z.boolean().optional(), maxBytes: positiveInt.optional(), maxFiles: z.number().int().min(0).optional() }).optional(),
});
type RawConfig = z.output<typeof configSchema>;

// ---- loading ----

/**
 * `string`: path to a JSON file (relative paths inside it resolve against its directory);
 * object: already parsed (a ServerConfig is accepted too, and comes back equal); undefined: defaults.
 */
export function loadConfig(input?: string | Record<string, unknown> | ServerConfig): ServerConfig {
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

function parse(input: unknown): RawConfig {
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

function mergeLimits(base: Limits, limits: NonNullable<RawConfig['limits']>): Limits {
  return {
    ...base,
    ...definedOnly(limits),
    rateLimit: { ...base.rateLimit, ...definedOnly(limits.rateLimit ?? {}) },
  };
}

function withDefaults(raw: RawConfig): ServerConfig {
  const config: ServerConfig = {
    host: raw.host ?? DEFAULT_HOST,
    port: raw.port ?? DEFAULT_PORT,
    dataDir: raw.dataDir ?? DEFAULT_DATA_DIR,
    tenants: raw.tenants ?? {},
    limits: mergeLimits(DEFAULT_LIMITS, raw.limits ?? {}),
    tick: raw.tick ?? 'immediate',
    // Audited unless turned off: without a file, the server writes <dataDir>/audit.log ("-" means stdout).
    audit: { enabled: raw.audit?.enabled ?? true },
  };
  assertKeyGlobs(config);
  if (raw.tls) config.tls = { ...raw.tls };
  if (raw.audit?.file !== undefined) config.audit.file = raw.audit.file;
  // Defaults (100 MiB, 5 files) live with the audit log: a config without them stays `{ enabled }`.
  if (raw.audit?.maxBytes !== undefined) config.audit.maxBytes = raw.audit.maxBytes;
  if (raw.audit?.maxFiles !== undefined) config.audit.maxFiles = raw.audit.maxFiles;
  return config;
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
function resolvePaths(raw: RawConfig, base: string): RawConfig {
  const out: RawConfig = { ...raw };
  if (raw.dataDir !== undefined) out.dataDir = resolve(base, raw.dataDir);
  if (raw.tls) out.tls = { cert: resolve(base, raw.tls.cert), key: resolve(base, raw.tls.key) };
  if (raw.audit?.file !== undefined && raw.audit.file !== '-') out.audit = { ...raw.audit, file: resolve(base, raw.audit.file) };
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
