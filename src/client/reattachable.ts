import type { CommyError } from '../core/errors.js';

/**
 * A service file that lives across reconnections: it keeps its state while the connection is down and
 * subscribes again on the new one (remote files; read-only local files for their change notices).
 */
export interface Reattachable {
  /** The connection is gone: send nothing, keep everything. Idempotent. */
  suspend(reason: CommyError): void;
  /** Subscribes again on the client's current connection; rejects as the subscription does. */
  reattach(): Promise<void>;
}

export function isReattachable(value: object): value is Reattachable {
  const v = value as Partial<Reattachable>;
  return typeof v.suspend === 'function' && typeof v.reattach === 'function';
}
