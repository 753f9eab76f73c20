/**
 * The per-message step of both processors (virtual time): a retryable failure (registry away) is
 * retried with backoff while the messages behind it wait, so nothing is dropped and order is kept;
 * a non-retryable one rejects only its message. Readiness follows: not ready while retrying, with
 * the reason; ready again after the first success.
 */
import { VirtualTimeScheduler, Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { RunnerError } from '../../../../core/errors.ts';
import { createMsg, withValue, type Msg } from '../../../../core/message.ts';
import { perMessageRetrying, readiness } from '../../../../operators/schema-registry/step.ts';
import { testContext } from '../../../helpers/context.ts';
import { advanceTo } from '../../../helpers/virtual-time.ts';

const policy = { initialMs: 100, maxMs: 1000, multiplier: 2, jitter: 0 };
const down = () => new RunnerError('CONNECTION_FAILED', 'schema id 1 from the schema registry at http://r: connect ECONNREFUSED', { retryable: true });

describe('schema registry step', () => {
  it('holds messages back in order while the registry is away, and lets them through when it is back', async () => {
    const scheduler = new VirtualTimeScheduler();
    const ctx = testContext({ scheduler });
    const readyLog: { ready: boolean; reason?: string }[] = [];
    const set = ctx.setReady;
    ctx.setReady = (ready, reason) => {
      set(ready, reason);
      readyLog.push({ ready, reason });
    };
    let registryUp = false;
    const calls: number[] = [];
    const step = perMessageRetrying(
      ctx,
      async (msg) => {
        calls.push(msg.value as number);
        if (!registryUp) throw down();
        return withValue(msg, (msg.value as number) * 10);
      },
      { setReady: readiness(ctx), policy },
    );
    const input = new Subject<Msg>();
    const out: unknown[] = [];
    input.pipe(step).subscribe((m) => out.push(m.value));
    for (const v of [1, 2, 3]) input.next(createMsg(v));

    await advanceTo(scheduler, 0);
    expect(calls).toEqual([1]); // 2 and 3 wait behind 1
    await advanceTo(scheduler, 100 + 200 + 400);
    expect(calls).toEqual([1, 1, 1, 1]);
    expect(out).toEqual([]);
    expect(ctx.ready).toEqual({ ready: false, reason: expect.stringMatching(/^schema registry request fails, retrying: .*ECONNREFUSED/) });
    expect(readyLog).toHaveLength(1); // the same reason is reported once

    registryUp = true;
    await advanceTo(scheduler, 700 + 800);
    expect(out).toEqual([10, 20, 30]);
    expect(calls).toEqual([1, 1, 1, 1, 1, 2, 3]);
    expect(ctx.rejected).toEqual([]);
    expect(ctx.ready).toEqual({ ready: true, reason: undefined });
  });

  it('rejects only the message whose failure a retry cannot fix', async () => {
    const scheduler = new VirtualTimeScheduler();
    const ctx = testContext({ scheduler });
    const step = perMessageRetrying(
      ctx,
      async (msg) => {
        if (msg.value === 2) throw new RunnerError('MESSAGE_INVALID', 'does not match Avro schema id 1: device_id: 3, expected string');
        return msg;
      },
      { setReady: readiness(ctx), policy },
    );
    const input = new Subject<Msg>();
    const out: unknown[] = [];
    input.pipe(step).subscribe((m) => out.push(m.value));
    for (const v of [1, 2, 3]) input.next(createMsg(v));
    await advanceTo(scheduler, 0);
    expect(out).toEqual([1, 3]);
    expect(ctx.rejected.map((r) => [r.msg.value, (r.err as RunnerError).code])).toEqual([[2, 'MESSAGE_INVALID']]);
  });
});
