import type { Grants } from './auth.js';

/**
 * read: read, subscribe, map read-only. write: change values. admin: create services, register and
 * remove variables. No action implies another: a write-only key cannot read unless its globs say so.
 */
export type Action = 'read' | 'write' | 'admin';

export class Permissions {
  readonly grants: Grants;
  private readonly matchers: Record<Action, Matcher>;

  constructor(grants: Grants) {
    this.grants = grants;
    this.matchers = { read: matcher(grants.read), write: matcher(grants.write), admin: matcher(grants.admin) };
  }

  can(action: Action, service: string): boolean {
    const match = this.matchers[action];
    return match !== undefined && match(service);
  }
}

type Matcher = (name: string) => boolean;

/** The common cases ('*', nothing) need no regular expression at all. */
function matcher(patterns: readonly string[]): Matcher {
  if (patterns.includes('*')) return () => true;
  if (patterns.length === 0) return () => false;
  const compiled = patterns.map(compile);
  return (name) => compiled.some((re) => re.test(name));
}

/** `*` matches any run of characters (also none), `?` exactly one; everything else is literal. */
export function globMatch(pattern: string, name: string): boolean {
  return compile(pattern).test(name);
}

const CACHE_ENTRIES = 10_000;
const compiledCache = new Map<string, RegExp>();

function compile(pattern: string): RegExp {
  let re = compiledCache.get(pattern);
  if (re === undefined) {
    re = new RegExp(`^${[...pattern].map(globChar).join('')}$`, 'su');
    // Patterns come from config and tokens, a bounded set in practice; the cap guards against a stream of JWTs.
    if (compiledCache.size >= CACHE_ENTRIES) compiledCache.clear();
    compiledCache.set(pattern, re);
  }
  return re;
}

function globChar(c: string): string {
  if (c === '*') return '.*';
  if (c === '?') return '.';
  return c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
