/**
 * pipelines/settings-sink.yaml against the real stack: one row per device in
 * heatpump_settings.settings, updated only by a newer report. A late, older report (in the same
 * batch or a later one) never overwrites a newer state, and a report PostgreSQL refuses (a value
 * outside the table's CHECK) is dead-lettered without holding up the others.
 */
import kafkajs from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { RunnerProcess, kafkaClient, uniqueId, within } from './mqtt-bridge-harness.ts';
import { caughtUp, createPipelineTopics, isolatedPipeline, migratedDatabase, poll, produceAll } from './sink-harness.ts';

const { Partitioners } = kafkajs;
const T = 1_700_000_000;
const report = (device_id: string, timestamp: number, mode: number, indoor_target_temp = 21.5) => ({
  key: device_id,
  value: JSON.stringify({ device_id, timestamp, indoor_target_temp, mode, hot_water_target_temp: 50, heating_curve: 0.6, heating_curve_offset: 0, eco_mode: false }),
});

describe('settings-sink', () => {
  it('keeps the newest reported state per device whatever order reports arrive in', { timeout: 120_000 }, async () => {
    const id = uniqueId();
    const kafka = kafkaClient(`e2e-settings-sink-${id}`);
    const admin = kafka.admin();
    await admin.connect();
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    const pipeline = isolatedPipeline('settings-sink', id);
    const db = await migratedDatabase('heatpump_settings');
    const group = `e2e-settings-sink-${id}`;
    const topic = pipeline.topic('homelab-heatpump-settings');
    try {
      await createPipelineTopics(admin, pipeline);
      // device-001: newest is T+30 (mode 2); T+20 arrives after it. device-002: one report only.
      // device-003: newest T+5 (22.0), and a later report with 99 degC (refused by the table's CHECK).
      await produceAll(producer, topic, [report('device-001', T + 10, 1), report('device-001', T + 30, 2), report('device-001', T + 20, 3), report('device-002', T, 0), report('device-003', T + 5, 1, 22)]);
      const sink = new RunnerProcess(pipeline.file, 'settings-sink', { HEATPUMP_SETTINGS_DATABASE_URL: db.url, SETTINGS_SINK_GROUP: group });
      await poll(() => caughtUp(admin, group, [topic]), () => 'the sink did not catch up');
      // A later batch: older reports again (a redelivery or a late device), and a bad value.
      await produceAll(producer, topic, [report('device-001', T + 25, 0), report('device-002', T - 100, 3)]);
      await producer.send({ topic, messages: [{ key: 'device-003', value: JSON.stringify({ device_id: 'device-003', timestamp: T + 6, indoor_target_temp: 99, mode: 1 }) }] });
      await poll(() => caughtUp(admin, group, [topic]), () => 'the sink did not catch up with the second batch');

      const { rows } = await db.query('SELECT device_id, mode, indoor_target_temp::float8 AS t, extract(epoch FROM reported_at)::bigint AS reported FROM settings ORDER BY device_id');
      expect(rows).toEqual([
        { device_id: 'device-001', mode: 2, t: 21.5, reported: String(T + 30) },
        { device_id: 'device-002', mode: 0, t: 21.5, reported: String(T) },
        { device_id: 'device-003', mode: 1, t: 22, reported: String(T + 5) },
      ]);
      // 99 degC fails the schema (validate) before it reaches the table: dead-lettered.
      await within(30_000, () => 'no dead-letter log line', sink.logged((l) => l.msg === 'message sent to dead_letter'));
      expect(await within(60_000, () => 'the sink did not stop', sink.stop())).toBe(0);
    } finally {
      await producer.disconnect();
      await pipeline.cleanup(admin);
      await admin.disconnect();
      await db.drop();
    }
  });
});
