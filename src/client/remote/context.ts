import type { ByteRange } from '../../core/byte-diff.js';
import type { CommyError } from '../../core/errors.js';
import type { Connection } from '../connection.js';
import type { RemoteFileAccessor } from './remote-file-accessor.js';

/** What a remote service needs from its client. */
export interface RemoteContext {
  /** The client's connection: a new one after each reconnection. */
  readonly conn: Connection;
  readonly maxFrameBytes: number;
  /** How long flush() and writeVariable() wait for their acknowledgement (or for the connection to come back). */
  readonly requestTimeoutMs: number;
  /** Changes per ReportVariableChanges, as the server allows (Authenticated.maxChangesPerReport). */
  maxChangesPerReport: number;
  /** Sorted [start, end) runs where two buffers differ (native SIMD diff on Node). */
  diff(a: Uint8Array, b: Uint8Array): ByteRange[];
  /** Failures nobody awaits (a background flush, a bad push). */
  onError(err: CommyError): void;
  /** Routes this subscription's pushes (SnapshotChunk, SyncBatch) here (and stops, with `undefined`). */
  route(sid: number, accessor: RemoteFileAccessor | undefined): void;
  /** A fresh operation id: one counter per Client, so ids stay unique across its services and reconnections. */
  nextOpId(): number;
}
