/** Where Chromium is and how it starts here: for the browser tests and the browser bench (no node:test here). */

/** Debian's chromium (scripts/install-browser.sh installs it); COMMY_CHROMIUM names another binary. */
export const CHROMIUM = process.env.COMMY_CHROMIUM ?? '/usr/bin/chromium';

/**
 * Headless, as root, on a closed network: no sandbox (root), no GPU, and none of Chromium's own background
 * connections (updates, sync, QUIC probes), which this network refuses. Playwright adds a fresh --user-data-dir.
 */
export const CHROMIUM_ARGS: readonly string[] = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
