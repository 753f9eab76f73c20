import { defer, of, throwError } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import { RunnerError } from '../../../core/errors.ts';
import { backoffDelay, retryWithBackoff, type BackoffPolicy } from '../../../core/retry.ts';

const policy: BackoffPolicy = { initialMs: 100, maxMs: 1000, multiplier: 2, jitter: 0.5 };
const newScheduler = () => new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
const retryable = () => new RunnerError('CONNECTION_FAILED', 'broker down', { retryable: true });

describe('backoffDelay', () => {
  it('grows exponentially from initialMs and is capped at maxMs', () => {
    const noJitter = () => 0;
    expect([1, 2, 3, 4, 5, 6, 20].map((n) => backoffDelay(policy, n, noJitter))).toEqual([100, 200, 400, 800, 1000, 1000, 1000]);
  });

  it('jitter shortens the delay by at most `jitter` of it', () => {
    expect(backoffDelay(policy, 3, () => 1)).toBe(200); // 400 * (1 - 0.5)
    expect(backoffDelay(policy, 3, () => 0.5)).toBe(300); // 400 * (1 - 0.25)
    expect(backoffDelay(policy, 10, () => 1)).toBe(500); // capped first, then jittered
  });
});

describe('retryWithBackoff (virtual time)', () => {
  it('resubscribes after each retryable error at the backoff delays, and delivers once the source succeeds', () => {
    const ts = newScheduler();
    const attemptsAt: number[] = [];
    const delays: number[] = [];
    ts.run(({ expectObservable }) => {
      let attempt = 0;
      const source = defer(() => {
        attemptsAt.push(ts.now());
        return ++attempt <= 3 ? throwError(retryable) : of('written');
      });
      const out = source.pipe(retryWithBackoff({ policy, scheduler: ts, random: () => 0, onRetry: (_e, _n, ms) => delays.push(ms) }));
      // retries at 100, 100 + 200 = 300, 300 + 400 = 700
      expectObservable(out).toBe('700ms (w|)', { w: 'written' });
    });
    expect(attemptsAt).toEqual([0, 100, 300, 700]);
    expect(delays).toEqual([100, 200, 400]);
  });

  it('passes a non-retryable RunnerError through at once, without retrying', () => {
    const ts = newScheduler();
    const err = new RunnerError('MESSAGE_INVALID', 'bad payload');
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold('--#', undefined, err);
      expectObservable(source.pipe(retryWithBackoff({ policy, scheduler: ts, random: () => 0 }))).toBe('--#', undefined, err);
      expectSubscriptions(source.subscriptions).toBe(['^-!']);
    });
  });

  it('gives up after maxRetries and passes the last error on', () => {
    const ts = newScheduler();
    const err = retryable();
    ts.run(({ cold, expectObservable }) => {
      const source = cold('#', undefined, err);
      // attempts at 0, 100, 300; the third failure (after 2 retries) passes through at 300.
      expectObservable(source.pipe(retryWithBackoff({ policy, scheduler: ts, random: () => 0, maxRetries: 2 }))).toBe('300ms #', undefined, err);
    });
  });

  it('retries errors of unknown type (never drops on a guess) but not ones marked retriable: false', () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      const kafkaFatal = Object.assign(new Error('not authorised'), { retriable: false });
      expectObservable(cold('#', undefined, kafkaFatal).pipe(retryWithBackoff({ policy, scheduler: ts, random: () => 0 }))).toBe('#', undefined, kafkaFatal);
      const unknown = new Error('ECONNRESET');
      const src = cold('#', undefined, unknown);
      expectObservable(src.pipe(retryWithBackoff({ policy, scheduler: ts, random: () => 0, maxRetries: 1 }))).toBe('100ms #', undefined, unknown);
    });
  });
});
