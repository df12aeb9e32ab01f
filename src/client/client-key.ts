const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * A client's identity for operation ids (Authenticate.clientKey): 32 random characters of [A-Za-z0-9_-]
 * (192 bits), made once per Client and sent on every reconnection, so the server applies a resent write once.
 */
export function newClientKey(): string {
  const bytes = new Uint8Array(32);
  globalThis.crypto.getRandomValues(bytes);
  let key = '';
  for (const b of bytes) key += ALPHABET[b & 63];
  return key;
}
