/**
 * The claim looks for heads of aggregates among a window of the oldest unpublished rows
 * (4 x batch_size, operators/postgres/outbox-sql.ts claimHeads), so its cost does not grow with the
 * backlog. What users rely on still holds:
 * - after many rows were marked and deleted (dead index entries in front of the waiting ones), the
 *   remaining events are published, each once, in creation order per aggregate;
 * - an aggregate whose head another transaction holds (another relay owns it) and whose events
 *   fill many windows holds back only itself: the events of other aggregates behind it are
 *   published, and its own follow in order once the head is free.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestDatabase } from '../../helpers/postgres.ts';
import { collector, createTopics, eventually, kafka, relayYaml, servicesDatabase, startRelay, uid } from './harness.ts';

const topic = `outbox-test-window-${uid()}`;
const topic2 = `outbox-test-window-held-${uid()}`;
const admin = kafka.admin();
let db: TestDatabase;

beforeAll(async () => {
  await admin.connect();
  await createTopics(admin, [topic, topic2]);
  db = await servicesDatabase();
});
afterAll(async () => {
  await db?.drop();
  await admin.deleteTopics({ topics: [topic, topic2] }).catch(() => undefined);
  await admin.disconnect();
});

/** Kafka's order per key (one key, one partition: offsets), as the payloads' seq. */
function seqsByKey(records: { partition: number; offset: number; key: string | null; value: any }[]) {
  const by = new Map<string, number[]>();
  for (const r of [...records].sort((a, b) => a.partition - b.partition || a.offset - b.offset)) by.set(r.key!, [...(by.get(r.key!) ?? []), r.value.seq]);
  return by;
}

describe('postgres_outbox claim window', () => {
  it('after thousands of rows were marked and deleted, publishes the remaining events once each, in creation order per aggregate', async () => {
    const table = 'darwin_ingestor.outbox_events';
    // 3,000 events of 7 aggregates, in creation order (clock_timestamp() per row).
    await db.query(
      `INSERT INTO ${table} (aggregate_id, aggregate_type, event_type, payload, created_at)
       SELECT 'agg-' || (i % 7), 'train', 'delay.detected', jsonb_build_object('seq', i), clock_timestamp() FROM generate_series(1, 3000) i`,
    );
    // The oldest 2,950 were published earlier; 2,000 of those are already deleted again (cleanup).
    await db.query(`UPDATE ${table} SET published_at = now() WHERE (payload->>'seq')::int <= 2950`);
    await db.query(`DELETE FROM ${table} WHERE (payload->>'seq')::int <= 2000`);
    const c = await collector([topic]);
    const relay = startRelay(
      relayYaml({ url: db.url, topic, sources: `- table: ${table}\n  notify_channel: outbox_relay`, input: 'poll_interval: 200ms\nbatch_size: 4\nmax_in_flight: 2' }),
    );
    try {
      // And 30 more while the relay runs.
      await db.query(
        `INSERT INTO ${table} (aggregate_id, aggregate_type, event_type, payload, created_at)
         SELECT 'agg-' || (i % 7), 'train', 'delay.detected', jsonb_build_object('seq', i), clock_timestamp() FROM generate_series(3001, 3030) i`,
      );
      await eventually(async () => (await db.query(`SELECT count(*)::int AS n FROM ${table} WHERE published_at IS NULL`)).rows[0].n === 0, 'every row marked');
      await c.until((r) => r.length >= 80);
      const seqs = c.records.map((r) => r.value.seq as number);
      expect(new Set(seqs).size).toBe(seqs.length);
      expect([...seqs].sort((a, b) => a - b)).toEqual(Array.from({ length: 80 }, (_, i) => 2951 + i));
      for (const [agg, got] of seqsByKey(c.records)) expect(got, agg).toEqual([...got].sort((a, b) => a - b));
    } finally {
      await relay.runtime.stop();
      await c.stop();
    }
  });

  it('an aggregate whose head another transaction holds holds back only its own events, across many windows', async () => {
    const table = 'journey_matcher.outbox';
    // 100 events of aggregate "held" (14 windows of 4 x batch_size 2), then 5 of each of three others.
    await db.query(
      `INSERT INTO ${table} (aggregate_id, aggregate_type, event_type, payload, created_at)
       SELECT 'held', 'journey', 'journey.created', jsonb_build_object('seq', i), clock_timestamp() FROM generate_series(1, 100) i`,
    );
    await db.query(
      `INSERT INTO ${table} (aggregate_id, aggregate_type, event_type, payload, created_at)
       SELECT 'free-' || (i % 3), 'journey', 'journey.created', jsonb_build_object('seq', i), clock_timestamp() FROM generate_series(101, 115) i`,
    );
    // Another relay owns "held": it holds the row lock of the aggregate's head.
    const owner = new pg.Client({ connectionString: db.url });
    await owner.connect();
    await owner.query('BEGIN');
    await owner.query(`SELECT id FROM ${table} WHERE aggregate_id = 'held' ORDER BY created_at, id LIMIT 1 FOR UPDATE`);
    const c = await collector([topic2]);
    const relay = startRelay(
      relayYaml({
        url: db.url,
        topic: topic2,
        sources: `- table: ${table}\n  marker: { column: processed_at }\n  notify_channel: outbox_relay`,
        input: 'poll_interval: 100ms\nbatch_size: 2\nmax_in_flight: 2',
      }),
    );
    try {
      const free = (r: { key: string | null }[]) => r.filter((x) => x.key !== 'held');
      await c.until((r) => free(r).length >= 15);
      await eventually(async () => (await db.query(`SELECT count(*)::int AS n FROM ${table} WHERE processed_at IS NULL AND aggregate_id <> 'held'`)).rows[0].n === 0, 'the free aggregates marked');
      // Nothing of "held" while its head is owned elsewhere.
      expect(c.records.filter((x) => x.key === 'held')).toEqual([]);
      expect((await db.query(`SELECT count(*)::int AS n FROM ${table} WHERE processed_at IS NULL`)).rows[0].n).toBe(100);

      await owner.query('ROLLBACK');
      await c.until((r) => r.length >= 115);
      await eventually(async () => (await db.query(`SELECT count(*)::int AS n FROM ${table} WHERE processed_at IS NULL`)).rows[0].n === 0, 'every row marked');
      const by = seqsByKey(c.records);
      expect(by.get('held')).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
      for (const k of ['free-0', 'free-1', 'free-2']) expect(by.get(k)!.length, k).toBe(5);
      for (const [agg, got] of by) expect(got, agg).toEqual([...got].sort((a, b) => a - b));
      expect(c.records.length).toBe(115);
    } finally {
      await owner.end().catch(() => undefined);
      await relay.runtime.stop();
      await c.stop();
    }
  });
});
