/**
 * `kill -9` of `runner start` running the outbox relay between publishing and marking: every
 * event is in Kafka, no row is marked; after a restart every event is published again (at-least-
 * once) with the same event id header and payload, and all rows end up marked.
 *
 * How the kill falls between publish and mark without timing: the test holds the row lock of the
 * source's relay_state row. The relay updates that row in the transaction that marks the rows,
 * after Kafka acknowledged them, so that transaction waits on the lock: the events are in Kafka,
 * the marks are not committed. Then the process is killed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestDatabase } from '../helpers/postgres.ts';
import { BROKERS, collector, createTopics, eventually, kafka, relayYaml, servicesDatabase, uid } from '../integration/outbox/harness.ts';

const topic = `e2e-outbox-kill9-${uid()}`;
const admin = kafka.admin();
const root = new URL('../..', import.meta.url).pathname;
const SOURCE = 'whatsapp_handler.outbox_events';
let db: TestDatabase;
let file = '';

function startRunner(): ChildProcess {
  const child = spawn(process.execPath, [join(root, 'bin/runner.mjs'), 'start', file], {
    env: { ...process.env, RUNNER_HTTP_PORT: '0', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr?.on('data', (d) => process.stderr.write(d));
  return child;
}
const exited = (child: ChildProcess) => new Promise<number | null>((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));

beforeAll(async () => {
  await admin.connect();
  await createTopics(admin, [topic]);
  db = await servicesDatabase();
  const dir = mkdtempSync(join(tmpdir(), 'runner-e2e-outbox-'));
  file = join(dir, 'outbox-kill9.yaml');
  writeFileSync(
    file,
    relayYaml({ name: 'outbox-kill9', url: db.url, topic, brokers: BROKERS, sources: `- table: ${SOURCE}\n  columns: { correlation_id: correlation_id }\n  notify_channel: outbox_relay` }),
  );
});
afterAll(async () => {
  await db?.drop();
  await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  await admin.disconnect();
});

describe('outbox relay under kill -9', () => {
  it('publishes every event again after a kill between publish and mark, with the same event id', async () => {
    const N = 300;
    await db.query(
      `INSERT INTO ${SOURCE} (aggregate_id, aggregate_type, event_type, payload, correlation_id)
       SELECT 'agg-' || (i % 10), 'user', 'user.verified', jsonb_build_object('seq', i), 'corr-' || i FROM generate_series(1, $1::int) i`,
      [N],
    );
    const ids: string[] = (await db.query(`SELECT id::text FROM ${SOURCE}`)).rows.map((r) => r.id);
    const c = await collector([topic]);
    const count = (id: string) => c.records.filter((r) => r.headers.event_id === id).length;

    // Hold relay_state's row: the relay's mark transaction waits on it after Kafka acknowledged.
    await db.query(`INSERT INTO relay_state (source) VALUES ($1)`, [SOURCE]);
    const locker = new pg.Client({ connectionString: db.url });
    await locker.connect();
    await locker.query('BEGIN');
    await locker.query('SELECT * FROM relay_state WHERE source = $1 FOR UPDATE', [SOURCE]);

    const first = startRunner();
    const firstExit = exited(first);
    try {
      await c.until(() => ids.every((id) => count(id) >= 1));
      first.kill('SIGKILL');
      expect(await firstExit).toBe(-1);
    } finally {
      await locker.query('ROLLBACK');
      await locker.end();
    }
    // Killed between publish and mark: everything is in Kafka, nothing is marked.
    expect((await db.query(`SELECT count(*)::int AS n FROM ${SOURCE} WHERE published_at IS NOT NULL`)).rows[0].n).toBe(0);
    expect(c.records.length).toBe(N);

    const second = startRunner();
    const secondExit = exited(second);
    await c.until(() => ids.every((id) => count(id) >= 2));
    await eventually(async () => (await db.query(`SELECT count(*)::int AS n FROM ${SOURCE} WHERE published_at IS NULL`)).rows[0].n === 0, 'all rows marked after the restart');
    second.kill('SIGTERM');
    expect(await secondExit).toBe(0);
    await c.stop();

    // Every event twice, the duplicates identical (event id, key, payload, correlation id); per
    // aggregate in creation order in each run.
    for (const id of ids) {
      const recs = c.records.filter((r) => r.headers.event_id === id);
      expect(recs.length).toBe(2);
      expect(recs[1]!.value).toEqual(recs[0]!.value);
      expect(recs[1]!.key).toBe(recs[0]!.key);
      expect(recs[1]!.headers.correlation_id).toBe(recs[0]!.headers.correlation_id);
    }
    // Creation order is (created_at, id): one INSERT gives every row the same created_at.
    const expected = new Map<string, string[]>();
    for (const r of (await db.query(`SELECT id::text, aggregate_id FROM ${SOURCE} ORDER BY created_at, id`)).rows) expected.set(r.aggregate_id, [...(expected.get(r.aggregate_id) ?? []), r.id]);
    const byAgg = new Map<string, string[]>();
    for (const r of [...c.records].sort((a, b) => a.partition - b.partition || a.offset - b.offset)) byAgg.set(r.key!, [...(byAgg.get(r.key!) ?? []), r.headers.event_id!]);
    expect(byAgg.size).toBe(10);
    for (const [agg, seen] of byAgg) expect(seen, agg).toEqual([...expected.get(agg)!, ...expected.get(agg)!]);
    const state = await db.query('SELECT published_total::int AS n FROM relay_state WHERE source = $1', [SOURCE]);
    expect(state.rows[0].n).toBe(N);
  });
});
