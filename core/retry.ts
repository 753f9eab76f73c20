/**
 * Retry with exponential backoff and a cap. Retryable errors (see errors.ts) are retried, by
 * default forever: data is never dropped because a server was away. Non-retryable errors pass
 * through at once so the caller can dead-letter the message.
 */
import { type MonoTypeOperatorFunction, type SchedulerLike, asyncScheduler, retry, throwError, timer } from 'rxjs';
import { isRetryable } from './errors.ts';

export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  multiplier: number;
  /** 0..1: the delay is multiplied by a random factor in [1 - jitter, 1]. */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 200, maxMs: 30_000, multiplier: 2, jitter: 0.2 };

/** Delay before retry number `attempt` (1-based). */
export function backoffDelay(policy: BackoffPolicy, attempt: number, random: () => number = Math.random): number {
  const raw = policy.initialMs * policy.multiplier ** Math.max(0, attempt - 1);
  const capped = Math.min(policy.maxMs, raw);
  return Math.round(capped * (1 - policy.jitter * random()));
}

export interface RetryOptions {
  policy?: BackoffPolicy;
  scheduler?: SchedulerLike;
  /** Give up after this many retries (the error then passes through); default: never. */
  maxRetries?: number;
  random?: () => number;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

export function retryWithBackoff<T>(opts: RetryOptions = {}): MonoTypeOperatorFunction<T> {
  const policy = opts.policy ?? DEFAULT_BACKOFF;
  const scheduler = opts.scheduler ?? asyncScheduler;
  return retry<T>({
    delay: (err, attempt) => {
      if (!isRetryable(err) || (opts.maxRetries !== undefined && attempt > opts.maxRetries)) return throwError(() => err);
      const ms = backoffDelay(policy, attempt, opts.random);
      opts.onRetry?.(err, attempt, ms);
      return timer(ms, scheduler);
    },
  });
}
