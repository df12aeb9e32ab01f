import { createHash, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { CommyError, ErrorCode } from '../core/errors.js';

/**
 * API key secrets: plain text, or scrypt hashes made by `commy hash-key` (`scrypt$N$r$p$salt$hash`), always
 * compared in constant time. Its own module so that the config (which checks hashes) and the authenticator
 * (which verifies them) do not import each other.
 */

export function plainEqual(presented: string, stored: string): boolean {
  return timingSafeEqual(sha256(presented), sha256(stored));
}

export const SCRYPT = { N: 16384, r: 8, p: 1, saltBytes: 16, hashBytes: 32 } as const;

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

/** Parameters are bounded (parseScrypt, SCRYPT), so a failure here is the host's (memory), not the caller's. */
function scrypt(secret: string, salt: Buffer, length: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(secret, salt, length, options, (err, key) =>
      err ? reject(new CommyError(ErrorCode.INTERNAL_ERROR, `scrypt failed: ${err.message}`, { cause: err })) : resolve(key),
    );
  });
}

export function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
