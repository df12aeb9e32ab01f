/**
 * What the server's non-blocking primitives answer (tryRead, tryReadCopy, tryRegister; tryLock means it by
 * false) when a live process holds what they need: the caller retries later instead of waiting.
 */
export const BUSY: unique symbol = Symbol('commy.busy');
