import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Permissions, PermissionsCache, globMatch, type Action } from '../src/server/permissions.js';
import type { Grants } from '../src/server/auth.js';
import { ErrorCode, isCommyError } from '../src/core/errors.js';
import { DEFAULT_LIMITS } from '../src/server/limits.js';

function grants(read: string[], write: string[] = [], admin: string[] = []): Grants {
  return { tenant: 'acme', keyId: 'k', principal: 'key:k', read, write, admin };
}

test('globs: * any run, ? one character', () => {
  assert.ok(globMatch('*', 'anything'));
  assert.ok(globMatch('*', ''));
  assert.ok(globMatch('dash-*', 'dash-'));
  assert.ok(globMatch('dash-*', 'dash-main'));
  assert.ok(!globMatch('dash-*', 'dash'));
  assert.ok(!globMatch('dash-*', 'xdash-main'));
  assert.ok(globMatch('*-prod', 'api-prod'));
  assert.ok(!globMatch('*-prod', 'api-prod2'));
  assert.ok(globMatch('a*b*c', 'a-b-c'));
  assert.ok(globMatch('a?c', 'abc'));
  assert.ok(!globMatch('a?c', 'ac'));
  assert.ok(!globMatch('a?c', 'abbc'));
  assert.ok(globMatch('exact', 'exact'));
  assert.ok(!globMatch('exact', 'exact2'));
});

test('globs: everything else is literal', () => {
  assert.ok(globMatch('a.b', 'a.b'));
  assert.ok(!globMatch('a.b', 'axb'));
  assert.ok(globMatch('[x]', '[x]'));
  assert.ok(!globMatch('[x]', 'x'));
  assert.ok(!globMatch('a+', 'aa'));
  assert.ok(globMatch('a+', 'a+'));
  assert.ok(globMatch('(a|b)', '(a|b)'));
  assert.ok(!globMatch('(a|b)', 'a'));
  assert.ok(globMatch('^a$', '^a$'));
  assert.ok(globMatch('a\\b', 'a\\b'));
  assert.ok(globMatch('x{2}', 'x{2}'));
  assert.ok(!globMatch('x{2}', 'xx'));
  assert.ok(globMatch('s-1.*', 's-1.temp'));
  assert.ok(!globMatch('s-1.*', 's-1xtemp'));
});

test('a read-only key cannot write or administer', () => {
  const p = new Permissions(grants(['*']));
  assert.ok(p.can('read', 'anything'));
  assert.ok(!p.can('write', 'anything'));
  assert.ok(!p.can('admin', 'anything'));
});

test('no action implies another', () => {
  const writeOnly = new Permissions(grants([], ['*']));
  assert.ok(!writeOnly.can('read', 'svc'));
  assert.ok(writeOnly.can('write', 'svc'));
  assert.ok(!writeOnly.can('admin', 'svc'));
  const adminOnly = new Permissions(grants([], [], ['svc']));
  assert.ok(!adminOnly.can('read', 'svc'));
  assert.ok(!adminOnly.can('write', 'svc'));
  assert.ok(adminOnly.can('admin', 'svc'));
});

test('grants by glob, per action', () => {
  const p = new Permissions(grants(['dash-*', 'public'], ['dash-?'], []));
  assert.ok(p.can('read', 'dash-main'));
  assert.ok(p.can('read', 'public'));
  assert.ok(!p.can('read', 'private'));
  assert.ok(p.can('write', 'dash-1'));
  assert.ok(!p.can('write', 'dash-main'));
  assert.ok(!p.can('admin', 'dash-1'));
  assert.ok(!p.can('delete' as 'read', 'dash-1'));
  assert.equal(p.grants.keyId, 'k');
});

test('only the three actions exist, whatever the object prototype holds', () => {
  const p = new Permissions(grants(['*'], ['*'], ['*']));
  for (const action of ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', '']) {
    assert.equal(p.can(action as Action, 'svc'), false, action);
  }
});

test('a service name is matched whole, RegExp metacharacters literally', () => {
  const p = new Permissions(grants(['s-1.*', 'a?c', '(x|y)']));
  assert.ok(p.can('read', 's-1.temp'));
  assert.ok(!p.can('read', 's-1xtemp'));
  assert.ok(!p.can('read', 'my-s-1.temp'));
  assert.ok(p.can('read', 'abc'));
  assert.ok(p.can('read', '(x|y)'));
  assert.ok(!p.can('read', 'x'));
});

function refused(fn: () => unknown, what: RegExp): void {
  assert.throws(fn, (err) => {
    assert.ok(isCommyError(err, ErrorCode.AUTH_FAILED), String(err));
    assert.match(err.message, what);
    assert.ok(isCommyError((err as Error).cause, ErrorCode.INVALID_MESSAGE));
    return true;
  });
}

test('grants past the glob limits are refused with AUTH_FAILED (default limits when none are given)', () => {
  const many = Array.from({ length: 10_000 }, (_, i) => `svc-${i}`);
  refused(() => new Permissions(grants(many)), /read grants refused: 10000 globs in one list; at most 64/);
  refused(() => new Permissions(grants([], ['*', ...many])), /write grants refused/);
  refused(() => new Permissions(grants([], [], ['x'.repeat(1 << 20)])), /admin grants refused: glob 0 is 1048576 characters long; at most 256/);
  refused(() => new Permissions(grants(['ok', '']), DEFAULT_LIMITS), /glob 1 is empty/);
  refused(() => new Permissions({ ...grants(many), keyId: 'k'.repeat(10_000) }), /key "k{64}…"/);
  // At the limits: fine.
  const p = new Permissions(grants(many.slice(0, 64), ['?'.repeat(256)]));
  assert.ok(p.can('read', 'svc-63'));
  assert.ok(!p.can('read', 'svc-64'));
  assert.ok(p.can('write', 'w'.repeat(256)));
});

test('the limits given are the ones applied', () => {
  const limits = { ...DEFAULT_LIMITS, maxPatterns: 2, maxPatternLength: 4 };
  refused(() => new Permissions(grants(['a', 'b', 'c']), limits), /3 globs in one list; at most 2/);
  refused(() => new Permissions(grants(['abcde']), limits), /at most 4/);
  const generous = { maxPatterns: 20_000, maxPatternLength: 1 << 20 };
  const many = Array.from({ length: 10_000 }, (_, i) => `svc-${i}`);
  assert.ok(new Permissions(grants(many), generous).can('read', 'svc-9999'));
});

test('PermissionsCache: equal grants share one compiled Permissions, other grants get their own, refused grants are not kept', () => {
  const cache = new PermissionsCache();
  const ops = (read: string[]): Grants => ({ tenant: 'acme', keyId: 'ops', principal: 'key:ops', read, write: [], admin: [] });
  const a = cache.of(ops(['plant-*']));
  assert.equal(cache.of(ops(['plant-*'])), a, 'a second connection with the same key holds the same object');
  assert.notEqual(cache.of(ops(['plant-*', 'x'])), a);
  assert.notEqual(cache.of({ ...ops(['plant-*']), keyId: 'other' }), a);
  assert.notEqual(cache.of({ ...ops(['plant-*']), principal: 'jwt::ops' }), a, 'a token whose sub is the key\'s id gets its own');
  assert.equal(a.can('read', 'plant-7'), true);
  assert.equal(a.can('write', 'plant-7'), false);
  const tooMany = ops(Array.from({ length: 10_000 }, (_, i) => `p${i}`));
  assert.throws(() => cache.of(tooMany), { code: 'AUTH_FAILED' });
  assert.throws(() => cache.of(tooMany), { code: 'AUTH_FAILED' }, 'refused again: nothing was cached');
});
