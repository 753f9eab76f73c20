import { describe, expect, it } from 'vitest';
import { ExpressionSyntaxError, compileTemplate } from '../../../core/expression.ts';
import { createMsg } from '../../../core/message.ts';

const msg = createMsg({ device_id: 'device-001', n: 2 }, { meta: { kafka_topic: 'homelab-temperature' } });

describe('templates', () => {
  it('fills each ${! } part and keeps the text around it', async () => {
    expect(await compileTemplate('heatpump/${! device_id }/command').evaluate(msg)).toBe('heatpump/device-001/command');
    expect(await compileTemplate('${! n * 2 }-${! $meta.kafka_topic }').evaluate(msg)).toBe('4-homelab-temperature');
    expect(compileTemplate('plain text').isStatic).toBe(true);
  });

  it('takes object constructors and braces inside strings as part of the expression', async () => {
    const t = compileTemplate('${! $lookup({"homelab-temperature": "temperature-telemetry", "x": "}"}, $meta.kafka_topic) }');
    expect(await t.evaluate(msg)).toBe('temperature-telemetry');
    expect(await compileTemplate("${! '{' & device_id & '}' }").evaluate(msg)).toBe('{device-001}');
  });

  it('reports an unterminated part and a syntax error with their offsets', () => {
    expect(() => compileTemplate('a ${! device_id')).toThrow(ExpressionSyntaxError);
    try {
      compileTemplate('a ${! device_id');
    } catch (err) {
      expect((err as ExpressionSyntaxError).offset).toBe(2);
    }
    try {
      compileTemplate('ab${!  n + }');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ExpressionSyntaxError);
      expect((err as ExpressionSyntaxError).offset).toBeGreaterThanOrEqual(7);
    }
  });

  it('fails a part that gives nothing, naming it', async () => {
    await expect(compileTemplate('x-${! missing }').evaluate(msg)).rejects.toThrow(/"missing" gave nothing/);
  });
});
