import { compileGlobs, type GlobLimits, type GlobMatcher } from '../core/glob.js';
import type { SubscriptionBody } from '../protocol/messages.js';

/**
 * What a subscriber asked for, decided once and applied alike to its snapshot, to new definitions and to
 * updates: which variables (`filter`), from which version on (`since`), and in which form (`mode`).
 */
export interface SubscriptionSpec {
  readonly filter: VariableFilter;
  /**
   * Only variables changed after this service version (resume, in the sync engine); undefined: everything.
   * Not on the wire yet: the Subscription message gains it with resume.
   */
  readonly since?: number;
  /** 'values': Snapshot data and SyncBatches; 'names': definitions only, then VariablesUpdated pushes (notify). */
  readonly mode: 'values' | 'names';
}

/**
 * A subscription's variable filter: the glob patterns are compiled once, and each variable (by its directory
 * index, which never changes) is matched once, so a change costs one array lookup per subscriber.
 */
export class VariableFilter {
  private readonly decided: boolean[] = [];

  private constructor(private readonly matcher: GlobMatcher | undefined) {}

  static all(): VariableFilter {
    return new VariableFilter(undefined);
  }

  /** The filter of `patterns` (absent: every variable); INVALID_MESSAGE past the pattern limits. */
  static of(patterns: readonly string[] | undefined, limits: GlobLimits): VariableFilter {
    return new VariableFilter(patterns === undefined ? undefined : compileGlobs(patterns, limits));
  }

  get everything(): boolean {
    return this.matcher === undefined;
  }

  wants(index: number, name: string): boolean {
    if (this.matcher === undefined) return true;
    const known = this.decided[index];
    if (known !== undefined) return known;
    const wanted = this.matcher(name);
    this.decided[index] = wanted;
    return wanted;
  }
}

/** The spec a Subscription message asks for. */
export function specOf(body: SubscriptionBody, limits: GlobLimits): SubscriptionSpec {
  return { filter: VariableFilter.of(body.variables, limits), mode: body.notify === true ? 'names' : 'values' };
}
