import { diffRangesJs } from '../core/byte-diff.js';
import type { ClientPlatform } from './platform.js';
import { webSocketTransport } from './web-socket-transport.js';

/** Runtimes without Node (browsers): the global WebSocket and the JS diff; remote mode only, no embedded files. */
export const browserPlatform: ClientPlatform = {
  name: 'browser',
  openTransport: webSocketTransport(),
  diff: diffRangesJs,
  warn: (err) => console.warn(err),
};
