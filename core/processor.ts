/**
 * The shared shape of a per-message processor: a function from a message to a message (or to
 * `null` to drop it deliberately, or to several messages to fan out), synchronous or returning a
 * promise. Order is kept: a message waits for the promise of the one before it. A thrown error (or
 * a rejected promise) never breaks the stream: the message is rejected to the dead-letter flow.
 *
 * Synchronous results are handed on at once, without a promise or an Observable per message (a
 * busy pipeline spends its time here). Consecutive per-message steps of a pipeline run as one
 * operator (`fusePerMessage`): a message goes through all of them in one call, with the same
 * results, metrics and order as step by step.
 */
import { Observable, type OperatorFunction } from 'rxjs';
import type { Msg } from './message.ts';
import type { OperatorContext } from './operator.ts';

export type StepResult = Msg | Msg[] | null;
type StepFn = (msg: Msg) => StepResult | Promise<StepResult>;

const isPromise = (v: unknown): v is PromiseLike<StepResult> => v !== null && typeof v === 'object' && typeof (v as { then?: unknown }).then === 'function';

/** One per-message step as the pipeline sees it; `after` runs for each message the step passes on. */
export interface PerMessageStage {
  ctx: OperatorContext;
  fn: StepFn;
  dropReason: string;
  after?: (msg: Msg) => void;
}

const STAGE: unique symbol = Symbol('perMessage');
type Tagged = OperatorFunction<Msg, Msg> & { [STAGE]?: PerMessageStage };

/** The step behind an operator made by `perMessage`, or undefined for any other operator. */
export function perMessageStage(op: OperatorFunction<Msg, Msg>): PerMessageStage | undefined {
  return (op as Tagged)[STAGE];
}

export function perMessage(ctx: OperatorContext, fn: StepFn, opts: { dropReason?: string } = {}): OperatorFunction<Msg, Msg> {
  const stage: PerMessageStage = { ctx, fn, dropReason: opts.dropReason ?? 'dropped' };
  const op: Tagged = fusePerMessage([stage]);
  op[STAGE] = stage;
  return op;
}

/**
 * Steps run one after another on each message, as one operator: a message goes through every step
 * before the next message starts; a step returning a promise holds back the messages behind it.
 * Each stage's `after` runs for every message it passes on (metrics, taps).
 */
export function fusePerMessage(stages: PerMessageStage[]): OperatorFunction<Msg, Msg> {
  const last = stages.length;
  return (source) =>
    new Observable<Msg>((sub) => {
      // Messages waiting, each with the index of the stage it is at.
      let queue: Msg[] = [];
      let at: number[] = [];
      let head = 0;
      let waiting = false;
      let completed = false;

      /** A result of stage i for msg: hand it on, or drop, or fan out (children go first in the queue). */
      const settle = (msg: Msg, res: StepResult, i: number): Msg | null => {
        const stage = stages[i]!;
        if (res === null) {
          stage.ctx.metrics.discarded(stage.dropReason);
          msg.ack.done();
          return null;
        }
        if (Array.isArray(res)) {
          // Fan-out: the parent is done when every child is done.
          const acks = msg.ack.split(res.length);
          if (res.length === 0) stage.ctx.metrics.discarded(stage.dropReason);
          const children = res.map((m, k) => ({ ...m, ack: acks[k]! }));
          for (const c of children) stage.after?.(c);
          if (i + 1 === last) {
            for (const c of children) sub.next(c);
          } else if (children.length) {
            queue.splice(head, 0, ...children);
            at.splice(head, 0, ...children.map(() => i + 1));
          }
          return null;
        }
        stage.after?.(res);
        return res;
      };

      /** Take msg from stage `from` through the rest (a promise suspends it: `waiting`). */
      const run = (first: Msg, from: number): void => {
        let msg: Msg | null = first;
        for (let i = from; i < last; i++) {
          const stage = stages[i]!;
          let res: StepResult | Promise<StepResult>;
          try {
            res = stage.fn(msg);
          } catch (err) {
            stage.ctx.reject(msg, err);
            return;
          }
          if (isPromise(res)) {
            waiting = true;
            const m: Msg = msg;
            res.then(
              (r) => {
                waiting = false;
                const out = settle(m, r, i);
                if (out !== null) {
                  if (i + 1 === last) sub.next(out);
                  else run(out, i + 1);
                }
                drain();
              },
              (err) => {
                waiting = false;
                stage.ctx.reject(m, err);
                drain();
              },
            );
            return;
          }
          msg = settle(msg, res, i);
          if (msg === null) return;
        }
        sub.next(msg);
      };

      const drain = () => {
        while (!waiting && head < queue.length) {
          const i = head++;
          run(queue[i]!, at[i]!);
        }
        if (head === queue.length && head > 0) {
          queue = [];
          at = [];
          head = 0;
        }
        if (completed && !waiting && head === queue.length) sub.complete();
      };

      const upstream = source.subscribe({
        next: (msg) => {
          if (!waiting && head === queue.length) {
            // Nothing waiting ahead of it: straight through (then whatever a fan-out queued).
            run(msg, 0);
            drain();
            return;
          }
          queue.push(msg);
          at.push(0);
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
