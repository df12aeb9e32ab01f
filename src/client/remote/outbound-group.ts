import type { CommyError } from '../../core/errors.js';
import type { AckVersions } from './reconciler.js';

/*
 * What the outbox puts on the wire and how it is answered: the contract between the outbound pipeline and
 * whatever carries a group to the server (ReportVariableChanges today).
 */

/** One variable's new bytes, by directory index. */
export interface OutboundChange {
  readonly index: number;
  readonly bytes: Uint8Array;
}

/**
 * One report's worth of changes. `opId` (unique per Client) makes it idempotent at the server: a group whose
 * outcome is unknown (TIMEOUT, a lost connection) is resent with the same one and applied at most once.
 */
export interface OutboundGroup {
  readonly changes: readonly OutboundChange[];
  readonly opId?: number;
}

/** The server's answer to a group: the versions its changes got. */
export type GroupAck = AckVersions;

/**
 * How a send is answered: one of the two, once — except that `fail(TIMEOUT)` is not final: the outcome is
 * unknown, and a late `reply` or `fail` may still follow. Called as the reply is decoded, before any later
 * frame (Connection.call's contract), so an ack and the updates after it are applied in the server's order.
 */
export interface GroupAnswer {
  reply(ack: GroupAck): void;
  fail(err: CommyError): void;
}

/** Puts a group on the wire (ReportVariableChanges). May fail at once, inside the call, if it cannot go. */
export type SendGroup = (group: OutboundGroup, answer: GroupAnswer) => void;
