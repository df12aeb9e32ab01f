import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { assertGlobs, compileGlob, compileGlobs, globMatch } from '../src/core/glob.js';
import { isCommyError, ErrorCode } from '../src/core/errors.js';
import { DEFAULT_LIMITS } from '../src/server/limits.js';

// ---- semantics ----------------------------------------------------------------------------------

const cases: Array<[pattern: string, name: string, expected: boolean]> = [
  ['*', '', true],
  ['*', 'anything', true],
  ['**', '', true],
  ['***', 'x', true],
  ['', '', true],
  ['', 'a', false],
  ['?', '', false],
  ['?', 'a', true],
  ['?', 'ab', false],
  ['??', 'ab', true],
  ['a?c', 'abc', true],
  ['a?c', 'ac', false],
  ['a?c', 'abbc', false],
  ['dash-*', 'dash-', true],
  ['dash-*', 'dash-main', true],
  ['dash-*', 'dash', false],
  ['dash-*', 'xdash-main', false],
  ['*-prod', 'api-prod', true],
  ['*-prod', '-prod', true],
  ['*-prod', 'api-prod2', false],
  ['*-prod', 'prod', false],
  ['*mid*', 'mid', true],
  ['*mid*', 'amidb', true],
  ['*mid*', 'mi-d', false],
  ['a*b*c', 'a-b-c', true],
  ['a*b*c', 'abc', true],
  ['a*b*c', 'acb', false],
  ['a*b*c', 'abcbc', true],
  ['a**b', 'ab', true],
  ['a**b', 'axxb', true],
  ['a***', 'a', true],
  ['***a', 'a', true],
  ['*?', '', false],
  ['*?', 'x', true],
  ['?*?', 'x', false],
  ['?*?', 'xy', true],
  ['*a?b*', 'zzaXbzz', true],
  ['*a?b*', 'zzabzz', false],
  ['*aab', 'aaab', true], // the middle/tail overlap a naive split gets wrong
  ['*ab*ab', 'abab', true],
  ['*ab*ab', 'aba', false],
  ['ab*ba', 'aba', false], // head and tail may not overlap
  ['ab*ba', 'abba', true],
  ['exact', 'exact', true],
  ['exact', 'exact2', false],
  ['exact', 'exac', false],
  // RegExp metacharacters are literal.
  ['a.b', 'a.b', true],
  ['a.b', 'axb', false],
  ['a+', 'a+', true],
  ['a+', 'aa', false],
  ['(a|b)', '(a|b)', true],
  ['(a|b)', 'a', false],
  ['[x]', '[x]', true],
  ['[x]', 'x', false],
  ['[a-z]*', 'b', false],
  ['[a-z]*', '[a-z]', true],
  ['x{2}', 'x{2}', true],
  ['x{2}', 'xx', false],
  ['^a$', '^a$', true],
  ['^a$', 'a', false],
  ['a\\b', 'a\\b', true],
  ['a\\*', 'a\\', true],
  ['a\\*', 'a*', false], // no escapes: the backslash is literal and * is a wildcard
  ['a\\?', 'a\\x', true],
  ['.*', 'x', false],
  ['.*', '.x', true],
  ['$?', '$x', true],
  ['s-1.*', 's-1.temp', true],
  ['s-1.*', 's-1xtemp', false],
  // Unicode: `?` is one code point, also outside the BMP.
  ['?', 'é', true],
  ['?', '😀', true],
  ['??', '😀', false],
  ['a?b', 'a😀b', true],
  ['a??b', 'a😀b', false],
  ['*😀', 'x😀', true],
  ['😀*', '😀😀', true],
  ['*😀*', 'ab', false],
  ['日本*', '日本語', true],
  ['?本?', '日本語', true],
  ['??', '日本語', false],
  ['\u{1F600}', '😀', true],
  ['\uD83D', '😀', false], // a lone surrogate in the glob is its own character, not half of a pair
  ['\uD83D*', '😀', false],
  ['\uD83D?', '\uD83Dx', true],
];

test('globs: table of cases', () => {
  for (const [pattern, name, expected] of cases) {
    assert.equal(globMatch(pattern, name), expected, `${JSON.stringify(pattern)} vs ${JSON.stringify(name)}`);
    assert.equal(compileGlob(pattern)(name), expected, `compileGlob ${JSON.stringify(pattern)} vs ${JSON.stringify(name)}`);
    assert.equal(reference(pattern, name), expected, `reference ${JSON.stringify(pattern)} vs ${JSON.stringify(name)}`);
  }
});

test('globs: a compiled matcher is reusable, and long names use their own buffer', () => {
  const m = compileGlob('*a?c*');
  assert.ok(m('xxabcxx'));
  assert.ok(!m('xxacxx'));
  const long = 'z'.repeat(1000) + 'abc' + 'z'.repeat(1000);
  assert.ok(m(long));
  assert.ok(m('abc')); // after a long name, the short path still decodes correctly
  assert.ok(!m('ab'));
});

test('glob lists: fast paths and mixtures', () => {
  assert.equal(compileGlobs([])('x'), false);
  assert.equal(compileGlobs([])(''), false);
  const all = compileGlobs(['a', '*']);
  assert.ok(all('anything') && all(''));
  const one = compileGlobs(['public']);
  assert.ok(one('public') && !one('public2') && !one('publi'));
  const many = compileGlobs(['a', 'b', 'c.d']);
  assert.ok(many('a') && many('b') && many('c.d') && !many('cxd') && !many('ab'));
  const mixed = compileGlobs(['exact', 'dash-*', '?x', 'dash-*']);
  assert.ok(mixed('exact'));
  assert.ok(mixed('dash-1'));
  assert.ok(mixed('ax'));
  assert.ok(!mixed('axx'));
  assert.ok(!mixed('dash'));
});

// ---- limits -------------------------------------------------------------------------------------

function throwsInvalid(fn: () => unknown, what: RegExp): void {
  assert.throws(fn, (err) => isCommyError(err, ErrorCode.INVALID_MESSAGE) && what.test(err.message));
}

test('glob lists: limits refuse too many, too long and empty globs', () => {
  const limits = DEFAULT_LIMITS;
  assert.equal(limits.maxPatterns, 64);
  assert.equal(limits.maxPatternLength, 256);
  // At the limits: accepted.
  assert.ok(compileGlobs(Array.from({ length: 64 }, (_, i) => `s${i}`), limits)('s63'));
  assert.ok(compileGlobs(['*'.repeat(255) + 'x'], limits)('x'));
  // Past them: INVALID_MESSAGE, checked before the `*` fast path.
  throwsInvalid(() => compileGlobs(Array.from({ length: 65 }, (_, i) => `s${i}`), limits), /65 globs.*at most 64/);
  throwsInvalid(() => compileGlobs(['*', ...Array.from({ length: 10_000 }, () => 'x')], limits), /10001 globs/);
  throwsInvalid(() => compileGlobs(['ok', 'a'.repeat(257)], limits), /glob 1 is 257 characters long; at most 256/);
  throwsInvalid(() => compileGlobs(['*'.repeat(1 << 20)], limits), /at most 256/);
  throwsInvalid(() => compileGlobs(['a', ''], limits), /glob 1 is empty/);
  throwsInvalid(() => compileGlobs([42 as unknown as string], limits), /not a string/);
  throwsInvalid(() => assertGlobs('*' as unknown as string[], limits), /list/);
  // Other limits are honoured as given.
  throwsInvalid(() => compileGlobs(['a', 'b'], { maxPatterns: 1, maxPatternLength: 10 }), /at most 1$/);
  assert.ok(compileGlobs(['a'.repeat(300)], { maxPatterns: 1, maxPatternLength: 300 })('a'.repeat(300)));
  // Messages never quote the glob.
  try {
    compileGlobs(['SECRET'.repeat(100)], limits);
    assert.fail('should throw');
  } catch (err) {
    assert.ok(!String((err as Error).message).includes('SECRET'));
  }
  // Without limits, any list compiles (matching stays linear-time regardless).
  assert.ok(compileGlobs(Array.from({ length: 10_000 }, (_, i) => `s${i}`))('s9999'));
});

// ---- property test against a reference -----------------------------------------------------------

/** Bottom-up DP over code points: ok[i][j] = pattern[i…] matches name[j…]. O(P·N), obviously correct. */
function reference(pattern: string, name: string): boolean {
  const p = [...pattern];
  const s = [...name];
  let next = new Array<boolean>(s.length + 1).fill(false); // row i + 1
  next[s.length] = true; // empty pattern matches empty name
  for (let i = p.length - 1; i >= 0; i--) {
    const row = new Array<boolean>(s.length + 1).fill(false);
    for (let j = s.length; j >= 0; j--) {
      if (p[i] === '*') row[j] = next[j]! || (j < s.length && row[j + 1]!);
      else row[j] = j < s.length && (p[i] === '?' || p[i] === s[j]) && next[j + 1]!;
    }
    next = row;
  }
  return next[0]!;
}

/** The implementation this replaces (backtracking RegExp): same answers, on inputs small enough for it. */
function legacy(pattern: string, name: string): boolean {
  const globChar = (c: string) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(`^${[...pattern].map(globChar).join('')}$`, 'su').test(name);
}

// Lone surrogates that pair up when adjacent, a pair, a RegExp metacharacter, and the wildcards.
const patternChar = fc.constantFrom('a', 'b', '.', '*', '?', '😀', '\uD83D', '\uDE00');
const nameChar = fc.constantFrom('a', 'b', '.', '*', '?', '😀', '\uD83D', '\uDE00');
const pattern = fc.string({ unit: patternChar, maxLength: 12 });
const name = fc.string({ unit: nameChar, maxLength: 14 });

test('globs: agree with the reference DP and the old RegExp on random globs and names', () => {
  fc.assert(
    fc.property(pattern, name, (p, s) => {
      const expected = reference(p, s);
      // The RegExp backtracks exponentially in the number of `*`s: ask it only about a few.
      if ([...p].filter((c) => c === '*').length <= 6) assert.equal(legacy(p, s), expected);
      assert.equal(compileGlob(p)(s), expected);
    }),
    { numRuns: 2000, interruptAfterTimeLimit: 20_000 },
  );
});

test('globs: every instantiation of a glob matches it, and single edits agree with the reference', () => {
  const fills = fc.array(fc.string({ unit: nameChar, maxLength: 4 }), { minLength: 12, maxLength: 12 });
  const ones = fc.array(nameChar, { minLength: 12, maxLength: 12 });
  fc.assert(
    fc.property(pattern, fills, ones, fc.nat(), nameChar, (p, fill, one, at, ch) => {
      let k = 0;
      const parts = [...p].map((c) => (c === '*' ? fill[k++ % fill.length]! : c === '?' ? one[k++ % one.length]! : c));
      const s = parts.join('');
      // Unless joining paired up two lone surrogates (then the name has fewer characters than the parts).
      if ([...s].length === parts.reduce((n, part) => n + [...part].length, 0)) {
        assert.equal(compileGlob(p)(s), true, `${JSON.stringify(p)} vs ${JSON.stringify(s)}`);
      }
      assert.equal(compileGlob(p)(s), reference(p, s));
      const cps = [...s];
      const i = cps.length === 0 ? 0 : at % cps.length;
      const before = cps.slice(0, i).join('');
      for (const edited of [before + cps.slice(i + 1).join(''), before + ch + cps.slice(i).join(''), before + ch + cps.slice(i + 1).join('')]) {
        assert.equal(compileGlob(p)(edited), reference(p, edited), `${JSON.stringify(p)} vs ${JSON.stringify(edited)}`);
      }
    }),
    { numRuns: 2000, interruptAfterTimeLimit: 20_000 },
  );
});

test('glob lists: any-of, agreeing with the reference', () => {
  fc.assert(
    fc.property(fc.array(pattern, { maxLength: 5 }), name, (ps, s) => {
      assert.equal(compileGlobs(ps)(s), ps.some((p) => reference(p, s)));
    }),
    { numRuns: 1000, interruptAfterTimeLimit: 20_000 },
  );
});

// ---- attacks, in a worker with a hard timeout ------------------------------------------------------

/**
 * Runs `body` (the source of an async function of (glob, permissions) modules returning a JSON-able value)
 * in a worker, terminated after `timeoutMs`: a regression to exponential matching fails the test instead of
 * hanging the suite (terminate() interrupts even a busy loop or a RegExp).
 */
async function inWorker(body: string, timeoutMs = 10_000): Promise<unknown> {
  const glob = new URL('../src/core/glob.js', import.meta.url).href;
  const permissions = new URL('../src/server/permissions.js', import.meta.url).href;
  const source = `
    const { parentPort } = require('node:worker_threads');
    Promise.all([import(${JSON.stringify(glob)}), import(${JSON.stringify(permissions)})])
      .then(([glob, permissions]) => (${body})(glob, permissions))
      .then((value) => parentPort.postMessage({ value }), (err) => parentPort.postMessage({ error: String(err && err.stack || err) }));
  `;
  const worker = new Worker(source, { eval: true });
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`glob matching did not finish within ${timeoutMs} ms`)), timeoutMs);
      worker.once('message', (m: { value?: unknown; error?: string }) => {
        clearTimeout(timer);
        if (m.error !== undefined) reject(new Error(m.error));
        else resolve(m.value);
      });
      worker.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  } finally {
    await worker.terminate();
  }
}

test('attack globs finish, with the right answers', async () => {
  const results = await inWorker(`async ({ compileGlob, compileGlobs, globMatch }) => {
    const short = 'a'.repeat(64);
    const long = 'a'.repeat(100_000);
    const stars = '*'.repeat(60) + '#';
    const starA = '*a'.repeat(5000);
    const m = compileGlob(stars);
    return {
      starsShort: m(short),
      starsShortHash: m('a'.repeat(63) + '#'),
      starsLong: m(long),
      starsLongHash: m(long + '#'),
      starsList: compileGlobs([stars, 'x*y'])(short),
      starAShort: globMatch(starA, short),
      starALong: globMatch(starA, long),
      starALongB: globMatch(starA, 'b'.repeat(100_000)),
      starAAlmost: globMatch(starA, 'ab'.repeat(4999) + 'b'.repeat(50_000)),
      starAExact: globMatch(starA, 'ba'.repeat(5000)),
      // Worst case for the segment search: long segments that almost match everywhere (O(N·L)).
      nearMiss: globMatch('*' + 'a'.repeat(255) + 'b*', long),
      nearMissQ: globMatch('*' + 'a?'.repeat(127) + 'b*', long),
      nearHit: globMatch('*' + 'a'.repeat(255) + 'b*', long + 'b'),
      manyMiddles: globMatch('*a?a'.repeat(50) + '*b*', long),
    };
  }`);
  assert.deepEqual(results, {
    starsShort: false,
    starsShortHash: true,
    starsLong: false,
    starsLongHash: true,
    starsList: false,
    starAShort: false,
    starALong: true,
    starALongB: false,
    starAAlmost: false,
    starAExact: true,
    nearMiss: false,
    nearMissQ: false,
    nearHit: true,
    manyMiddles: false,
  });
});

test('attack globs through Permissions and a subscription-sized list finish', async () => {
  const results = await inWorker(`async ({ compileGlobs }, { Permissions }) => {
    const grants = { tenant: 't', keyId: 'k', read: ['*'.repeat(60) + '#', '*a'.repeat(100) + '?#'], write: [], admin: [] };
    const p = new Permissions(grants);
    const wants = compileGlobs(Array.from({ length: 64 }, (_, i) => '*'.repeat(200 + i % 50) + '#'), { maxPatterns: 64, maxPatternLength: 256 });
    let any = false;
    const name = 'a'.repeat(64);
    for (let i = 0; i < 10_000; i++) any = any || p.can('read', name) || wants(name);
    return { any, hit: p.can('read', 'a'.repeat(63) + '#'), wantsHit: wants('x#') };
  }`);
  assert.deepEqual(results, { any: false, hit: true, wantsHit: true });
});

test('the worker harness itself fails on a hang instead of waiting forever', async () => {
  await assert.rejects(inWorker(`async () => { for (;;); }`, 500), /did not finish within 500 ms/);
});
