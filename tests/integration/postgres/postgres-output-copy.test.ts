/**
 * Mode copy against the real PostgreSQL: every row written, awkward text (tabs, newlines,
 * backslashes, unicode, \N-lookalikes, NULL, SQL) round-trips literally, jsonb as JSON.
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

describe('postgres output, mode copy', () => {
  it('writes every row of several batches and passes every message on, in order', async () => {
    const table = uniqueTable('pg_copy_all');
    await db.query(`CREATE TABLE ${table} (time timestamptz NOT NULL, device_id text NOT NULL, flow_temp double precision, raw jsonb)`);
    const values = Array.from({ length: 2500 }, (_, i) => ({ timestamp: 1_700_000_000 + i, device_id: `hp-${i % 7}`, flow_temp: 30 + i / 100 }));
    const cfg = outputConfig({
      table,
      mode: 'copy',
      columns: { time: '$fromMillis(timestamp * 1000)', device_id: 'device_id', flow_temp: 'flow_temp', raw: '$' },
    });
    const { out, ctx } = await writeAll(cfg, values);
    expect(ctx.rejected).toEqual([]);
    expect(out.map((m) => m.value)).toEqual(values);
    const { rows } = await db.query(`SELECT count(*)::int AS n, min(time) AS first, max(flow_temp) AS top FROM ${table}`);
    expect(rows[0].n).toBe(2500);
    expect(new Date(rows[0].first).getTime()).toBe(1_700_000_000_000);
    expect(rows[0].top).toBeCloseTo(30 + 2499 / 100);
    const raw = await db.query(`SELECT raw FROM ${table} WHERE time = to_timestamp(1700000005)`);
    expect(raw.rows[0].raw).toEqual(values[5]);
  });

  it('round-trips tabs, newlines, backslashes, unicode, NULL and SQL-looking text literally', async () => {
    const table = uniqueTable('pg_copy_text');
    await db.query(`CREATE TABLE ${table} (id int PRIMARY KEY, note text, doc jsonb)`);
    const notes = [
      'tab\there',
      'line1\nline2\r\nline3',
      'back\\slash \\N \\t \\\\',
      '\\N',
      'héat pümp ❄️ 温度 𝄞',
      "'); DROP TABLE " + table + '; --',
      'Robert"); DELETE FROM x WHERE ("1"="1',
      '',
      null,
      '\\.',
      'end with backslash\\',
    ];
    const values = notes.map((note, id) => ({ id, note, doc: { note, nested: { tab: '\t', arr: [1, null, 'x\\y'] } } }));
    const cfg = outputConfig({ table, mode: 'copy', columns: { id: 'id', note: 'note', doc: 'doc' } });
    const { ctx } = await writeAll(cfg, values);
    expect(ctx.rejected).toEqual([]);
    const { rows } = await db.query(`SELECT id, note, doc FROM ${table} ORDER BY id`);
    expect(rows.map((r) => r.note)).toEqual(notes);
    expect(rows.map((r) => r.doc)).toEqual(values.map((v) => v.doc));
    // The table survived the "injection".
    expect((await db.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n).toBe(notes.length);
  });
});
