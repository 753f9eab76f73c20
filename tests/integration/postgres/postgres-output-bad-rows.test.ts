/**
 * Rows PostgreSQL refuses are isolated by splitting the batch: the bad ones are rejected with the
 * database's error and SQLSTATE, the good ones written; a failing column expression rejects its
 * message before the batch. Both modes.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunnerError } from '../../../core/errors.ts';
import { connect, outputConfig, uniqueTable, writeAll } from './harness.ts';

let db: pg.Client;
beforeAll(async () => {
  db = await connect();
});
afterAll(async () => {
  await db.end();
});

describe.each(['copy', 'upsert'] as const)('postgres output, mode %s, bad rows', (mode) => {
  it('writes the good rows and rejects exactly the bad ones with the database error', async () => {
    const table = uniqueTable(`pg_bad_${mode}`);
    await db.query(`CREATE TABLE ${table} (id int PRIMARY KEY, device_id text NOT NULL, power numeric)`);
    const values: Record<string, unknown>[] = Array.from({ length: 50 }, (_, id) => ({ id, device_id: `hp-${id}`, power: id * 1.5 }));
    values[17] = { id: 17, device_id: 'hp-17', power: 'lots' }; // a string in a numeric column
    values[33] = { id: 33, power: 3 }; // no device_id: NULL in a NOT NULL column
    const cfg = outputConfig({
      table,
      mode,
      columns: { id: 'id', device_id: 'device_id', power: 'power' },
      ...(mode === 'upsert' ? { conflict: { keys: ['id'], action: 'nothing' as const, update_columns: [], where: '' } } : {}),
    });
    const { out, ctx } = await writeAll(cfg, values);
    expect(ctx.rejected.map((r) => (r.msg.value as { id: number }).id)).toEqual([17, 33]);
    const [numeric, notNull] = ctx.rejected.map((r) => r.err as RunnerError);
    expect(numeric).toBeInstanceOf(RunnerError);
    expect(numeric!.code).toBe('WRITE_REJECTED');
    expect(numeric!.retryable).toBe(false);
    expect(numeric!.message).toMatch(/invalid input syntax for type numeric: "lots".*SQLSTATE 22P02/);
    expect(notNull!.message).toMatch(/null value in column "device_id".*violates not-null constraint.*SQLSTATE 23502/);
    // The good ones, passed on in order after their commit.
    expect(out.map((m) => (m.value as { id: number }).id)).toEqual(values.map((v) => v.id).filter((id) => id !== 17 && id !== 33));
    const { rows } = await db.query(`SELECT array_agg(id ORDER BY id) AS ids FROM ${table}`);
    expect(rows[0].ids).toEqual(out.map((m) => (m.value as { id: number }).id));
  });

  it('rejects a message whose column expression fails before writing the batch', async () => {
    const table = uniqueTable(`pg_expr_${mode}`);
    await db.query(`CREATE TABLE ${table} (id int, time timestamptz)`);
    const cfg = outputConfig({ table, mode, columns: { id: 'id', time: '$fromMillis(timestamp)' } });
    const { out, ctx } = await writeAll(cfg, [{ id: 1, timestamp: 1000 }, { id: 2, timestamp: 'soon' }, { id: 3, timestamp: 3000 }]);
    expect(out.map((m) => (m.value as { id: number }).id)).toEqual([1, 3]);
    expect(ctx.rejected).toHaveLength(1);
    expect((ctx.rejected[0]!.err as RunnerError).code).toBe('EXPRESSION_FAILED');
    expect((await db.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n).toBe(2);
  });
});
