import type { OpLedger } from '../../src/server/op-ledger.js';

/**
 * The ledger's `once` in the shape its unit tests use: tenant, identity, operation id, what, the write and its
 * weight (service 's'; no journal, so nothing is ever revived).
 */
export function once<T>(ledger: OpLedger, tenant: string, identity: string, opId: number | undefined, what: string, op: () => Promise<T>, weigh: (result: T) => number): Promise<T> {
  const revive = (): T => {
    throw new Error('a ledger without a journal revives nothing');
  };
  return ledger.once({ tenant, identity, opId, what, service: 's' }, () => op(), { weigh, revive });
}
