import { CommyError, ErrorCode } from './errors.js';

/** Tenant, service and variable names: never a path, never anything a file system could read as one. */
export const MAX_NAME_LENGTH = 64;
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function isValidName(name: unknown): name is string {
  return typeof name === 'string' && NAME_PATTERN.test(name);
}

/** Throws INVALID_NAME unless `name` is 1–64 characters of [A-Za-z0-9._-] starting with a letter or digit. */
export function assertValidName(name: unknown, what = 'name'): asserts name is string {
  if (!isValidName(name)) {
    const shown = typeof name === 'string' ? JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}…` : name) : typeof name;
    throw new CommyError(
      ErrorCode.INVALID_NAME,
      `invalid ${what} ${shown}: expected 1-${MAX_NAME_LENGTH} characters of [A-Za-z0-9._-] starting with a letter or digit`,
    );
  }
}
