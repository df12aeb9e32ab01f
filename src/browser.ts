/**
 * `commy` for runtimes without Node (the package's `browser` condition): the same API, remote mode only,
 * over the global WebSocket with the JS diff. VirtualVariableFile.open and mode 'local' fail with
 * FILE_NOT_FOUND; mode 'auto' is remote.
 */
import { browserPlatform } from './client/browser-platform.js';
import { registerPlatform } from './client/platform.js';

registerPlatform(browserPlatform);

export * from './api.js';
