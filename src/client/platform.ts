import type { ByteRange } from '../core/byte-diff.js';
import type { FileAccessor } from '../core/file-accessor.js';
import type { LocalAttachRequest } from './local-attach.js';
import type { TransportFactory } from './transport.js';

/**
 * What the client core needs from its runtime. Node: `ws`, the native diff and local mapping
 * (node-platform.ts). A browser build supplies the global WebSocket and the JS diff, and no local mode.
 */
export interface ClientPlatform {
  openTransport: TransportFactory;
  diff(a: Uint8Array, b: Uint8Array): ByteRange[];
  attachLocal?: (request: LocalAttachRequest) => Promise<FileAccessor>;
}
