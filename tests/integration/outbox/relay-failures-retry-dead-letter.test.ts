/**
 * Rows that cannot be published: a payload that is not JSON (rejected by the relay itself) and an
 * event routed to a topic that does not exist (rejected by the kafka output). Each attempt lands
 * in outbox_relay.delivery_errors (the pipeline's dead_letter output); the relay retries the event
 * with backoff, dead-letters it after max_attempts (event_failures: attempts, last error,
 * dead_lettered_at), and meanwhile holds back only later events of the same aggregate. Also: a
 * table with its own column names, a headers column, and the metrics of failures.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { counterValue } from '../../helpers/memory-operators.ts';
import type { TestDatabase } from '../../helpers/postgres.ts';
import { collector, createTopics, eventually, kafka, relayYaml, servicesDatabase, startRelay, uid } from './harness.ts';

const topic = `outbox-test-fail-${uid()}`;
const missingTopic = `outbox-test-missing-${uid()}`;
const admin = kafka.admin();
let db: TestDatabase;

beforeAll(async () => {
  await admin.connect();
  await createTopics(admin, [topic]);
  db = await servicesDatabase();
  await db.query(`CREATE SCHEMA app;
    CREATE TABLE app.events (
      event_uuid uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      agg text NOT NULL, agg_type text NOT NULL, kind text NOT NULL,
      body text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp(),
      corr text, hdrs jsonb, sent_at timestamptz)`);
});
afterAll(async () => {
  await db?.drop();
  await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  await admin.disconnect();
});

const SOURCE = `- name: app
  table: app.events
  columns: { id: event_uuid, aggregate_id: agg, aggregate_type: agg_type, event_type: kind, payload: body, created_at: at, correlation_id: corr, headers: hdrs }
  marker: { column: sent_at }`;

describe('postgres_outbox: events that cannot be published', () => {
  it('retries with backoff, dead-letters after max_attempts, and holds back only the failing aggregate', async () => {
    const insert = async (agg: string, kind: string, body: string, hdrs: object | null = null) =>
      (await db.query(`INSERT INTO app.events (agg, agg_type, kind, body, hdrs) VALUES ($1, 'order', $2, $3, $4) RETURNING event_uuid::text AS id`, [agg, kind, body, hdrs && JSON.stringify(hdrs)])).rows[0].id as string;
    const badJson = await insert('A', 'order.placed', '{not json');
    const afterBadJson = await insert('A', 'order.placed', '{"agg": "A", "seq": 2}');
    const unknownTopic = await insert('B', 'order.lost', '{"agg": "B", "seq": 1}');
    const afterUnknownTopic = await insert('B', 'order.placed', '{"agg": "B", "seq": 2}');
    const others: string[] = [];
    for (let i = 1; i <= 3; i++) others.push(await insert('C', 'order.placed', JSON.stringify({ agg: 'C', seq: i }), { 'x-tenant': 't1' }));

    const c = await collector([topic]);
    const relay = startRelay(
      relayYaml({
        url: db.url,
        topic,
        routes: { 'order.lost': missingTopic },
        sources: SOURCE,
        input: 'poll_interval: 100ms\nmax_attempts: 3\nretry_backoff: { initial: 50ms, max: 200ms }',
      }),
    );
    try {
      const ids = (r: { headers: { [k: string]: string } }[]) => new Set(r.map((x) => x.headers.event_id));
      await c.until((r) => [afterBadJson, afterUnknownTopic, ...others].every((id) => ids(r).has(id)));
      await eventually(async () => (await db.query('SELECT count(*)::int AS n FROM app.events WHERE sent_at IS NOT NULL')).rows[0].n === 5, 'five rows marked');

      const failures = await db.query(`SELECT event_id, attempts, last_error, last_error_code, dead_lettered_at, next_attempt_at FROM outbox_relay.event_failures WHERE source = 'app' ORDER BY event_id`);
      const byId = new Map(failures.rows.map((r) => [r.event_id, r]));
      expect([...byId.keys()].sort()).toEqual([badJson, unknownTopic].sort());
      expect(byId.get(badJson)).toMatchObject({ attempts: 3, last_error_code: 'MESSAGE_INVALID', next_attempt_at: null });
      expect(byId.get(badJson)!.last_error).toMatch(/not JSON/);
      expect(byId.get(unknownTopic)).toMatchObject({ attempts: 3, last_error_code: 'WRITE_REJECTED', next_attempt_at: null });
      expect(byId.get(unknownTopic)!.last_error).toContain(`topic ${missingTopic} does not exist`);
      for (const id of [badJson, unknownTopic]) expect(byId.get(id)!.dead_lettered_at).not.toBeNull();

      // Every attempt is in the dead-letter record, with the payload.
      const attempts = await db.query(`SELECT event_id, count(*)::int AS n, min(payload) AS payload FROM outbox_relay.delivery_errors WHERE source = 'app' GROUP BY event_id`);
      expect(Object.fromEntries(attempts.rows.map((r) => [r.event_id, r.n]))).toEqual({ [badJson]: 3, [unknownTopic]: 3 });
      expect(attempts.rows.find((r) => r.event_id === badJson)!.payload).toBe('{not json');

      // The failing rows stay unpublished; the next event of each failing aggregate was published
      // only after the failing one was dead-lettered; the other aggregate did not wait.
      const rows = new Map((await db.query('SELECT event_uuid::text AS id, sent_at FROM app.events')).rows.map((r) => [r.id, r.sent_at as Date | null]));
      expect(rows.get(badJson)).toBeNull();
      expect(rows.get(unknownTopic)).toBeNull();
      expect(rows.get(afterBadJson)!.getTime()).toBeGreaterThanOrEqual(byId.get(badJson)!.dead_lettered_at.getTime());
      expect(rows.get(afterUnknownTopic)!.getTime()).toBeGreaterThanOrEqual(byId.get(unknownTopic)!.dead_lettered_at.getTime());
      for (const id of others) expect(rows.get(id)!.getTime()).toBeLessThan(byId.get(badJson)!.dead_lettered_at.getTime());

      // Nothing of the failing events reached the topic; the others exactly once, with the headers column.
      expect(ids(c.records).has(badJson)).toBe(false);
      expect(c.records.length).toBe(5);
      const rec = c.records.find((r) => r.headers.event_id === others[0])!;
      expect(rec.headers).toMatchObject({ 'x-tenant': 't1', event_type: 'order.placed', aggregate_type: 'order' });
      expect(rec.key).toBe('C');

      expect(await counterValue(relay.metrics, 'runner_outbox_failed_total', { source: 'app' })).toBe(6);
      expect(await counterValue(relay.metrics, 'runner_outbox_dead_lettered_total', { source: 'app' })).toBe(2);
      expect(await counterValue(relay.metrics, 'runner_outbox_published_total', { source: 'app' })).toBe(5);
      const state = await db.query(`SELECT published_total::int AS n, last_error FROM relay_state WHERE source = 'app'`);
      expect(state.rows[0].n).toBe(5);
      expect(state.rows[0].last_error).toMatch(/not JSON|does not exist/);

      // Deleting the failure record (after fixing the cause) publishes the event again.
      await db.query(`UPDATE app.events SET body = '{"agg": "A", "seq": 1, "fixed": true}' WHERE event_uuid = $1`, [badJson]);
      await db.query(`DELETE FROM outbox_relay.event_failures WHERE event_id = $1`, [badJson]);
      await c.until((r) => ids(r).has(badJson));
    } finally {
      await relay.runtime.stop();
      await c.stop();
    }
  });
});
