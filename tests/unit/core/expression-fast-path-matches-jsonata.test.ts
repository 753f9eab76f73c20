/**
 * compileExpression evaluates a subset of JSONata directly (core/expression-compile.ts) instead of
 * running JSONata. That shortcut must give exactly what JSONata gives (values and errors), or a
 * filter, key or column would silently change meaning.
 */
import jsonata from 'jsonata';
import { describe, expect, it } from 'vitest';
import { compileExpression } from '../../../core/expression.ts';
import type { Msg } from '../../../core/message.ts';

type Input = Pick<Msg, 'value' | 'meta' | 'headers' | 'key'>;

const inputs: Input[] = [
  { value: { a: 1, b: { c: 'x' }, n: null, arr: [1, 2], true: 'a field named true', null: 'a field named null' }, meta: { t: 'topic', z: null }, headers: { h: 'v' }, key: 'k' },
  {
    value: { device_id: 'device-001', timestamp: 1698765432.5, d0: 5.2, d4: 0, s: '', f: 0.1, big: 1e21, neg: -2.5, half: 2.5, flag: false, obj: { x: 1 } },
    meta: { mqtt_topic: 'heatpump/device-001/telemetry', mqtt_topic_kind: 'heatpump', mqtt_topic_stream: 'settings', mqtt_topic_source: 'device-001', kafka_topic: 'homelab-temperature', n: 3 },
    headers: {},
    key: 'device-001',
  },
  { value: { device_serial: 'meter-1', timestamp: 3.5, d0: 'warm' }, meta: { mqtt_topic_kind: 'energy', mqtt_topic_stream: 'telemetry', mqtt_topic_source: 'other' }, headers: {}, key: 'meter-1' },
  { value: { a: 1 }, meta: {}, headers: {}, key: null },
  { value: 'a string', meta: {}, headers: {}, key: null },
  { value: [{ a: 1 }, { a: 2 }], meta: {}, headers: {}, key: null },
];

const expressions = [
  'true', 'false', 'null', 'a', 'b.c', 'b.c.d', 'n', 'missing', 'arr', 'b', '$key', '$meta.t', '$meta.z', '$meta.missing', '$headers.h', 'and', 'in', '$', '$meta',
  // what the project's pipelines use
  '$meta.mqtt_topic_stream = "settings" ? "heatpump-settings" : $meta.mqtt_topic_kind & "-telemetry"',
  '$lookup({"heatpump/telemetry": "homelab-heatpump-telemetry", "heatpump/settings": "homelab-heatpump-settings"}, $meta.mqtt_topic_kind & "/" & $meta.mqtt_topic_stream)',
  '$lookup({"homelab-temperature": "temperature-telemetry"}, $meta.kafka_topic)',
  '$exists(device_id) ? device_id : $exists(device_serial) ? device_serial : sensor_id',
  '$key = $meta.mqtt_topic_source ? true : $error("payload id " & $key & " does not match the MQTT topic " & $meta.mqtt_topic)',
  '$fromMillis($round(timestamp * 1000))',
  '$round(half)', '$round(neg)', '$round(d0)', '$round(3.5)', '$round(-3.5)', '$round(missing)',
  // operators and casts at their edges
  'a + 1', 'a - d0', 'd0 * 3', 'd0 / 0', 'a % 2', 'd0 + missing', 'd0 & "x"', 'a & b', 'f & ""', 'big & ""', 'flag & "!"', 'n & "x"', 'missing & "x"',
  'd0 = 5.2', 'd0 != 5.2', 'a = "1"', 'obj = obj', 'missing = missing', 'a < 2', 'd0 > "a"', 's < "a"', 'missing < 1', 'd0 >= a', 'a <= 1',
  'a and d0', 'd4 or s', 'flag or missing', 'obj and true', '-d0', '-missing', '-s',
  'd4 ? "on" : "off"', 's ? 1', 'missing ? 1 : 2', 'obj ? 1 : 2',
  '{"a": a, "m": missing, "k": $key}', '{"n": $meta.n}',
  '$exists(missing)', '$exists(n)', '$string(d0)', '$string(f)', '$string(flag)', '$string(obj)', '$number(d0)', '$number("12")', '$boolean(s)', '$not(d4)',
  '$lookup($meta, "n")', '$lookup(missing, "x")', '$lookup(obj, 1)', '$fromMillis(timestamp)', '$fromMillis(missing)',
  '$error("boom")', '$sum([1, 2])', '$count(arr)', 'arr[0]', '[1, 2]', '($x := 1; $x + a)',
];

/** What JSONata itself gives: the value (as JSON), or the error's message. */
async function reference(src: string, m: Input): Promise<{ value?: unknown; error?: string }> {
  try {
    const r = await jsonata(src).evaluate(m.value, { meta: m.meta, headers: m.headers, key: m.key });
    return { value: r !== null && typeof r === 'object' ? JSON.parse(JSON.stringify(r)) : r };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

async function ours(src: string, m: Input): Promise<{ value?: unknown; error?: string }> {
  try {
    return { value: await compileExpression(src).evaluate(m) };
  } catch (err) {
    return { error: (err as Error).message.replace(/^expression ".*" failed: /s, '') };
  }
}

describe('compileExpression gives what JSONata gives', () => {
  it.each(expressions)('%s', async (src) => {
    for (const m of inputs) {
      expect(await ours(src, m), `${src} on ${JSON.stringify(m)}`).toEqual(await reference(src, m));
    }
  });

  it("evaluates the project's pipeline expressions without JSONata", () => {
    for (const src of expressions.slice(19, 25)) expect(compileExpression(src).direct, src).toBe(true);
    expect(compileExpression('$sum([1, 2])').direct).toBe(false);
  });

  it('treats true, false and null as literals (a filter on `true` keeps everything)', async () => {
    const m = inputs[1]!;
    expect(await compileExpression('true').evaluate(m)).toBe(true);
    expect(await compileExpression('false').evaluate(m)).toBe(false);
    expect(await compileExpression('null').evaluate(m)).toBeNull();
  });
});
