/**
 * Redis stream ids (`<ms>-<seq>`): the cluster's global order. Compared as two numbers, never as strings
 * ('10-0' sorts before '9-0' as text).
 */
export type StreamId = string;

/** Before every entry: where a stream is read from when nothing of it has been applied. */
export const STREAM_START: StreamId = '0-0';

function parts(id: StreamId): [number, number] {
  const dash = id.indexOf('-');
  return dash < 0 ? [Number(id), 0] : [Number(id.slice(0, dash)), Number(id.slice(dash + 1))];
}

/** Negative if `a` is before `b`, 0 if the same, positive if after. */
export function compareIds(a: StreamId, b: StreamId): number {
  const [am, as] = parts(a);
  const [bm, bs] = parts(b);
  return am !== bm ? am - bm : as - bs;
}

export function isStreamId(value: unknown): value is StreamId {
  return typeof value === 'string' && /^\d{1,20}-\d{1,20}$/.test(value);
}
