/**
 * `commy` on Node: the client with local mode (the server's file mapped when on its machine) and embedded
 * files, over `ws` and the native addon. Browsers get browser.ts through the package's `browser` condition.
 */
import { nodePlatform } from './client/node-platform.js';
import { registerPlatform } from './client/platform.js';

registerPlatform(nodePlatform);

export * from './api.js';
