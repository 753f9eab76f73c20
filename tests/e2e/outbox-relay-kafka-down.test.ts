/**
 * The outbox relay while Kafka is down for a while (issue 5, reliability): `runner start` runs the
 * relay over the four service outbox tables (timestamp, processed_at and boolean markers) of a fresh
 * `services` database into a topic of its own. Kafka of the shared stack is stopped
 * (`scripts/stack stop kafka`) while events are being written into several aggregates of every
 * source; the runner is never restarted.
 *
 * - While Kafka is down: /health/ready answers 503 and names Kafka as the reason, and no event
 *   written during the outage is marked published.
 * - After Kafka is back: every event is in the topic, each aggregate's events in creation order
 *   ((created_at, id), the relay's order) — a redelivered event may repeat, never overtake — every
 *   row is marked, relay_state counts them, and /health/ready answers 200 again.
 *
 * Stopping Kafka disturbs other tests on the shared stack for a few seconds; it is started again
 * in a finally block whatever happens. Waits are on log lines, the health endpoint, the topic and
 * the tables (polling), never pauses.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestDatabase } from '../helpers/postgres.ts';
import { BROKERS, FOUR_SOURCES, collector, createTopics, eventually, kafka, relayYaml, servicesDatabase, uid } from '../integration/outbox/harness.ts';
import { RunnerProcess, stackServer, within } from './mqtt-bridge-harness.ts';

/** The four sources and how each marks a published row. */
const SOURCES = [
  { table: 'whatsapp_handler.outbox_events', published: 'published_at IS NOT NULL' },
  { table: 'darwin_ingestor.outbox_events', published: 'published_at IS NOT NULL' },
  { table: 'journey_matcher.outbox', published: 'processed_at IS NOT NULL' },
  { table: 'data_retention.outbox', published: 'published' },
] as const;
const AGGREGATES_PER_SOURCE = 3;
/** Events per phase, spread round-robin over every aggregate of every source. */
const BEFORE = 120;
const DURING = 240;
const AFTER = 60;

const id = uid();
const topic = `e2e-outbox-kafka-down-${id}`;
const PIPELINE = 'outbox-kafka-down';
const admin = kafka.admin();
let db: TestDatabase;
let writer: pg.Client;
let dir = '';
let relay: RunnerProcess | null = null;
let written = 0;

/** Write `n` events, each in its own transaction (so each has its own created_at), round-robin over the aggregates. */
async function writeEvents(n: number, phase: string): Promise<void> {
  for (let i = 0; i < n; i++) {
    const k = written++;
    const source = SOURCES[k % SOURCES.length]!;
    const aggregate = `${source.table.split('.')[0]}-agg-${Math.floor(k / SOURCES.length) % AGGREGATES_PER_SOURCE}`;
    await writer.query(`INSERT INTO ${source.table} (aggregate_id, aggregate_type, event_type, payload) VALUES ($1, 'journey', 'journey.created', $2)`, [
      aggregate,
      JSON.stringify({ n: k, phase }),
    ]);
  }
}

/** Every event in creation order, with its aggregate: the order the relay must keep per aggregate. */
async function eventsInCreationOrder(): Promise<{ id: string; aggregate: string }[]> {
  const out: { id: string; aggregate: string }[] = [];
  for (const s of SOURCES) {
    const { rows } = await db.query(`SELECT id::text AS id, aggregate_id FROM ${s.table} ORDER BY created_at, id`);
    for (const r of rows) out.push({ id: r.id, aggregate: r.aggregate_id });
  }
  return out;
}

async function unpublished(): Promise<number> {
  let n = 0;
  for (const s of SOURCES) n += (await db.query(`SELECT count(*)::int AS n FROM ${s.table} WHERE NOT (${s.published})`)).rows[0].n;
  return n;
}

async function health(base: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`${base}/health/ready`);
  return { status: res.status, body: await res.text() };
}

beforeAll(async () => {
  await admin.connect();
  await createTopics(admin, [topic]);
  db = await servicesDatabase();
  writer = new pg.Client({ connectionString: db.url });
  await writer.connect();
  dir = mkdtempSync(join(tmpdir(), 'runner-e2e-outbox-kafka-down-'));
}, 120_000);

afterAll(async () => {
  if (relay?.running) await relay.stop();
  await writer?.end();
  await db?.drop();
  await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  await admin.disconnect();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe('outbox relay while Kafka is down', () => {
  it('events wait while Kafka is away (not ready, naming Kafka; nothing marked), then all arrive in creation order per aggregate and are marked', async () => {
    const file = join(dir, 'outbox-kafka-down.yaml');
    writeFileSync(file, relayYaml({ name: PIPELINE, url: db.url, topic, brokers: BROKERS, sources: FOUR_SOURCES }));
    const r = (relay = new RunnerProcess(file, 'relay', { LOG_LEVEL: 'info' }));
    const started = await within(60_000, () => `no 'runner started' line; exited: ${!r.running}`, r.logged((l) => l.msg === 'runner started'));
    const base = `http://${String(started.http)}`;
    await within(60_000, () => 'the kafka producer did not connect', r.logged((l) => l.msg === 'kafka producer connected'));
    await eventually(async () => (await health(base)).status === 200, 'the relay is ready', 60_000);

    // Kafka goes away while the first events are being relayed.
    await writeEvents(BEFORE, 'before');
    let stoppedAt = 0;
    let upAt = 0;
    let downReason = '';
    let markedDuringOutage = -1;
    try {
      await stackServer('stop', 'kafka');
      stoppedAt = Date.now();
      const firstDuring = written;
      await writeEvents(DURING / 2, 'during');
      // Readiness tells the truth while Kafka is away: the kafka output is not ready and names
      // Kafka and its brokers.
      await eventually(
        async () => {
          const h = await health(base);
          if (h.status !== 503) return false;
          const out = JSON.parse(h.body).pipelines[PIPELINE].components['output.kafka'] as { ready: boolean; reason?: string };
          downReason = out.reason ?? '';
          return !out.ready && downReason.includes(`Kafka at ${BROKERS.join(',')}`);
        },
        'the kafka output did not report Kafka as the reason it is not ready',
        60_000,
        100,
      );
      await writeEvents(DURING / 2, 'during');
      // Nothing written while Kafka is away is marked published.
      markedDuringOutage = 0;
      for (const s of SOURCES) {
        markedDuringOutage += (await db.query(`SELECT count(*)::int AS n FROM ${s.table} WHERE ${s.published} AND payload->>'phase' = 'during'`)).rows[0].n;
      }
      expect(written - firstDuring).toBe(DURING);
      await stackServer('start', 'kafka');
      upAt = Date.now();
    } finally {
      // Whatever happened, leave Kafka running for the others.
      if (!upAt) await stackServer('start', 'kafka');
    }
    expect(markedDuringOutage).toBe(0);
    expect(r.running).toBe(true);
    await writeEvents(AFTER, 'after');

    // After Kafka is back: every event arrives and every row is marked, by the same process.
    const expected = await eventsInCreationOrder();
    expect(expected.length).toBe(BEFORE + DURING + AFTER);
    const c = await collector([topic]);
    try {
      const ids = new Set(expected.map((e) => e.id));
      const seen = new Set<string>();
      let read = 0;
      await within(
        120_000,
        () => `${[...ids].filter((e) => seen.has(e)).length}/${ids.size} events in Kafka`,
        c.until((recs) => {
          for (; read < recs.length; read++) seen.add(recs[read]!.headers.event_id!);
          return [...ids].every((e) => seen.has(e));
        }),
      );
      await eventually(async () => (await unpublished()) === 0, 'every row marked published after Kafka came back', 60_000, 100);
      await eventually(async () => (await health(base)).status === 200, 'the relay ready again after Kafka came back', 60_000, 100);
      expect(r.count((l) => l.msg === 'Kafka answers again')).toBeGreaterThanOrEqual(1);
      expect(r.running).toBe(true);
      expect(await r.stop()).toBe(0);

      // Per aggregate, in the topic's order (one partition per key): the events in creation order.
      // A repeat (at-least-once) may follow its own first copy, never a later event.
      const records = [...c.records].sort((a, b) => a.partition - b.partition || a.offset - b.offset);
      expect(records.every((rec) => ids.has(rec.headers.event_id!))).toBe(true);
      const byAggregate = new Map<string, string[]>();
      for (const rec of records) {
        const list = byAggregate.get(rec.key!) ?? [];
        if (list.at(-1) !== rec.headers.event_id) list.push(rec.headers.event_id!);
        byAggregate.set(rec.key!, list);
      }
      const want = new Map<string, string[]>();
      for (const e of expected) want.set(e.aggregate, [...(want.get(e.aggregate) ?? []), e.id]);
      expect(byAggregate.size).toBe(SOURCES.length * AGGREGATES_PER_SOURCE);
      for (const [aggregate, order] of want) expect(byAggregate.get(aggregate), aggregate).toEqual(order);

      const state = await db.query('SELECT source, published_total::int AS n FROM relay_state ORDER BY source');
      expect(state.rows.reduce((n, s) => n + s.n, 0)).toBe(expected.length);
      const duplicates = records.length - ids.size;
      const retries = r.count((l) => l.msg === 'kafka write failed; retrying');
      console.log(
        `[outbox relay, Kafka down] ${expected.length} events over ${byAggregate.size} aggregates in 4 sources (${DURING} written while Kafka was away, ` +
          `${((upAt - stoppedAt) / 1000).toFixed(1)} s between the end of its stop and its first answer): all in creation order per aggregate, ` +
          `${records.length} records (${duplicates} repeats), ${retries} 'kafka write failed; retrying' warnings; output.kafka not ready: ${downReason}`,
      );
    } finally {
      await c.stop();
    }
  }, 300_000);
});
