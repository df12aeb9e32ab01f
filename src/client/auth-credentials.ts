import { CommyError, ErrorCode } from '../core/errors.js';

export type AuthMethod = 'apiKey' | 'jwt';

const secrets = new WeakMap<AuthCredentials, string>();

/**
 * How a client proves who it is to one tenant: an API key (`id:secret`) or a JWT. The secret is kept out of
 * the object's enumerable fields, so logging or JSON-serializing credentials never prints it.
 */
export class AuthCredentials {
  private constructor(
    readonly method: AuthMethod,
    credential: string,
  ) {
    secrets.set(this, credential);
  }

  static apiKey(key: string): AuthCredentials {
    return new AuthCredentials('apiKey', nonEmpty(key, 'an API key'));
  }

  static jwt(token: string): AuthCredentials {
    return new AuthCredentials('jwt', nonEmpty(token, 'a JWT'));
  }

  toJSON(): { method: AuthMethod } {
    return { method: this.method };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `AuthCredentials { method: '${this.method}' }`;
  }
}

/** The secret to send (for the client only: not exported from the package). */
export function credentialOf(creds: AuthCredentials): string {
  const secret = creds instanceof AuthCredentials ? secrets.get(creds) : undefined;
  if (secret === undefined) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'credentials must come from AuthCredentials.apiKey() or AuthCredentials.jwt()');
  return secret;
}

function nonEmpty(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new CommyError(ErrorCode.AUTH_FAILED, `${what} must be a non-empty string`);
  return value;
}
