/**
 * One catalogue of error codes, shared by the embedded library, the server and the clients.
 * Codes are stable: tests and users match on `code`, never on message text.
 */
export const ErrorCode = {
  AUTH_FAILED: 'AUTH_FAILED',
  PERMISSION_DENIED: 'PERMISSION_DENIED',
  SERVICE_NOT_FOUND: 'SERVICE_NOT_FOUND',
  VARIABLE_NOT_FOUND: 'VARIABLE_NOT_FOUND',
  FILE_NOT_FOUND: 'FILE_NOT_FOUND',
  INVALID_NAME: 'INVALID_NAME',
  INVALID_OFFSET: 'INVALID_OFFSET',
  INVALID_FILE: 'INVALID_FILE',
  TYPE_MISMATCH: 'TYPE_MISMATCH',
  VALUE_TOO_LARGE: 'VALUE_TOO_LARGE',
  MESSAGE_TOO_LARGE: 'MESSAGE_TOO_LARGE',
  UNKNOWN_MESSAGE: 'UNKNOWN_MESSAGE',
  INVALID_MESSAGE: 'INVALID_MESSAGE',
  RATE_LIMITED: 'RATE_LIMITED',
  CONFLICT: 'CONFLICT',
  NOT_CONNECTED: 'NOT_CONNECTED',
  TIMEOUT: 'TIMEOUT',
  HYBRID_ACCESS_DENIED: 'HYBRID_ACCESS_DENIED',
  QUOTA_EXCEEDED: 'QUOTA_EXCEEDED',
  CLOSED: 'CLOSED',
  /** The caller's AbortSignal fired, or the request was cancelled; `cause` holds the signal's reason. */
  ABORTED: 'ABORTED',
  /**
   * The server cannot take writes for now, through no fault of the request (a cluster node whose Redis is away):
   * nothing was applied, or — after a timeout — its outcome is unknown; resend (the operation id makes it safe).
   * A client's set()/flush() values are resent by themselves, as after RATE_LIMITED; mutate() retries until its deadline.
   */
  UNAVAILABLE: 'UNAVAILABLE',
  INTERNAL_ERROR: 'INTERNAL_ERROR',
  CONFIG_INVALID: 'CONFIG_INVALID',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class CommyError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CommyError';
    this.code = code;
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ErrorCode, value);
}

export function isCommyError(value: unknown, code?: ErrorCode): value is CommyError {
  return value instanceof CommyError && (code === undefined || value.code === code);
}
