/**
 * Typed, coded errors. Every error the runner raises on purpose is a RunnerError with a code from
 * ERROR_CODES and says whether retrying can help. The retry / dead-letter decision reads
 * `retryable` and nothing else.
 */
export const ERROR_CODES = {
  CONFIG_INVALID: 'the configuration has problems; each is listed with file:line:col',
  ENV_MISSING: 'an environment variable used in the configuration is not set and has no default',
  SCHEMA_NOT_FOUND: 'a JSON Schema named in the configuration does not exist in schemas/',
  MESSAGE_INVALID: 'a message failed validation against its JSON Schema',
  EXPRESSION_FAILED: 'an expression could not be evaluated for a message',
  CONNECTION_FAILED: 'a server could not be reached; retried with backoff',
  AUTH_FAILED: 'a server refused the credentials or the operation is not authorised',
  WRITE_FAILED: 'a write was not acknowledged by the server; retried with backoff',
  WRITE_REJECTED: 'the server rejected the message itself (too large, unknown topic, constraint); it goes to the dead-letter output',
  NOT_FOUND: 'a row or resource the message refers to does not exist (e.g. an unknown device); it goes to the dead-letter output',
  SHUTDOWN_TIMEOUT: 'in-flight messages could not be drained within shutdown_timeout',
  INTERNAL: 'a bug in the runner; please report it',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class RunnerError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  constructor(code: ErrorCode, message: string, opts: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'RunnerError';
    this.code = code;
    this.retryable = opts.retryable ?? false;
  }
}

/** Whether a retry could help. Unknown errors are treated as retryable: never drop on a guess. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof RunnerError) return err.retryable;
  if (err && typeof err === 'object' && 'retriable' in err) return Boolean((err as { retriable: unknown }).retriable);
  return true;
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  // Some libraries (JSONata) throw plain objects with a message.
  if (err && typeof err === 'object' && typeof (err as { message?: unknown }).message === 'string') return (err as { message: string }).message;
  return String(err);
}
