import { describe, expect, it } from 'vitest';
import { RunnerError, errorMessage, isRetryable } from '../../../core/errors.ts';
import { compileExpression } from '../../../core/expression.ts';

describe('errors', () => {
  it('reads retryable from RunnerError, from a library flag, and treats unknown errors as retryable', () => {
    expect(isRetryable(new RunnerError('MESSAGE_INVALID', 'x'))).toBe(false);
    expect(isRetryable(new RunnerError('CONNECTION_FAILED', 'x', { retryable: true }))).toBe(true);
    expect(isRetryable(Object.assign(new Error('x'), { retriable: false }))).toBe(false);
    expect(isRetryable(new Error('who knows'))).toBe(true);
  });

  it('gives the message of plain-object errors such as JSONata $error()', async () => {
    expect(errorMessage({ message: 'payload id does not match' })).toBe('payload id does not match');
    const e = compileExpression('$error("device " & device_id & " is not known")');
    await expect(e.evaluate({ value: { device_id: 'd1' }, meta: {}, headers: {}, key: null })).rejects.toThrow('failed: device d1 is not known');
  });
});
