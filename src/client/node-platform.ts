import { pairsFromFlat } from '../core/byte-diff.js';
import { native } from '../native/addon.js';
import { attachLocal } from './local-attach.js';
import type { ClientPlatform } from './platform.js';
import { openWsTransport } from './ws-transport.js';

export const nodePlatform: ClientPlatform = {
  openTransport: openWsTransport,
  diff: (a, b) => pairsFromFlat(native.diff(a, b)),
  attachLocal,
};
