/**
 * The local stack's PostgreSQL is a real server: a query with parameters runs on it, it reports
 * its version, and the databases scripts/stack creates are there.
 * Connection: DATABASE_URL (scripts/stack env), default postgres://postgres@127.0.0.1:5432/runner_test.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/runner_test';
const database = decodeURIComponent(new URL(url).pathname.slice(1));

describe('local stack: PostgreSQL', () => {
  it('runs a parameterised query in a transaction and reports a PostgreSQL 15+ server_version', async () => {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
    await client.connect();
    try {
      const info = await client.query<{ db: string; version: string; version_num: number }>(
        "SELECT current_database() AS db, current_setting('server_version') AS version, current_setting('server_version_num')::int AS version_num",
      );
      expect(info.rows[0].db).toBe(database);
      expect(info.rows[0].version).toMatch(/^\d+\.\d+/);
      expect(info.rows[0].version_num).toBeGreaterThanOrEqual(150000);

      await client.query('BEGIN');
      await client.query('CREATE TEMP TABLE stack_check (id int PRIMARY KEY, note text) ON COMMIT DROP');
      await client.query('INSERT INTO stack_check SELECT g, $1 || g FROM generate_series(1, $2::int) AS g', ['row-', 100]);
      const sum = await client.query<{ n: string; total: string; last: string }>(
        'SELECT count(*) AS n, sum(id) AS total, max(note) FILTER (WHERE id = 100) AS last FROM stack_check',
      );
      await client.query('COMMIT');
      expect(sum.rows[0]).toEqual({ n: '100', total: '5050', last: 'row-100' });
    } finally {
      await client.end();
    }
  });

  it('has the databases scripts/stack creates', async () => {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
    await client.connect();
    try {
      const { rows } = await client.query<{ datname: string }>('SELECT datname FROM pg_database');
      const names = rows.map((r) => r.datname);
      for (const db of ['telemetry', 'heatpump_settings', 'services', 'runner_test']) expect(names).toContain(db);
    } finally {
      await client.end();
    }
  });
});
