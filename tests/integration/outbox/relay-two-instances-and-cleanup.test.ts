/**
 * Two relay instances over the same outbox tables while writers keep inserting: every event is
 * published, none twice (no crash), and per aggregate Kafka holds the events in creation order.
 * And cleanup: published rows older than `cleanup.older_than` are deleted in small batches,
 * unpublished (dead-lettered) rows stay.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { counterValue } from '../../helpers/memory-operators.ts';
import type { TestDatabase } from '../../helpers/postgres.ts';
import { collector, createTopics, eventually, kafka, relayYaml, servicesDatabase, startRelay, uid } from './harness.ts';

const topic = `outbox-test-two-${uid()}`;
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

const SOURCES = `- table: whatsapp_handler.outbox_events
  columns: { correlation_id: correlation_id }
  notify_channel: outbox_relay
- table: journey_matcher.outbox
  marker: { column: processed_at }
  notify_channel: outbox_relay`;

describe('postgres_outbox with two instances', () => {
  it('publishes every event once, in creation order per aggregate, while writers insert concurrently', async () => {
    const c = await collector([topic]);
    const yaml = (name: string) =>
      relayYaml({ name, url: db.url, topic, sources: SOURCES, input: 'poll_interval: 200ms\nbatch_size: 10\nmax_in_flight: 2\nmax_attempts: 3\nretry_backoff: { initial: 50ms, max: 200ms }' });
    const one = startRelay(yaml('relay-one'));
    const two = startRelay(yaml('relay-two'));
    try {
      const aggregates = 40;
      const perAggregate = 25;
      const tables = ['whatsapp_handler.outbox_events', 'journey_matcher.outbox'];
      // Four writers, each owning ten aggregates and inserting their events one transaction at a time.
      await Promise.all(
        [0, 1, 2, 3].map(async (w) => {
          for (let seq = 0; seq < perAggregate; seq++) {
            for (let a = w; a < aggregates; a += 4) {
              const table = tables[a % 2]!;
              await db.query(`INSERT INTO ${table} (aggregate_id, aggregate_type, event_type, payload) VALUES ($1, 'journey', 'journey.created', $2)`, [
                `agg-${a}`,
                JSON.stringify({ agg: `agg-${a}`, seq }),
              ]);
            }
          }
        }),
      );
      const total = aggregates * perAggregate;
      await c.until((r) => new Set(r.map((x) => x.headers.event_id)).size >= total);
      await eventually(async () => {
        const { rows } = await db.query(
          `SELECT (SELECT count(*) FROM whatsapp_handler.outbox_events WHERE published_at IS NULL) + (SELECT count(*) FROM journey_matcher.outbox WHERE processed_at IS NULL) AS n`,
        );
        return Number(rows[0].n) === 0;
      }, 'every row marked');

      // None twice.
      expect(c.records.length).toBe(total);
      // Per aggregate, in creation order (one key, one partition: offsets give Kafka's order).
      const byAgg = new Map<string, number[]>();
      for (const r of [...c.records].sort((a, b) => a.partition - b.partition || a.offset - b.offset)) byAgg.set(r.key!, [...(byAgg.get(r.key!) ?? []), r.value.seq]);
      expect(byAgg.size).toBe(aggregates);
      for (const [agg, seqs] of byAgg) expect(seqs, agg).toEqual(Array.from({ length: perAggregate }, (_, i) => i));

      // Both instances did part of the work.
      const published = async (relay: ReturnType<typeof startRelay>) =>
        (await counterValue(relay.metrics, 'runner_outbox_published_total', { source: tables[0]! })) + (await counterValue(relay.metrics, 'runner_outbox_published_total', { source: tables[1]! }));
      const [p1, p2] = [await published(one), await published(two)];
      expect(p1 + p2).toBe(total);
      expect(p1).toBeGreaterThan(0);
      expect(p2).toBeGreaterThan(0);
    } finally {
      await Promise.all([one.runtime.stop(), two.runtime.stop()]);
      await c.stop();
    }
  });

  it('cleanup deletes old published rows in small batches and keeps unpublished ones', async () => {
    await db.query('TRUNCATE data_retention.outbox');
    const c = await collector([topic]);
    const relay = startRelay(
      relayYaml({
        url: db.url,
        topic,
        routes: { 'cleanup.failed': `outbox-test-missing-${uid()}` },
        sources: `- table: data_retention.outbox
  marker: { column: published, type: boolean }
  cleanup: { older_than: 1ms, batch_size: 7, interval: 50ms }`,
        input: 'poll_interval: 100ms\nmax_attempts: 1',
      }),
    );
    try {
      await db.query(`INSERT INTO data_retention.outbox (aggregate_id, aggregate_type, event_type, payload) SELECT 'r' || i, 'retention', 'cleanup.completed', '{}' FROM generate_series(1, 50) i`);
      const { rows } = await db.query(`INSERT INTO data_retention.outbox (aggregate_id, aggregate_type, event_type, payload) VALUES ('x', 'retention', 'cleanup.failed', '{}') RETURNING id::text`);
      await c.until((r) => r.filter((x) => x.headers.event_type === 'cleanup.completed').length >= 50);
      await eventually(async () => (await db.query('SELECT count(*)::int AS n FROM data_retention.outbox')).rows[0].n === 1, 'published rows deleted');
      const left = await db.query('SELECT id::text, published FROM data_retention.outbox');
      expect(left.rows).toEqual([{ id: rows[0].id, published: false }]);
      const f = await db.query('SELECT dead_lettered_at FROM outbox_relay.event_failures WHERE event_id = $1', [rows[0].id]);
      expect(f.rows[0].dead_lettered_at).not.toBeNull();
    } finally {
      await relay.runtime.stop();
      await c.stop();
    }
  });
});
