/**
 * The mqtt input and output inside the real engine (PipelineRuntime), against the real Mosquitto:
 * telemetry in, mapped with the device id from the topic, out to a topic per device; a payload
 * that is not JSON goes to an mqtt dead_letter output with the reason as user properties. A
 * graceful stop drains and acknowledges everything, the dead-lettered message included: after a
 * restart nothing is delivered again.
 */
import type { MqttClient } from 'mqtt';
import pino from 'pino';
import { Subject, filter, firstValueFrom } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatProblem, loadPipeline } from '../../../core/config.ts';
import { Health } from '../../../core/health.ts';
import { Metrics } from '../../../core/metrics.ts';
import { PipelineRuntime } from '../../../core/pipeline.ts';
import { OperatorRegistry } from '../../../core/registry.ts';
import { operators } from '../../../operators/index.ts';
import { mqttInput } from '../../../operators/mqtt/input.ts';
import { mqttOutput } from '../../../operators/mqtt/output.ts';
import { MQTT_URL, client, forgetSession, subscribe, uniq } from './harness.ts';

const ROOT = new URL('../../..', import.meta.url).pathname;
const registry = new OperatorRegistry([...operators.filter((op) => op !== mqttInput && op !== mqttOutput), mqttInput, mqttOutput]);

class WatchedHealth extends Health {
  readonly changed = new Subject<void>();
  override setReady(pipeline: string, component: string, ready: boolean, reason?: string) {
    super.setReady(pipeline, component, ready, reason);
    this.changed.next();
  }
}

const base = uniq('pipe');
const name = uniq('mqtt-pipe');
const yaml = `
name: ${name}
input:
  mqtt:
    urls: ["${MQTT_URL}"]
    client_id: ${name}-in
    topics: ["${base}/in/+"]
    topic_pattern: "${base}/in/{device_id}"
pipeline:
  - map:
      expression: '{"device_id": $meta.mqtt_topic_device_id, "reading": $}'
output:
  mqtt:
    urls: ["${MQTT_URL}"]
    client_id: ${name}-out
    topic: '${base}/out/\${! device_id }'
dead_letter:
  mqtt:
    urls: ["${MQTT_URL}"]
    client_id: ${name}-dlq
    topic: ${base}/dlq
shutdown_timeout: 10s
`;

function runtime() {
  const res = loadPipeline('mqtt-pipe.yaml', { registry, rootDir: ROOT, text: yaml, env: {} });
  if (!res.ok) throw new Error(res.problems.map(formatProblem).join('\n'));
  const health = new WatchedHealth();
  const rt = new PipelineRuntime(res.pipeline, { logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }), metrics: new Metrics(), health, rootDir: ROOT });
  rt.start();
  const ready = () => firstValueFrom(health.changed.pipe(filter(() => health.pipeline(name)!.ready)));
  return { rt, health, ready };
}

let pub: MqttClient;
let side: MqttClient;
beforeAll(async () => {
  pub = await client();
  side = await client();
});
afterAll(async () => {
  await pub.endAsync();
  await side.endAsync();
  await forgetSession(`${name}-in`);
});

describe('mqtt -> map -> mqtt pipeline', () => {
  it('delivers every message, dead-letters the bad one with its reason, drains on stop, and delivers nothing again after a restart', async () => {
    const out = await subscribe(side, `${base}/out/#`, 1);
    const dlq = await subscribe(side, `${base}/dlq`, 1);
    const first = runtime();
    await first.ready();

    const N = 200;
    for (let i = 0; i < N; i++) {
      await pub.publishAsync(`${base}/in/device-${String(i % 4).padStart(3, '0')}`, JSON.stringify({ i }), { qos: 1 });
      if (i === 100) await pub.publishAsync(`${base}/in/device-009`, 'garbage', { qos: 1 });
    }
    const delivered = await out.next(N);
    expect(new Set(delivered.map((p) => JSON.parse(p.payload.toString()).reading.i)).size).toBe(N);
    expect(delivered[5]!.topic).toBe(`${base}/out/device-001`);
    expect(JSON.parse(delivered[5]!.payload.toString())).toEqual({ device_id: 'device-001', reading: { i: 5 } });
    const [dead] = await dlq.next(1);
    expect(dead!.payload.toString()).toBe('garbage');
    expect(dead!.properties?.userProperties).toMatchObject({
      dlq_error_code: 'MESSAGE_INVALID',
      dlq_operator: 'input.mqtt',
      dlq_pipeline: name,
      dlq_meta_mqtt_topic: `${base}/in/device-009`,
    });
    expect(String(dead!.properties?.userProperties?.dlq_error)).toMatch(/payload is not JSON/);

    expect(await first.rt.stop()).toEqual({ drained: true, inFlight: 0 });

    const second = runtime();
    await second.ready();
    await pub.publishAsync(`${base}/in/device-042`, '{"i":"after"}', { qos: 1 });
    const [next] = await out.next(1);
    expect(JSON.parse(next!.payload.toString())).toEqual({ device_id: 'device-042', reading: { i: 'after' } });
    expect(await second.rt.stop()).toEqual({ drained: true, inFlight: 0 });
  });
});
