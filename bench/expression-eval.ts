/**
 * Per-expression cost of the bridge's expressions: the direct evaluator against JSONata.
 *   node --import tsx bench/expression-eval.ts
 */
import jsonata from 'jsonata';
import { compileExpression } from '../core/expression.ts';

const msg = {
  value: { device_id: 'device-001', timestamp: 1698765432.5, d0: 5.2, d4: 1, d5: 35, d6: 30.5 },
  meta: { mqtt_topic: 'heatpump/device-001/telemetry', mqtt_topic_kind: 'heatpump', mqtt_topic_stream: 'telemetry', mqtt_topic_source: 'device-001' },
  headers: {},
  key: 'device-001',
};
const exprs = [
  '$meta.mqtt_topic_stream = "settings" ? "heatpump-settings" : $meta.mqtt_topic_kind & "-telemetry"',
  '$lookup({"heatpump/telemetry": "homelab-heatpump-telemetry", "heatpump/settings": "homelab-heatpump-settings"}, $meta.mqtt_topic_kind & "/" & $meta.mqtt_topic_stream)',
  '$exists(device_id) ? device_id : $exists(device_serial) ? device_serial : sensor_id',
  '$key = $meta.mqtt_topic_source ? true : $error("payload id " & $key & " does not match the MQTT topic " & $meta.mqtt_topic)',
  '$now()',
];
const N = 100_000;
for (const src of exprs) {
  const ours = compileExpression(src);
  const raw = jsonata(src);
  const bindings = { meta: msg.meta, headers: msg.headers, key: msg.key };
  let t = performance.now();
  for (let i = 0; i < N; i++) await ours.evaluate(msg);
  const a = ((performance.now() - t) * 1000) / N;
  t = performance.now();
  for (let i = 0; i < N; i++) await raw.evaluate(msg.value, bindings);
  const b = ((performance.now() - t) * 1000) / N;
  console.log(`${a.toFixed(2)} us direct  ${b.toFixed(2)} us jsonata  ${src.slice(0, 60)}`);
}
