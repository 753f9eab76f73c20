/**
 * The migration files without a database: names and numeric order, checksums, markers, statement
 * splitting, what counts as applied / pending / changed, --database resolution, and the project's
 * own migrations/ folder.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RunnerError } from '../../../../core/errors.ts';
import {
  DEFAULT_MIGRATIONS_DIR,
  MIGRATE_LOCK_KEY,
  checksum,
  databaseUrl,
  databaseUrlEnvName,
  listDatabaseFolders,
  loadMigrations,
  parseMarkers,
  parseMigrationFileName,
  planMigrations,
  safeUrl,
  splitSqlStatements,
  type AppliedRow,
  type MigrationFile,
} from '../../../../operators/postgres/migrate.ts';
import { resolveTargets } from '../../../../operators/postgres/migrate-cli.ts';

const FIXTURES = new URL('../../../fixtures/migrations', import.meta.url).pathname;

describe('migration file names', () => {
  it('parses NNNN_description.sql into a numeric version', () => {
    expect(parseMigrationFileName('0001_telemetry_tables.sql')).toEqual({ version: 1, description: 'telemetry_tables' });
    expect(parseMigrationFileName('10_tenth.sql')).toEqual({ version: 10, description: 'tenth' });
    expect(parseMigrationFileName('0042_add-index.v2.sql')).toEqual({ version: 42, description: 'add-index.v2' });
  });

  it('rejects names that break the rule', () => {
    for (const bad of ['create.sql', '0001.sql', '0001_.sql', '0001-x.sql', 'x_0001.sql', '0001_x.SQL', '0001_x.sql.bak', '99999999999_x.sql', '0001_ x.sql']) {
      expect(parseMigrationFileName(bad), bad).toBeUndefined();
    }
  });

  it('orders files by number, not by text (10 after 2)', () => {
    const files = loadMigrations(join(FIXTURES, 'ordered', 'app'));
    expect(files.map((f) => f.name)).toEqual(['1_first.sql', '2_second.sql', '10_tenth.sql']);
    expect(files.map((f) => f.version)).toEqual([1, 2, 10]);
  });

  it('lists every problem of a folder at once', () => {
    let err: unknown;
    try {
      loadMigrations(join(FIXTURES, 'bad_files', 'app'));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RunnerError);
    const msg = (err as RunnerError).message;
    expect((err as RunnerError).code).toBe('CONFIG_INVALID');
    expect(msg).toContain('create_tables.sql: not a migration file name');
    expect(msg).toMatch(/0001_duplicate\.sql and 0001_ok\.sql have the same version 1/);
    expect(msg).toContain('0002_typo_marker.sql: line 1: unknown marker "-- runner:no-transactoin"');
    expect(msg).toMatch(/0003_own_transaction\.sql:1: "BEGIN": no transaction control/);
    expect(msg).toMatch(/0003_own_transaction\.sql:3: "COMMIT"/);
    expect(msg).toContain('0004_unterminated.sql: unterminated string starting at line 1:8');
    expect(msg).toContain('0005_empty.sql: has no SQL statement');
    expect(msg).toContain('0006_late_marker.sql: line 2: marker after the first SQL line');
  });

  it('a missing folder is an error naming it', () => {
    expect(() => loadMigrations(join(FIXTURES, 'nope'))).toThrow(/no migrations folder .*nope/);
  });
});

describe('checksums', () => {
  it('are the sha256 of the file bytes, hex', () => {
    expect(checksum('')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    const [first] = loadMigrations(join(FIXTURES, 'ordered', 'app'));
    expect(first.checksum).toBe(createHash('sha256').update(readFileSync(first.path)).digest('hex'));
  });

  it('change with any byte, line endings and trailing spaces included', () => {
    const base = 'CREATE TABLE t (id int);\n';
    expect(checksum(base)).not.toBe(checksum(base.replace('\n', '\r\n')));
    expect(checksum(base)).not.toBe(checksum(`${base} `));
    expect(checksum(base)).toBe(checksum(Buffer.from(base)));
  });
});

describe('markers', () => {
  it('are read from the comment lines at the top', () => {
    const { markers, problems } = parseMarkers('-- Hourly aggregates\n-- runner:timescaledb-only\n--runner:no-transaction\n\nSELECT 1;\n');
    expect([...markers].sort()).toEqual(['no-transaction', 'timescaledb-only']);
    expect(problems).toEqual([]);
  });

  it('unknown or misplaced markers are problems', () => {
    expect(parseMarkers('-- runner:no-transactions\nSELECT 1;').problems[0]).toMatch(/line 1: unknown marker/);
    expect(parseMarkers('-- runner:no-transaction please\nSELECT 1;').problems[0]).toMatch(/alone on its line/);
    expect(parseMarkers('SELECT 1;\n-- runner:no-transaction\n').problems[0]).toMatch(/line 2: marker after the first SQL line/);
  });

  it('the project files carry the markers the TimescaleDB parts need', () => {
    const files = loadMigrations(join(DEFAULT_MIGRATIONS_DIR, 'telemetry'));
    const by = Object.fromEntries(files.map((f) => [f.name, f]));
    expect(by['0001_telemetry_tables.sql']).toMatchObject({ transactional: true, timescaledbOnly: false });
    expect(by['0002_timescaledb_hypertables.sql']).toMatchObject({ transactional: true, timescaledbOnly: true });
    expect(by['0003_timescaledb_hourly_aggregates.sql']).toMatchObject({ transactional: false, timescaledbOnly: true });
  });
});

describe('splitting statements (for no-transaction files)', () => {
  const texts = (sql: string) => splitSqlStatements(sql).map((s) => s.text.trim());

  it('splits at top-level semicolons and keeps lines', () => {
    const s = splitSqlStatements('-- head\nCREATE TABLE a (id int);\n\nCREATE TABLE b (id int);');
    expect(s.map((x) => x.text.trim())).toEqual(['-- head\nCREATE TABLE a (id int)', 'CREATE TABLE b (id int)']);
    expect(s.map((x) => x.line)).toEqual([2, 4]);
  });

  it('ignores semicolons in strings, identifiers, comments and dollar quotes', () => {
    const sql = [
      "SELECT 'a;b', 'it''s;', E'x\\';y', \"we;ird\" FROM t",
      "/* c; /* nested; */ still; */ SELECT 2",
      "-- line; comment\nSELECT 3",
      'DO $$ BEGIN PERFORM 1; END $$',
      'CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$',
      'SELECT a$b FROM t',
    ].join(';\n');
    expect(texts(sql)).toHaveLength(6);
    expect(texts(sql)[3]).toBe('DO $$ BEGIN PERFORM 1; END $$');
  });

  it('keeps a BEGIN ATOMIC function body in one statement', () => {
    const sql = 'CREATE FUNCTION g(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END; SELECT 2; END;\nSELECT 3;';
    expect(texts(sql)).toEqual(['CREATE FUNCTION g(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END; SELECT 2; END', 'SELECT 3']);
  });

  it('drops comment-only pieces and reports unterminated quotes', () => {
    expect(texts('SELECT 1;\n-- trailing comment\n')).toEqual(['SELECT 1']);
    expect(() => splitSqlStatements('SELECT $$ open')).toThrow(/unterminated dollar quote \$\$ starting at line 1:8/);
    expect(() => splitSqlStatements('SELECT 1 /* open')).toThrow(/unterminated \/\* comment/);
  });
});

describe('planning: applied, pending, changed, missing', () => {
  const file = (version: number, name: string, extra: Partial<MigrationFile> = {}): MigrationFile => ({
    version,
    name,
    description: name,
    path: `/x/${name}`,
    checksum: `sum-${name}`,
    sql: 'SELECT 1',
    transactional: true,
    timescaledbOnly: false,
    statements: [],
    ...extra,
  });
  const row = (f: MigrationFile, extra: Partial<AppliedRow> = {}): AppliedRow => ({
    version: f.version,
    name: f.name,
    checksum: f.checksum,
    applied_at: new Date('2024-01-01T00:00:00Z'),
    duration_ms: 5,
    mode: 'plain',
    transactional: f.transactional,
    skipped: false,
    ...extra,
  });
  const a = file(1, '0001_a.sql');
  const b = file(2, '0002_b.sql');
  const ts = file(3, '0003_ts.sql', { timescaledbOnly: true });

  it('files without a row are pending, in order', () => {
    const p = planMigrations([a, b, ts], [row(a)], 'plain');
    expect(p.entries.map((e) => e.state)).toEqual(['applied', 'pending', 'pending']);
    expect(p.pending.map((e) => e.name)).toEqual(['0002_b.sql', '0003_ts.sql']);
    expect(p.problems).toEqual([]);
  });

  it('a changed checksum or name is a problem naming the file', () => {
    const p = planMigrations([a, b], [row(a, { checksum: 'other' }), row(b, { name: '0002_old.sql' })], 'plain');
    expect(p.entries.map((e) => e.state)).toEqual(['changed', 'changed']);
    expect(p.problems[0]).toMatch(/^0001_a\.sql was changed after it was applied on 2024-01-01/);
    expect(p.problems[1]).toMatch(/^0002_b\.sql: version 2 was applied as 0002_old\.sql/);
  });

  it('a recorded file that is gone, and a pending file below an applied one, are problems', () => {
    const p = planMigrations([a, ts], [row(b), row(ts)], 'plain');
    expect(p.entries.map((e) => [e.name, e.state])).toEqual([
      ['0001_a.sql', 'pending'],
      ['0002_b.sql', 'missing'],
      ['0003_ts.sql', 'applied'],
    ]);
    expect(p.problems.join('\n')).toMatch(/0001_a\.sql is pending but a later version \(3\)/);
    expect(p.problems.join('\n')).toMatch(/0002_b\.sql is recorded as applied but is not in the migrations folder/);
  });

  it('a timescaledb-only file skipped in plain mode is pending again once timescaledb is available', () => {
    const rows = [row(a), row(b), row(ts, { skipped: true, duration_ms: 0 })];
    expect(planMigrations([a, b, ts], rows, 'plain').entries.map((e) => e.state)).toEqual(['applied', 'applied', 'skipped']);
    const upgrade = planMigrations([a, b, ts], rows, 'timescaledb');
    expect(upgrade.pending.map((e) => e.name)).toEqual(['0003_ts.sql']);
    expect(upgrade.problems).toEqual([]);
  });
});

describe('databases and URLs', () => {
  it('the project has one folder per database', () => {
    expect(listDatabaseFolders()).toEqual(['telemetry', 'heatpump_settings', 'services']);
  });

  it('a URL comes from <NAME>_DATABASE_URL, else the local default', () => {
    expect(databaseUrlEnvName('heatpump_settings')).toBe('HEATPUMP_SETTINGS_DATABASE_URL');
    expect(databaseUrl('telemetry', {})).toBe('postgres://postgres@127.0.0.1:5432/telemetry');
    expect(databaseUrl('telemetry', { TELEMETRY_DATABASE_URL: 'postgres://u@db:5433/tele' })).toBe('postgres://u@db:5433/tele');
  });

  it('passwords never appear in printed URLs', () => {
    expect(safeUrl('postgres://app:s3cr%40t@db:5432/telemetry')).not.toContain('s3cr');
    expect(safeUrl('postgres://app:s3cr%40t@db:5432/telemetry')).toContain('postgres://app:');
  });

  it('--database takes a folder name, a URL named after a folder, or folder=url', () => {
    const env = { SERVICES_DATABASE_URL: 'postgres://svc@db/services_prod' };
    expect(resolveTargets([], DEFAULT_MIGRATIONS_DIR, env).map((t) => t.database)).toEqual(['telemetry', 'heatpump_settings', 'services']);
    expect(resolveTargets(['services'], DEFAULT_MIGRATIONS_DIR, env)).toEqual([{ database: 'services', url: 'postgres://svc@db/services_prod' }]);
    expect(resolveTargets(['postgres://u:p@h:5/telemetry'], DEFAULT_MIGRATIONS_DIR, env)).toEqual([{ database: 'telemetry', url: 'postgres://u:p@h:5/telemetry' }]);
    expect(resolveTargets(['telemetry=postgres://u@h/t_prod'], DEFAULT_MIGRATIONS_DIR, env)).toEqual([{ database: 'telemetry', url: 'postgres://u@h/t_prod' }]);
  });

  it('a --database that names no folder is an error that lists the folders and hides the password', () => {
    expect(() => resolveTargets(['bogus'], DEFAULT_MIGRATIONS_DIR, {})).toThrow(/no folder .*bogus; database folders: telemetry, heatpump_settings, services/);
    let msg = '';
    try {
      resolveTargets(['postgres://u:hunter2@h/telemetry_prod'], DEFAULT_MIGRATIONS_DIR, {});
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/no migrations folder named after its database "telemetry_prod".*--database <folder>=<url>/);
    expect(msg).not.toContain('hunter2');
  });

  it('the lock key is a fixed bigint', () => {
    expect(BigInt(MIGRATE_LOCK_KEY) < 2n ** 63n).toBe(true);
    expect(MIGRATE_LOCK_KEY).toBe(Buffer.from('runnmigr').readBigInt64BE().toString());
    expect(MIGRATE_LOCK_KEY).toBe('8247619713160013682');
  });
});

describe('the project migrations', () => {
  it('every folder loads without problems, and only timescaledb-only files use TimescaleDB', () => {
    for (const db of listDatabaseFolders()) {
      for (const f of loadMigrations(join(DEFAULT_MIGRATIONS_DIR, db))) {
        const usesTimescale = /create_hypertable|timescaledb|time_bucket|add_\w+_policy/i.test(f.sql.replace(/--[^\n]*/g, ''));
        expect(usesTimescale, `${db}/${f.name}`).toBe(f.timescaledbOnly);
      }
    }
  });
});
