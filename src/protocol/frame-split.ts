/**
 * Splits `items` into runs, in order, whose summed `cost` stays within `budget` and that hold at most
 * `maxCount` items: one run per frame. An item alone may exceed the budget (it gets a run of its own, and
 * whoever sends it learns the frame is too large). At least one run, empty for no items. Both sides use it:
 * the server for snapshots and batches, the client for its reports.
 */
export function splitByCost<T>(items: readonly T[], cost: (item: T) => number, budget: number, maxCount = Infinity): T[][] {
  const frames: T[][] = [[]];
  let used = 0;
  for (const item of items) {
    const c = cost(item);
    const run = frames[frames.length - 1]!;
    if (run.length > 0 && (used + c > budget || run.length >= maxCount)) {
      frames.push([]);
      used = 0;
    }
    frames[frames.length - 1]!.push(item);
    used += c;
  }
  return frames;
}
