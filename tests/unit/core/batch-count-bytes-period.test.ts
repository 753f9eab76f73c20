import { Subject, type SchedulerLike, type Subscription } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import { batch } from '../../../core/batch.ts';
import { createMsg, type Msg } from '../../../core/message.ts';

const newScheduler = () => new TestScheduler((actual, expected) => expect(actual).toEqual(expected));

/** Messages a..f whose value is a string of the given size (msgSize counts its bytes). */
function msgs(sizes: Record<string, number> = {}): Record<string, Msg> {
  const out: Record<string, Msg> = {};
  for (const k of 'abcdef') out[k] = createMsg('x'.repeat(sizes[k] ?? 1), { meta: { id: k } });
  return out;
}

describe('batch (virtual time)', () => {
  it('emits a batch when it holds `count` messages', () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      const m = msgs();
      const src = cold('a-b-c-d-e-|', m);
      expectObservable(src.pipe(batch({ count: 2, byteSize: 0, periodMs: 0 }, ts))).toBe('--x---y---(z|)', {
        x: [m.a, m.b],
        y: [m.c, m.d],
        z: [m.e],
      });
    });
  });

  it('emits a batch when its bytes reach `byte_size`', () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      const m = msgs({ a: 4, b: 4, c: 9, d: 1, e: 1 });
      const src = cold('abcde|', m);
      // a+b = 8 < 10; a+b+c = 17 >= 10 -> flush; d+e = 2, flushed on complete.
      expectObservable(src.pipe(batch({ count: 0, byteSize: 10, periodMs: 0 }, ts))).toBe('--x--(y|)', {
        x: [m.a, m.b, m.c],
        y: [m.d, m.e],
      });
    });
  });

  it('emits a batch `period` after its first message, not after the last', () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      const m = msgs();
      // a at 0, b at 3, c at 7: the window opened by a closes at 5 even though b came at 3;
      // c's window closes at 12.
      const src = cold('a--b---c------|', m);
      expectObservable(src.pipe(batch({ count: 100, byteSize: 0, periodMs: 5 }, ts))).toBe('-----x------y-|', {
        x: [m.a, m.b],
        y: [m.c],
      });
    });
  });

  it('starts a new period for the next batch after a count flush', () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      const m = msgs();
      // a,b flush at 1 by count; c at 2 opens a new window that closes at 2 + 4 = 6.
      const src = cold('abc--------|', m);
      expectObservable(src.pipe(batch({ count: 2, byteSize: 0, periodMs: 4 }, ts))).toBe('-x----y----|', {
        x: [m.a, m.b],
        y: [m.c],
      });
    });
  });

  it('flushes the partial batch when the source completes', () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      const m = msgs();
      expectObservable(cold('ab|', m).pipe(batch({ count: 10, byteSize: 0, periodMs: 1000 }, ts))).toBe('--(x|)', { x: [m.a, m.b] });
    });
  });

  it('passes messages one by one when no limit is set', () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      const m = msgs();
      expectObservable(cold('ab|', m).pipe(batch({ count: 0, byteSize: 0, periodMs: 0 }, ts))).toBe('xy|', { x: [m.a], y: [m.b] });
    });
  });

  it('propagates a source error (the unflushed messages stay un-acked)', () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      const m = msgs();
      const err = new Error('connection lost');
      expectObservable(cold('ab#', m, err).pipe(batch({ count: 10, byteSize: 0, periodMs: 100 }, ts))).toBe('--#', undefined, err);
    });
  });

  it('sends an error thrown while sizing a message to the subscriber', () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      const m = msgs();
      const err = new Error('cannot size');
      const sizeOf = (msg: Msg) => {
        if (msg.meta.id === 'b') throw err;
        return 1;
      };
      expectObservable(cold('ab-c|', m).pipe(batch({ count: 0, byteSize: 10, periodMs: 0 }, ts, sizeOf))).toBe('-#', undefined, err);
    });
  });

  it('tears its timer down when unsubscribed, and emits nothing afterwards', () => {
    const ts = newScheduler();
    const timers: Subscription[] = [];
    const spy: SchedulerLike = {
      now: () => ts.now(),
      schedule(work: any, delay?: number, state?: any) {
        const s = ts.schedule(work, delay, state);
        timers.push(s);
        return s;
      },
    };
    const source = new Subject<Msg>();
    const seen: Msg[][] = [];
    const sub = source.pipe(batch({ count: 10, byteSize: 0, periodMs: 50 }, spy)).subscribe((b) => seen.push(b));
    source.next(msgs().a!);
    expect(timers).toHaveLength(1);
    expect(timers[0]!.closed).toBe(false);

    sub.unsubscribe();
    expect(timers[0]!.closed).toBe(true);
    expect(source.observed).toBe(false);
    ts.flush();
    expect(seen).toEqual([]);
  });
});
