/**
 * The postgres processor against the real PostgreSQL: all statements of a message in one
 * transaction (a failing later statement leaves nothing of the earlier ones), results passed from
 * statement to statement and into the value, expect: one as NOT_FOUND, constraint errors rejected
 * with PostgreSQL's message, `check` skipping messages, connection loss retried, and a database
 * that stays away rejected after max_retries.
 */
import { Value } from '@sinclair/typebox/value';
import pg from 'pg';
import { Subject, from, lastValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { RunnerError } from '../../../core/errors.ts';
import { createMsg, type Msg } from '../../../core/message.ts';
import { postgresQuery } from '../../../operators/postgres/query-processor.ts';
import { testContext, type TestContext } from '../../helpers/context.ts';
import { DATABASE_URL, connect, uniqueTable } from './harness.ts';

type Cfg = typeof postgresQuery.spec.config.static;
type Statement = Cfg['statements'][number];
const config = (c: Partial<Omit<Cfg, 'statements'>> & { statements: (Partial<Statement> & Pick<Statement, 'sql'>)[] }): Cfg =>
  Value.Default(postgresQuery.spec.config, {
    url: DATABASE_URL,
    ...c,
    statements: c.statements.map((s) => Value.Default(postgresQuery.spec.config.properties.statements.items, { ...s })),
  }) as Cfg;

async function run(cfg: Cfg, msgs: Msg[], ctx: TestContext = testContext()) {
  try {
    const out = await lastValueFrom(from(msgs).pipe(postgresQuery.create(cfg, ctx), toArray()));
    return { out, ctx };
  } finally {
    await ctx.close();
  }
}

let db: pg.Client;
let items: string;
let log: string;
beforeAll(async () => {
  db = await connect();
  items = uniqueTable('pgq_items');
  log = uniqueTable('pgq_log');
  await db.query(`CREATE TABLE ${items} (id text PRIMARY KEY, qty int NOT NULL CHECK (qty >= 0), updated_at timestamptz)`);
  await db.query(`CREATE TABLE ${log} (n bigserial PRIMARY KEY, item text NOT NULL, note jsonb NOT NULL CHECK (note ? 'qty'))`);
  await db.query(`INSERT INTO ${items} VALUES ('a', 5, NULL), ('b', 1, NULL)`);
});
afterAll(async () => {
  await db.query(`DROP TABLE IF EXISTS ${items}, ${log}`);
  await db.end();
});

const logOf = async (item: string) => (await db.query(`SELECT note FROM ${log} WHERE item = $1 ORDER BY n`, [item])).rows.map((r) => r.note);
const qtyOf = async (item: string) => (await db.query(`SELECT qty FROM ${items} WHERE id = $1`, [item])).rows[0]?.qty;

describe('postgres processor', () => {
  const statements = (): (Partial<Statement> & Pick<Statement, 'sql'>)[] => [
    { sql: `UPDATE ${items} SET qty = qty - $2, updated_at = now() WHERE id = $1 RETURNING id, qty, updated_at`, args: ['item', 'take'], expect: 'one' as const, result: 'item', not_found: 'item ${! item } not found' },
    { sql: `INSERT INTO ${log} (item, note) VALUES ($1, $2::jsonb) RETURNING n::int AS n`, args: ['$results.item.id', '{"qty": $results.item.qty, "by": $meta.who}'], expect: 'one' as const, result: 'log' },
  ];

  it('runs every statement in one transaction, passes results on, and makes the value result_map', async () => {
    const { out, ctx } = await run(config({ statements: statements(), result_map: '$merge([$results.item, {"log": $results.log.n}])' }), [createMsg({ item: 'a', take: 2 }, { meta: { who: 'test' } })]);
    expect(ctx.rejected).toEqual([]);
    expect(out).toHaveLength(1);
    const v = out[0]!.value as { id: string; qty: number; updated_at: string; log: number };
    expect(v).toMatchObject({ id: 'a', qty: 3 });
    expect(Number.isNaN(Date.parse(v.updated_at))).toBe(false);
    expect(typeof v.log).toBe('number');
    expect(await qtyOf('a')).toBe(3);
    expect(await logOf('a')).toEqual([{ qty: 3, by: 'test' }]);
  });

  it('a failing second statement rolls back the first: neither change remains, the reason is PostgreSQL\'s', async () => {
    // The CHECK on log.note fails for a note without qty: the UPDATE of items must not remain.
    const failing = statements();
    failing[1]!.args = ['$results.item.id', '{"no_qty": true}'];
    const { out, ctx } = await run(config({ statements: failing }), [createMsg({ item: 'b', take: 1 })]);
    expect(out).toEqual([]);
    expect(ctx.rejected).toHaveLength(1);
    const err = ctx.rejected[0]!.err as RunnerError;
    expect(err.code).toBe('WRITE_REJECTED');
    expect(err.retryable).toBe(false);
    expect(err.message).toMatch(/^statements\.1: PostgreSQL rejected the row: .*violates check constraint .*\(SQLSTATE 23514\)/);
    expect(await qtyOf('b')).toBe(1);
    expect(await logOf('b')).toEqual([]);
  });

  it('a constraint of the first statement rejects the message too (qty below 0)', async () => {
    const { out, ctx } = await run(config({ statements: statements() }), [createMsg({ item: 'b', take: 5 })]);
    expect(out).toEqual([]);
    expect((ctx.rejected[0]!.err as RunnerError).message).toMatch(/^statements\.0: .*check constraint/);
    expect(await qtyOf('b')).toBe(1);
  });

  it('expect: one with no row rejects with NOT_FOUND and the not_found reason; later messages go on', async () => {
    const { out, ctx } = await run(config({ statements: statements(), result_map: '$results.item.qty' }), [createMsg({ item: 'zzz', take: 1 }), createMsg({ item: 'a', take: 1 })]);
    expect(ctx.rejected.map((r) => [(r.err as RunnerError).code, (r.err as RunnerError).message])).toEqual([['NOT_FOUND', 'item zzz not found']]);
    expect(out.map((m) => m.value)).toEqual([2]);
    expect(await logOf('zzz')).toEqual([]);
  });

  it('expect: one with several rows and expect: none with rows reject with WRITE_REJECTED', async () => {
    const { ctx } = await run(
      config({ statements: [{ sql: `SELECT id FROM ${items} WHERE id = ANY($1::text[])`, args: ['ids'], expect: 'one' as const, result: '', not_found: 'x' }] }),
      [createMsg({ ids: ['a', 'b'] })],
    );
    expect((ctx.rejected[0]!.err as RunnerError).message).toBe('statements.0 returned 2 rows; expect: one allows exactly one');
    const none = await run(config({ statements: [{ sql: `SELECT 1 FROM ${items} WHERE id = $1`, args: ['id'], expect: 'none' as const, result: '', not_found: 'x' }] }), [createMsg({ id: 'a' }), createMsg({ id: 'q' })]);
    expect(none.ctx.rejected.map((r) => (r.err as RunnerError).code)).toEqual(['WRITE_REJECTED']);
    expect(none.out.map((m) => m.value)).toEqual([{}]);
  });

  it('passes messages for which check is false unchanged; an arg expression that fails rejects with EXPRESSION_FAILED', async () => {
    const cfg = config({ check: 'kind = "take"', statements: statements(), result_map: '$' });
    const skipped = createMsg({ kind: 'other', item: 'a' });
    const { out, ctx } = await run(cfg, [skipped, createMsg({ kind: 'take', item: 'a', take: '$' })]);
    expect(out).toEqual([skipped]);
    expect(ctx.rejected.map((r) => (r.err as RunnerError).code)).toEqual(['WRITE_REJECTED']); // "$" is not an integer: SQLSTATE 22P02
    const bad = await run(config({ statements: [{ sql: 'SELECT $1::int', args: ['$number("x")'], expect: 'any' as const, result: '', not_found: 'x' }] }), [createMsg({})]);
    expect((bad.ctx.rejected[0]!.err as RunnerError).code).toBe('EXPRESSION_FAILED');
  });

  it('retries the whole transaction after its connection is terminated, and commits it once', async () => {
    const app = `runner_test_${uniqueTable('pgq')}`;
    const url = `${DATABASE_URL}${DATABASE_URL.includes('?') ? '&' : '?'}application_name=${app}`;
    const ctx = testContext();
    const readiness: { ready: boolean; reason?: string }[] = [];
    const setReady = ctx.setReady;
    ctx.setReady = (ready, reason) => {
      readiness.push({ ready, reason });
      setReady(ready, reason);
    };
    const source = new Subject<Msg>();
    const all = lastValueFrom(source.pipe(postgresQuery.create(config({ url, statements: statements(), result_map: '$results.item.qty' }), ctx), toArray()));
    await vi.waitFor(() => expect(ctx.ready.ready).toBe(true));
    await db.query(`INSERT INTO ${items} VALUES ('c', 10, NULL)`);
    const locker = await connect();
    await locker.query('BEGIN');
    await locker.query(`SELECT 1 FROM ${items} WHERE id = 'c' FOR UPDATE`);
    source.next(createMsg({ item: 'c', take: 4 }));
    await vi.waitFor(async () => {
      const { rows } = await db.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'", [app]);
      expect(rows[0].n).toBe(1);
    });
    await db.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [app]);
    await locker.query('COMMIT');
    await locker.end();
    source.complete();
    const out = await all;
    await ctx.close();
    expect(ctx.rejected).toEqual([]);
    expect(out.map((m) => m.value)).toEqual([6]);
    expect(await qtyOf('c')).toBe(6);
    expect(await logOf('c')).toHaveLength(1);
    expect(readiness.find((r) => !r.ready && /retrying/.test(r.reason ?? ''))?.reason).toMatch(/terminat/i);
    expect(readiness.at(-1)).toEqual({ ready: true, reason: undefined });
  });

  it('with max_retries, a database that stays away rejects the message with CONNECTION_FAILED', async () => {
    // A port nothing listens on: the listener of a server we start and close at once.
    const net = await import('node:net');
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const ctx = testContext();
    const { out } = await run(config({ url: `postgres://postgres@127.0.0.1:${port}/nothing`, statements: statements(), max_retries: 2 }), [createMsg({ item: 'a', take: 1 })], ctx);
    expect(out).toEqual([]);
    const err = ctx.rejected[0]!.err as RunnerError;
    expect(err.code).toBe('CONNECTION_FAILED');
    expect(err.message).toMatch(/ECONNREFUSED|connect/);
    expect(ctx.ready.ready).toBe(false);
  });

  it('timeout: a statement still waiting at the deadline is cancelled, rolled back and not retried; nothing of the message remains', async () => {
    await db.query(`INSERT INTO ${items} VALUES ('d', 5, NULL) ON CONFLICT (id) DO UPDATE SET qty = 5`);
    const locker = await connect();
    await locker.query('BEGIN');
    await locker.query(`SELECT 1 FROM ${items} WHERE id = 'd' FOR UPDATE`);
    const ctx = testContext();
    let out: Msg[];
    try {
      // The INSERT of the log first (it does not wait), then the UPDATE that waits for the lock.
      const stmts = statements().reverse();
      stmts[0]!.args = ['item', '{"qty": 0}'];
      stmts[0]!.result = '';
      ({ out } = await run(config({ statements: stmts, timeout: '300ms', max_retries: 0 }), [createMsg({ item: 'd', take: 1 })], ctx));
      // Rejected while the lock is still held: the statement was cancelled, nobody waits for the lock.
      const { rows } = await db.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'UPDATE ${items}%'`);
      expect(rows[0].n).toBe(0);
    } finally {
      await locker.query('COMMIT');
      await locker.end();
    }
    expect(out).toEqual([]);
    const err = ctx.rejected[0]!.err as RunnerError;
    expect(err.code).toBe('WRITE_FAILED');
    expect(err.retryable).toBe(false);
    expect(err.message).toMatch(/^deadline passed \(timeout 300ms\) while statements\.1 ran \(cancelled\); rolled back, nothing was written/);
    expect(await qtyOf('d')).toBe(5);
    expect(await logOf('d')).toEqual([]);
  });

  it('timeout: a message whose deadline passed before its transaction could start is rejected without running anything', async () => {
    const msg = { ...createMsg({ item: 'a', take: 1 }), createdAt: Date.now() - 10_000 };
    const before = await qtyOf('a');
    const ctx = testContext();
    const { out } = await run(config({ statements: statements(), timeout: '5s' }), [msg], ctx);
    expect(out).toEqual([]);
    expect((ctx.rejected[0]!.err as RunnerError).message).toMatch(/^deadline passed \(timeout 5s\) before the transaction started; rolled back, nothing was written/);
    expect(await qtyOf('a')).toBe(before);
  });

  it('autocommit: one statement as its own transaction; a statement cancelled at the deadline wrote nothing; lint wants exactly one statement', async () => {
    await db.query(`INSERT INTO ${items} VALUES ('e', 5, NULL) ON CONFLICT (id) DO UPDATE SET qty = 5`);
    const one = [statements()[0]!];
    const ok = await run(config({ statements: one, autocommit: true, timeout: '5s', result_map: '$results.item.qty' }), [createMsg({ item: 'e', take: 2 }), createMsg({ item: 'nope', take: 1 })]);
    expect(ok.out.map((m) => m.value)).toEqual([3]);
    expect(ok.ctx.rejected.map((r) => (r.err as RunnerError).code)).toEqual(['NOT_FOUND']);
    expect(await qtyOf('e')).toBe(3);

    const locker = await connect();
    await locker.query('BEGIN');
    await locker.query(`SELECT 1 FROM ${items} WHERE id = 'e' FOR UPDATE`);
    const ctx = testContext();
    try {
      const { out } = await run(config({ statements: one, autocommit: true, timeout: '300ms' }), [createMsg({ item: 'e', take: 1 })], ctx);
      expect(out).toEqual([]);
    } finally {
      await locker.query('COMMIT');
      await locker.end();
    }
    expect((ctx.rejected[0]!.err as RunnerError).message).toMatch(/^deadline passed \(timeout 300ms\) while statements\.0 ran \(cancelled\); rolled back/);
    expect(await qtyOf('e')).toBe(3);

    expect(() => postgresQuery.create(config({ statements: statements(), autocommit: true }), testContext())).toThrow(/autocommit runs one statement as its own transaction; there are 2/);
  });

  it('batch_size: messages queued while the connection is busy go together into one call; per-row error_code rejects only its message', async () => {
    await db.query(`INSERT INTO ${items} VALUES ('f', 5, NULL), ('g', 5, NULL), ('h', 5, NULL) ON CONFLICT (id) DO UPDATE SET qty = 5`);
    const sql = `WITH req AS (SELECT * FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS r(item, take, batch_index)),
                      upd AS (UPDATE ${items} i SET qty = i.qty - req.take FROM req WHERE i.id = req.item RETURNING i.id, i.qty, req.batch_index)
                 SELECT req.batch_index, upd.qty, txid_current()::text AS tx,
                        CASE WHEN upd.id IS NULL THEN 'NOT_FOUND' END AS error_code, CASE WHEN upd.id IS NULL THEN 'no item ' || req.item END AS error
                   FROM req LEFT JOIN upd USING (batch_index)`;
    const locker = await connect();
    await locker.query('BEGIN');
    await locker.query(`SELECT 1 FROM ${items} WHERE id = 'f' FOR UPDATE`);
    const ctx = testContext();
    const source = new Subject<Msg>();
    const out: Msg[] = [];
    const done = new Promise<void>((resolve) =>
      postgresQuery
        .create(config({ statements: [{ sql, args: ['item', 'take'], expect: 'one', result: 'row' }], batch_size: 8, max_in_flight: 1, autocommit: true, result_map: '$results.row' }), ctx)(source)
        .subscribe({ next: (m) => out.push(m), complete: resolve }),
    );
    try {
      source.next(createMsg({ item: 'f', take: 1 })); // takes the only connection and waits for the lock
      await vi.waitFor(async () => {
        const { rows } = await db.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'WITH req AS%'`);
        expect(rows[0].n).toBe(1);
      });
      // These three wait in the processor until the first call is done, then go as ONE call.
      for (const m of [{ item: 'g', take: 2 }, { item: 'nope', take: 1 }, { item: 'h', take: 3 }]) source.next(createMsg(m));
    } finally {
      await locker.query('COMMIT');
      await locker.end();
    }
    source.complete();
    await done;
    await ctx.close();
    const byItem = Object.fromEntries(out.map((m) => [(m.value as { qty: number }).qty, m.value as { tx: string }]));
    expect(Object.keys(byItem).map(Number).sort()).toEqual([2, 3, 4]);
    expect(byItem[3]!.tx).toBe(byItem[2]!.tx); // g and h in one transaction
    expect(byItem[4]!.tx).not.toBe(byItem[3]!.tx); // f alone before them
    expect(ctx.rejected.map((r) => [(r.err as RunnerError).code, (r.err as RunnerError).message])).toEqual([['NOT_FOUND', 'no item nope']]);
    expect([await qtyOf('f'), await qtyOf('g'), await qtyOf('h')]).toEqual([4, 3, 2]);
  });
});
