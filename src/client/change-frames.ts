/** MessagePack framing around the changes: [type, id, {sid, changes: [...]}], generously counted. */
const FRAME_OVERHEAD = 64;
/** Per change: a 2-array, the index (up to 5 bytes) and the bin header (up to 5 bytes). */
const CHANGE_OVERHEAD = 12;

/**
 * Splits one flush's changes into groups that each fit one frame of `maxFrameBytes` and hold at most
 * `maxChanges`, in order. A change too big for any frame gets a group of its own; sending it fails with
 * MESSAGE_TOO_LARGE (and only it).
 */
export function splitChanges<T>(changes: readonly [T, Uint8Array][], maxFrameBytes: number, maxChanges = Infinity): [T, Uint8Array][][] {
  const groups: [T, Uint8Array][][] = [];
  let group: [T, Uint8Array][] = [];
  let size = FRAME_OVERHEAD;
  for (const change of changes) {
    const cost = change[1].length + CHANGE_OVERHEAD;
    if (group.length > 0 && (size + cost > maxFrameBytes || group.length >= maxChanges)) {
      groups.push(group);
      group = [];
      size = FRAME_OVERHEAD;
    }
    group.push(change);
    size += cost;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}
