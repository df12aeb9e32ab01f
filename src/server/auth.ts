import { createHash, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { jwtVerify, type JWTPayload } from 'jose';
import { CommyError, ErrorCode } from '../core/errors.js';
import { isValidName } from '../core/names.js';
import type { KeyConfig, TenantConfig } from './config.js';

/** What an authenticated connection may do in one tenant: service-name globs per action. */
export interface Grants {
  tenant: string;
  keyId: string;
  read: string[];
  write: string[];
  admin: string[];
  /** Present (false) when the key may not map service files: GetServiceFilePath → HYBRID_ACCESS_DENIED. */
  hybrid?: false;
}

/** Longest credential looked at: anything longer is refused before hashing. */
const MAX_CREDENTIAL_LENGTH = 8192;
/** Successful API-key verifications remembered, so a reconnect does not pay scrypt again. */
const CACHE_ENTRIES = 10_000;
/** Seconds of clock skew tolerated on `exp`/`nbf` between the token issuer and this server. */
const JWT_CLOCK_TOLERANCE_S = 5;

interface TenantAuth {
  keys: Map<string, KeyConfig>;
  jwt?: { key: Uint8Array; issuer?: string; audience?: string };
}

/**
 * Checks API keys and JWTs against the configured tenants. Every refusal is the same AUTH_FAILED with
 * the same message, so a caller learns nothing about which part was wrong.
 */
export class Authenticator {
  private readonly tenants = new Map<string, TenantAuth>();
  /** sha256(tenant \0 credential) → key id, in least-recently-used order. */
  private readonly verified = new Map<string, string>();
  /** Verifications under way, so that a burst of reconnects with one credential runs scrypt once. */
  private readonly pending = new Map<string, Promise<string | undefined>>();

  constructor(tenants: Record<string, TenantConfig>) {
    for (const [name, tenant] of Object.entries(tenants)) this.tenants.set(name, compileTenant(tenant));
  }

  async authenticate(tenant: string, method: 'apiKey' | 'jwt', credential: string): Promise<Grants> {
    const auth = isValidName(tenant) ? this.tenants.get(tenant) : undefined;
    if (auth === undefined || typeof credential !== 'string' || credential.length === 0 || credential.length > MAX_CREDENTIAL_LENGTH) {
      throw authFailed();
    }
    if (method === 'apiKey') return this.apiKey(tenant, auth, credential);
    if (method === 'jwt') return verifyJwt(tenant, auth, credential);
    throw authFailed();
  }

  private async apiKey(tenant: string, auth: TenantAuth, credential: string): Promise<Grants> {
    const cacheKey = sha256(`${tenant}\0${credential}`).toString('base64');
    let keyId = this.cached(cacheKey);
    if (keyId === undefined) {
      let verification = this.pending.get(cacheKey);
      if (verification === undefined) {
        verification = matchKey(auth, credential)
          .catch(() => undefined)
          .finally(() => this.pending.delete(cacheKey));
        this.pending.set(cacheKey, verification);
      }
      keyId = await verification;
      if (keyId === undefined) throw authFailed();
      this.remember(cacheKey, keyId);
    }
    const key = auth.keys.get(keyId);
    if (key === undefined) throw authFailed();
    const grants: Grants = { tenant, keyId, read: [...key.read], write: [...key.write], admin: [...key.admin] };
    if (key.hybrid === false) grants.hybrid = false;
    return grants;
  }

  private cached(cacheKey: string): string | undefined {
    const keyId = this.verified.get(cacheKey);
    if (keyId !== undefined) {
      this.verified.delete(cacheKey);
      this.verified.set(cacheKey, keyId);
    }
    return keyId;
  }

  private remember(cacheKey: string, keyId: string): void {
    this.verified.delete(cacheKey);
    this.verified.set(cacheKey, keyId);
    if (this.verified.size > CACHE_ENTRIES) {
      const oldest = this.verified.keys().next().value;
      if (oldest !== undefined) this.verified.delete(oldest);
    }
  }
}

function compileTenant(tenant: TenantConfig): TenantAuth {
  const auth: TenantAuth = { keys: new Map(tenant.keys.map((k) => [k.id, k])) };
  if (tenant.jwt) {
    auth.jwt = { key: new TextEncoder().encode(tenant.jwt.secret) };
    if (tenant.jwt.issuer !== undefined) auth.jwt.issuer = tenant.jwt.issuer;
    if (tenant.jwt.audience !== undefined) auth.jwt.audience = tenant.jwt.audience;
  }
  return auth;
}

function authFailed(): CommyError {
  return new CommyError(ErrorCode.AUTH_FAILED, 'authentication failed');
}

// ---- API keys ----

/**
 * `keyId:secret` checks that key only; anything else (a bare secret, or a prefix that is no key id) is
 * checked as a whole against every key of the tenant, so a user may paste just the secret.
 */
async function matchKey(auth: TenantAuth, credential: string): Promise<string | undefined> {
  const colon = credential.indexOf(':');
  if (colon > 0) {
    const key = auth.keys.get(credential.slice(0, colon));
    if (key !== undefined) return (await verifySecret(credential.slice(colon + 1), key.secret)) ? key.id : undefined;
  }
  for (const key of auth.keys.values()) {
    if (await verifySecret(credential, key.secret)) return key.id;
  }
  return undefined;
}

const SCRYPT = { N: 16384, r: 8, p: 1, saltBytes: 16, hashBytes: 32 } as const;

/** An scrypt hash of `secret` for the config file: `scrypt$N$r$p$saltB64$hashB64`. */
export async function hashKey(secret: string): Promise<string> {
  const salt = randomBytes(SCRYPT.saltBytes);
  const hash = await scrypt(secret, salt, SCRYPT.hashBytes, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p });
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64'), hash.toString('base64')].join('$');
}

/** `stored` is plain text or an scrypt hash from hashKey; compared in constant time either way. */
export async function verifySecret(presented: string, stored: string): Promise<boolean> {
  if (!stored.startsWith('scrypt$')) return timingSafeEqual(sha256(presented), sha256(stored));
  const parsed = parseScrypt(stored);
  if (parsed === undefined) return false;
  const { salt, hash, ...params } = parsed;
  const actual = await scrypt(presented, salt, hash.length, { ...params, maxmem: 2 * scryptMemory(params) });
  return timingSafeEqual(actual, hash);
}

interface ScryptHash {
  N: number;
  r: number;
  p: number;
  salt: Buffer;
  hash: Buffer;
}

/** True when `stored` is an scrypt hash verifySecret can use (the config refuses any other `scrypt$…`). */
export function isScryptHash(stored: string): boolean {
  return parseScrypt(stored) !== undefined;
}

/** Bytes scrypt needs for these parameters (p runs sequentially, so it does not multiply memory). */
function scryptMemory(params: { N: number; r: number }): number {
  return 128 * params.N * params.r;
}

/** Bounds keep a hostile or mistyped config from asking for gigabytes of memory per verification. */
function parseScrypt(stored: string): ScryptHash | undefined {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt' || !parts.slice(4).every((b) => /^[A-Za-z0-9+/_-]+={0,2}$/.test(b))) return undefined;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  const salt = Buffer.from(parts[4]!, 'base64');
  const hash = Buffer.from(parts[5]!, 'base64');
  const powerOfTwo = Number.isInteger(N) && N >= 2 && N <= 2 ** 20 && (N & (N - 1)) === 0;
  if (!powerOfTwo || !Number.isInteger(r) || r < 1 || r > 32 || !Number.isInteger(p) || p < 1 || p > 16) return undefined;
  if (scryptMemory({ N, r }) > 256 * 1024 * 1024) return undefined;
  if (salt.length < 8 || hash.length < 16 || hash.length > 128) return undefined;
  return { N, r, p, salt, hash };
}

function scrypt(secret: string, salt: Buffer, length: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(secret, salt, length, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

// ---- JWT ----

/** HS256 with the tenant's secret; claims `tenant` (must match), `sub` (the key id), `read`/`write`/`admin`. */
async function verifyJwt(tenant: string, auth: TenantAuth, token: string): Promise<Grants> {
  if (auth.jwt === undefined) throw authFailed();
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, auth.jwt.key, {
      algorithms: ['HS256'],
      issuer: auth.jwt.issuer,
      audience: auth.jwt.audience,
      clockTolerance: JWT_CLOCK_TOLERANCE_S,
    }));
  } catch {
    // Bad signature, expired, wrong issuer, malformed: all the same to the caller.
    throw authFailed();
  }
  if (payload['tenant'] !== tenant) throw authFailed();
  const sub = payload.sub ?? 'jwt';
  const read = globList(payload['read']);
  const write = globList(payload['write']);
  const admin = globList(payload['admin']);
  if (typeof sub !== 'string' || sub.length === 0 || read === undefined || write === undefined || admin === undefined) throw authFailed();
  return { tenant, keyId: sub, read, write, admin };
}

/** A claim that should be a list of globs: absent → [], anything but an array of strings → undefined (refused). */
function globList(claim: unknown): string[] | undefined {
  if (claim === undefined) return [];
  if (!Array.isArray(claim) || !claim.every((g): g is string => typeof g === 'string')) return undefined;
  return [...claim];
}
