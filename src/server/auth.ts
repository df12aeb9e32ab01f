import { randomBytes } from 'node:crypto';
import { jwtVerify, type JWTPayload } from 'jose';
import { CommyError, ErrorCode } from '../core/errors.js';
import { LruMap } from '../core/lru-map.js';
import { isValidName } from '../core/names.js';
import { DEFAULT_THROTTLE, FailureThrottle, Semaphore, rateLimited, type ThrottlePolicy } from './auth-throttle.js';
import type { KeyConfig, TenantConfig } from './config.js';
import { SCRYPT, plainEqual, sha256, verifySecret } from './key-hash.js';
import { DEFAULT_LIMITS } from './limits.js';

/** What an authenticated connection may do in one tenant: service-name globs per action. */
export interface Grants {
  tenant: string;
  /** An API key's id, or a token's `sub`: what replies and audit lines call the credential. */
  keyId: string;
  /**
   * Who the credential names, unambiguously across kinds: `key:<id>` for an API key, `jwt:<iss>:<sub>` for a
   * token (`iss` percent-encoded, so the first ':' after it ends it). Operation ids are remembered per principal:
   * a token whose `sub` equals a key's id is never that key's client (op-ledger.ts).
   */
  principal: string;
  read: string[];
  write: string[];
  admin: string[];
  /** Present (false) when the key may not map service files: GetServiceFilePath → HYBRID_ACCESS_DENIED. */
  hybrid?: false;
}

export interface AuthenticatorOptions {
  /** Verifications (scrypt) running at once: limits.maxConcurrentAuth (default 4). */
  maxConcurrentAuth?: number;
  /** Verifications waiting for their turn; past it RATE_LIMITED at once (default 25 per concurrent one). */
  maxQueuedAuth?: number;
  /** Failure back-off per address and per key id (default DEFAULT_THROTTLE). */
  throttle?: Partial<ThrottlePolicy>;
  /** Clock for the back-off, in ms (tests). */
  now?: () => number;
}

/** For tests and metrics. */
export interface AuthStats {
  /** scrypt runs so far (real and stand-in alike). */
  scrypts: number;
  /** scrypt runs under way now, and the most there ever were at once. */
  scryptsRunning: number;
  peakScryptsRunning: number;
  /** Verifications waiting for a turn. */
  queued: number;
}

/** Longest credential looked at: anything longer is refused before hashing. */
const MAX_CREDENTIAL_LENGTH = 8192;
/** Successful API-key verifications remembered, so a reconnect does not pay scrypt again. */
const CACHE_ENTRIES = 10_000;
/** Seconds of clock skew tolerated on `exp`/`nbf` between the token issuer and this server. */
const JWT_CLOCK_TOLERANCE_S = 5;
/** At ~50 ms per scrypt, a full queue drains in about 25 × 50 ms = 1.25 s: well inside authTimeoutMs. */
const QUEUED_PER_CONCURRENT = 25;

interface JwtAuth {
  key: Uint8Array;
  issuer?: string;
  audience?: string;
}

interface TenantAuth {
  keys: Map<string, KeyConfig>;
  jwt?: JwtAuth;
}

/**
 * Checks API keys and JWTs against the configured tenants. Every refusal is the same AUTH_FAILED with
 * the same message, and costs the same work, so a caller learns nothing about which part was wrong:
 * an API key that is not answered from the success cache always costs exactly one scrypt of the standard
 * parameters (a stand-in one for unknown tenants, unknown key ids and plain-text secrets).
 *
 * Guessing is throttled per source address and per tenant/key id (auth-throttle.ts): past the limit the answer
 * is RATE_LIMITED, without verifying. A credential in the success cache is accepted even then, so an attacker
 * failing on purpose cannot lock out a client that has connected once since the server started.
 */
export class Authenticator {
  private readonly tenants = new Map<string, TenantAuth>();
  /** sha256(tenant \0 credential) → key id, in least-recently-used order. */
  private readonly verified = new LruMap<string, string>(CACHE_ENTRIES);
  /** Verifications under way, so that a burst of reconnects with one credential runs scrypt once. */
  private readonly pending = new Map<string, Promise<string | undefined>>();
  private readonly gate: Semaphore;
  private readonly throttle: FailureThrottle;
  private readonly now: () => number;
  private readonly counters = { scrypts: 0, running: 0, peak: 0 };

  constructor(tenants: Record<string, TenantConfig>, options: AuthenticatorOptions = {}) {
    for (const [name, tenant] of Object.entries(tenants)) this.tenants.set(name, compileTenant(tenant));
    const concurrent = options.maxConcurrentAuth ?? DEFAULT_LIMITS.maxConcurrentAuth;
    this.gate = new Semaphore(concurrent, options.maxQueuedAuth ?? concurrent * QUEUED_PER_CONCURRENT);
    this.throttle = new FailureThrottle({ ...DEFAULT_THROTTLE, ...options.throttle });
    this.now = options.now ?? (() => performance.now());
  }

  get stats(): AuthStats {
    const c = this.counters;
    return { scrypts: c.scrypts, scryptsRunning: c.running, peakScryptsRunning: c.peak, queued: this.gate.queued };
  }

  /**
   * `peer`: where the attempt comes from, for the per-address throttle: the socket's address as admission.ts
   * counts it (sourceOf), never anything the client says; '' when there is none (embedded use).
   */
  async authenticate(tenant: string, method: 'apiKey' | 'jwt', credential: string, peer = ''): Promise<Grants> {
    const cacheKey = method === 'apiKey' && wellFormed(tenant, credential) ? sha256(`${tenant}\0${credential}`).toString('base64') : undefined;
    if (cacheKey !== undefined) {
      const known = this.verified.get(cacheKey);
      if (known !== undefined) return this.grantsFor(tenant, known);
      // The same credential is being checked already: its answer is this one's too, at no further cost.
      const running = this.pending.get(cacheKey);
      if (running !== undefined) return this.grantsFor(tenant, await running);
    }
    return this.throttled(throttleKeys(peer, tenant, method, credential), () => this.verify(tenant, method, credential, cacheKey));
  }

  /** Refuses (RATE_LIMITED) while any of `keys` is blocked; otherwise runs `attempt` and counts a failure against each. */
  private async throttled(keys: string[], attempt: () => Promise<Grants>): Promise<Grants> {
    if (keys.some((k) => this.throttle.isBlocked(k, this.now()))) {
      throw rateLimited('too many failed authentications; retry later');
    }
    for (const k of keys) this.throttle.begin(k, this.now());
    let failed = false;
    try {
      return await attempt();
    } catch (err) {
      failed = err instanceof CommyError && err.code === ErrorCode.AUTH_FAILED;
      throw err;
    } finally {
      for (const k of keys) this.throttle.finish(k, failed, this.now());
    }
  }

  private async verify(tenant: string, method: string, credential: string, cacheKey: string | undefined): Promise<Grants> {
    // Malformed attempts are refused before any work: that depends on the input only, never on the config.
    if (!wellFormed(tenant, credential)) throw authFailed();
    if (method === 'jwt') return verifyJwt(tenant, this.tenants.get(tenant)?.jwt, credential);
    if (method !== 'apiKey' || cacheKey === undefined) throw authFailed();
    const verification = this.gate
      .run(() => this.matchKey(this.tenants.get(tenant), credential).catch(() => undefined))
      .finally(() => this.pending.delete(cacheKey));
    this.pending.set(cacheKey, verification);
    const keyId = await verification;
    if (keyId !== undefined) this.verified.set(cacheKey, keyId);
    return this.grantsFor(tenant, keyId);
  }

  /**
   * Exactly one scrypt whatever the tenant, key id and secret: the key's own hash, or a stand-in of the
   * standard parameters when there is none (unknown tenant or key, plain-text secret), so the time taken
   * says nothing about what exists.
   */
  private async matchKey(auth: TenantAuth | undefined, credential: string): Promise<string | undefined> {
    const { key, secret } = pickKey(auth, credential);
    const hashed = key !== undefined && key.secret.startsWith('scrypt$');
    const hashMatches = await this.scrypt(() => verifySecret(secret, hashed ? key.secret : DUMMY_HASH));
    if (key === undefined) return undefined;
    return (hashed ? hashMatches : plainEqual(secret, key.secret)) ? key.id : undefined;
  }

  private async scrypt<T>(run: () => Promise<T>): Promise<T> {
    const c = this.counters;
    c.scrypts++;
    c.peak = Math.max(c.peak, ++c.running);
    try {
      return await run();
    } finally {
      c.running--;
    }
  }

  private grantsFor(tenant: string, keyId: string | undefined): Grants {
    const key = keyId === undefined ? undefined : this.tenants.get(tenant)?.keys.get(keyId);
    if (key === undefined) throw authFailed();
    const grants: Grants = { tenant, keyId: key.id, principal: `key:${key.id}`, read: [...key.read], write: [...key.write], admin: [...key.admin] };
    if (key.hybrid === false) grants.hybrid = false;
    return grants;
  }
}

function wellFormed(tenant: unknown, credential: unknown): tenant is string {
  return typeof tenant === 'string' && isValidName(tenant) && typeof credential === 'string' && credential.length > 0 && credential.length <= MAX_CREDENTIAL_LENGTH;
}

/**
 * What a failure counts against: the source address, and for API keys the tenant/key id the credential names
 * (`*` for a bare secret), whether or not it exists: a block must not tell which key ids are real.
 */
function throttleKeys(peer: string, tenant: string, method: string, credential: string): string[] {
  const keys = peer === '' ? [] : [`ip ${peer}`];
  if (method === 'apiKey' && typeof tenant === 'string' && isValidName(tenant) && typeof credential === 'string') {
    const colon = credential.indexOf(':');
    const named = colon > 0 ? credential.slice(0, colon) : '';
    keys.push(`key ${tenant}/${isValidName(named) ? named : '*'}`);
  }
  return keys;
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
 * The key a credential is checked against. `keyId:secret` names that key; anything else (a bare secret, or a
 * prefix that is no key id) is looked for among the tenant's plain-text keys, so a user may paste just the
 * secret. Hashed keys need their key id: trying a bare secret against each would cost one scrypt per key.
 */
function pickKey(auth: TenantAuth | undefined, credential: string): { key: KeyConfig | undefined; secret: string } {
  const colon = credential.indexOf(':');
  const named = colon > 0 ? auth?.keys.get(credential.slice(0, colon)) : undefined;
  if (named !== undefined) return { key: named, secret: credential.slice(colon + 1) };
  let found: KeyConfig | undefined;
  for (const key of auth?.keys.values() ?? []) {
    // Every plain-text key is compared, so the time does not say which one (if any) matched.
    if (!key.secret.startsWith('scrypt$') && plainEqual(credential, key.secret)) found ??= key;
  }
  return { key: found, secret: credential };
}

/**
 * A stand-in hash of the standard parameters, checked when there is no hash to check (unknown tenant or key
 * id, plain-text secret) so that every refusal costs the same scrypt. Random: nothing matches it.
 */
const DUMMY_HASH = ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, randomBytes(SCRYPT.saltBytes).toString('base64'), randomBytes(SCRYPT.hashBytes).toString('base64')].join('$');

// ---- JWT ----

/** Tenants without JWTs (and unknown ones) check the token against this random key: the same work, the same refusal. */
const DUMMY_JWT: JwtAuth = { key: randomBytes(32) };

/** 1–128 characters, none of them a control character. */
const PRINTABLE_SUB = /^[^\u0000-\u001f\u007f]{1,128}$/u;

/** HS256 with the tenant's secret; claims `tenant` (must match), `sub` (the key id), `read`/`write`/`admin`. */
async function verifyJwt(tenant: string, jwt: JwtAuth | undefined, token: string): Promise<Grants> {
  const auth = jwt ?? DUMMY_JWT;
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, auth.key, {
      algorithms: ['HS256'],
      issuer: auth.issuer,
      audience: auth.audience,
      clockTolerance: JWT_CLOCK_TOLERANCE_S,
    }));
  } catch {
    // Bad signature, expired, wrong issuer, malformed: all the same to the caller.
    throw authFailed();
  }
  if (auth === DUMMY_JWT) throw authFailed();
  if (payload['tenant'] !== tenant) throw authFailed();
  const sub = payload.sub ?? 'jwt';
  const iss: unknown = payload.iss ?? '';
  const read = globList(payload['read']);
  const write = globList(payload['write']);
  const admin = globList(payload['admin']);
  // `sub` becomes the key id in replies and audit lines: printable and short, like a configured key id.
  if (typeof sub !== 'string' || !PRINTABLE_SUB.test(sub) || typeof iss !== 'string' || read === undefined || write === undefined || admin === undefined) throw authFailed();
  return { tenant, keyId: sub, principal: `jwt:${encodeURIComponent(iss)}:${sub}`, read, write, admin };
}

/** A claim that should be a list of globs: absent → [], anything but an array of strings → undefined (refused). */
function globList(claim: unknown): string[] | undefined {
  if (claim === undefined) return [];
  if (!Array.isArray(claim) || !claim.every((g): g is string => typeof g === 'string')) return undefined;
  return [...claim];
}
