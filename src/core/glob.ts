import { CommyError, ErrorCode } from './errors.js';

/**
 * Globs over service and variable names: `*` matches any run of characters (also none), `?` exactly one
 * character (one Unicode code point), every other character is literal; a glob matches the whole name.
 *
 * No RegExp and no recursion: a glob is compiled once into the literal segments between its `*`s (runs of
 * `*` collapse; `?` stays a one-character wildcard inside a segment), and a name is matched by anchoring
 * the first segment at the start, the last at the end, and finding each middle segment at its leftmost
 * place after the previous one (greedy leftmost is optimal: segments have a fixed length, so any match can
 * slide its middle segments left to their leftmost places and still be a match).
 *
 * Cost, for a glob of P characters whose longest segment is L ≤ P and a name of N code points: compiling
 * is O(P). Matching decodes the name (O(N)), checks the first and last segments (O(P)), and searches the
 * middle ones: segment k tries start positions pos_k … found_k, and the next search starts at
 * found_k + |S_k| > found_k, so the positions tried by all searches are disjoint, at most N + 1 in all, and
 * each try compares at most L characters. Worst case O(P + N·L) ⊆ O(P × N) time, O(N) memory (none for
 * names up to 256 code units, which reuse one buffer); never exponential, whatever the input.
 */

/** A compiled glob or list of globs. */
export type GlobMatcher = (name: string) => boolean;

/** How many globs one list may hold and how long one glob may be (docs/operations.md, Limits). */
export interface GlobLimits {
  readonly maxPatterns: number;
  /** In UTF-16 code units (`pattern.length`). */
  readonly maxPatternLength: number;
}

/** The default limits (the server's `maxPatterns` and `maxPatternLength`; what a client checks before sending). */
export const DEFAULT_GLOB_LIMITS: GlobLimits = Object.freeze({ maxPatterns: 64, maxPatternLength: 256 });

export const matchAll: GlobMatcher = () => true;
export const matchNone: GlobMatcher = () => false;

/** Compiles one glob. Any string is a glob (also the empty one, which matches only the empty name). */
export function compileGlob(pattern: string): GlobMatcher {
  return compileGlobs([pattern]);
}

/**
 * Compiles a list of globs into one matcher, true when any of them matches. With `limits` the list is
 * checked first (assertGlobs): too many globs, an overlong or an empty one throw INVALID_MESSAGE.
 * Fast paths: `[]` never matches, a list holding `*` always does, and globs without wildcards are compared
 * as strings (one Set for all of them).
 */
export function compileGlobs(patterns: readonly string[], limits?: GlobLimits): GlobMatcher {
  if (limits !== undefined) assertGlobs(patterns, limits);
  if (patterns.includes('*')) return matchAll;
  const literals = new Set<string>();
  const globs: Glob[] = [];
  const seen = new Set<string>();
  for (const pattern of patterns) {
    if (seen.has(pattern)) continue;
    seen.add(pattern);
    if (isLiteral(pattern)) literals.add(pattern);
    else globs.push(parse(pattern));
  }
  if (globs.length === 0) {
    if (literals.size === 0) return matchNone;
    if (literals.size === 1) {
      const [only] = literals;
      return (name) => name === only;
    }
    return (name) => literals.has(name);
  }
  return (name) => {
    if (literals.has(name)) return true;
    const cps = name.length <= SCRATCH_UNITS ? scratch : new Int32Array(name.length);
    const n = decode(name, cps);
    for (const glob of globs) if (matches(glob, cps, n)) return true;
    return false;
  };
}

/** One-off match; compile with compileGlob/compileGlobs for anything matched more than once. */
export function globMatch(pattern: string, name: string): boolean {
  return compileGlob(pattern)(name);
}

/**
 * Throws INVALID_MESSAGE unless `patterns` is an array of at most maxPatterns non-empty strings of at most
 * maxPatternLength characters each. Checks the count before looking at any entry, and lengths before
 * looking at any characters, so an oversized list costs nothing. Messages never quote the glob.
 */
export function assertGlobs(patterns: readonly string[], limits: GlobLimits): void {
  if (!Array.isArray(patterns)) throw invalid('globs must be a list of strings');
  if (patterns.length > limits.maxPatterns) {
    throw invalid(`${patterns.length} globs in one list; at most ${limits.maxPatterns}`);
  }
  for (let i = 0; i < patterns.length; i++) {
    const pattern: unknown = patterns[i];
    if (typeof pattern !== 'string') throw invalid(`glob ${i} is not a string`);
    if (pattern.length === 0) throw invalid(`glob ${i} is empty`);
    if (pattern.length > limits.maxPatternLength) {
      throw invalid(`glob ${i} is ${pattern.length} characters long; at most ${limits.maxPatternLength}`);
    }
  }
}

function invalid(message: string): CommyError {
  return new CommyError(ErrorCode.INVALID_MESSAGE, message);
}

// ---- compiled form --------------------------------------------------------------------------------

/** `?` in a segment; code points are ≥ 0, so it never equals one. */
const ANY = -1;
const STAR = 0x2a;
const QUESTION = 0x3f;

/**
 * A glob with at least one wildcard. Without `*`: `segments` is the one segment, matched against the whole
 * name. With `*`: segments[0] is anchored at the start, the last at the end (either may be empty), the ones
 * between (never empty) float. Segments hold code points, ANY for `?`.
 */
interface Glob {
  readonly star: boolean;
  readonly segments: readonly Int32Array[];
  /** Code points the name needs at least: the segments' total length. */
  readonly minLength: number;
}

function isLiteral(pattern: string): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern.charCodeAt(i);
    if (c === STAR || c === QUESTION) return false;
  }
  return true;
}

function parse(pattern: string): Glob {
  const segments: Int32Array[] = [];
  let current: number[] = [];
  let star = false;
  for (const ch of pattern) {
    const cp = ch.codePointAt(0)!;
    if (cp === STAR) {
      star = true;
      // Runs of `*` collapse: an empty segment is kept only as the anchored first one.
      if (current.length > 0 || segments.length === 0) segments.push(Int32Array.from(current));
      current = [];
    } else {
      current.push(cp === QUESTION ? ANY : cp);
    }
  }
  segments.push(Int32Array.from(current)); // the last segment, anchored at the end when there is a `*`
  let minLength = 0;
  for (const s of segments) minLength += s.length;
  return { star, segments, minLength };
}

// ---- matching ---------------------------------------------------------------------------------------

/** Whether `seg` matches cps[at … at + seg.length). The caller guarantees that range is inside the name. */
function matchAt(seg: Int32Array, cps: Int32Array, at: number): boolean {
  for (let i = 0; i < seg.length; i++) {
    const t = seg[i]!;
    if (t !== ANY && t !== cps[at + i]) return false;
  }
  return true;
}

function matches(glob: Glob, cps: Int32Array, n: number): boolean {
  const { segments } = glob;
  if (!glob.star) return n === glob.minLength && matchAt(segments[0]!, cps, 0);
  if (n < glob.minLength) return false;
  const head = segments[0]!;
  const tail = segments[segments.length - 1]!;
  if (!matchAt(head, cps, 0) || !matchAt(tail, cps, n - tail.length)) return false;
  // Middle segments, leftmost first, inside [head.length, n - tail.length): each try of each start position
  // is at most one segment's length of comparisons, and no start position is tried twice (see the top).
  let pos = head.length;
  const end = n - tail.length;
  for (let k = 1; k < segments.length - 1; k++) {
    const seg = segments[k]!;
    const last = end - seg.length;
    let at = pos;
    while (at <= last && !matchAt(seg, cps, at)) at++;
    if (at > last) return false;
    pos = at + seg.length;
  }
  return true;
}

/** Reused for names of up to this many code units (every real name): no allocation per match. */
const SCRATCH_UNITS = 256;
const scratch = new Int32Array(SCRATCH_UNITS);

/**
 * Writes the name's code points to `out` (at least name.length long) and returns how many: a surrogate pair
 * is one, a lone surrogate is one, as in a /u RegExp. Sharing `scratch` is safe: matching is synchronous.
 */
function decode(name: string, out: Int32Array): number {
  let n = 0;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < name.length) {
      const d = name.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        out[n++] = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
        i++;
        continue;
      }
    }
    out[n++] = c;
  }
  return n;
}
