/**
 * Batching by count, bytes and period, as an RxJS operator. A batch is emitted when it holds
 * `count` messages, or `byte_size` bytes, or `period` ms after its first message arrived,
 * whichever comes first; the partial batch is flushed when the source completes. Each message
 * keeps its own ack handle. Time comes from the scheduler, so tests run on virtual time.
 */
import { Observable, asyncScheduler, type OperatorFunction, type SchedulerLike, type Subscription } from 'rxjs';
import { type Msg, msgSize } from './message.ts';

export interface BatchPolicy {
  /** Messages per batch; 0 = no count limit. */
  count: number;
  /** Bytes per batch; 0 = no byte limit. */
  byteSize: number;
  /** Max ms a message waits for its batch to fill; 0 = no time limit. */
  periodMs: number;
}

export function batch(policy: BatchPolicy, scheduler: SchedulerLike = asyncScheduler, sizeOf: (m: Msg) => number = msgSize): OperatorFunction<Msg, Msg[]> {
  const count = policy.count > 0 || policy.byteSize > 0 || policy.periodMs > 0 ? policy.count : 1;
  return (source) =>
    new Observable<Msg[]>((subscriber) => {
      let buffer: Msg[] = [];
      let bytes = 0;
      let timer: Subscription | null = null;
      const flush = () => {
        timer?.unsubscribe();
        timer = null;
        if (buffer.length === 0) return;
        const out = buffer;
        buffer = [];
        bytes = 0;
        subscriber.next(out);
      };
      const sub = source.subscribe({
        next(msg) {
          buffer.push(msg);
          try {
            if (policy.byteSize > 0) bytes += sizeOf(msg);
          } catch (err) {
            // A callback's error reaches the subscriber instead of being thrown into the void.
            subscriber.error(err);
            return;
          }
          if ((count > 0 && buffer.length >= count) || (policy.byteSize > 0 && bytes >= policy.byteSize)) {
            flush();
          } else if (buffer.length === 1 && policy.periodMs > 0) {
            timer = scheduler.schedule(flush, policy.periodMs);
          }
        },
        error(err) {
          subscriber.error(err);
        },
        complete() {
          flush();
          subscriber.complete();
        },
      });
      return () => {
        timer?.unsubscribe();
        sub.unsubscribe();
      };
    });
}
