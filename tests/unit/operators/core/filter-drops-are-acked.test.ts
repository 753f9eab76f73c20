import { from, lastValueFrom, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { RunnerError } from '../../../../core/errors.ts';
import { ackHandle, createMsg, type AckOutcome } from '../../../../core/message.ts';
import { filter } from '../../../../operators/core/filter.ts';
import { testContext } from '../../../helpers/context.ts';

function tracked(value: unknown) {
  const outcomes: AckOutcome[] = [];
  return { outcomes, msg: createMsg(value, { ack: ackHandle((o) => outcomes.push(o)) }) };
}

describe('filter', () => {
  it('keeps messages for which the expression is truthy, unchanged and un-acked', async () => {
    const ctx = testContext();
    const keep = tracked({ d5: 35 });
    const out = await lastValueFrom(from([keep.msg]).pipe(filter.create({ expression: '$exists(d5)', on_invalid: 'dead_letter' }, ctx), toArray()));
    expect(out).toEqual([keep.msg]);
    expect(keep.outcomes).toEqual([]);
  });

  it('drops the others deliberately: acked done and counted as discarded (filtered)', async () => {
    const ctx = testContext({ pipeline: 'p', component: 'only-d5' });
    const drop = tracked({ d6: 30 });
    const keep = tracked({ d5: 35 });
    const out = await lastValueFrom(from([drop.msg, keep.msg]).pipe(filter.create({ expression: '$exists(d5)', on_invalid: 'dead_letter' }, ctx), toArray()));
    expect(out).toEqual([keep.msg]);
    expect(drop.outcomes).toEqual([{ ok: true }]);
    const metric = await ctx.metricsRegistry.registry.getSingleMetric('runner_component_discarded_total')!.get();
    expect(metric.values).toEqual([expect.objectContaining({ value: 1, labels: expect.objectContaining({ pipeline: 'p', component: 'only-d5', reason: 'filtered' }) })]);
  });

  it('rejects (does not drop) a message for which the expression fails', async () => {
    const ctx = testContext();
    const bad = tracked({ a: 'text' });
    const out = await lastValueFrom(from([bad.msg]).pipe(filter.create({ expression: 'a > 1', on_invalid: 'dead_letter' }, ctx), toArray()));
    expect(out).toEqual([]);
    expect(bad.outcomes).toEqual([]);
    expect(ctx.rejected).toHaveLength(1);
    expect((ctx.rejected[0]!.err as RunnerError).code).toBe('EXPRESSION_FAILED');
  });
});
