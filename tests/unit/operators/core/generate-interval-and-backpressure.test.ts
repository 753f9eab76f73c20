import { VirtualTimeScheduler, type Subscription } from 'rxjs';
import { afterEach, describe, expect, it } from 'vitest';
import type { Msg } from '../../../../core/message.ts';
import { generate } from '../../../../operators/core/generate.ts';
import { testContext } from '../../../helpers/context.ts';
import { advanceTo, settle } from '../../../helpers/virtual-time.ts';

type Cfg = Parameters<typeof generate.create>[0];
const defaults: Cfg = { count: 0, interval: 0, expression: '{"i": $i}', key: 'null', max_in_flight: 1000 };

const subs: Subscription[] = [];
afterEach(() => {
  for (const s of subs.splice(0)) s.unsubscribe();
});

/** Subscribe to a generate input on virtual time; records each message with the virtual time it came at. */
function start(cfg: Partial<Cfg>, opts: { ack?: 'now' | 'never' | number } = {}) {
  const scheduler = new VirtualTimeScheduler();
  const ctx = testContext({ scheduler });
  const got: { msg: Msg; at: number }[] = [];
  const state = { completed: false };
  subs.push(
    generate.create({ ...defaults, ...cfg }, ctx).subscribe({
      next(msg) {
        got.push({ msg, at: scheduler.now() });
        const ack = opts.ack ?? 'now';
        if (ack === 'now') msg.ack.done();
        else if (typeof ack === 'number') scheduler.schedule(() => msg.ack.done(), ack);
      },
      complete: () => (state.completed = true),
    }),
  );
  return { scheduler, ctx, got, state };
}

describe('generate', () => {
  it('emits `count` messages from the expression with $i bound to the index, then completes', async () => {
    const g = start({ count: 3, expression: '{"device": "hp-" & $string($i), "n": $i * 10}', key: 'device' });
    await advanceTo(g.scheduler, 0);
    expect(g.got.map((x) => x.msg.value)).toEqual([
      { device: 'hp-0', n: 0 },
      { device: 'hp-1', n: 10 },
      { device: 'hp-2', n: 20 },
    ]);
    expect(g.got.map((x) => x.msg.key)).toEqual(['hp-0', 'hp-1', 'hp-2']);
    expect(g.got.map((x) => x.msg.meta.generate_index)).toEqual([0, 1, 2]);
    expect(g.state.completed).toBe(true);
  });

  it('has no key by default', async () => {
    const g = start({ count: 1 });
    await advanceTo(g.scheduler, 0);
    expect(g.got[0]!.msg.key).toBeNull();
  });

  it('waits `interval` between messages (virtual time)', async () => {
    const g = start({ count: 3, interval: '1s' });
    await advanceTo(g.scheduler, 999);
    expect(g.got.map((x) => x.at)).toEqual([0]);
    await advanceTo(g.scheduler, 5000);
    expect(g.got.map((x) => x.at)).toEqual([0, 1000, 2000]);
    expect(g.state.completed).toBe(true);
  });

  it('keeps the interval when acks arrive during the wait', async () => {
    const g = start({ count: 3, interval: '1s' }, { ack: 100 });
    await advanceTo(g.scheduler, 5000);
    expect(g.got.map((x) => x.at)).toEqual([0, 1000, 2000]);
  });

  it('stops generating and completes when the pipeline stops', async () => {
    const g = start({ count: 0, interval: '1s' });
    await advanceTo(g.scheduler, 2500);
    expect(g.got).toHaveLength(3);
    g.ctx.stopSubject.next();
    await advanceTo(g.scheduler, 10_000);
    expect(g.got).toHaveLength(3);
    expect(g.state.completed).toBe(true);
    expect(g.scheduler.actions).toHaveLength(0);
  });

  it('with max_in_flight 2 and nothing acked, emits only 2 messages; one ack lets one more out', async () => {
    const g = start({ count: 10, interval: 0, max_in_flight: 2 }, { ack: 'never' });
    await advanceTo(g.scheduler, 1000);
    for (let i = 0; i < 5; i++) await settle();
    expect(g.got).toHaveLength(2);

    g.got[0]!.msg.ack.done();
    await advanceTo(g.scheduler, 2000);
    expect(g.got).toHaveLength(3);
    expect(g.got.map((x) => x.msg.value)).toEqual([{ i: 0 }, { i: 1 }, { i: 2 }]);
  });

  it('completes when stopped while waiting for acks', async () => {
    const g = start({ count: 10, max_in_flight: 1 }, { ack: 'never' });
    await advanceTo(g.scheduler, 0);
    expect(g.got).toHaveLength(1);
    g.ctx.stopSubject.next();
    await settle();
    expect(g.state.completed).toBe(true);
    expect(g.got).toHaveLength(1);
  });
});
