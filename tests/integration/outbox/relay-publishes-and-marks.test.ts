/**
 * The outbox relay against the real PostgreSQL and Kafka: events of the four service outbox
 * tables reach Kafka with key = aggregate id and the event headers (correlation_id only where the
 * row has one), rows are marked only after Kafka acknowledged them, relay_state and the metrics
 * count them; events written by concurrent transactions that commit out of id order are all
 * published; per-aggregate order holds within one relay.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { counterValue } from '../../helpers/memory-operators.ts';
import type { TestDatabase } from '../../helpers/postgres.ts';
import { FOUR_SOURCES, collector, createTopics, eventually, kafka, relayYaml, servicesDatabase, startRelay, uid } from './harness.ts';

const topic = `outbox-test-${uid()}`;
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

const TABLES = [
  { table: 'whatsapp_handler.outbox_events', marker: 'published_at IS NOT NULL', correlation: true },
  { table: 'darwin_ingestor.outbox_events', marker: 'published_at IS NOT NULL', correlation: false },
  { table: 'journey_matcher.outbox', marker: 'processed_at IS NOT NULL', correlation: true },
  { table: 'data_retention.outbox', marker: 'published', correlation: false },
];

describe('postgres_outbox -> kafka', () => {
  it('publishes the four outbox tables with key and headers, marks them after the ack, keeps per-aggregate order', async () => {
    const c = await collector([topic]);
    const relay = startRelay(relayYaml({ url: db.url, topic, sources: FOUR_SOURCES }));
    try {
      const perTable = 60;
      // Written before and while the relay runs; one transaction per event, aggregates interleaved.
      for (const [ti, t] of TABLES.entries()) {
        for (let i = 0; i < perTable; i++) {
          const agg = `t${ti}-agg-${i % 5}`;
          await db.query(
            `INSERT INTO ${t.table} (aggregate_id, aggregate_type, event_type, payload${t.correlation ? ', correlation_id' : ''}) VALUES ($1, 'journey', 'journey.created', $2${t.correlation ? ', $3' : ''})`,
            t.correlation ? [agg, JSON.stringify({ agg, seq: i, table: t.table }), i % 2 ? `corr-${i}` : null] : [agg, JSON.stringify({ agg, seq: i, table: t.table })],
          );
        }
      }
      const total = perTable * TABLES.length;
      await c.until((r) => new Set(r.map((x) => x.headers.event_id)).size >= total);

      // Every row is marked; none twice in Kafka (one relay, no crash).
      await eventually(async () => {
        const counts = await Promise.all(TABLES.map((t) => db.query(`SELECT count(*)::int AS n FROM ${t.table} WHERE ${t.marker}`)));
        return counts.every((r) => r.rows[0].n === perTable);
      }, 'every row marked');
      expect(c.records.length).toBe(total);

      for (const t of TABLES) {
        const { rows } = await db.query(`SELECT id::text, aggregate_id, aggregate_type, event_type, ${t.correlation ? 'correlation_id' : 'NULL AS correlation_id'} FROM ${t.table}`);
        for (const row of rows) {
          const rec = c.records.find((r) => r.headers.event_id === row.id)!;
          expect(rec, `event ${row.id} of ${t.table}`).toBeDefined();
          expect(rec.key).toBe(row.aggregate_id);
          expect(rec.headers.event_type).toBe('journey.created');
          expect(rec.headers.aggregate_type).toBe('journey');
          if (row.correlation_id) expect(rec.headers.correlation_id).toBe(row.correlation_id);
          else expect('correlation_id' in rec.headers).toBe(false);
          expect(rec.value.table).toBe(t.table);
        }
      }

      // Per aggregate, Kafka holds the events in creation order.
      const byAgg = new Map<string, number[]>();
      for (const r of [...c.records].sort((a, b) => a.partition - b.partition || a.offset - b.offset)) {
        byAgg.set(r.value.agg, [...(byAgg.get(r.value.agg) ?? []), r.value.seq]);
      }
      for (const [agg, seqs] of byAgg) expect(seqs, agg).toEqual([...seqs].sort((a, b) => a - b));

      // relay_state and the metrics count what was published.
      await eventually(async () => {
        const { rows } = await db.query('SELECT source, published_total::int AS n, last_poll_at FROM relay_state ORDER BY source');
        return rows.length === 4 && rows.every((r) => r.n === perTable && r.last_poll_at !== null);
      }, 'relay_state counts');
      for (const t of TABLES) {
        expect(await counterValue(relay.metrics, 'runner_outbox_published_total', { source: t.table })).toBe(perTable);
      }
      expect(relay.health.pipeline(relay.pipeline)?.ready, JSON.stringify(relay.health.pipeline(relay.pipeline)?.reasons)).toBe(true);
      // Pending and oldest-age gauges reach zero once everything is published.
      await eventually(async () => {
        const text = await relay.metrics.registry.getSingleMetricAsString('runner_outbox_pending_rows');
        return TABLES.every((t) => new RegExp(`source="${t.table.replace('.', '\\.')}"} 0`).test(text));
      }, 'pending gauges at 0');
    } finally {
      await relay.runtime.stop();
      await c.stop();
    }
  });

  it('publishes events of concurrent transactions that commit out of id and creation order', async () => {
    await db.query('TRUNCATE whatsapp_handler.outbox_events');
    const c = await collector([topic]);
    const relay = startRelay(relayYaml({ url: db.url, topic, sources: FOUR_SOURCES }));
    const early = new pg.Client({ connectionString: db.url });
    await early.connect();
    try {
      // Transaction 1 starts first (earlier created_at, and it takes the smaller ids) but commits last.
      await early.query('BEGIN');
      await early.query(
        `INSERT INTO whatsapp_handler.outbox_events (id, aggregate_id, aggregate_type, event_type, payload)
         SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'late-' || i, 'user', 'user.verified', jsonb_build_object('n', i) FROM generate_series(1, 20) i`,
      );
      // Transaction 2 commits at once, with larger ids and a later creation time.
      await db.query(
        `INSERT INTO whatsapp_handler.outbox_events (id, aggregate_id, aggregate_type, event_type, payload)
         SELECT ('ffffffff-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'early-' || i, 'user', 'user.verified', jsonb_build_object('n', i) FROM generate_series(1, 20) i`,
      );
      const ids = (prefix: string) => (r: { headers: { [k: string]: string } }[]) => r.filter((x) => x.headers.event_id?.startsWith(prefix)).length;
      await c.until((r) => ids('ffffffff')(r) === 20);
      // The relay has polled past the committed rows; now the older transaction commits.
      await early.query('COMMIT');
      await c.until((r) => ids('00000000')(r) === 20);
      await eventually(async () => (await db.query('SELECT count(*)::int AS n FROM whatsapp_handler.outbox_events WHERE published_at IS NULL')).rows[0].n === 0, 'all marked');
      expect(c.records.filter((r) => r.headers.event_id?.startsWith('00000000') || r.headers.event_id?.startsWith('ffffffff')).length).toBe(40);
    } finally {
      await early.end();
      await relay.runtime.stop();
      await c.stop();
    }
  });
  it('wakes on NOTIFY: with an hour between polls, events inserted later are published at once', async () => {
    const c = await collector([topic]);
    const relay = startRelay(
      relayYaml({ url: db.url, topic, input: 'poll_interval: 1h', sources: '- table: darwin_ingestor.outbox_events\n  notify_channel: outbox_relay' }),
    );
    try {
      // Listening, and the first poll done.
      await eventually(async () => (await db.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'`)).rows[0].n === 1, 'LISTEN');
      await eventually(async () => (await db.query(`SELECT last_poll_at FROM relay_state WHERE source = 'darwin_ingestor.outbox_events'`)).rows[0]?.last_poll_at != null, 'first poll');
      // Three rounds, each after the previous one was published: no poll is due for an hour.
      for (let round = 0; round < 3; round++) {
        const { rows } = await db.query(`INSERT INTO darwin_ingestor.outbox_events (aggregate_id, aggregate_type, event_type, payload) VALUES ('n', 'delay', 'delay.updated', '{}') RETURNING id::text`);
        await c.until((r) => r.some((x) => x.headers.event_id === rows[0].id));
      }
    } finally {
      await relay.runtime.stop();
      await c.stop();
    }
  });
});

