/**
 * The shared shape of a per-message processor: a function from a message to a message (or to
 * `null` to drop it deliberately, or to several messages to fan out), synchronous or returning a
 * promise. Order is kept: a message waits for the promise of the one before it. A thrown error (or
 * a rejected promise) never breaks the stream: the message is rejected to the dead-letter flow.
 *
 * Synchronous results are handed on at once, without a promise or an Observable per message (a
 * busy pipeline spends its time here).
 */
import { Observable, type OperatorFunction } from 'rxjs';
import type { Msg } from './message.ts';
import type { OperatorContext } from './operator.ts';

export type StepResult = Msg | Msg[] | null;

const isPromise = (v: unknown): v is PromiseLike<StepResult> => v !== null && typeof v === 'object' && typeof (v as { then?: unknown }).then === 'function';

export function perMessage(ctx: OperatorContext, fn: (msg: Msg) => StepResult | Promise<StepResult>, opts: { dropReason?: string } = {}): OperatorFunction<Msg, Msg> {
  return (source) =>
    new Observable<Msg>((sub) => {
      const queue: Msg[] = [];
      let head = 0;
      let waiting = false;
      let completed = false;

      const emit = (msg: Msg, res: StepResult) => {
        if (res === null) {
          ctx.metrics.discarded(opts.dropReason ?? 'dropped');
          msg.ack.done();
        } else if (Array.isArray(res)) {
          // Fan-out: the parent is done when every child is done.
          const acks = msg.ack.split(res.length);
          if (res.length === 0) ctx.metrics.discarded(opts.dropReason ?? 'dropped');
          res.forEach((m, i) => sub.next({ ...m, ack: acks[i]! }));
        } else sub.next(res);
      };

      const drain = () => {
        while (!waiting && head < queue.length) {
          const msg = queue[head++]!;
          let res: StepResult | Promise<StepResult>;
          try {
            res = fn(msg);
          } catch (err) {
            ctx.reject(msg, err);
            continue;
          }
          if (isPromise(res)) {
            waiting = true;
            res.then(
              (r) => {
                waiting = false;
                emit(msg, r);
                drain();
              },
              (err) => {
                waiting = false;
                ctx.reject(msg, err);
                drain();
              },
            );
          } else emit(msg, res);
        }
        if (head === queue.length) {
          queue.length = 0;
          head = 0;
        }
        if (completed && !waiting && head === queue.length) sub.complete();
      };

      const upstream = source.subscribe({
        next: (msg) => {
          queue.push(msg);
          if (!waiting) drain();
        },
        error: (err) => sub.error(err),
        complete: () => {
          completed = true;
          drain();
        },
      });
      return () => upstream.unsubscribe();
    });
}
