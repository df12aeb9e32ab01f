import { compileGlobs, type GlobLimits, type GlobMatcher } from '../core/glob.js';
import { CommyError, ErrorCode, isCommyError } from '../core/errors.js';
import type { Grants } from './auth.js';
import { LruMap } from '../core/lru-map.js';
import { DEFAULT_LIMITS } from './limits.js';

export { globMatch } from '../core/glob.js';

/**
 * read: read, subscribe, map the file (read-only without write). write: change values. admin: create a
 * service (asked for with `create` on a Subscription or GetServiceFilePath) and register variables (on a
 * subscription); nothing removes a variable or a service. No action implies another, but subscribing needs
 * read: admin and a subscription's reports need it too, and a write-only key has WriteVariable alone.
 */
export type Action = 'read' | 'write' | 'admin';

export class Permissions {
  readonly grants: Grants;
  private readonly read: GlobMatcher;
  private readonly write: GlobMatcher;
  private readonly admin: GlobMatcher;

  /**
   * Compiles the grants' globs once (matching is linear-time whatever the globs, docs/operations.md). Grants
   * past `limits` (more than maxPatterns globs in a list, a glob longer than maxPatternLength, an empty
   * one) are refused with AUTH_FAILED: the credential, not the message, is at fault (a JWT's issuer, or a
   * key's config), and the connection stays unauthenticated, as for any other refused credential.
   */
  constructor(grants: Grants, limits: GlobLimits = DEFAULT_LIMITS) {
    this.grants = grants;
    this.read = grantMatcher(grants, 'read', limits);
    this.write = grantMatcher(grants, 'write', limits);
    this.admin = grantMatcher(grants, 'admin', limits);
  }

  can(action: Action, service: string): boolean {
    switch (action) {
      case 'read':
        return this.read(service);
      case 'write':
        return this.write(service);
      case 'admin':
        return this.admin(service);
      default:
        return false;
    }
  }
}

/** Distinct grants remembered (keys of the config, or distinct JWT claims): beyond it the least recent is forgotten. */
export const PERMISSIONS_CACHE_SIZE = 1000;

/**
 * One Permissions per distinct grants, shared by every connection that holds them: compiled globs are the largest
 * part of what an authenticated connection would otherwise keep for itself (idle connections cost memory).
 */
export class PermissionsCache {
  private readonly cache = new LruMap<string, Permissions>(PERMISSIONS_CACHE_SIZE);

  constructor(private readonly limits: GlobLimits = DEFAULT_LIMITS) {}

  of(grants: Grants): Permissions {
    // JSON keeps the lists apart whatever they hold (no separator a glob could contain can confuse two keys).
    // The principal too: a token whose sub and globs equal a key's must not be handed that key's Permissions.
    const key = JSON.stringify([grants.tenant, grants.principal, grants.keyId, grants.read, grants.write, grants.admin, grants.hybrid ?? true]);
    let perms = this.cache.get(key);
    if (perms === undefined) {
      perms = new Permissions(grants, this.limits); // throws AUTH_FAILED for grants past the limits: nothing cached
      this.cache.set(key, perms);
    }
    return perms;
  }
}

function grantMatcher(grants: Grants, action: Action, limits: GlobLimits): GlobMatcher {
  try {
    return compileGlobs(grants[action], limits);
  } catch (err) {
    if (!isCommyError(err, ErrorCode.INVALID_MESSAGE)) throw err;
    const key = JSON.stringify(grants.keyId.length > 64 ? `${grants.keyId.slice(0, 64)}…` : grants.keyId);
    throw new CommyError(ErrorCode.AUTH_FAILED, `key ${key}: ${action} grants refused: ${err.message}`, { cause: err });
  }
}
