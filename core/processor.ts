/**
 * The shared shape of a per-message processor: a function from a message to a message (or to
 * `null` to drop it deliberately, or to several messages to fan out), synchronous or returning a
 * promise. Order is kept: a message waits for the promise of the one before it. A thrown error (or
 * a rejected promise) never breaks the stream: the message is rejected to the dead-letter flow.
 *
 * Synchronous results are handed on at once, without a promise or an Observable per message (a
 * busy pipeline spends its time here). Consecutive per-message steps of a pipeline run as one
 * operator (`fusePerMessage`), with the same results, metrics, order and concurrency as step by step.
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
 * Steps run one after another, as one operator: each stage keeps its own queue, exactly as a chain
 * of `perMessage` operators would (a stage waiting for a promise holds back only the messages
 * behind it at that stage; earlier stages go on), without an RxJS subscriber between the stages.
 * Each stage's `after` runs for every message it passes on (metrics, taps).
 */
export function fusePerMessage(stages: PerMessageStage[]): OperatorFunction<Msg, Msg> {
  const last = stages.length;
  return (source) =>
    new Observable<Msg>((sub) => {
      const queues: Msg[][] = stages.map(() => []);
      const heads: number[] = stages.map(() => 0);
      const waiting: boolean[] = stages.map(() => false);
      let completed = false;

      const idle = () => {
        for (let i = 0; i < last; i++) if (waiting[i] || heads[i]! < queues[i]!.length) return false;
        return true;
      };
      const push = (i: number, msg: Msg) => {
        if (i === last) {
          sub.next(msg);
          return;
        }
        queues[i]!.push(msg);
        if (!waiting[i]) drain(i);
      };
      /** A result of stage i for msg: drop, fan out, or hand on to stage i + 1. */
      const emit = (i: number, msg: Msg, res: StepResult) => {
        const stage = stages[i]!;
        if (res === null) {
          stage.ctx.metrics.discarded(stage.dropReason);
          msg.ack.done();
        } else if (Array.isArray(res)) {
          // Fan-out: the parent is done when every child is done.
          const acks = msg.ack.split(res.length);
          if (res.length === 0) stage.ctx.metrics.discarded(stage.dropReason);
          res.forEach((m, k) => {
            const child = { ...m, ack: acks[k]! };
            stage.after?.(child);
            push(i + 1, child);
          });
        } else {
          stage.after?.(res);
          push(i + 1, res);
        }
      };
      const drain = (i: number) => {
        const stage = stages[i]!;
        const queue = queues[i]!;
        while (!waiting[i] && heads[i]! < queue.length) {
          const msg = queue[heads[i]!++]!;
          let res: StepResult | Promise<StepResult>;
          try {
            res = stage.fn(msg);
          } catch (err) {
            stage.ctx.reject(msg, err);
            continue;
          }
          if (isPromise(res)) {
            waiting[i] = true;
            res.then(
              (r) => {
                waiting[i] = false;
                emit(i, msg, r);
                drain(i);
              },
              (err) => {
                waiting[i] = false;
                stage.ctx.reject(msg, err);
                drain(i);
              },
            );
          } else emit(i, msg, res);
        }
        if (heads[i] === queue.length) {
          queue.length = 0;
          heads[i] = 0;
        }
        if (completed && idle()) sub.complete();
      };

      const upstream = source.subscribe({
        next: (msg) => push(0, msg),
        error: (err) => sub.error(err),
        complete: () => {
          completed = true;
          if (idle()) sub.complete();
        },
      });
      return () => upstream.unsubscribe();
    });
}
