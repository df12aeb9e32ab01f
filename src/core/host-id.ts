import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';

let cached: string | undefined;

/**
 * This machine's identity for "may I map the server's file?": the kernel's boot id (shared by every process
 * of this boot, containers included) plus the host name. Equal ids are only a hint: a client still checks
 * the file it opens (its header's file id) before it trusts a local mapping.
 */
export function hostId(): string {
  if (cached === undefined) {
    let boot = 'unknown-boot';
    try {
      boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      /* not Linux: no local mapping anyway */
    }
    cached = `${boot}@${hostname()}`;
  }
  return cached;
}
