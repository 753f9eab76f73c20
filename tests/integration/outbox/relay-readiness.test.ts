/**
 * Readiness of the outbox relay tells the truth: a source with a missing schema, table or column,
 * or a marker column of the wrong type, keeps the input not ready with a reason naming it (while
 * the good sources publish), until the table is fixed; a source whose poll cannot complete (its
 * table locked) is not ready once no poll completed within twice the interval; and a relay whose
 * Kafka user may not write (the `limited` SASL user) is not ready.
 */
import { existsSync, readFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestDatabase } from '../../helpers/postgres.ts';
import { collector, createTopics, eventually, kafka, relayYaml, servicesDatabase, startRelay, uid } from './harness.ts';

const topic = `outbox-test-ready-${uid()}`;
const admin = kafka.admin();
let db: TestDatabase;

beforeAll(async () => {
  await admin.connect();
  await createTopics(admin, [topic]);
  db = await servicesDatabase();
});
afterAll(async () => {
  await db?.drop();
  await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  await admin.disconnect();
});

const reasons = (relay: ReturnType<typeof startRelay>) => relay.health.pipeline(relay.pipeline)?.reasons.join('; ') ?? '';

describe('postgres_outbox readiness', () => {
  it('names a missing schema, table, column and a marker column of the wrong type; good sources publish meanwhile', async () => {
    const c = await collector([topic]);
    const relay = startRelay(
      relayYaml({
        url: db.url,
        topic,
        sources: `- table: nosuchschema.outbox
- table: public.later_outbox
- table: darwin_ingestor.outbox_events
  columns: { correlation_id: correlation_id }
- name: wrong_marker
  table: data_retention.outbox
  marker: { column: published, type: timestamp }
- table: journey_matcher.outbox
  marker: { column: processed_at }`,
      }),
    );
    try {
      await eventually(() => /later_outbox does not exist/.test(reasons(relay)) && /wrong_marker/.test(reasons(relay)) && /nosuchschema/.test(reasons(relay)) && !/journey_matcher/.test(reasons(relay)), 'the reasons');
      const r = reasons(relay);
      expect(relay.health.pipeline(relay.pipeline)?.ready).toBe(false);
      expect(r).toContain('schema nosuchschema of table nosuchschema.outbox does not exist');
      expect(r).toContain('table public.later_outbox does not exist');
      expect(r).toContain('table darwin_ingestor.outbox_events has no column correlation_id');
      expect(r).toContain('marker column data_retention.outbox.published is boolean, not a timestamp');
      expect(r).not.toContain('journey_matcher');

      // The good source publishes.
      const { rows } = await db.query(`INSERT INTO journey_matcher.outbox (aggregate_id, aggregate_type, event_type, payload) VALUES ('j1', 'journey', 'journey.matched', '{}') RETURNING id::text`);
      await c.until((recs) => recs.some((x) => x.headers.event_id === rows[0].id));

      // Fixing a table (a migration) clears its reason without a restart.
      await db.query(`CREATE TABLE public.later_outbox (id bigserial PRIMARY KEY, aggregate_id text NOT NULL, aggregate_type text NOT NULL, event_type text NOT NULL,
        payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz)`);
      await eventually(() => !/later_outbox/.test(reasons(relay)), 'later_outbox checked again', 60_000);
      const later = await db.query(`INSERT INTO public.later_outbox (aggregate_id, aggregate_type, event_type, payload) VALUES ('l1', 'x', 'x.y', '{"n": 1}') RETURNING id::text`);
      await c.until((recs) => recs.some((x) => x.headers.event_id === later.rows[0].id));
      await eventually(async () => (await db.query('SELECT published_at FROM public.later_outbox')).rows[0].published_at !== null, 'bigint ids marked');
    } finally {
      await relay.runtime.stop();
      await c.stop();
    }
  });

  it('is not ready while no poll completes within twice poll_interval, and ready again after', async () => {
    const relay = startRelay(relayYaml({ url: db.url, topic, sources: '- table: whatsapp_handler.outbox_events\n  columns: { correlation_id: correlation_id }' }));
    const locker = new pg.Client({ connectionString: db.url });
    await locker.connect();
    try {
      await eventually(() => relay.health.pipeline(relay.pipeline)?.ready === true, 'ready');
      // An exclusive lock makes the claim query wait: the poll cannot complete.
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE whatsapp_handler.outbox_events IN ACCESS EXCLUSIVE MODE');
      await eventually(() => /no poll or batch completed for .* \(more than twice poll_interval 200ms\)/.test(reasons(relay)), 'not ready: no poll');
      expect(reasons(relay)).toContain('whatsapp_handler.outbox_events: no poll or batch completed');
      await locker.query('ROLLBACK');
      await eventually(() => relay.health.pipeline(relay.pipeline)?.ready === true, 'ready again');
    } finally {
      await locker.end();
      await relay.runtime.stop();
    }
  });

  const credential = (name: string): string | undefined => {
    if (process.env[name]) return process.env[name];
    const file = new URL('../../../.stack/kafka/credentials', import.meta.url);
    return existsSync(file) ? readFileSync(file, 'utf8').match(new RegExp(`^${name}=(.*)$`, 'm'))?.[1] : undefined;
  };
  const limitedPassword = credential('KAFKA_SASL_LIMITED_PASSWORD');
  (limitedPassword ? it : it.skip)('is not ready when the Kafka user may not write (SASL user `limited`)', async () => {
    const saslBrokers = (process.env.KAFKA_SASL_BROKERS ?? '127.0.0.1:9094').split(',');
    // The YAML stays in memory (never written or logged); the password goes straight into it.
    const yaml = relayYaml({
      url: db.url,
      topic,
      brokers: saslBrokers,
      sources: '- table: darwin_ingestor.outbox_events',
      kafkaExtra: 'sasl: { mechanism: plain, username: limited, password: "${PASSWORD}" }',
    });
    // The message can never be written: do not wait the default 20 s for it to drain at stop.
    const relay = startRelay(yaml.replace('${PASSWORD}', limitedPassword!).replace(/^name: .*$/m, '$&\nshutdown_timeout: 1s'));
    try {
      const { rows } = await db.query(`INSERT INTO darwin_ingestor.outbox_events (aggregate_id, aggregate_type, event_type, payload) VALUES ('d1', 'delay', 'delay.detected', '{}') RETURNING id::text`);
      await eventually(() => /output\.kafka: .*(authori[sz]|not allowed|denied)/i.test(reasons(relay)), 'not ready: not authorised', 60_000);
      expect(relay.health.pipeline(relay.pipeline)?.ready).toBe(false);
      // Nothing was marked: the producer could not write.
      expect((await db.query('SELECT published_at FROM darwin_ingestor.outbox_events WHERE id = $1', [rows[0].id])).rows[0].published_at).toBeNull();
    } finally {
      await relay.runtime.stop();
    }
  });
});
