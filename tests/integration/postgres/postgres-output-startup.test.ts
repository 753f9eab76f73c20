/**
 * Startup check: a missing table or column keeps the output not ready, naming it, and nothing is
 * written or passed on; once the table exists the held messages are written. An unreachable
 * server: not ready with the reason, the password never shown.
 */
import type pg from 'pg';
import { Subject, toArray, lastValueFrom } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createMsg, type Msg } from '../../../core/message.ts';
import { postgres } from '../../../operators/postgres/output.ts';
import { testContext } from '../../helpers/context.ts';
import { connect, outputConfig, uniqueTable } from './harness.ts';

let db: pg.Client;
beforeAll(async () => {
  db = await connect();
});
afterAll(async () => {
  await db.end();
});

describe('postgres output startup check', () => {
  it('is not ready while the table is missing, naming it, and writes once it exists', async () => {
    const table = uniqueTable('pg_missing');
    const ctx = testContext();
    const cfg = outputConfig({ table, columns: { id: 'id' }, batching: { count: 1, byte_size: 0, period: 0 } });
    const source = new Subject<Msg>();
    const emitted: Msg[] = [];
    const done = lastValueFrom(source.pipe(postgres.create(cfg, ctx), toArray()));
    const sub = done.then((all) => emitted.push(...all));
    source.next(createMsg({ id: 1 }));
    await vi.waitFor(() => expect(ctx.ready.reason).toMatch(new RegExp(`table ${table} does not exist`)));
    expect(ctx.ready.ready).toBe(false);
    expect(emitted).toEqual([]);
    await db.query(`CREATE TABLE ${table} (id int)`);
    await vi.waitFor(() => expect(ctx.ready.ready).toBe(true), { timeout: 5_000 });
    source.complete();
    await sub;
    expect(emitted).toHaveLength(1);
    expect((await db.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n).toBe(1);
    await ctx.close();
  });

  it('names a missing column', async () => {
    const table = uniqueTable('pg_missing_col');
    await db.query(`CREATE TABLE ${table} (id int, device_id text)`);
    const ctx = testContext();
    const cfg = outputConfig({ table, columns: { id: 'id', device_id: 'device_id', flow_temp: 'flow_temp' } });
    postgres.create(cfg, ctx);
    await vi.waitFor(() => expect(ctx.ready).toEqual({ ready: false, reason: expect.stringMatching(/has no column flow_temp/) }));
    await ctx.close();
  });

  it('is not ready when the server cannot be reached, without showing the password', async () => {
    const ctx = testContext();
    const cfg = outputConfig({ url: 'postgres://runner:s3cret-pw@127.0.0.1:1/runner_test', table: 'whatever', columns: { id: 'id' } });
    postgres.create(cfg, ctx);
    await vi.waitFor(() => expect(ctx.ready.reason).toMatch(/cannot check table whatever: .*ECONNREFUSED|connect/));
    expect(ctx.ready.ready).toBe(false);
    expect(ctx.ready.reason).not.toContain('s3cret-pw');
    await ctx.close();
  });
});
