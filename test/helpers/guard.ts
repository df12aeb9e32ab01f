import assert from 'node:assert/strict';

/** Collects unhandled rejections and uncaught exceptions for the length of a test. */
export function guard(t: { after(fn: () => void): void }): { check(): Promise<void> } {
  const seen: unknown[] = [];
  const on = (reason: unknown): void => void seen.push(reason);
  process.on('unhandledRejection', on);
  process.on('uncaughtException', on);
  t.after(() => {
    process.off('unhandledRejection', on);
    process.off('uncaughtException', on);
  });
  return {
    async check() {
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.deepEqual(seen.map(String), [], 'no unhandled rejection, no uncaught exception');
    },
  };
}
