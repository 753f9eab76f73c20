/**
 * End-to-end tests of the settings command loop (issue 6) against the real stack: the pipelines as
 * shipped, as child processes, on a fresh database migrated with migrations/heatpump_settings:
 *
 *   loop process:    settings-api + command-dispatch + command-events + command-timeouts
 *   confirm process: command-confirm (killed with SIGKILL and restarted in one test)
 *   bridge process:  mqtt-bridge (simulator telemetry -> this test's Kafka telemetry topic)
 *   simulated heat pumps in this process (simulator/fleet.ts), answering commands.
 *
 * Isolation: MQTT topics under a prefix of their own (COMMAND_TOPIC_PREFIX = the bridge's level),
 * homelab-* Kafka topics renamed, own consumer group, client ids and events topic. The confirmation
 * window is shortened (COMMAND_CONFIRM_TIMEOUT) so the timeout cases end sooner; every wait is a
 * poll of the outbox table or a log line, never a pause.
 */
import type { Admin, Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFleet, type Fleet, type FleetOptions } from '../../simulator/fleet.ts';
import { createTopicsReady } from '../helpers/kafka.ts';
import type { TestDatabase } from '../helpers/postgres.ts';
import { MQTT_URL, ROOT, RunnerProcess, bridgePipeline, createTopics, deleteTopics, kafkaClient, stackServer, uniqueId, within, type BridgeSetup } from './mqtt-bridge-harness.ts';
import { isolatedPipeline, migratedDatabase, poll, type IsolatedPipeline } from './sink-harness.ts';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseDocument } from 'yaml';

const CONFIRM_TIMEOUT_S = 20;
const id = uniqueId();
let db: TestDatabase;
let admin: Admin;
let producer: Producer;
let bridge: BridgeSetup;
let confirm: IsolatedPipeline;
let eventsTopic: string;
let loop: RunnerProcess;
let confirmer: RunnerProcess;
let bridgeRunner: RunnerProcess;
let base: string;
const fleets: Fleet[] = [];
const runners: RunnerProcess[] = [];

const statusOf = async (outboxId: number) => (await db.query('SELECT status, retry_count, error_message FROM outbox WHERE id = $1', [outboxId])).rows[0];
const waitStatus = (outboxId: number, wanted: string[], timeoutMs = 90_000) =>
  poll(
    async () => wanted.includes((await statusOf(outboxId))?.status),
    () => `outbox ${outboxId} did not become ${wanted.join('|')}`,
    timeoutMs,
  ).then(() => statusOf(outboxId));

async function addDevices(ids: string[]) {
  for (const d of ids) await db.query('INSERT INTO settings (device_id, indoor_target_temp, mode) VALUES ($1, 20, 1) ON CONFLICT DO NOTHING', [d]);
}

async function patch(device: string, body: unknown): Promise<number> {
  const res = await fetch(`${base}/api/v1/heatpump/settings/${device}`, { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const json = (await res.json()) as { outbox_id: number };
  expect(res.status, JSON.stringify(json)).toBe(202);
  return json.outbox_id;
}

async function fleet(first: number, devices: number, opts: FleetOptions = {}): Promise<Fleet> {
  const f = await startFleet({
    url: MQTT_URL,
    client_id: `e2e-cmd-${id}-${first}`,
    devices,
    first_index: first,
    kinds: ['heatpump'],
    rate: devices,
    topic_prefix: bridge.mqttPrefix,
    initial_settings: { indoor_target_temp: 20, mode: 1 },
    ...opts,
  });
  fleets.push(f);
  return f;
}

const deviceIds = (first: number, n: number) => Array.from({ length: n }, (_, i) => `device-${String(first + i).padStart(3, '0')}`);

function startConfirmer(name: string): RunnerProcess {
  const r = new RunnerProcess(confirm.file, name, {
    HEATPUMP_SETTINGS_DATABASE_URL: db.url,
    COMMAND_CONFIRM_GROUP: `e2e-confirm-${id}`,
    COMMAND_CONFIRM_START_FROM: 'earliest',
    COMMAND_CONFIRM_TIMEOUT: String(CONFIRM_TIMEOUT_S),
  });
  runners.push(r);
  return r;
}

beforeAll(async () => {
  db = await migratedDatabase('heatpump_settings');
  admin = kafkaClient(`e2e-cmd-${id}`).admin();
  await admin.connect();
  producer = kafkaClient(`e2e-cmd-${id}-p`).producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();

  bridge = bridgePipeline(id);
  await createTopics(admin, bridge);
  confirm = isolatedPipeline('command-confirm', id);
  // A crashed member's partitions move on after the session timeout: shorter for the kill -9 case.
  const doc = parseDocument(readFileSync(confirm.file, 'utf8'));
  doc.setIn(['input', 'kafka', 'session_timeout'], '6s');
  writeFileSync(confirm.file, doc.toString({ lineWidth: 0 }));
  eventsTopic = `e2e-${id}-settings-events`;
  await createTopicsReady(admin, [{ topic: eventsTopic, numPartitions: 3 }]);

  bridgeRunner = new RunnerProcess(bridge.file, 'bridge');
  runners.push(bridgeRunner);
  loop = new RunnerProcess(
    ['settings-api', 'command-dispatch', 'command-events', 'command-timeouts'].map((p) => join(ROOT, `pipelines/${p}.yaml`)),
    'loop',
    {
      HEATPUMP_SETTINGS_DATABASE_URL: db.url,
      SETTINGS_API_PORT: '0',
      SETTINGS_API_ADDRESS: '127.0.0.1',
      COMMAND_TOPIC_PREFIX: bridge.mqttPrefix,
      COMMAND_DISPATCH_CLIENT_ID: `e2e-dispatch-${id}`,
      COMMAND_ATTEMPT_TIMEOUT: '1s',
      COMMAND_RETRY_BACKOFF: '500ms',
      COMMAND_DISPATCH_POLL_INTERVAL: '200ms',
      COMMAND_CONFIRM_TIMEOUT: String(CONFIRM_TIMEOUT_S),
      COMMAND_SWEEP_INTERVAL: '500ms',
      SETTINGS_EVENTS_TOPIC: eventsTopic,
    },
  );
  runners.push(loop);
  confirmer = startConfirmer('confirm');
  const line = await within(60_000, () => 'no http_server listening line', loop.logged((l) => l.msg === 'http_server listening'));
  base = `http://${String(line.address)}`;
  await within(60_000, () => 'the bridge did not subscribe', bridgeRunner.subscribed());
  await within(60_000, () => 'the dispatcher has no MQTT connection', loop.logged((l) => l.msg === 'mqtt connected'));
  await within(60_000, () => 'the outbox sources are not ready', Promise.all(['settings-commands', 'settings-events'].map((s) => loop.logged((l) => l.msg === 'outbox source ready' && l.source === s))));
  await within(60_000, () => 'the confirmer did not join its group', confirmer.logged((l) => l.msg === 'joined consumer group'));
}, 180_000);

afterAll(async () => {
  for (const f of fleets) await f.stop().catch(() => undefined);
  for (const r of runners) await r.stop();
  await producer?.disconnect();
  if (admin) {
    await deleteTopics(admin, bridge);
    await confirm.cleanup(admin);
    await admin.deleteTopics({ topics: [eventsTopic] }).catch(() => undefined);
    await admin.disconnect();
  }
  await db?.drop();
}, 120_000);

describe('settings command loop (command-dispatch, command-confirm, command-timeouts, command-events)', () => {
  it('PATCH -> published -> confirmed through the simulator; each transition is an event on the events topic', async () => {
    const [device] = deviceIds(101, 1);
    await addDevices([device!]);
    await fleet(101, 1);
    const outboxId = await patch(device!, { indoor_target_temp: 22.5, mode: 2 });
    expect(await waitStatus(outboxId, ['confirmed'])).toMatchObject({ status: 'confirmed', retry_count: 0, error_message: null });
    const row = (await db.query('SELECT published_at, confirmed_at FROM outbox WHERE id = $1', [outboxId])).rows[0];
    expect(row.published_at).not.toBeNull();
    expect(row.confirmed_at.getTime()).toBeGreaterThanOrEqual(row.published_at.getTime());

    // The audit trail in Kafka: published, then confirmed, key = device, header event_id.
    const consumer = kafkaClient(`e2e-cmd-${id}-c`).consumer({ groupId: `e2e-cmd-events-${id}` });
    const seen: { key: string; status: string; eventId: string }[] = [];
    try {
      await consumer.connect();
      await consumer.subscribe({ topic: eventsTopic, fromBeginning: true });
      await consumer.run({
        eachMessage: async ({ message }) => {
          const v = JSON.parse(message.value!.toString());
          if (v.outbox_id === outboxId) seen.push({ key: message.key!.toString(), status: v.status, eventId: message.headers!.event_id!.toString() });
        },
      });
      await poll(async () => seen.some((s) => s.status === 'confirmed'), () => `events seen: ${JSON.stringify(seen)}`, 60_000);
    } finally {
      await consumer.disconnect();
    }
    const firsts = [...new Map(seen.map((s) => [s.eventId, s])).values()];
    expect(firsts.map((s) => s.status)).toEqual(['published', 'confirmed']);
    expect(firsts.every((s) => s.key === device)).toBe(true);
  }, 120_000);

  it('a device that ignores the command: timed_out; a device that clamps the value: never confirmed, timed_out', async () => {
    const [ignoring] = deviceIds(201, 1);
    const [clamping] = deviceIds(301, 1);
    await addDevices([ignoring!, clamping!]);
    const ignore = await fleet(201, 1, { respond: false });
    const clamp = await fleet(301, 1, { out_of_range: 'clamp' });
    const clamped = new Promise((resolve) => clamp.once('applied', resolve));
    const ignoredId = await patch(ignoring!, { indoor_target_temp: 23 });
    // The API only accepts values in range: a command for a device with a narrower range (31 degC)
    // is written into the outbox directly, as another writer would.
    const { rows } = await db.query(
      `INSERT INTO outbox (id, aggregate_id, payload)
       SELECT n.id, $1::text, jsonb_build_object('outbox_id', n.id, 'device_id', $1::text, 'settings', jsonb_build_object('indoor_target_temp', 31))
         FROM (SELECT nextval(pg_get_serial_sequence('outbox', 'id')) AS id) AS n RETURNING id::int AS id`,
      [clamping],
    );
    const clampedId = rows[0].id as number;
    expect(await within(60_000, () => 'the clamping device did not act on the command', clamped)).toMatchObject({ outcome: { status: 'clamped', values: { indoor_target_temp: 30 } } });
    const [a, b] = await Promise.all([waitStatus(ignoredId, ['timed_out', 'confirmed']), waitStatus(clampedId, ['timed_out', 'confirmed'])]);
    expect(a.status).toBe('timed_out');
    expect(a.error_message).toMatch(/no telemetry reported/);
    expect(b.status).toBe('timed_out');
    expect(ignore.stats().commands.ignored).toBe(1);
    // The clamping device did report (30 instead of 31): the confirmer saw it and did not confirm.
    const report = (await db.query('SELECT settings FROM device_reports WHERE device_id = $1', [clamping])).rows[0];
    expect(report.settings.indoor_target_temp).toBe(30);
  }, 120_000);

  it('two PATCHes in quick succession: the older superseded, the newer confirmed', async () => {
    const [device] = deviceIds(401, 1);
    await addDevices([device!]);
    // The device takes effect 2 s after a command: the first command is published (not yet
    // confirmed) when the second one goes out.
    await fleet(401, 1, { respond_delay_ms: 2000 });
    const first = await patch(device!, { indoor_target_temp: 23 });
    await waitStatus(first, ['published', 'superseded', 'confirmed']);
    const second = await patch(device!, { indoor_target_temp: 24 });
    expect((await waitStatus(second, ['confirmed', 'timed_out', 'failed'])).status).toBe('confirmed');
    expect((await statusOf(first)).status).toBe('superseded');
  }, 120_000);

  it('invalid telemetry is dead-lettered and the loop goes on; telemetry arriving before `published` is recorded still confirms', async () => {
    const topic = bridge.kafkaTopic('homelab-heatpump-telemetry');
    const dlq = bridge.deadLetterTopic;
    const dlqBefore = await admin.fetchTopicOffsets(dlq).then((o) => o.reduce((n, p) => n + Number(p.high), 0));
    await producer.send({ topic, acks: -1, messages: [{ key: 'device-501', value: 'not json' }, { key: 'device-501', value: JSON.stringify({ device_id: 'device-501' }) }] });
    await poll(
      async () => (await admin.fetchTopicOffsets(dlq)).reduce((n, p) => n + Number(p.high), 0) >= dlqBefore + 2,
      () => 'the two invalid telemetry records did not reach the dead-letter topic',
      60_000,
    );

    // Play the dispatcher by hand: claim a command (an uncommitted row, invisible to the
    // confirmer), let the device's telemetry be processed first, then record `published`.
    const device = 'device-501';
    await addDevices([device]);
    const pg = (await import('pg')).default;
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      await c.query('BEGIN');
      const { rows } = await c.query(
        `INSERT INTO outbox (id, aggregate_id, payload)
         SELECT n.id, 'device-501', jsonb_build_object('outbox_id', n.id, 'device_id', 'device-501', 'settings', '{"indoor_target_temp": 25.5, "eco_mode": true}'::jsonb)
           FROM (SELECT nextval(pg_get_serial_sequence('outbox', 'id')) AS id) AS n RETURNING id::int AS id`,
      );
      const outboxId = rows[0].id as number;
      const [meta] = await producer.send({
        topic,
        acks: -1,
        messages: [{ key: device, value: JSON.stringify({ device_id: device, timestamp: Math.floor(Date.now() / 1000), d0: 5, indoor_target_temp: 25.5, mode: 1, eco_mode: true }) }],
      });
      await poll(
        async () => (await db.query('SELECT 1 FROM device_reports WHERE device_id = $1 AND kafka_partition = $2 AND kafka_offset = $3', [device, meta!.partition, meta!.baseOffset])).rowCount === 1,
        () => 'the confirmer did not record the telemetry',
        60_000,
      );
      await c.query("UPDATE outbox SET status = 'published', published_at = clock_timestamp() WHERE id = $1", [outboxId]);
      await c.query('COMMIT');
      expect((await statusOf(outboxId)).status).toBe('confirmed');
      const events = (await db.query('SELECT event_type FROM settings_events WHERE (payload->>\'outbox_id\')::int = $1 ORDER BY id', [outboxId])).rows.map((r) => r.event_type);
      expect(events).toEqual(['settings.command.published', 'settings.command.confirmed']);
      // A duplicate of that record (redelivery) and stale telemetry change nothing.
      const before = (await db.query('SELECT settings, kafka_offset, received_at FROM device_reports WHERE device_id = $1', [device])).rows[0];
      await producer.send({ topic, acks: -1, messages: [{ key: device, value: JSON.stringify({ device_id: device, timestamp: 1_600_000_000, indoor_target_temp: 15, mode: 0 }) }] });
      await producer.send({ topic, acks: -1, messages: [{ key: device, value: JSON.stringify({ device_id: device, timestamp: Math.floor(Date.now() / 1000) + 5, d0: 1 }) }] });
      await poll(
        async () => Number((await db.query('SELECT kafka_offset FROM device_reports WHERE device_id = $1', [device])).rows[0].kafka_offset) > Number(before.kafka_offset) + 1,
        () => 'the marker telemetry after the stale one was not recorded',
        60_000,
      );
      const after = (await db.query('SELECT settings FROM device_reports WHERE device_id = $1', [device])).rows[0];
      expect(after.settings).toEqual(before.settings);
    } finally {
      await c.end();
    }
  }, 120_000);

  it('the confirm pipeline killed (kill -9) and restarted mid-flow: every command still ends confirmed', async () => {
    const devices = deviceIds(601, 10);
    await addDevices(devices);
    await fleet(601, 10, { respond_delay_ms: 300 });
    const ids: number[] = [];
    for (const d of devices) ids.push(await patch(d, { hot_water_target_temp: 55, eco_mode: true }));
    await poll(
      async () => (await db.query("SELECT count(*)::int AS n FROM outbox WHERE id = ANY($1) AND status = 'confirmed'", [ids])).rows[0].n >= 1,
      () => 'no command confirmed before the kill',
      60_000,
    );
    await confirmer.kill9();
    confirmer = startConfirmer('confirm-2');
    for (const i of ids) expect((await waitStatus(i, ['confirmed', 'timed_out', 'failed'])).status).toBe('confirmed');
  }, 180_000);

  it('MQTT broker down: the command fails after 3 attempts with backoff', async () => {
    const device = 'device-701';
    await addDevices([device]);
    await stackServer('stop', 'mosquitto');
    try {
      const outboxId = await patch(device, { mode: 3 });
      const seen: { retry_count: number; next_attempt_at: Date; error_message: string | null }[] = [];
      await poll(
        async () => {
          const r = (await db.query('SELECT status, retry_count, next_attempt_at, error_message FROM outbox WHERE id = $1', [outboxId])).rows[0] as (typeof seen)[number] & { status: string };
          if (!seen.some((s) => s.retry_count === r.retry_count)) seen.push(r);
          return r.status === 'failed';
        },
        () => `not failed; seen ${JSON.stringify(seen)}`,
        90_000,
        20,
      );
      const row = (await db.query('SELECT status, retry_count, error_message, published_at FROM outbox WHERE id = $1', [outboxId])).rows[0];
      expect(row).toMatchObject({ status: 'failed', retry_count: 3, published_at: null });
      expect(row.error_message).toMatch(/publish_timeout/);
      // Each failed attempt was written into the row, and the next one waited for next_attempt_at.
      const r1 = seen.find((s) => s.retry_count === 1);
      const r2 = seen.find((s) => s.retry_count === 2);
      expect(r1 && r2, JSON.stringify(seen)).toBeTruthy();
      expect(r2!.next_attempt_at.getTime()).toBeGreaterThan(r1!.next_attempt_at.getTime());
      const f = (await db.query('SELECT attempts, dead_lettered_at FROM outbox_relay.event_failures WHERE event_id = $1', [String(outboxId)])).rows[0];
      expect(f.attempts).toBe(3);
      expect(f.dead_lettered_at).not.toBeNull();
      const events = (await db.query("SELECT payload FROM settings_events WHERE (payload->>'outbox_id')::int = $1 ORDER BY id", [outboxId])).rows.map((r) => r.payload.status);
      expect(events).toEqual(['failed']);
    } finally {
      await stackServer('start', 'mosquitto');
    }
  }, 180_000);
});
