import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT, type JWTPayload } from 'jose';
import { Authenticator } from '../src/server/auth.js';
import { hashKey, verifySecret } from '../src/server/key-hash.js';
import { loadConfig, type TenantConfig } from '../src/server/config.js';

const JWT_SECRET = 'a-jwt-secret-of-reasonable-length';

async function setup(): Promise<Authenticator> {
  const config = loadConfig({
    tenants: {
      acme: {
        keys: [
          { id: 'ops', secret: 'ops-secret', read: ['*'], write: ['*'], admin: ['*'] },
          { id: 'viewer', secret: await hashKey('x:y:z'), read: ['dash-*'] },
        ],
        jwt: { secret: JWT_SECRET, issuer: 'issuer.test' },
      },
      globex: { keys: [{ id: 'ops', secret: 'globex-secret', read: ['*'] }] },
    },
  });
  return new Authenticator(config.tenants);
}

async function assertRefused(p: Promise<unknown>): Promise<void> {
  await assert.rejects(p, (err: { code?: string; message?: string }) => {
    assert.equal(err.code, 'AUTH_FAILED');
    assert.equal(err.message, 'authentication failed'); // the same whatever was wrong
    return true;
  });
}

function token(claims: JWTPayload, opts: { secret?: string; issuer?: string; exp?: number | string } = {}): Promise<string> {
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt();
  if (opts.issuer !== '') jwt.setIssuer(opts.issuer ?? 'issuer.test');
  jwt.setExpirationTime(opts.exp ?? '5m');
  return jwt.sign(new TextEncoder().encode(opts.secret ?? JWT_SECRET));
}

test('api key: id:secret, bare secret, plain and hashed', async () => {
  const auth = await setup();
  assert.deepEqual(await auth.authenticate('acme', 'apiKey', 'ops:ops-secret'), {
    tenant: 'acme',
    keyId: 'ops',
    principal: 'key:ops',
    read: ['*'],
    write: ['*'],
    admin: ['*'],
  });
  assert.equal((await auth.authenticate('acme', 'apiKey', 'ops-secret')).keyId, 'ops');
  // A hashed secret that itself contains ':' (everything after the key id is the secret).
  assert.deepEqual(await auth.authenticate('acme', 'apiKey', 'viewer:x:y:z'), {
    tenant: 'acme',
    keyId: 'viewer',
    principal: 'key:viewer',
    read: ['dash-*'],
    write: [],
    admin: [],
  });
  // From the cache the second time: same answer.
  assert.equal((await auth.authenticate('acme', 'apiKey', 'viewer:x:y:z')).keyId, 'viewer');
  // A hashed key needs its key id: a bare secret is looked for among plain-text keys only (one scrypt, not one per key).
  await assertRefused(auth.authenticate('acme', 'apiKey', 'x:y:z'));
  // A prefix that is a key id checks that key only.
  await assertRefused(auth.authenticate('acme', 'apiKey', 'ops:x:y:z'));
});

test('every API-key check not answered from the cache costs exactly one scrypt, whatever exists', async () => {
  const auth = await setup();
  const cost = async (tenant: string, credential: string, ok = false): Promise<number> => {
    const before = auth.stats.scrypts;
    if (ok) await auth.authenticate(tenant, 'apiKey', credential);
    else await assertRefused(auth.authenticate(tenant, 'apiKey', credential));
    return auth.stats.scrypts - before;
  };
  // Unknown tenant, unknown key id, known key with a plain-text or a hashed secret, bare secret: the same work.
  assert.equal(await cost('nobody', 'ops:ops-secret'), 1);
  assert.equal(await cost('acme', 'ghost:ops-secret'), 1);
  assert.equal(await cost('acme', 'ops:wrong'), 1);
  assert.equal(await cost('acme', 'viewer:wrong'), 1);
  assert.equal(await cost('acme', 'wrong'), 1);
  assert.equal(await cost('acme', 'x:y:z'), 1, 'a bare secret of a hashed key: still one scrypt');
  assert.equal(await cost('acme', 'ops:ops-secret', true), 1, 'a plain-text key pays the stand-in scrypt too, once');
  assert.equal(await cost('acme', 'ops:ops-secret', true), 0, 'then the cache answers');
  assert.equal(await cost('acme', 'viewer:x:y:z', true), 1);
  assert.equal(await cost('acme', 'viewer:x:y:z', true), 0);
  // Malformed attempts are refused before any work; that depends on the input alone, never on the config.
  assert.equal(await cost('../acme', 'ops:ops-secret'), 0);
  assert.equal(await cost('acme', ''), 0);
  assert.equal(await cost('acme', 'x'.repeat(8193)), 0);
});

test('scrypt runs at once never exceed maxConcurrentAuth; past the wait queue the answer is RATE_LIMITED at once', async () => {
  const config = loadConfig({ tenants: { acme: { keys: [{ id: 'ops', secret: 'ops-secret', read: ['*'] }] } } });
  const auth = new Authenticator(config.tenants, { maxConcurrentAuth: 2, maxQueuedAuth: 3 });
  // Distinct credentials, key ids and addresses: neither the shared verification nor the throttle steps in.
  const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => auth.authenticate('acme', 'apiKey', `k${i}:guess-${i}`, `10.0.0.${i}`)));
  const codes = results.map((r) => (r.status === 'rejected' ? (r.reason as { code: string }).code : 'ok'));
  assert.deepEqual(codes.filter((c) => c === 'RATE_LIMITED').length, 3, codes.join());
  assert.deepEqual(codes.filter((c) => c === 'AUTH_FAILED').length, 5, codes.join());
  assert.equal(auth.stats.peakScryptsRunning, 2);
  assert.equal(auth.stats.scrypts, 5);
  assert.equal(auth.stats.scryptsRunning, 0);
  assert.equal(auth.stats.queued, 0);
  // With room again, the next one is verified.
  assert.equal((await auth.authenticate('acme', 'apiKey', 'ops:ops-secret', '10.0.0.99')).keyId, 'ops');
});

test('api key: refusals all look the same', async () => {
  const auth = await setup();
  await assertRefused(auth.authenticate('acme', 'apiKey', 'ops:wrong'));
  await assertRefused(auth.authenticate('acme', 'apiKey', 'wrong'));
  await assertRefused(auth.authenticate('acme', 'apiKey', 'viewer:ops-secret')); // another key's secret
  await assertRefused(auth.authenticate('acme', 'apiKey', 'viewer:wrong'));
  await assertRefused(auth.authenticate('acme', 'apiKey', ''));
  await assertRefused(auth.authenticate('nobody', 'apiKey', 'ops:ops-secret'));
  await assertRefused(auth.authenticate('../acme', 'apiKey', 'ops:ops-secret'));
  await assertRefused(auth.authenticate('constructor', 'apiKey', 'ops:ops-secret'));
  await assertRefused(auth.authenticate('acme', 'password' as 'apiKey', 'ops:ops-secret'));
});

test('a key is valid for its own tenant only', async () => {
  const auth = await setup();
  await assertRefused(auth.authenticate('globex', 'apiKey', 'ops:ops-secret'));
  await assertRefused(auth.authenticate('globex', 'apiKey', 'ops-secret'));
  await assertRefused(auth.authenticate('acme', 'apiKey', 'ops:globex-secret'));
  // The cache is per tenant too: a success in acme does not open globex.
  await auth.authenticate('acme', 'apiKey', 'ops:ops-secret');
  await assertRefused(auth.authenticate('globex', 'apiKey', 'ops:ops-secret'));
  assert.equal((await auth.authenticate('globex', 'apiKey', 'ops:globex-secret')).tenant, 'globex');
});

test('concurrent attempts with one credential all get the same answer', async () => {
  const auth = await setup();
  const ok = await Promise.all(Array.from({ length: 20 }, () => auth.authenticate('acme', 'apiKey', 'viewer:x:y:z')));
  assert.ok(ok.every((g) => g.keyId === 'viewer'));
  const bad = await Promise.allSettled(Array.from({ length: 5 }, () => auth.authenticate('acme', 'apiKey', 'viewer:nope')));
  assert.ok(bad.every((r) => r.status === 'rejected' && (r.reason as { code: string }).code === 'AUTH_FAILED'));
});

test('hashKey / verifySecret', async () => {
  const hash = await hashKey('s3cret');
  assert.match(hash, /^scrypt\$16384\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/);
  assert.notEqual(await hashKey('s3cret'), hash); // salted
  assert.equal(await verifySecret('s3cret', hash), true);
  assert.equal(await verifySecret('s3cret ', hash), false);
  assert.equal(await verifySecret('', hash), false);
  assert.equal(await verifySecret('plain', 'plain'), true);
  assert.equal(await verifySecret('plain', 'plain2'), false);
  assert.equal(await verifySecret('x', 'scrypt$garbage'), false);
  assert.equal(await verifySecret('x', 'scrypt$1048576$32$1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA=='), false); // 4 GiB asked: refused
});

test('jwt: a good token gives the grants of its claims', async () => {
  const auth = await setup();
  const grants = await auth.authenticate('acme', 'jwt', await token({ tenant: 'acme', sub: 'alice', read: ['a?c'], write: ['dash-*'] }));
  assert.deepEqual(grants, { tenant: 'acme', keyId: 'alice', principal: 'jwt:issuer.test:alice', read: ['a?c'], write: ['dash-*'], admin: [] });
  const anonymous = await auth.authenticate('acme', 'jwt', await token({ tenant: 'acme' }));
  assert.deepEqual(anonymous, { tenant: 'acme', keyId: 'jwt', principal: 'jwt:issuer.test:jwt', read: [], write: [], admin: [] });
  for (const sub of ['evil\nline', 'nul\u0000', 'x'.repeat(129)]) {
    await assert.rejects(auth.authenticate('acme', 'jwt', await token({ tenant: 'acme', sub })), { code: 'AUTH_FAILED' }, JSON.stringify(sub));
  }
});

test('jwt: the principal (whose operation ids) is the issuer and sub, apart from any key; a non-string iss is refused', async () => {
  // No issuer configured: the token's own iss (or none) names it.
  const auth = new Authenticator(loadConfig({ tenants: { acme: { keys: [{ id: 'ops', secret: 'ops-secret' }], jwt: { secret: JWT_SECRET } } } }).tenants);
  assert.equal((await auth.authenticate('acme', 'apiKey', 'ops:ops-secret')).principal, 'key:ops');
  assert.equal((await auth.authenticate('acme', 'jwt', await token({ tenant: 'acme', sub: 'ops' }, { issuer: '' }))).principal, 'jwt::ops');
  assert.equal((await auth.authenticate('acme', 'jwt', await token({ tenant: 'acme', sub: 'b:c' }, { issuer: 'a' }))).principal, 'jwt:a:b:c');
  assert.equal((await auth.authenticate('acme', 'jwt', await token({ tenant: 'acme', sub: 'c' }, { issuer: 'a:b' }))).principal, 'jwt:a%3Ab:c', 'no two (iss, sub) pairs run together');
  await assertRefused(auth.authenticate('acme', 'jwt', await token({ tenant: 'acme', sub: 'ops', iss: 123 } as unknown as JWTPayload, { issuer: '' })));
});

test('jwt: refusals', async () => {
  const auth = await setup();
  await assertRefused(auth.authenticate('acme', 'jwt', await token({ tenant: 'acme' }, { secret: 'another-secret-of-some-length!!' })));
  await assertRefused(auth.authenticate('acme', 'jwt', await token({ tenant: 'acme' }, { exp: Math.floor(Date.now() / 1000) - 3600 })));
  await assertRefused(auth.authenticate('acme', 'jwt', await token({ tenant: 'globex' })));
  await assertRefused(auth.authenticate('acme', 'jwt', await token({ sub: 'alice' }))); // no tenant claim
  await assertRefused(auth.authenticate('acme', 'jwt', await token({ tenant: 'acme' }, { issuer: 'someone-else' })));
  await assertRefused(auth.authenticate('acme', 'jwt', await token({ tenant: 'acme' }, { issuer: '' }))); // issuer required when configured
  await assertRefused(auth.authenticate('acme', 'jwt', await token({ tenant: 'acme', read: 'dash-*' }))); // not a list
  await assertRefused(auth.authenticate('acme', 'jwt', await token({ tenant: 'acme', admin: [1] })));
  await assertRefused(auth.authenticate('acme', 'jwt', 'not.a.token'));
  // A tenant without jwt config refuses every token, even one signed with a secret it might guess.
  await assertRefused(auth.authenticate('globex', 'jwt', await token({ tenant: 'globex' })));
});

test('jwt: alg none and other algorithms are refused', async () => {
  const auth = await setup();
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const unsigned = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ tenant: 'acme', iss: 'issuer.test', read: ['*'] })}.`;
  await assertRefused(auth.authenticate('acme', 'jwt', unsigned));
  const hs512 = await new SignJWT({ tenant: 'acme' }).setProtectedHeader({ alg: 'HS512' }).setIssuer('issuer.test').sign(new TextEncoder().encode(JWT_SECRET));
  await assertRefused(auth.authenticate('acme', 'jwt', hs512));
});

test('jwt: audience checked when configured', async () => {
  const tenants: Record<string, TenantConfig> = { acme: { keys: [], jwt: { secret: JWT_SECRET, audience: 'commy' } } };
  const auth = new Authenticator(tenants);
  const sign = (aud?: string) => {
    const jwt = new SignJWT({ tenant: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1m');
    if (aud !== undefined) jwt.setAudience(aud);
    return jwt.sign(new TextEncoder().encode(JWT_SECRET));
  };
  assert.equal((await auth.authenticate('acme', 'jwt', await sign('commy'))).tenant, 'acme');
  await assertRefused(auth.authenticate('acme', 'jwt', await sign('other')));
  await assertRefused(auth.authenticate('acme', 'jwt', await sign()));
});
