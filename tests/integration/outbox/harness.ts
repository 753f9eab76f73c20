/**
 * Shared pieces of the outbox relay tests: a throwaway `services` database migrated with the
 * project's migrations, a unique Kafka topic, a consumer that collects what reaches it, and the
 * relay pipeline (postgres_outbox -> map -> kafka, dead letters into outbox_relay.delivery_errors)
 * built in-process with the real operators.
 */
import { randomUUID } from 'node:crypto';
import kafkajs, { type Admin, type Consumer } from 'kafkajs';
import pino from 'pino';
import { formatProblem, loadPipeline } from '../../../core/config.ts';
import { Health } from '../../../core/health.ts';
import { Metrics } from '../../../core/metrics.ts';
import { PipelineRuntime } from '../../../core/pipeline.ts';
import { OperatorRegistry } from '../../../core/registry.ts';
import { operators } from '../../../operators/index.ts';
import { postgresOutbox } from '../../../operators/postgres/outbox-input.ts';
import { migrateDatabase } from '../../../operators/postgres/migrate.ts';
import { createTopicsReady } from '../../helpers/kafka.ts';
import { createTestDatabase, type TestDatabase } from '../../helpers/postgres.ts';

const { Kafka, logLevel } = kafkajs;
export const BROKERS = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
export const ROOT = new URL('../../..', import.meta.url).pathname;
export const kafka = new Kafka({ clientId: 'outbox-test', brokers: BROKERS, logLevel: logLevel.NOTHING });

/** A fresh database with the services migrations (outbox tables, triggers, failure record, relay_state). */
export async function servicesDatabase(): Promise<TestDatabase> {
  const db = await createTestDatabase('outbox_test');
  await migrateDatabase({ database: 'services', url: db.url });
  return db;
}

export interface Record {
  topic: string;
  partition: number;
  offset: number;
  key: string | null;
  value: any;
  headers: { [k: string]: string };
}

/** Collects every record of some topics; `until` waits for a condition, re-checked on each record. */
export async function collector(topics: string[]) {
  const records: Record[] = [];
  const checks = new Set<() => void>();
  const consumer: Consumer = kafka.consumer({ groupId: `outbox-test-check-${randomUUID().slice(0, 8)}` });
  await consumer.connect();
  await consumer.subscribe({ topics, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ topic, partition, message }) => {
      const headers: { [k: string]: string } = {};
      for (const [k, v] of Object.entries(message.headers ?? {})) if (v !== undefined) headers[k] = String(Array.isArray(v) ? v.at(-1) : v);
      const text = message.value?.toString('utf8') ?? '';
      let value: unknown = text;
      try {
        value = JSON.parse(text);
      } catch {
        // kept as text
      }
      records.push({ topic, partition, offset: Number(message.offset), key: message.key?.toString('utf8') ?? null, value, headers });
      for (const c of [...checks]) c();
    },
  });
  return {
    records,
    until(pred: (r: Record[]) => boolean): Promise<void> {
      return new Promise((resolve) => {
        if (pred(records)) return resolve();
        const check = () => {
          if (!pred(records)) return;
          checks.delete(check);
          resolve();
        };
        checks.add(check);
      });
    },
    stop: () => consumer.disconnect(),
  };
}

export async function createTopics(admin: Admin, names: string[], partitions = 3) {
  await createTopicsReady(
    admin,
    names.map((topic) => ({ topic, numPartitions: partitions })),
  );
}

export const registry = new OperatorRegistry(operators.includes(postgresOutbox) ? operators : [...operators, postgresOutbox]);

/** The relay pipeline: every event goes to `topic` unless `routes` maps its event type elsewhere. */
export function relayYaml(opts: {
  name?: string;
  url: string;
  topic: string;
  routes?: { [eventType: string]: string };
  sources: string;
  input?: string;
  brokers?: string[];
  kafkaExtra?: string;
}): string {
  const routes = JSON.stringify(opts.routes ?? {});
  return `name: ${opts.name ?? 'outbox-relay-test'}
input:
  postgres_outbox:
    url: ${opts.url}
${(opts.input ?? 'poll_interval: 200ms\nmax_attempts: 3\nretry_backoff: { initial: 50ms, max: 200ms }').replace(/^/gm, '    ')}
    sources:
${opts.sources.replace(/^/gm, '      ')}
pipeline:
  - map:
      meta:
        topic: '($t := $lookup(${routes.replace(/'/g, "''")}, $meta.event_type); $exists($t) ? $t : "${opts.topic}")'
output:
  kafka:
    brokers: [${(opts.brokers ?? BROKERS).join(', ')}]
    topic: \${! $meta.topic }
    batching: { count: 500, period: 5ms }
${(opts.kafkaExtra ?? '').replace(/^/gm, '    ')}
dead_letter:
  postgres:
    url: ${opts.url}
    table: outbox_relay.delivery_errors
    mode: copy
    columns:
      source: $meta.outbox_source
      event_id: $meta.event_id
      event_type: $meta.event_type
      error_code: $headers.dlq_error_code
      error: $headers.dlq_error
      component: $headers.dlq_operator
      payload: '$type($) = "string" ? $ : $string($)'
      headers: $headers
    batching: { count: 100, period: 5ms }
`;
}

/** The four sources of migrations/services/0001, as pipelines/outbox-relay.yaml has them. */
export const FOUR_SOURCES = `- table: whatsapp_handler.outbox_events
  columns: { correlation_id: correlation_id }
  notify_channel: outbox_relay
- table: darwin_ingestor.outbox_events
  notify_channel: outbox_relay
- table: journey_matcher.outbox
  columns: { correlation_id: correlation_id }
  marker: { column: processed_at }
  notify_channel: outbox_relay
- table: data_retention.outbox
  marker: { column: published, type: boolean }
  notify_channel: outbox_relay`;

export function startRelay(yaml: string, opts: { file?: string; env?: { [k: string]: string | undefined } } = {}) {
  const res = loadPipeline(opts.file ?? 'outbox-relay-test.yaml', { registry, rootDir: ROOT, text: yaml, env: opts.env ?? {} });
  if (!res.ok) throw new Error(res.problems.map(formatProblem).join('\n'));
  const metrics = new Metrics();
  const health = new Health(metrics);
  const runtime = new PipelineRuntime(res.pipeline, { logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }), metrics, health, rootDir: ROOT });
  runtime.start();
  return { runtime, metrics, health, pipeline: res.pipeline.name };
}

/** Resolves once `pred` holds, checking again whenever `interval` passes (conditions on the database or readiness). */
export async function eventually(pred: () => Promise<boolean> | boolean, what: string, timeoutMs = 30_000, interval = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

export const uid = () => randomUUID().slice(0, 8);
