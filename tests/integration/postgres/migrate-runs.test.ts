/**
 * `migrate` against a real PostgreSQL with the fixture folders of tests/fixtures/migrations:
 * numeric order, nothing re-applied, an edited applied file refused, concurrent runs serialised
 * by the advisory lock, a failing file rolled back with no later file run, the markers, --status,
 * connection errors that name the database and never the password, assertMigrated, and the
 * `migrate` command in-process. Each test uses its own throwaway database.
 */
import { appendFileSync, cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { RunnerError } from '../../../core/errors.ts';
import { DEFAULT_MIGRATIONS_DIR, MIGRATE_LOCK_KEY, assertMigrated, migrateDatabase, migrationStatus } from '../../../operators/postgres/migrate.ts';
import { migrateCommand } from '../../../operators/postgres/migrate-cli.ts';
import { createTestDatabase, urlFor, type TestDatabase } from '../../helpers/postgres.ts';

// host:port of the test server, as the messages name it (CI may run the stack on other ports).
const HOST = new URL(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/runner_test').host;
const HOST_RE = HOST.replace(/\./g, '\\.');

const FIXTURES = new URL('../../fixtures/migrations', import.meta.url).pathname;
const fixture = (name: string) => join(FIXTURES, name);

const dbs: TestDatabase[] = [];
const tmps: string[] = [];
const fresh = async () => {
  const db = await createTestDatabase();
  dbs.push(db);
  return db;
};
/** A writable copy of a fixture folder. */
const copyOf = (name: string) => {
  const dir = mkdtempSync(join(tmpdir(), 'migrate-'));
  tmps.push(dir);
  cpSync(fixture(name), dir, { recursive: true });
  return dir;
};
afterEach(() => {
  for (const d of tmps.splice(0)) rmSync(d, { recursive: true, force: true });
});
afterAll(async () => {
  for (const db of dbs) await db.drop();
});

const tables = async (db: TestDatabase) =>
  (await db.query<{ t: string }>("SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")).rows.map((r) => r.t);
const recorded = async (db: TestDatabase) =>
  (await db.query<{ version: number; name: string; skipped: boolean; mode: string; transactional: boolean }>('SELECT version, name, skipped, mode, transactional FROM schema_migrations ORDER BY version')).rows;

async function caught(p: Promise<unknown>): Promise<RunnerError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(RunnerError);
    return err as RunnerError;
  }
  throw new Error('expected an error');
}

describe('migrate', () => {
  it('applies files in numeric order, each recorded once; a second run applies nothing', async () => {
    const db = await fresh();
    const first = await migrateDatabase({ database: 'app', url: db.url, dir: fixture('ordered') });
    expect(first.files.map((f) => f.name)).toEqual(['1_first.sql', '2_second.sql', '10_tenth.sql']);
    expect(first.mode).toBe('plain');
    expect((await recorded(db)).map((r) => r.version)).toEqual([1, 2, 10]);
    const cols = await db.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'second' ORDER BY ordinal_position");
    expect(cols.rows.map((r) => r.column_name)).toEqual(['id', 'first_id', 'tenth']);

    const { rows: before } = await db.query('SELECT version, applied_at FROM schema_migrations ORDER BY version');
    const second = await migrateDatabase({ database: 'app', url: db.url, dir: fixture('ordered') });
    expect(second.files).toEqual([]);
    expect(second.alreadyApplied).toBe(3);
    const { rows: after } = await db.query('SELECT version, applied_at FROM schema_migrations ORDER BY version');
    expect(after).toEqual(before);
  });

  it('refuses an applied file whose content changed, names it, and applies nothing else', async () => {
    const db = await fresh();
    const dir = copyOf('ordered');
    await migrateDatabase({ database: 'app', url: db.url, dir });
    appendFileSync(join(dir, 'app', '2_second.sql'), '-- an innocent comment\n');
    writeFileSync(join(dir, 'app', '20_new.sql'), 'CREATE TABLE new_one (id int);\n');

    const err = await caught(migrateDatabase({ database: 'app', url: db.url, dir }));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toMatch(/^app: nothing was applied: 2_second\.sql was changed after it was applied on \d{4}-\d\d-\d\dT.*checksum [0-9a-f]{12}\.\.\., recorded [0-9a-f]{12}\.\.\.\); applied files are never re-applied/);
    expect(await tables(db)).not.toContain('new_one');
    expect((await recorded(db)).map((r) => r.name)).toEqual(['1_first.sql', '2_second.sql', '10_tenth.sql']);

    const status = await migrationStatus({ database: 'app', url: db.url, dir });
    expect(status.entries.map((e) => [e.name, e.state])).toEqual([
      ['1_first.sql', 'applied'],
      ['2_second.sql', 'changed'],
      ['10_tenth.sql', 'applied'],
      ['20_new.sql', 'pending'],
    ]);
  });

  it('rolls back a file with a SQL error: its table and row are absent, later files are not run', async () => {
    const db = await fresh();
    const err = await caught(migrateDatabase({ database: 'app', url: db.url, dir: fixture('broken') }));
    expect(err.code).toBe('WRITE_FAILED');
    // Line 4, column 8: the bad column name in 0002_bad.sql.
    expect(err.message).toMatch(/^app: migration 0002_bad\.sql:4:8 failed: column "no_such_column" does not exist \(SQLSTATE 42703\)/);
    expect(err.message).toMatch(/rolled back: nothing of 0002_bad\.sql took effect and no later file was run/);
    expect(await tables(db)).toEqual(['ok_table', 'schema_migrations']);
    expect((await recorded(db)).map((r) => r.name)).toEqual(['0001_ok.sql']);
  });

  it('two concurrent runs: one applies every file, the other waits for the lock and finds nothing to do', async () => {
    const db = await fresh();
    const logs: string[] = [];
    const run = () => migrateDatabase({ database: 'app', url: db.url, dir: fixture('slow'), log: (l) => logs.push(l) });
    const results = await Promise.all([run(), run()]);
    const counts = results.map((r) => r.files.length).sort();
    expect(counts).toEqual([0, 2]);
    const waiter = results.find((r) => r.files.length === 0)!;
    expect(waiter.waited).toBe(true);
    expect(waiter.alreadyApplied).toBe(2);
    expect(logs.some((l) => /^app: another migrate run holds the lock \(pid \d+ \(runner migrate/.test(l))).toBe(true);
    expect((await recorded(db)).map((r) => r.name)).toEqual(['0001_slow.sql', '0002_second.sql']);
    expect(await tables(db)).toEqual(['schema_migrations', 'slow_one', 'slow_two']);
  });

  it('gives up after --lock-timeout while another session holds the lock, and applies nothing', async () => {
    const db = await fresh();
    const holder = new pg.Client({ connectionString: db.url, application_name: 'lock-holder-test' });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock($1::bigint)', [MIGRATE_LOCK_KEY]);
      const started = Date.now();
      const err = await caught(migrateDatabase({ database: 'app', url: db.url, dir: fixture('ordered'), lockTimeoutMs: 300 }));
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(err.message).toMatch(/another migrate run \(pid \d+ \(lock-holder-test.*\)\) still holds the migrate lock after 0.3 s; nothing was applied/);
      expect(await tables(db)).toEqual([]);
    } finally {
      await holder.end();
    }
    // Lock released: the next run proceeds.
    expect((await migrateDatabase({ database: 'app', url: db.url, dir: fixture('ordered') })).files).toHaveLength(3);
  });

  it('markers: timescaledb-only is skipped and recorded in plain mode, applied once timescaledb is there; no-transaction runs outside a transaction', async () => {
    const db = await fresh();
    const plain = await migrateDatabase({ database: 'app', url: db.url, dir: fixture('markers') });
    expect(plain.files.map((f) => [f.name, f.action, f.transactional])).toEqual([
      ['0001_base.sql', 'applied', true],
      ['0002_ts_only.sql', 'skipped', true],
      ['0003_no_tx.sql', 'applied', false],
    ]);
    // CREATE INDEX CONCURRENTLY fails inside a transaction block: the index proves there was none.
    const { rows: idx } = await db.query("SELECT indexname FROM pg_indexes WHERE tablename = 'base' ORDER BY 1");
    expect(idx.map((r) => r.indexname)).toEqual(['base_pkey', 'base_x_id_idx', 'base_x_idx']);
    expect(await tables(db)).not.toContain('ts_marker');
    expect(await recorded(db)).toEqual([
      { version: 1, name: '0001_base.sql', skipped: false, mode: 'plain', transactional: true },
      { version: 2, name: '0002_ts_only.sql', skipped: true, mode: 'plain', transactional: true },
      { version: 3, name: '0003_no_tx.sql', skipped: false, mode: 'plain', transactional: false },
    ]);
    // Skipped files do not make a sink refuse to start.
    await expect(assertMigrated(db.url, 'app', { dir: fixture('markers') })).resolves.toBeUndefined();

    // The extension appears (forced here: TimescaleDB cannot be installed on this machine).
    const status = await migrationStatus({ database: 'app', url: db.url, dir: fixture('markers'), mode: 'timescaledb' });
    expect(status.pending.map((e) => [e.name, e.note])).toEqual([['0002_ts_only.sql', 'skipped in plain mode; timescaledb is available now']]);
    const upgrade = await migrateDatabase({ database: 'app', url: db.url, dir: fixture('markers'), mode: 'timescaledb' });
    expect(upgrade.files.map((f) => [f.name, f.action])).toEqual([['0002_ts_only.sql', 'applied']]);
    expect(await tables(db)).toContain('ts_marker');
    expect((await recorded(db))[1]).toEqual({ version: 2, name: '0002_ts_only.sql', skipped: false, mode: 'timescaledb', transactional: true });
  });

  it('a failing no-transaction file says how much took effect and is not recorded', async () => {
    const db = await fresh();
    const err = await caught(migrateDatabase({ database: 'app', url: db.url, dir: fixture('no_tx_fail') }));
    expect(err.message).toMatch(/^app: migration 0001_partial\.sql:3 failed: relation "partial_one" already exists \(SQLSTATE 42P07\)/);
    expect(err.message).toMatch(/1 of 2 statement\(s\) took effect and it is not recorded, so the next `runner migrate` runs the whole file again/);
    expect(await tables(db)).toEqual(['partial_one', 'schema_migrations']);
    expect(await recorded(db)).toEqual([]);
  });
});

describe('migrate --status', () => {
  it('lists pending before, applied after, and a new file as pending; changes nothing', async () => {
    const db = await fresh();
    const dir = copyOf('ordered');
    const before = await migrationStatus({ database: 'app', url: db.url, dir });
    expect(before.mode).toBe('plain');
    expect(before.entries.map((e) => [e.name, e.state])).toEqual([
      ['1_first.sql', 'pending'],
      ['2_second.sql', 'pending'],
      ['10_tenth.sql', 'pending'],
    ]);
    expect(await tables(db)).toEqual([]);

    await migrateDatabase({ database: 'app', url: db.url, dir });
    writeFileSync(join(dir, 'app', '11_eleventh.sql'), 'CREATE TABLE eleventh (id int);\n');
    const after = await migrationStatus({ database: 'app', url: db.url, dir });
    expect(after.entries.map((e) => [e.name, e.state])).toEqual([
      ['1_first.sql', 'applied'],
      ['2_second.sql', 'applied'],
      ['10_tenth.sql', 'applied'],
      ['11_eleventh.sql', 'pending'],
    ]);
    expect(after.entries[0].row).toMatchObject({ mode: 'plain', transactional: true, skipped: false });
    expect(after.entries[0].row!.applied_at).toBeInstanceOf(Date);
    expect(after.problems).toEqual([]);
  });
});

describe('connection errors', () => {
  it('a missing database: names it and the host, says how to create it, never prints the password', async () => {
    const url = urlFor('migrate_test_does_not_exist').replace('//postgres@', '//postgres:hunter2@');
    const err = await caught(migrateDatabase({ database: 'app', url, dir: fixture('ordered') }));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toMatch(new RegExp(`database "migrate_test_does_not_exist" on ${HOST_RE} .* does not exist: create it \\(psql .*CREATE DATABASE migrate_test_does_not_exist`));
    expect(err.message).toMatch(/set APP_DATABASE_URL or --database app=<url>/);
    expect(err.message).not.toContain('hunter2');
  });

  it('an unknown user: an authentication error naming the user and the variable to fix', async () => {
    const err = await caught(migrationStatus({ database: 'app', url: urlFor('runner_test').replace('//postgres@', '//nobody_here:hunter2@'), dir: fixture('ordered') }));
    expect(err.code).toBe('AUTH_FAILED');
    expect(err.message).toMatch(new RegExp(`cannot log in to database "runner_test" on ${HOST_RE} .* as user "nobody_here": role "nobody_here" does not exist; check the user and password in APP_DATABASE_URL`));
    expect(err.message).not.toContain('hunter2');
  });

  it('no server: names host and port and says to start it', async () => {
    const err = await caught(migrateDatabase({ database: 'app', url: 'postgres://postgres:hunter2@127.0.0.1:1/app', dir: fixture('ordered') }));
    expect(err.code).toBe('CONNECTION_FAILED');
    expect(err.message).toMatch(/^cannot reach PostgreSQL at 127\.0\.0\.1:1 for database "app" .*ECONNREFUSED.*is the server running/);
    expect(err.message).not.toContain('hunter2');
  });
});

describe('assertMigrated (sinks at startup)', () => {
  it('throws CONFIG_INVALID naming the database and the pending files and saying to run `runner migrate`; passes once migrated', async () => {
    const db = await fresh();
    const err = await caught(assertMigrated(db.url, 'app', { dir: fixture('ordered') }));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toBe(
      `database "${db.name}" on ${HOST} (migrations/app) is not migrated: 3 pending migration(s): 1_first.sql, 2_second.sql, 10_tenth.sql; run \`runner migrate --database app\` before starting the pipeline`,
    );
    await migrateDatabase({ database: 'app', url: db.url, dir: fixture('ordered') });
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    try {
      await expect(assertMigrated(pool, 'app', { dir: fixture('ordered') })).resolves.toBeUndefined();
    } finally {
      await pool.end();
    }
  });

  it('with a pool: a new file is pending, an edited one is named as changed', async () => {
    const db = await fresh();
    const dir = copyOf('ordered');
    await migrateDatabase({ database: 'app', url: db.url, dir });
    writeFileSync(join(dir, 'app', '11_eleventh.sql'), 'SELECT 1;\n');
    appendFileSync(join(dir, 'app', '1_first.sql'), '\n');
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    try {
      const err = await caught(assertMigrated(pool, 'app', { dir }));
      expect(err.message).toMatch(/is not migrated: 1 pending migration\(s\): 11_eleventh\.sql; changed after they were applied: 1_first\.sql; run `runner migrate --database app`/);
    } finally {
      await pool.end();
    }
  });
});

describe('the migrate command (in-process)', () => {
  async function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
    const out: string[] = [];
    const err: string[] = [];
    let code = -1;
    const program = new Command('runner').exitOverride();
    migrateCommand(program, { stdout: (l) => out.push(l), stderr: (l) => err.push(l), env, exit: (c) => (code = c) });
    await program.parseAsync(['migrate', ...args], { from: 'user' });
    return { code, out, err };
  }

  it('--status exits 1 while something is pending; migrate prints what it applied and the mode; then --status exits 0', async () => {
    const db = await fresh();
    const target = `app=${db.url}`;
    const status = await cli(['--dir', fixture('markers'), '--database', target, '--status']);
    expect(status.code).toBe(1);
    expect(status.out[0]).toMatch(new RegExp(`^app \\(${db.url.replace(/[.?]/g, '\\$&')}\\): mode plain \\(timescaledb extension not available: plain tables\\); 0 applied, 0 skipped, 3 pending$`));
    expect(status.out.slice(1)).toEqual(['  pending  0001_base.sql', '  pending  0002_ts_only.sql [timescaledb-only]', '  pending  0003_no_tx.sql [no-transaction]']);

    const run = await cli(['--dir', fixture('markers'), '--database', target]);
    expect(run.code).toBe(0);
    expect(run.out[0]).toMatch(/^app \(.*\): mode plain \(timescaledb extension not available: plain tables\)$/);
    expect(run.out[1]).toMatch(/^ {2}applied 0001_base\.sql in \d+ ms$/);
    expect(run.out[2]).toBe('  skipped 0002_ts_only.sql (timescaledb-only; applied by a later `runner migrate` once the extension is available)');
    expect(run.out[3]).toMatch(/^ {2}applied 0003_no_tx\.sql in \d+ ms \(no transaction\)$/);
    expect(run.out[4]).toBe('  2 applied, 1 skipped; 3 recorded in schema_migrations');

    const again = await cli(['--dir', fixture('markers'), '--database', target, '--status', '--json']);
    expect(again.code).toBe(0);
    const json = JSON.parse(again.out.join('\n'));
    expect(json[0]).toMatchObject({ database: 'app', mode: 'plain', problems: [] });
    expect(json[0].migrations.map((m: { state: string }) => m.state)).toEqual(['applied', 'skipped', 'applied']);
  });

  it('takes the URL from <NAME>_DATABASE_URL; the real migrations bring a database to the schema', async () => {
    const db = await fresh();
    const run = await cli(['--database', 'heatpump_settings'], { HEATPUMP_SETTINGS_DATABASE_URL: db.url });
    expect(run.err).toEqual([]);
    expect(run.code).toBe(0);
    const files = readdirSync(join(DEFAULT_MIGRATIONS_DIR, 'heatpump_settings')).length;
    expect(run.out).toContain(`  ${files} applied; ${files} recorded in schema_migrations`);
    // 0001: settings and outbox; 0002 (the command loop): reports, audit events, the relay's state.
    expect(await tables(db)).toEqual(expect.arrayContaining(['device_reports', 'outbox', 'relay_state', 'schema_migrations', 'settings', 'settings_events']));
  });

  it('exit 3 for a failed migration, 2 for an edited file or bad options, and it stops at the first failing database', async () => {
    const db = await fresh();
    const failed = await cli(['--dir', fixture('broken'), '--database', `app=${db.url}`]);
    expect(failed.code).toBe(3);
    expect(failed.err[0]).toMatch(/^migrate: app: migration 0002_bad\.sql:4:8 failed/);

    const bad = await cli(['--dir', fixture('broken'), '--database', 'nope']);
    expect(bad.code).toBe(2);
    expect(bad.err[0]).toMatch(/^migrate: --database nope: no folder .*nope; database folders: app$/);

    const unreachable = await cli(['--database', 'telemetry=postgres://postgres:hunter2@127.0.0.1:1/telemetry', '--database', 'services']);
    expect(unreachable.code).toBe(2);
    expect(unreachable.err.join('\n')).toMatch(/cannot reach PostgreSQL at 127\.0\.0\.1:1/);
    expect(unreachable.err.join('\n')).toMatch(/stopped; not attempted: services/);
    expect(unreachable.err.join('\n')).not.toContain('hunter2');
  });
});
