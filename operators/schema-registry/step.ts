/**
 * core/processor.ts's perMessage, with retries: a retryable failure (the registry is unreachable,
 * times out, answers 5xx or refuses the credentials) is retried with exponential backoff for as
 * long as it takes, holding back the messages behind it so their order is kept; a non-retryable
 * one rejects the message (dead letter). While retrying, the component is not ready and says why;
 * the first success makes it ready again.
 */
import { EMPTY, catchError, concatMap, defer, from, map, type OperatorFunction } from 'rxjs';
import { errorMessage } from '../../core/errors.ts';
import type { Msg } from '../../core/message.ts';
import type { OperatorContext } from '../../core/operator.ts';
import { retryWithBackoff, type BackoffPolicy } from '../../core/retry.ts';

/** ctx.setReady, called only when readiness or its reason changes. */
export function readiness(ctx: OperatorContext) {
  let last: { ok: boolean; reason?: string } | null = null;
  return (ok: boolean, reason?: string) => {
    if (last && last.ok === ok && last.reason === reason) return;
    last = { ok, reason };
    ctx.setReady(ok, reason);
  };
}

export function perMessageRetrying(
  ctx: OperatorContext,
  fn: (msg: Msg) => Promise<Msg>,
  opts: { setReady: (ok: boolean, reason?: string) => void; policy?: BackoffPolicy },
): OperatorFunction<Msg, Msg> {
  return concatMap((msg: Msg) =>
    defer(() => from(fn(msg))).pipe(
      retryWithBackoff<Msg>({
        scheduler: ctx.scheduler,
        policy: opts.policy,
        onRetry: (err, attempt, delayMs) => {
          const reason = errorMessage(err);
          ctx.metrics.error('registry');
          opts.setReady(false, `schema registry request fails, retrying: ${reason}`);
          ctx.logger.warn({ err: reason, attempt, retryInMs: delayMs, meta: msg.meta }, 'schema registry request failed; retrying the message');
        },
      }),
      map((out) => {
        opts.setReady(true);
        return out;
      }),
      catchError((err) => {
        ctx.reject(msg, err);
        return EMPTY;
      }),
    ),
  );
}
