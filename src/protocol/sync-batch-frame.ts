import { encodeBody } from './frame-codec.js';
import { MessageType, type Update } from './messages.js';

// Server side only (it uses Buffer's pooled allocation): the client core never imports it.

/**
 * A SyncBatch whose `version` and `updates` are encoded once and shared by every subscriber that is owed the
 * same batch: each one's frame is a fixed 13-byte head (the frame array, the type, request id 0, a map of three
 * entries and `sid` as a 4-byte integer, which MessagePack allows for any value) and the shared tail (the other
 * two entries of the body map).
 */
export class SharedSyncBatch {
  private readonly tail: Uint8Array;

  constructor(version: number, updates: readonly Update[]) {
    const packed = encodeBody({ version, updates });
    // A map of two entries is a fixmap, one byte (0x82): the tail is what follows it.
    if (packed[0] !== 0x82) throw new Error('a SyncBatch body did not encode as a fixmap');
    this.tail = packed.subarray(1);
  }

  get byteLength(): number {
    return SYNC_BATCH_HEAD.length + this.tail.length;
  }

  /** The whole frame for subscription `sid`: one allocation and one copy of the shared tail. */
  frameFor(sid: number): Uint8Array {
    const out = Buffer.allocUnsafe(SYNC_BATCH_HEAD.length + this.tail.length);
    out.set(SYNC_BATCH_HEAD, 0);
    out.writeUInt32BE(sid >>> 0, SID_AT);
    out.set(this.tail, SYNC_BATCH_HEAD.length);
    return out;
  }
}

/** [fixarray 3, SyncBatch, id 0, fixmap 3, "sid", uint32 (patched per subscriber)]. */
const SYNC_BATCH_HEAD = Uint8Array.of(0x93, MessageType.SyncBatch, 0x00, 0x83, 0xa3, 0x73, 0x69, 0x64, 0xce, 0, 0, 0, 0);
const SID_AT = 9;
