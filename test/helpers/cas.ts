import { isCommyError, type VirtualVariableFile } from '../../src/index.js';

/**
 * Adds 1 to the u64 `counter` of `vf` `count` times by compare-and-set: read the version, then the value
 * (a write landing between makes the CAS fail, never lie), mutate with expectedVersion, and on CONFLICT
 * `settle()` (let a newer value arrive) and try again. Resolves with the conflicts met.
 */
export async function casIncrements(vf: VirtualVariableFile, count: number, settle: () => Promise<void> = async () => {}): Promise<number> {
  const counter = vf.handle<bigint>('counter');
  let conflicts = 0;
  for (let i = 0; i < count; i++) {
    for (;;) {
      const version = counter.version();
      try {
        await vf.mutate('counter', counter.get() + 1n, { expectedVersion: version });
        break;
      } catch (err) {
        if (!isCommyError(err, 'CONFLICT')) throw err;
        conflicts++;
        await settle();
      }
    }
  }
  return conflicts;
}
