/**
 * Connection loss mid-batch: the output's backend is terminated while its transaction waits on a
 * lock the test holds; the batch is retried with backoff, written exactly once, never skipped, and
 * readiness is false with the reason meanwhile.
 */
import pg from 'pg';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createMsg, type Msg } from '../../../core/message.ts';
import { postgres } from '../../../operators/postgres/output.ts';
import { testContext } from '../../helpers/context.ts';
import { DATABASE_URL, connect, outputConfig, uniqueTable } from './harness.ts';

let db: pg.Client;
beforeAll(async () => {
  db = await connect();
});
afterAll(async () => {
  await db.end();
});

describe.each(['copy', 'upsert'] as const)('postgres output, mode %s, connection loss', (mode) => {
  it('retries the batch after the connection is terminated and writes it exactly once', async () => {
    const table = uniqueTable(`pg_connloss_${mode}`);
    const app = `runner_test_${table}`;
    await db.query(`CREATE TABLE ${table} (id int PRIMARY KEY, note text)`);
    const ctx = testContext();
    const readiness: { ready: boolean; reason?: string }[] = [];
    const setReady = ctx.setReady;
    ctx.setReady = (ready, reason) => {
      readiness.push({ ready, reason });
      setReady(ready, reason);
    };
    const url = `${DATABASE_URL}${DATABASE_URL.includes('?') ? '&' : '?'}application_name=${app}`;
    const cfg = outputConfig({
      url,
      table,
      mode,
      columns: { id: 'id', note: 'note' },
      ...(mode === 'upsert' ? { conflict: { keys: ['id'], action: 'nothing' as const, update_columns: [], where: '' } } : {}),
      batching: { count: 3, byte_size: 0, period: 0 },
    });
    const source = new Subject<Msg>();
    const all = lastValueFrom(source.pipe(postgres.create(cfg, ctx), toArray()));
    await vi.waitFor(() => expect(ctx.ready.ready).toBe(true));

    // Hold a lock so the output's transaction waits inside the batch, then kill its connection.
    const locker = await connect();
    await locker.query('BEGIN');
    await locker.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
    for (const id of [1, 2, 3]) source.next(createMsg({ id, note: `n${id}` }));
    await vi.waitFor(async () => {
      const { rows } = await db.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'", [app]);
      expect(rows[0].n).toBe(1);
    });
    await db.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [app]);
    await locker.query('COMMIT');
    await locker.end();

    source.next(createMsg({ id: 4, note: 'n4' }));
    source.complete();
    const out = await all;
    await ctx.close();

    expect(out.map((m) => (m.value as { id: number }).id)).toEqual([1, 2, 3, 4]);
    expect(ctx.rejected).toEqual([]);
    const { rows } = await db.query(`SELECT array_agg(id ORDER BY id) AS ids FROM ${table}`);
    expect(rows[0].ids).toEqual([1, 2, 3, 4]);
    const down = readiness.find((r) => !r.ready && /retrying/.test(r.reason ?? ''));
    expect(down?.reason).toMatch(/terminat/i);
    expect(readiness.at(-1)).toEqual({ ready: true, reason: undefined });
  });
});
