import { from, lastValueFrom, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { RunnerError } from '../../../../core/errors.ts';
import { createMsg } from '../../../../core/message.ts';
import { validate } from '../../../../operators/core/validate.ts';
import { testContext } from '../../../helpers/context.ts';

const run = async (values: unknown[]) => {
  const ctx = testContext();
  const msgs = values.map((v) => createMsg(v));
  const out = await lastValueFrom(from(msgs).pipe(validate.create({ schema: 'heatpump-telemetry', on_invalid: 'dead_letter' }, ctx), toArray()));
  return { ctx, msgs, out };
};

describe('validate', () => {
  it('passes a valid message on unchanged (same message, same ack)', async () => {
    const { ctx, msgs, out } = await run([{ device_id: 'hp-1', timestamp: 1_700_000_000, d5: 35.5, d6: null }]);
    expect(out).toEqual([msgs[0]]);
    expect(out[0]!.ack).toBe(msgs[0]!.ack);
    expect(ctx.rejected).toEqual([]);
  });

  it('rejects an invalid message with every reason, as a non-retryable MESSAGE_INVALID', async () => {
    const { ctx, msgs, out } = await run([{ timestamp: 'yesterday', d5: 'hot' }]);
    expect(out).toEqual([]);
    expect(ctx.rejected).toHaveLength(1);
    const { msg, err } = ctx.rejected[0]!;
    expect(msg).toBe(msgs[0]);
    expect(err).toBeInstanceOf(RunnerError);
    expect((err as RunnerError).code).toBe('MESSAGE_INVALID');
    expect((err as RunnerError).retryable).toBe(false);
    const text = (err as Error).message;
    expect(text).toContain("must have required property 'device_id'");
    expect(text).toContain('/timestamp must be number');
    expect(text).toContain('/d5 must be number,null');
  });

  it('does not settle the ack of a rejected message itself (the engine decides: dead letter or drop)', async () => {
    const { msgs } = await run([{}]);
    expect(msgs[0]!.ack.settled).toBe(false);
  });

  it('keeps order and goes on after an invalid message', async () => {
    const good = (i: number) => ({ device_id: `hp-${i}`, timestamp: i });
    const { ctx, out } = await run([good(1), { device_id: 'x' }, good(2)]);
    expect(out.map((m) => m.value)).toEqual([good(1), good(2)]);
    expect(ctx.rejected).toHaveLength(1);
  });
});
