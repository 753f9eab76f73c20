import { from, lastValueFrom, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { RunnerError } from '../../../../core/errors.ts';
import { createMsg, type Msg } from '../../../../core/message.ts';
import { map } from '../../../../operators/core/map.ts';
import { testContext } from '../../../helpers/context.ts';

const run = async (cfg: { expression: string; key?: string; meta?: Record<string, string>; headers?: Record<string, string> }, msgs: Msg[]) => {
  const ctx = testContext();
  const out = await lastValueFrom(from(msgs).pipe(map.create({ key: '$key', meta: {}, headers: {}, on_invalid: 'dead_letter', ...cfg }, ctx), toArray()));
  return { ctx, out };
};

describe('map', () => {
  it('replaces the value by the expression result, keeping key, headers, meta and ack', async () => {
    const msg = createMsg({ d5: 35, d6: 30 }, { key: 'hp-1', headers: { h: '1' }, meta: { mqtt_topic: 'heatpump/hp-1/telemetry' } });
    const { out } = await run({ expression: '{"delta": d5 - d6, "topic": $meta.mqtt_topic, "key": $key}' }, [msg]);
    expect(out).toHaveLength(1);
    expect(out[0]!.value).toEqual({ delta: 5, topic: 'heatpump/hp-1/telemetry', key: 'hp-1' });
    expect(out[0]!.key).toBe('hp-1');
    expect(out[0]!.headers).toEqual({ h: '1' });
    expect(out[0]!.meta).toEqual(msg.meta);
    expect(out[0]!.ack).toBe(msg.ack);
  });

  it('sets a new key from the key expression, evaluated against the new value', async () => {
    const { out } = await run({ expression: '{"id": device_id & "-x"}', key: 'id' }, [createMsg({ device_id: 'hp-1' }, { key: 'old' })]);
    expect(out[0]!.key).toBe('hp-1-x');
  });

  it('turns a non-string key into a string, and a missing one into no key', async () => {
    const { out } = await run({ expression: '$', key: 'n' }, [createMsg({ n: 7 }, { key: 'k' }), createMsg({}, { key: 'k' })]);
    expect(out.map((m) => m.key)).toEqual(['7', null]);
  });

  it('rejects a message for which the expression fails, and goes on with the next', async () => {
    const bad = createMsg({ a: 'text' });
    const good = createMsg({ a: 2 });
    const { ctx, out } = await run({ expression: 'a + 1' }, [bad, good]);
    expect(out.map((m) => m.value)).toEqual([3]);
    expect(ctx.rejected).toHaveLength(1);
    expect(ctx.rejected[0]!.msg).toBe(bad);
    expect((ctx.rejected[0]!.err as RunnerError).code).toBe('EXPRESSION_FAILED');
  });

  it('rejects a message for which the expression yields nothing', async () => {
    const { ctx, out } = await run({ expression: 'missing_field' }, [createMsg({ a: 1 })]);
    expect(out).toEqual([]);
    expect(ctx.rejected).toHaveLength(1);
    expect((ctx.rejected[0]!.err as Error).message).toContain('produced no value');
  });
  it('sets metadata from expressions and headers from templates, evaluated against the new value', async () => {
    const { out } = await run(
      { expression: '$merge([$, {"kind": "heatpump"}])', meta: { target: '"homelab-" & kind' }, headers: { mqtt_topic: '${! $meta.mqtt_topic }', device: '${! device_id }' } },
      [createMsg({ device_id: 'device-001' }, { meta: { mqtt_topic: 'heatpump/device-001/telemetry' }, headers: { keep: 'me' } })],
    );
    expect(out[0]!.meta).toMatchObject({ target: 'homelab-heatpump', mqtt_topic: 'heatpump/device-001/telemetry' });
    expect(out[0]!.headers).toEqual({ keep: 'me', mqtt_topic: 'heatpump/device-001/telemetry', device: 'device-001' });
  });
});
