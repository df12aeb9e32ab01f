import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Permissions, globMatch } from '../src/server/permissions.js';
import type { Grants } from '../src/server/auth.js';

function grants(read: string[], write: string[] = [], admin: string[] = []): Grants {
  return { tenant: 'acme', keyId: 'k', read, write, admin };
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
