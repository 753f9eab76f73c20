/**
 * The shared shape of a per-message processor: an async function from a message to a message
 * (or to `null` to drop it deliberately, or to several messages to fan out). Order is kept.
 * A thrown error never breaks the stream: the message is rejected to the dead-letter flow.
 */
import { EMPTY, catchError, concatMap, from, mergeMap, type OperatorFunction } from 'rxjs';
import type { Msg } from './message.ts';
import type { OperatorContext } from './operator.ts';

export type StepResult = Msg | Msg[] | null;

export function perMessage(ctx: OperatorContext, fn: (msg: Msg) => StepResult | Promise<StepResult>, opts: { dropReason?: string } = {}): OperatorFunction<Msg, Msg> {
  return concatMap((msg: Msg) =>
    from(Promise.resolve().then(() => fn(msg))).pipe(
      mergeMap((res) => {
        if (res === null) {
          ctx.metrics.discarded(opts.dropReason ?? 'dropped');
          msg.ack.done();
          return EMPTY;
        }
        if (Array.isArray(res)) {
          // Fan-out: the parent is done when every child is done.
          const acks = msg.ack.split(res.length);
          if (res.length === 0) ctx.metrics.discarded(opts.dropReason ?? 'dropped');
          return from(res.map((m, i) => ({ ...m, ack: acks[i]! })));
        }
        return [res];
      }),
      catchError((err) => {
        ctx.reject(msg, err);
        return EMPTY;
      }),
    ),
  );
}
