/**
 * pipelines/command-dispatch.yaml (settings outbox -> MQTT commands) as shipped, in-process, on a
 * fresh heatpump_settings database and a private Mosquitto (tests/helpers/mosquitto.ts) that the
 * test stops and starts: a command written while the broker is down fails after its 3 attempts
 * (each one given up after the output's publish_timeout, COMMAND_ATTEMPT_TIMEOUT), and once the
 * broker is back the device never receives it, while the next command goes through. Before the
 * publish timeout, the mqtt output kept the given-up publish and sent it after reconnecting: the
 * row said `failed` and the device applied the command anyway.
 *
 * The device is a subscriber with a persistent session (QoS 1), so the broker keeps its queue
 * across the restart. "Never" is shown by the next command: the dispatcher's MQTT client sends
 * whatever it still holds before anything published later, and the broker delivers in the order
 * it received, so once the device has the next command, a late copy of the failed one would have
 * arrived before it. Waits poll the table or wait for messages; nothing sleeps.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatProblem, loadPipeline } from '../../../core/config.ts';
import { Health } from '../../../core/health.ts';
import { Metrics } from '../../../core/metrics.ts';
import { PipelineRuntime } from '../../../core/pipeline.ts';
import { OperatorRegistry } from '../../../core/registry.ts';
import { operators } from '../../../operators/index.ts';
import { migrateDatabase } from '../../../operators/postgres/migrate.ts';
import { type PrivateBroker, privateMosquitto } from '../../helpers/mosquitto.ts';
import { createTestDatabase, type TestDatabase } from '../../helpers/postgres.ts';
import { uniq } from './harness.ts';

const ROOT = new URL('../../..', import.meta.url).pathname;
const DEVICE = 'device-901';
const ATTEMPT_TIMEOUT = '300ms';

let broker: PrivateBroker;
let db: TestDatabase;
let device: MqttClient;
let runtime: PipelineRuntime;
let health: Health;
let prefix: string;
/** outbox ids of the commands the device received, in order. */
const received: number[] = [];
const waiters = new Set<() => void>();

async function poll(pred: () => Promise<boolean>, what: () => Promise<string> | string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${await what()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const receivedUntil = (pred: () => boolean) =>
  new Promise<void>((resolve) => {
    if (pred()) return resolve();
    const check = () => {
      if (!pred()) return;
      waiters.delete(check);
      resolve();
    };
    waiters.add(check);
  });

/** A command row as the settings API writes it (payload with its own outbox id). */
async function command(settings: Record<string, unknown>): Promise<number> {
  const { rows } = await db.query(
    `INSERT INTO outbox (id, aggregate_id, payload)
     SELECT n.id, $1::text, jsonb_build_object('outbox_id', n.id, 'device_id', $1::text, 'settings', $2::jsonb)
       FROM (SELECT nextval(pg_get_serial_sequence('outbox', 'id')) AS id) AS n RETURNING id::int AS id`,
    [DEVICE, JSON.stringify(settings)],
  );
  return rows[0].id as number;
}
const row = async (id: number) => (await db.query('SELECT status, retry_count, error_message, published_at FROM outbox WHERE id = $1', [id])).rows[0];

beforeAll(async () => {
  broker = await privateMosquitto();
  db = await createTestDatabase('mqtt_dispatch');
  await migrateDatabase({ database: 'heatpump_settings', url: db.url, mode: 'plain' });
  await db.query('INSERT INTO settings (device_id, indoor_target_temp, mode) VALUES ($1, 20, 1)', [DEVICE]);
  prefix = `${uniq('dispatch')}/`;

  device = await mqtt.connectAsync(broker.url, { clientId: uniq('device'), clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 600 }, reconnectPeriod: 100 });
  device.on('message', (_topic, payload) => {
    received.push(Number(JSON.parse(payload.toString()).outbox_id));
    for (const w of [...waiters]) w();
  });
  await device.subscribeAsync(`${prefix}heatpump/${DEVICE}/command`, { qos: 1 });

  const file = join(ROOT, 'pipelines/command-dispatch.yaml');
  const registry = new OperatorRegistry(operators);
  const res = loadPipeline(file, {
    registry,
    rootDir: ROOT,
    text: readFileSync(file, 'utf8'),
    env: {
      HEATPUMP_SETTINGS_DATABASE_URL: db.url,
      MQTT_URL: broker.url,
      COMMAND_TOPIC_PREFIX: prefix,
      COMMAND_DISPATCH_CLIENT_ID: uniq('dispatch'),
      COMMAND_DISPATCH_POLL_INTERVAL: '100ms',
      COMMAND_RETRY_BACKOFF: '100ms',
      COMMAND_ATTEMPT_TIMEOUT: ATTEMPT_TIMEOUT,
    },
  });
  if (!res.ok) throw new Error(res.problems.map(formatProblem).join('\n'));
  const metrics = new Metrics();
  health = new Health(metrics);
  runtime = new PipelineRuntime(res.pipeline, { logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }), metrics, health, rootDir: ROOT });
  runtime.start();
  await poll(
    async () => health.pipeline('command-dispatch')?.ready === true,
    () => `command-dispatch not ready: ${health.pipeline('command-dispatch')?.reasons.join('; ')}`,
  );
}, 120_000);

afterAll(async () => {
  await runtime?.stop();
  await device?.endAsync();
  await broker?.stop();
  await db?.drop();
}, 60_000);

describe('command-dispatch with the MQTT broker down', () => {
  it('a command fails after 3 attempts given up by publish_timeout, and the device never receives it after the broker is back; the next command goes through', async () => {
    const first = await command({ mode: 2 });
    await receivedUntil(() => received.includes(first));
    await poll(async () => (await row(first)).status === 'published', async () => `first: ${JSON.stringify(await row(first))}`);

    await broker.stop();
    let failed = 0;
    try {
      failed = await command({ indoor_target_temp: 23.5 });
      await poll(async () => (await row(failed)).status === 'failed', async () => `while the broker is down: ${JSON.stringify(await row(failed))}`);
    } finally {
      await broker.start();
    }
    const r = await row(failed);
    expect(r).toMatchObject({ status: 'failed', retry_count: 3, published_at: null });
    expect(r.error_message).toMatch(new RegExp(`not acknowledged within publish_timeout ${ATTEMPT_TIMEOUT} \\(not connected\\); withdrawn from the client, it will not be sent later`));
    const f = (await db.query('SELECT attempts, dead_lettered_at FROM outbox_relay.event_failures WHERE event_id = $1', [String(failed)])).rows[0];
    expect(f.attempts).toBe(3);
    expect(f.dead_lettered_at).not.toBeNull();

    // The broker is back: the next command reaches the device, the failed one never does.
    await poll(async () => device.connected && health.pipeline('command-dispatch')?.ready === true, () => 'device or dispatcher not reconnected');
    const next = await command({ indoor_target_temp: 22 });
    await receivedUntil(() => received.includes(next));
    await poll(async () => (await row(next)).status === 'published', async () => `next: ${JSON.stringify(await row(next))}`);
    expect(received).toEqual([first, next]);
    expect((await row(failed)).status).toBe('failed');
  }, 120_000);
});
