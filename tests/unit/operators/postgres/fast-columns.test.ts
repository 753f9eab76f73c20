/** The postgres output's synchronous column paths give exactly what JSONata gives, or defer to it. */
import { describe, expect, it } from 'vitest';
import { compileExpression } from '../../../../core/expression.ts';
import { createMsg } from '../../../../core/message.ts';
import { fastColumn } from '../../../../operators/postgres/output.ts';
import { copyTextValue } from '../../../../operators/postgres/pool.ts';

const values: unknown[] = [
  { device_id: 'device-001', timestamp: 1698765432, d0: 5.2, d5: 35, nested: { a: 1, b: { c: 'x' } } },
  { device_id: 'd\t2', timestamp: 1698765432.5, d0: null },
  { device_id: 'd3', timestamp: 1698765432.123 },
  { device_id: 'd4', timestamp: '1698765432' },
  { device_id: 'd5', timestamp: -1, d0: [1, 2] },
  { device_id: 'd6', timestamp: 0, list: [{ a: 1 }], nested: { arr: [1] } },
  { device_id: 'd7', timestamp: 253402300800 },
  { device_id: 'd8', timestamp: 99999999999, nested: 'text' },
  { device_id: 'd9', timestamp: true, nested: null },
  { device_id: 'd10' },
  { timestamp: 1e21 },
  {},
  [1, 2],
  'text',
  42,
  null,
];
const sources = ['$', 'device_id', 'd0', 'nested', 'nested.a', 'nested.b.c', 'nested.arr', 'missing.path', 'list', '$fromMillis(timestamp * 1000)', '$fromMillis( timestamp*1000 )', ' $ '];

describe('postgres fast column paths', () => {
  it.each(sources)('%s: same COPY text as JSONata for every value, or JSONata decides', async (source) => {
    const fast = fastColumn(source);
    expect(fast).not.toBeNull();
    const expr = compileExpression(source);
    for (const value of values) {
      const msg = createMsg(value);
      const viaJsonata = await expr.evaluate(msg).then(
        (v) => ({ ok: true as const, text: copyTextValue(v) }),
        () => ({ ok: false as const, text: '' }),
      );
      const v = fast!(msg);
      if (typeof v === 'symbol') continue; // deferred to JSONata
      expect(viaJsonata.ok, `${source} on ${JSON.stringify(value)}`).toBe(true);
      expect(copyTextValue(v), `${source} on ${JSON.stringify(value)}`).toBe(viaJsonata.text);
    }
  });

  it('takes the fast path for the usual telemetry columns', () => {
    const msg = createMsg({ device_id: 'device-001', timestamp: 1698765432, d0: 5.2, raw: { x: 1 } });
    expect(fastColumn('$fromMillis(timestamp * 1000)')!(msg)).toBe('2023-10-31T15:17:12.000Z');
    expect(fastColumn('device_id')!(msg)).toBe('device-001');
    expect(fastColumn('$')!(msg)).toBe(msg.value);
  });

  it('leaves other expressions to JSONata', () => {
    for (const s of ['$meta.kafka_offset', '$key', 'true', 'd0 * 2', '$fromMillis(timestamp)', '$string(d0)', 'a[0]']) expect(fastColumn(s)).toBeNull();
  });
});
