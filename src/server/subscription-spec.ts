import { compileGlobs, type GlobLimits, type GlobMatcher } from '../core/glob.js';
import type { ResumePoint, SubscriptionBody } from '../protocol/messages.js';

/**
 * What a subscriber asked for, decided once and applied alike to its snapshot, to new definitions and to
 * updates: which variables (`filter`), from which version on (`since`), and in which form (`mode`).
 */
export interface SubscriptionSpec {
  readonly filter: VariableFilter;
  /**
   * Only the values of variables changed after this service version (a resume); undefined: everything.
   */
  readonly since?: number;
  /** 'values': Snapshot data and SyncBatches; 'names': definitions only, then VariablesUpdated pushes (notify). */
  readonly mode: 'values' | 'names';
  /** Tell the client what is held back for it (SyncPending) while a `tick` delays its batches. */
  readonly pending?: boolean;
  /** The protocol the client speaks: definitions are written for it (a struct is Bytes before version 3). */
  readonly protocol: number;
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

/** What a subscription asked to resume from gets: the changes since a version, or a full snapshot and why. */
export type Resume = { readonly since: number } | { readonly reset: string };

/**
 * Whether a resume point can be served by this file: the same incarnation (fileId), and a version it has
 * reached (a file restored from an older copy has not). Versions only grow within one file, so everything
 * the client lacks has a version above its point.
 */
export function resumeFrom(asked: ResumePoint, fileId: string, version: bigint, lastRemoval = 0n): Resume {
  if (asked.fileId !== fileId) return { reset: 'the service file was replaced since' };
  if (BigInt(asked.version) > version) return { reset: `the service is at version ${version}, before the resume point ${asked.version}` };
  // A delta names what changed, not what is gone: a removal since the point needs the whole directory again.
  if (lastRemoval > BigInt(asked.version)) return { reset: 'a variable was removed since' };
  return { since: asked.version };
}

/** The spec a Subscription message asks for (`since`: from resumeFrom, when it could be served), from a client speaking `protocol`. */
export function specOf(body: SubscriptionBody, limits: GlobLimits, protocol: number, since?: number): SubscriptionSpec {
  const mode = body.notify === true ? 'names' : 'values';
  const filter = VariableFilter.of(body.variables, limits);
  const spec: SubscriptionSpec = { filter, mode, protocol, ...(body.pending === true && mode === 'values' ? { pending: true } : {}) };
  return since === undefined ? spec : { ...spec, since };
}
