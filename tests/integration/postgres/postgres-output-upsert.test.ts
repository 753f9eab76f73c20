/**
 * Mode upsert against the real PostgreSQL: idempotent on the conflict keys, DO UPDATE with a WHERE
 * applies only newer rows (also for several rows of one key in one batch, in message order).
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, outputConfig, uniqueTable, writeAll } from './harness.ts';

let db: pg.Client;
beforeAll(async () => {
  db = await connect();
});
afterAll(async () => {
  await db.end();
});

describe('postgres output, mode upsert', () => {
  it('is idempotent: the same batch twice leaves the same rows', async () => {
    const table = uniqueTable('pg_upsert_idem');
    await db.query(`CREATE TABLE ${table} (time timestamptz NOT NULL, device_id text NOT NULL, power double precision, PRIMARY KEY (device_id, time))`);
    const values = Array.from({ length: 300 }, (_, i) => ({ timestamp: 1_700_000_000 + Math.floor(i / 3), device_id: `hp-${i % 3}`, power: i }));
    const cfg = outputConfig({
      table,
      columns: { time: '$fromMillis(timestamp * 1000)', device_id: 'device_id', power: 'power' },
      conflict: { keys: ['device_id', 'time'], action: 'nothing', update_columns: [], where: '' },
      batching: { count: 120, byte_size: 0, period: '10ms' },
    });
    const first = await writeAll(cfg, values);
    expect(first.out).toHaveLength(300);
    const second = await writeAll(cfg, values);
    expect(second.out).toHaveLength(300);
    expect([...first.ctx.rejected, ...second.ctx.rejected]).toEqual([]);
    const { rows } = await db.query(`SELECT count(*)::int AS n, sum(power)::int AS s FROM ${table}`);
    expect(rows[0]).toEqual({ n: 300, s: (299 * 300) / 2 });
  });

  it('DO UPDATE with a WHERE applies only newer rows, in message order within a batch', async () => {
    const schema = uniqueTable('upsert_schema');
    await db.query(`CREATE SCHEMA ${schema}`);
    await db.query(`CREATE TABLE ${schema}.settings (device_id text PRIMARY KEY, reported_at timestamptz NOT NULL, mode text, state jsonb)`);
    const cfg = outputConfig({
      table: `${schema}.settings`,
      columns: { device_id: 'device_id', reported_at: '$fromMillis(reported_at)', mode: 'mode', state: '$' },
      conflict: { keys: ['device_id'], action: 'update', update_columns: [], where: 'EXCLUDED.reported_at > settings.reported_at' },
    });
    await writeAll(cfg, [
      { device_id: 'a', reported_at: 2000, mode: 'heat' },
      { device_id: 'b', reported_at: 2000, mode: 'heat' },
    ]);
    const { out, ctx } = await writeAll(cfg, [
      { device_id: 'a', reported_at: 3000, mode: 'cool' }, // newer: applied
      { device_id: 'b', reported_at: 1000, mode: 'off' }, // older, late: ignored
      { device_id: 'c', reported_at: 1000, mode: 'eco' }, // new device: inserted
      { device_id: 'c', reported_at: 5000, mode: 'auto' }, // same key in one batch, newer: applied after
      { device_id: 'c', reported_at: 4000, mode: 'late' }, // same key in one batch, older: ignored
    ]);
    expect(ctx.rejected).toEqual([]);
    expect(out).toHaveLength(5);
    const { rows } = await db.query(`SELECT device_id, mode, extract(epoch FROM reported_at)::int AS at FROM ${schema}.settings ORDER BY device_id`);
    expect(rows).toEqual([
      { device_id: 'a', mode: 'cool', at: 3 },
      { device_id: 'b', mode: 'heat', at: 2 },
      { device_id: 'c', mode: 'auto', at: 5 },
    ]);
  });
});
