/**
 * Where the cluster keeps things in Redis. A service's keys share one hash tag (`{tenant/service}`), so that a
 * Redis Cluster puts them in one slot and one script may touch them all. Names are validated before they get
 * here (names.ts: no braces, no colon).
 */
export interface ServiceKeys {
  /** The stream: every change of the service, in the cluster's order. */
  readonly log: string;
  /** Variable name → stream id of the entry that last wrote it (compare-and-set is checked against it). */
  readonly last: string;
  /** Variable name → its latest bytes: with `layout` and `at`, the snapshot a node loads when the stream was trimmed. */
  readonly values: string;
  /** Variable name → its shape (layout-code.ts). */
  readonly layout: string;
  /** The stream id `values` and `layout` are current at. */
  readonly at: string;
  /** Prefix of the operation-id keys (`<prefix><digest>`). */
  readonly opPrefix: string;
}

export const CATALOG_STREAM = 'commy:catalog';
export const CATALOG_SET = 'commy:services';

export function serviceKeys(tenant: string, service: string): ServiceKeys {
  const tag = `commy:{${tenant}/${service}}`;
  return { log: `${tag}:log`, last: `${tag}:last`, values: `${tag}:values`, layout: `${tag}:layout`, at: `${tag}:at`, opPrefix: `${tag}:op:` };
}
