import { randomFillSync } from 'node:crypto';
import { H, WATCH_SLOT_COUNT } from './file-format.js';
import { I32, I64 } from './file-mapping.js';
import { OWN_PID, slotHolderGone, takeLock, type LockWord } from './process-lock.js';
import type { ServiceFile } from './service-file.js';

/**
 * The header's watcher slots (docs/file-format.md, Change notification): each a pid lock word with its owner's
 * start time, a PARKED bit and the token of its wake channel. A watcher claims one to be woken by a byte; without
 * one it falls back to the futex thread.
 */

const PARKED = I32(H.PARKED);

/** Watcher slots the watchers of this thread own, by file id: a slot with our pid and start not in here is a leftover. */
const ownedSlots = new Map<string, Set<number>>();

function slotsOwnedHere(fileId: string): Set<number> {
  let owned = ownedSlots.get(fileId);
  if (owned === undefined) ownedSlots.set(fileId, (owned = new Set()));
  return owned;
}

/** Watcher slot `i`: its pid word and the start-time word of its owner. */
function slotWord(i: number): LockWord {
  return { lockIdx: (H.WATCH_SLOTS >> 2) + i, lockStartIdx: (H.WATCH_STARTS >> 2) + i };
}

const tokenCell = new BigUint64Array(1);

/** A wake channel's token: random, so nobody can bind its address first (it is published only once bound). */
export function randomToken(): bigint {
  do randomFillSync(tokenCell);
  while (tokenCell[0] === 0n);
  return tokenCell[0]!;
}

/**
 * Claims a free watcher slot, or one whose owner is gone (dead, its pid reused, or a leftover of this very
 * process: see holderGone); -1 without one (32 watchers already).
 */
export function claimSlot(file: ServiceFile): number {
  const i32 = file.i32;
  const owned = slotsOwnedHere(file.info.fileId);
  for (let i = 0; i < WATCH_SLOT_COUNT; i++) {
    const word = slotWord(i);
    const owner = Atomics.load(i32, word.lockIdx);
    if (owner === 0 && takeLock(i32, word, 0)) {
      owned.add(i);
      return i;
    }
    if (owner !== 0 && slotHolderGone(i32, word, owned.has(i)) && takeLock(i32, word, owner)) {
      // A watcher killed while parked left its bit (if no writer has taken it since): clear it, or every
      // writer would send a byte to nobody.
      Atomics.and(i32, PARKED, ~(1 << i));
      owned.add(i);
      return i;
    }
  }
  return -1;
}

/** Gives a slot back: no token, no bit (a writer that took it already sends to a closed address: refused), then the pid word. */
export function releaseSlot(file: ServiceFile, slot: number): void {
  const fileId = file.info.fileId;
  const owned = ownedSlots.get(fileId);
  owned?.delete(slot);
  if (owned?.size === 0) ownedSlots.delete(fileId);
  if (file.closed) return;
  Atomics.store(file.b64, I64(H.WATCH_TOKENS) + slot, 0n);
  Atomics.and(file.i32, PARKED, ~(1 << slot));
  Atomics.compareExchange(file.i32, slotWord(slot).lockIdx, OWN_PID, 0);
}
