/**
 * pipelines/outbox-relay.yaml as shipped, pointed at a throwaway database migrated like
 * `services`: one event of each of the seven event types, spread over the four outbox tables,
 * lands in the topic named by its event type (topics.yaml), keyed by aggregate id, with the
 * event headers; every row is marked.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestDatabase } from '../../helpers/postgres.ts';
import { BROKERS, ROOT, collector, eventually, servicesDatabase, startRelay, uid } from './harness.ts';

const TYPES = ['user.verified', 'journey.created', 'journey.matched', 'ticket.uploaded', 'delay.detected', 'delay.updated', 'cleanup.completed'];
const TABLES = ['whatsapp_handler.outbox_events', 'darwin_ingestor.outbox_events', 'journey_matcher.outbox', 'data_retention.outbox'];
let db: TestDatabase;

beforeAll(async () => {
  db = await servicesDatabase();
});
afterAll(async () => {
  await db?.drop();
});

describe('pipelines/outbox-relay.yaml', () => {
  it('routes each event type to its topic with key and headers, and marks every row', async () => {
    const run = uid();
    const c = await collector(TYPES);
    const relay = startRelay(readFileSync(`${ROOT}pipelines/outbox-relay.yaml`, 'utf8'), {
      file: 'pipelines/outbox-relay.yaml',
      env: { SERVICES_DATABASE_URL: db.url, KAFKA_BROKERS: BROKERS.join(',') },
    });
    try {
      const ids = new Map<string, { type: string; agg: string }>();
      for (const [i, type] of TYPES.entries()) {
        const table = TABLES[i % 4]!;
        const agg = `yaml-${run}-${i}`;
        const { rows } = await db.query(`INSERT INTO ${table} (aggregate_id, aggregate_type, event_type, payload) VALUES ($1, 'test', $2, $3) RETURNING id::text`, [agg, type, JSON.stringify({ run, type })]);
        ids.set(rows[0].id, { type, agg });
      }
      await c.until((r) => [...ids.keys()].every((id) => r.some((x) => x.headers.event_id === id)));
      for (const [id, { type, agg }] of ids) {
        const rec = c.records.find((x) => x.headers.event_id === id)!;
        expect(rec.topic).toBe(type);
        expect(rec.key).toBe(agg);
        expect(rec.headers).toMatchObject({ event_type: type, aggregate_type: 'test' });
        expect(rec.value).toEqual({ run, type });
      }
      await eventually(async () => {
        const { rows } = await db.query(`SELECT
          (SELECT count(*) FROM whatsapp_handler.outbox_events WHERE published_at IS NULL) + (SELECT count(*) FROM darwin_ingestor.outbox_events WHERE published_at IS NULL) +
          (SELECT count(*) FROM journey_matcher.outbox WHERE processed_at IS NULL) + (SELECT count(*) FROM data_retention.outbox WHERE NOT published) AS n`);
        return Number(rows[0].n) === 0;
      }, 'every row marked');
      expect(relay.health.pipeline(relay.pipeline)?.ready).toBe(true);
    } finally {
      await relay.runtime.stop();
      await c.stop();
    }
  });
});
