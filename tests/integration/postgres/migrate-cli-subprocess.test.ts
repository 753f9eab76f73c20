/** `runner migrate` as a user runs it: a real process against the real PostgreSQL. */
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const base = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/runner_test';
const db = `migrate_cli_${randomUUID().slice(0, 8)}`;
const url = base.replace(/\/[^/]*$/, `/${db}`);
const root = new URL('../../..', import.meta.url).pathname;
const runner = (...args: string[]) => spawnSync(process.execPath, [`${root}bin/runner.mjs`, 'migrate', ...args], { encoding: 'utf8', cwd: root });

describe('runner migrate (CLI)', () => {
  const admin = new pg.Client({ connectionString: base });
  beforeAll(async () => {
    await admin.connect();
    await admin.query(`CREATE DATABASE ${db}`);
  });
  afterAll(async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    await admin.end();
  });

  it('brings an empty database to the schema, then reports nothing pending; --status exits 1 while something is pending', async () => {
    const before = runner('--status', '--database', `telemetry=${url}`);
    expect(before.status).toBe(1);
    expect(before.stdout).toContain('pending');

    const apply = runner('--database', `telemetry=${url}`);
    expect(apply.stderr).toBe('');
    expect(apply.status).toBe(0);
    expect(apply.stdout).toContain('applied 0001_telemetry_tables.sql');
    expect(apply.stdout).toMatch(/mode (plain|timescaledb)/);

    const again = runner('--database', `telemetry=${url}`);
    expect(again.status).toBe(0);
    expect(again.stdout).not.toContain('applied 0001');

    const status = runner('--status', '--database', `telemetry=${url}`);
    expect(status.status).toBe(0);
    expect(status.stdout).toMatch(/applied\s+0001_telemetry_tables\.sql/);

    const c = new pg.Client({ connectionString: url });
    await c.connect();
    const { rows } = await c.query(`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`);
    await c.end();
    expect(rows.map((r) => r.table_name)).toEqual(expect.arrayContaining(['energy_consumption', 'heatpump', 'schema_migrations', 'temperature']));
  });

  it('names the database and how to fix it when it does not exist, without a password', () => {
    const r = runner('--database', `telemetry=${base.replace(/\/\/[^@]*@/, '//postgres:s3cret-pass@').replace(/\/[^/]*$/, '/no_such_db_x')}`);
    expect(r.status).toBe(2);
    expect(r.stderr + r.stdout).toContain('no_such_db_x');
    expect(r.stderr + r.stdout).not.toContain('s3cret-pass');
  });
});
