/**
 * An async iterator fed by push(). Bounded: past `limit` queued items, new items are merged into the
 * last one, so a slow consumer costs bounded memory and still sees every change (coalesced).
 */
export class EventQueue<T> implements AsyncIterableIterator<T> {
  private readonly items: T[] = [];
  private readonly takers: ((result: IteratorResult<T>) => void)[] = [];
  private ended = false;

  constructor(
    private readonly merge: (into: T, next: T) => T,
    private readonly onEnd: () => void = () => {},
    private readonly limit = 1024,
  ) {}

  get closed(): boolean {
    return this.ended;
  }

  push(item: T): void {
    if (this.ended) return;
    const taker = this.takers.shift();
    if (taker !== undefined) {
      taker({ value: item, done: false });
      return;
    }
    if (this.items.length >= this.limit) {
      this.items[this.items.length - 1] = this.merge(this.items[this.items.length - 1] as T, item);
    } else {
      this.items.push(item);
    }
  }

  /** The next queued item without waiting, or undefined. */
  poll(): T | undefined {
    return this.items.shift();
  }

  next(): Promise<IteratorResult<T>> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.takers.push(resolve));
  }

  /** Ends the iteration (break out of for-await calls this). */
  return(): Promise<IteratorResult<T>> {
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.items.length = 0;
    for (const taker of this.takers.splice(0)) taker({ value: undefined, done: true });
    this.onEnd();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
