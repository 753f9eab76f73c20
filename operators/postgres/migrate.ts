/**
 * Schema migrations: numbered SQL files in `migrations/<database>/NNNN_description.sql`, one folder
 * per database, applied in numeric order and recorded in `public.schema_migrations` of that
 * database. docs/migrations.md is the user's guide; this is the library behind `runner migrate`
 * (operators/postgres/migrate-cli.ts) and behind `assertMigrated`, which sinks call at startup.
 *
 * - Each file runs in its own transaction together with the INSERT of its schema_migrations row,
 *   unless its header says `-- runner:no-transaction` (then statement by statement, recorded after
 *   the last one).
 * - `-- runner:timescaledb-only` files run only where the `timescaledb` extension is available; in
 *   plain mode they are recorded as skipped, and applied by a later `migrate` once it is available.
 * - The checksum (sha256 of the file's bytes) of an applied file must not change: an edited file
 *   is an error naming it, and nothing is applied.
 * - A session advisory lock (one fixed key; PostgreSQL scopes advisory locks per database) makes
 *   concurrent runs safe: the second waits, then reads schema_migrations and finds nothing to do.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import { PROJECT_ROOT } from '../../core/paths.ts';
import { redactString } from '../../core/redact.ts';

/** The project's migrations folder (migrations/ next to runner.ts). */
export const DEFAULT_MIGRATIONS_DIR = join(PROJECT_ROOT, 'migrations');

/** The databases of the stack, in the order `runner migrate` takes them (other folders follow, sorted). */
export const KNOWN_DATABASES = ['telemetry', 'heatpump_settings', 'services'] as const;

/**
 * Key of the advisory lock `migrate` holds while it works: the ASCII bytes of "runnmigr" as a
 * bigint. Advisory locks are per database, so this one key locks each database separately.
 */
export const MIGRATE_LOCK_KEY = BigInt('0x72756e6e6d696772').toString();

export const MIGRATIONS_TABLE = 'public.schema_migrations';

export const MARKERS = {
  'no-transaction': 'run statement by statement outside a transaction (for statements that refuse to run in one)',
  'timescaledb-only': 'run only where the timescaledb extension is available; recorded as skipped in plain mode',
} as const;

export type Mode = 'timescaledb' | 'plain';

export interface SqlStatement {
  /** The statement's text as in the file (leading comments included, the terminating `;` not). */
  text: string;
  /** Offset of `text` in the file's text. */
  offset: number;
  /** 1-based line of the statement's first code character. */
  line: number;
}

export interface MigrationFile {
  version: number;
  /** File name, e.g. `0001_telemetry_tables.sql`. */
  name: string;
  description: string;
  path: string;
  /** sha256 of the file's bytes, hex. */
  checksum: string;
  /** The SQL (a byte order mark removed). */
  sql: string;
  transactional: boolean;
  timescaledbOnly: boolean;
  statements: SqlStatement[];
}

export interface AppliedRow {
  version: number;
  name: string;
  checksum: string;
  applied_at: Date;
  duration_ms: number;
  mode: Mode;
  transactional: boolean;
  skipped: boolean;
}

export type EntryState =
  /** recorded and the file is unchanged */
  | 'applied'
  /** timescaledb-only, recorded as skipped in plain mode */
  | 'skipped'
  /** not recorded yet (or skipped and now timescaledb is available) */
  | 'pending'
  /** recorded, but the file's checksum or name differs: an error */
  | 'changed'
  /** recorded, but no such file in the folder */
  | 'missing';

export interface Entry {
  version: number;
  name: string;
  state: EntryState;
  file?: MigrationFile;
  row?: AppliedRow;
  /** Why the entry is in its state, for changed / missing / out-of-order entries and upgrades. */
  note?: string;
}

export interface Plan {
  entries: Entry[];
  /** Entries that `migrate` would run or record, in order. */
  pending: Entry[];
  /** Problems that make `migrate` refuse to do anything. */
  problems: string[];
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

const FILE_NAME = /^(\d+)_([A-Za-z0-9][A-Za-z0-9_.-]*)\.sql$/;

/** `0001_create_tables.sql` -> { version: 1, description: 'create_tables' }; undefined if it does not follow the rule. */
export function parseMigrationFileName(name: string): { version: number; description: string } | undefined {
  const m = FILE_NAME.exec(name);
  if (!m) return undefined;
  const version = Number(m[1]);
  if (!Number.isSafeInteger(version) || version > 2_147_483_647) return undefined;
  return { version, description: m[2] };
}

export function checksum(content: string | Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}

/** 1-based line and column of a character offset. */
export function lineCol(text: string, offset: number): { line: number; col: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text[i] === '\n') {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, col: offset - lineStart + 1 };
}

const IDENT_START = /[A-Za-z_\u0080-\uffff]/;
const IDENT_PART = /[A-Za-z0-9_$\u0080-\uffff]/;
const DOLLAR_TAG = /^\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/;

/**
 * Split SQL into statements at top-level semicolons, the way psql does: not inside quotes ('',
 * E'' with backslashes, ""), dollar quotes ($$, $tag$), comments (--, nested /* *\/) or a
 * `BEGIN ATOMIC ... END` function body. Statements that are only comments are dropped.
 * Throws on an unterminated quote or comment.
 */
export function splitSqlStatements(sql: string): SqlStatement[] {
  const out: SqlStatement[] = [];
  const n = sql.length;
  let i = 0;
  let start = 0;
  let codeStart = -1;
  let words: string[] = [];
  let atomicDepth = 0;
  const unterminated = (what: string, at: number): never => {
    const { line, col } = lineCol(sql, at);
    throw new Error(`unterminated ${what} starting at line ${line}:${col}`);
  };
  const code = (at: number) => {
    if (codeStart < 0) codeStart = at;
  };
  const finish = (end: number) => {
    if (codeStart >= 0) out.push({ text: sql.slice(start, end), offset: start, line: lineCol(sql, codeStart).line });
    start = end + 1;
    codeStart = -1;
    words = [];
    atomicDepth = 0;
  };
  while (i < n) {
    const c = sql[i];
    if (c === '-' && sql[i + 1] === '-') {
      const nl = sql.indexOf('\n', i);
      i = nl < 0 ? n : nl + 1;
      continue;
    }
    if (c === '/' && sql[i + 1] === '*') {
      const from = i;
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql[i] === '/' && sql[i + 1] === '*') {
          depth++;
          i += 2;
        } else if (sql[i] === '*' && sql[i + 1] === '/') {
          depth--;
          i += 2;
        } else i++;
      }
      if (depth > 0) unterminated('/* comment', from);
      continue;
    }
    if (c === "'" || c === '"') {
      code(i);
      i = skipQuoted(sql, i, c, false, unterminated);
      continue;
    }
    if (c === '$') {
      const m = DOLLAR_TAG.exec(sql.slice(i, i + 200));
      if (m) {
        code(i);
        const close = sql.indexOf(m[0], i + m[0].length);
        if (close < 0) unterminated(`dollar quote ${m[0]}`, i);
        i = close + m[0].length;
        continue;
      }
    }
    if (IDENT_START.test(c)) {
      code(i);
      let j = i + 1;
      while (j < n && IDENT_PART.test(sql[j])) j++;
      const word = sql.slice(i, j).toUpperCase();
      i = j;
      if (word === 'E' && sql[i] === "'") {
        i = skipQuoted(sql, i, "'", true, unterminated);
        continue;
      }
      if (atomicDepth > 0) {
        if (word === 'CASE') atomicDepth++;
        else if (word === 'END') atomicDepth--;
      } else if (word === 'ATOMIC' && words[words.length - 1] === 'BEGIN' && words[0] === 'CREATE') {
        atomicDepth = 1;
      }
      if (words.length < 64) words.push(word);
      continue;
    }
    if (c === ';' && atomicDepth === 0) {
      finish(i);
      i++;
      continue;
    }
    if (!/\s/.test(c)) code(i);
    i++;
  }
  finish(n);
  return out;
}

function skipQuoted(sql: string, i: number, quote: string, backslashEscapes: boolean, unterminated: (what: string, at: number) => never): number {
  const from = i;
  i++;
  while (i < sql.length) {
    const ch = sql[i];
    if (backslashEscapes && ch === '\\') {
      i += 2;
      continue;
    }
    if (ch === quote) {
      if (sql[i + 1] === quote) {
        i += 2;
        continue;
      }
      return i + 1;
    }
    i++;
  }
  return unterminated(quote === "'" ? 'string' : 'quoted identifier', from);
}

const MARKER_LINE = /^\s*--\s*runner:\s*(\S*)\s*$/;
const ANY_MARKER = /^\s*--\s*runner:/;

/** The `-- runner:<marker>` lines among the comment lines at the top of a file, and problems with markers. */
export function parseMarkers(sql: string): { markers: Set<string>; problems: string[] } {
  const markers = new Set<string>();
  const problems: string[] = [];
  const lines = sql.split('\n');
  let header = true;
  lines.forEach((text, idx) => {
    const line = idx + 1;
    if (header && (text.trim() === '' || /^\s*--/.test(text))) {
      const m = MARKER_LINE.exec(text);
      if (m) {
        if (m[1] in MARKERS) markers.add(m[1]);
        else problems.push(`line ${line}: unknown marker "-- runner:${m[1]}"; known: ${Object.keys(MARKERS).map((k) => `runner:${k}`).join(', ')}`);
      } else if (ANY_MARKER.test(text)) {
        problems.push(`line ${line}: a marker is written "-- runner:<name>" alone on its line`);
      }
      return;
    }
    header = false;
    if (ANY_MARKER.test(text)) problems.push(`line ${line}: marker after the first SQL line; markers count only in the comment lines at the top of the file`);
  });
  return { markers, problems };
}

const TX_CONTROL = /^(BEGIN|COMMIT|ROLLBACK|END|ABORT|START\s+TRANSACTION|PREPARE\s+TRANSACTION|COMMIT\s+PREPARED|ROLLBACK\s+PREPARED)\b/i;

/** The first code of a statement (comments skipped), to recognise transaction control. */
function statementHead(s: SqlStatement): string {
  return s.text
    .replace(/--[^\n]*/g, ' ')
    .replace(/\/\*[\s\S]*?\*\//g, ' ')
    .trim()
    .slice(0, 40);
}

/** Parse one migration file; problems are returned, not thrown. */
export function readMigrationFile(path: string, name: string): { file?: MigrationFile; problems: string[] } {
  const parsed = parseMigrationFileName(name);
  if (!parsed) return { problems: [`${name}: not a migration file name; expected NNNN_description.sql (digits, "_", letters, digits, "_", ".", "-")`] };
  const bytes = readFileSync(path);
  const sql = bytes.toString('utf8').replace(/^\uFEFF/, '');
  const problems: string[] = [];
  const { markers, problems: markerProblems } = parseMarkers(sql);
  problems.push(...markerProblems.map((p) => `${name}: ${p}`));
  let statements: SqlStatement[] = [];
  try {
    statements = splitSqlStatements(sql);
  } catch (err) {
    problems.push(`${name}: ${errorMessage(err)}`);
  }
  if (!problems.length && statements.length === 0) problems.push(`${name}: has no SQL statement`);
  for (const s of statements) {
    const head = statementHead(s);
    if (TX_CONTROL.test(head)) {
      problems.push(
        `${name}:${s.line}: "${head.split(/\s+/).slice(0, 2).join(' ')}": no transaction control in migration files; each file runs in its own transaction (or, with "-- runner:no-transaction", statement by statement without one)`,
      );
    }
  }
  return {
    file: {
      version: parsed.version,
      name,
      description: parsed.description,
      path,
      checksum: checksum(bytes),
      sql,
      transactional: !markers.has('no-transaction'),
      timescaledbOnly: markers.has('timescaledb-only'),
      statements,
    },
    problems,
  };
}

/**
 * Every migration of one database folder, in numeric order. Throws a CONFIG_INVALID RunnerError
 * listing every problem: a name that breaks the rule, two files with one version, a bad marker,
 * transaction control in a file, an unterminated quote. Dotfiles are ignored.
 */
export function loadMigrations(folder: string): MigrationFile[] {
  if (!existsSync(folder) || !statSync(folder).isDirectory()) {
    throw new RunnerError('CONFIG_INVALID', `no migrations folder ${folder}`);
  }
  const problems: string[] = [];
  const files: MigrationFile[] = [];
  for (const entry of readdirSync(folder, { withFileTypes: true })) {
    if (entry.name.startsWith('.')) continue;
    if (!entry.isFile()) {
      problems.push(`${entry.name}: only SQL files belong in a database's migrations folder`);
      continue;
    }
    const res = readMigrationFile(join(folder, entry.name), entry.name);
    problems.push(...res.problems);
    if (res.file) files.push(res.file);
  }
  files.sort((a, b) => a.version - b.version || a.name.localeCompare(b.name));
  for (let k = 1; k < files.length; k++) {
    if (files[k].version === files[k - 1].version) problems.push(`${files[k - 1].name} and ${files[k].name} have the same version ${files[k].version}; renumber one`);
  }
  if (problems.length) {
    throw new RunnerError('CONFIG_INVALID', `migrations in ${folder} have ${problems.length} problem(s):\n  ${problems.join('\n  ')}`);
  }
  return files;
}

/** Database folders under a migrations folder: the known ones first, then the others sorted. */
export function listDatabaseFolders(dir: string = DEFAULT_MIGRATIONS_DIR): string[] {
  if (!existsSync(dir)) throw new RunnerError('CONFIG_INVALID', `no migrations folder ${dir}`);
  const names = readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => e.name);
  const known = KNOWN_DATABASES.filter((k) => names.includes(k));
  return [...known, ...names.filter((n) => !known.includes(n as (typeof KNOWN_DATABASES)[number])).sort()];
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

/** `heatpump_settings` -> `HEATPUMP_SETTINGS_DATABASE_URL`. */
export function databaseUrlEnvName(database: string): string {
  return `${database.toUpperCase().replace(/[^A-Z0-9]+/g, '_')}_DATABASE_URL`;
}

/** The URL of a database: `<NAME>_DATABASE_URL`, else postgres://postgres@127.0.0.1:5432/<name>. */
export function databaseUrl(database: string, env: NodeJS.ProcessEnv = process.env): string {
  return env[databaseUrlEnvName(database)] || `postgres://postgres@127.0.0.1:5432/${encodeURIComponent(database)}`;
}

/** The URL with its password replaced, for messages. */
export function safeUrl(url: string): string {
  return redactString(url);
}

interface Where {
  database: string;
  host: string;
  user: string;
  url: string;
}

function describeUrl(url: string, database: string): Where {
  try {
    const u = new URL(url);
    const host = u.hostname || process.env.PGHOST || 'localhost';
    return { database: decodeURIComponent(u.pathname.slice(1)) || database, host: `${host}:${u.port || '5432'}`, user: decodeURIComponent(u.username) || process.env.PGUSER || 'postgres', url: safeUrl(url) };
  } catch {
    return { database, host: '?', user: '?', url: safeUrl(url) };
  }
}

/** A connection error as a RunnerError that names the database and host (never the password) and says how to fix it. */
export function connectionError(err: unknown, url: string, folder: string): RunnerError {
  const w = describeUrl(url, folder);
  const e = err as { code?: string; message?: string; errors?: { code?: string }[] };
  const code = e?.code ?? e?.errors?.[0]?.code;
  const msg = redactString(errorMessage(err));
  const env = databaseUrlEnvName(folder);
  const setUrl = `set ${env} or --database ${folder}=<url>`;
  const at = `database "${w.database}" on ${w.host} (${w.url})`;
  if (code === '3D000') {
    return new RunnerError('CONFIG_INVALID', `${at} does not exist: create it (psql -h ${w.host.split(':')[0]} -p ${w.host.split(':')[1]} -U ${w.user} -c 'CREATE DATABASE ${w.database}', or \`bash scripts/stack up\` locally) or ${setUrl}`, { cause: err });
  }
  if (code === '28P01' || code === '28000' || /SASL|password/i.test(msg)) {
    return new RunnerError('AUTH_FAILED', `cannot log in to ${at} as user "${w.user}": ${msg}; check the user and password in ${env} (or --database)`, { cause: err });
  }
  if (code === '42501') {
    return new RunnerError('AUTH_FAILED', `user "${w.user}" may not connect to ${at}: ${msg}; GRANT CONNECT or use another user in ${env}`, { cause: err });
  }
  if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || code === '57P03' || /timeout|terminated/i.test(msg)) {
    return new RunnerError('CONNECTION_FAILED', `cannot reach PostgreSQL at ${w.host} for database "${w.database}" (${w.url}): ${msg || code}; is the server running (\`bash scripts/stack up\` locally)? Otherwise ${setUrl}`, { retryable: true, cause: err });
  }
  return new RunnerError('CONNECTION_FAILED', `cannot connect to ${at}: ${msg}; ${setUrl}`, { retryable: true, cause: err });
}

/**
 * An error from a query: connection trouble becomes connectionError; anything else the server
 * refused (permission denied, ...) a CONFIG_INVALID naming the database.
 */
export function queryError(err: unknown, url: string, folder: string, doing: string): RunnerError {
  if (err instanceof RunnerError) return err;
  const code = (err as { code?: string })?.code;
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && !/^(08|28|3D|57P)/.test(code)) {
    const w = describeUrl(url, folder);
    let msg = `database "${w.database}" on ${w.host}: ${doing} failed: ${redactString(errorMessage(err))} (SQLSTATE ${code})`;
    if (code === '42501') msg += `; the user "${w.user}" of ${databaseUrlEnvName(folder)} must own the database or have CREATE on schema public`;
    return new RunnerError('CONFIG_INVALID', msg, { cause: err });
  }
  return connectionError(err, url, folder);
}

export async function connect(url: string, folder: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000, application_name: 'runner migrate' });
  // An error event after connect (server restart) must not crash the process; the next query fails.
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => {});
    throw connectionError(err, url, folder);
  }
  return client;
}

/** Anything with a query method: pg.Pool, pg.Client, pg.PoolClient. */
export interface Queryable {
  query: (text: string, values?: unknown[]) => Promise<pg.QueryResult>;
}

// ---------------------------------------------------------------------------------------------
// State in the database
// ---------------------------------------------------------------------------------------------

/** `SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'`: timescaledb, else plain. */
export async function detectMode(db: Queryable): Promise<Mode> {
  const { rows } = await db.query("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'");
  return rows.length ? 'timescaledb' : 'plain';
}

const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE} (
  version integer PRIMARY KEY,
  name text NOT NULL,
  checksum text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  duration_ms integer NOT NULL,
  mode text NOT NULL CHECK (mode IN ('timescaledb', 'plain')),
  transactional boolean NOT NULL,
  skipped boolean NOT NULL DEFAULT false
)`;
const COLUMNS = ['version', 'name', 'checksum', 'applied_at', 'duration_ms', 'mode', 'transactional', 'skipped'];

async function checkTableShape(db: Queryable): Promise<void> {
  const { rows } = await db.query(
    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'schema_migrations'",
  );
  const have = rows.map((r) => r.column_name as string);
  const missing = COLUMNS.filter((c) => !have.includes(c));
  if (missing.length) {
    throw new RunnerError(
      'CONFIG_INVALID',
      `${MIGRATIONS_TABLE} exists but was not made by runner migrate (columns ${have.join(', ')}; missing ${missing.join(', ')}); rename it (ALTER TABLE schema_migrations RENAME TO schema_migrations_old) and record the old state by hand, or use another database`,
    );
  }
}

/** The recorded migrations, oldest version first; none when schema_migrations does not exist. */
export async function readApplied(db: Queryable): Promise<AppliedRow[]> {
  const { rows: exists } = await db.query("SELECT to_regclass('public.schema_migrations') IS NOT NULL AS present");
  if (!exists[0]?.present) return [];
  await checkTableShape(db);
  const { rows } = await db.query(`SELECT ${COLUMNS.join(', ')} FROM ${MIGRATIONS_TABLE} ORDER BY version`);
  return rows as AppliedRow[];
}

/** Compare the files with the recorded rows. Pure: used by migrate, --status and assertMigrated. */
export function planMigrations(files: MigrationFile[], applied: AppliedRow[], mode: Mode): Plan {
  const byVersion = new Map(applied.map((r) => [r.version, r]));
  const entries: Entry[] = [];
  const problems: string[] = [];
  const maxRecorded = applied.reduce((m, r) => Math.max(m, r.version), 0);
  for (const file of files) {
    const row = byVersion.get(file.version);
    byVersion.delete(file.version);
    if (!row) {
      const entry: Entry = { version: file.version, name: file.name, state: 'pending', file };
      if (file.version < maxRecorded) {
        entry.note = `out of order: version ${maxRecorded} is already recorded`;
        problems.push(`${file.name} is pending but a later version (${maxRecorded}) is already applied; renumber it above ${maxRecorded}`);
      }
      entries.push(entry);
    } else if (row.name !== file.name) {
      entries.push({ version: file.version, name: file.name, state: 'changed', file, row, note: `recorded as ${row.name}` });
      problems.push(`${file.name}: version ${file.version} was applied as ${row.name}; a migration keeps its file name once applied (restore the name, or add a new file)`);
    } else if (row.checksum !== file.checksum) {
      entries.push({ version: file.version, name: file.name, state: 'changed', file, row, note: `checksum ${file.checksum.slice(0, 12)} differs from the recorded ${row.checksum.slice(0, 12)}` });
      problems.push(
        `${file.name} was changed after it was ${row.skipped ? 'recorded (skipped)' : 'applied'} on ${row.applied_at.toISOString()} (checksum ${file.checksum.slice(0, 12)}..., recorded ${row.checksum.slice(0, 12)}...); applied files are never re-applied: restore it (git checkout) and put the change in a new file`,
      );
    } else if (row.skipped && mode === 'timescaledb' && file.timescaledbOnly) {
      entries.push({ version: file.version, name: file.name, state: 'pending', file, row, note: 'skipped in plain mode; timescaledb is available now' });
    } else {
      entries.push({ version: file.version, name: file.name, state: row.skipped ? 'skipped' : 'applied', file, row });
    }
  }
  for (const row of byVersion.values()) {
    entries.push({ version: row.version, name: row.name, state: 'missing', row, note: 'recorded, but the file is not in the folder' });
    problems.push(`${row.name} is recorded as applied but is not in the migrations folder (deleted or renamed? an older runner?); restore it`);
  }
  entries.sort((a, b) => a.version - b.version);
  return { entries, pending: entries.filter((e) => e.state === 'pending'), problems };
}

// ---------------------------------------------------------------------------------------------
// migrate, status, assertMigrated
// ---------------------------------------------------------------------------------------------

export interface TargetOptions {
  /** The folder name under `dir`: telemetry, heatpump_settings, services, ... */
  database: string;
  /** Default: `<DATABASE>_DATABASE_URL`, else postgres://postgres@127.0.0.1:5432/<database>. */
  url?: string;
  /** Default: the project's migrations/ folder. */
  dir?: string;
}

export interface MigrateOptions extends TargetOptions {
  /** Default: detected (pg_available_extensions). */
  mode?: Mode;
  /** Give up waiting for another run's lock after this long; 0 or undefined waits as long as it takes. */
  lockTimeoutMs?: number;
  /** Progress lines (waiting for the lock, each file applied). */
  log?: (line: string) => void;
}

export interface AppliedFile {
  name: string;
  version: number;
  /** applied = ran; skipped = timescaledb-only in plain mode, recorded without running. */
  action: 'applied' | 'skipped';
  duration_ms: number;
  transactional: boolean;
}

export interface MigrateResult {
  database: string;
  url: string;
  mode: Mode;
  files: AppliedFile[];
  /** Migrations recorded before this run. */
  alreadyApplied: number;
  /** Whether this run had to wait for another run's lock. */
  waited: boolean;
}

export interface StatusResult {
  database: string;
  url: string;
  mode: Mode;
  entries: Entry[];
  pending: Entry[];
  problems: string[];
}

/** A statement failed: name the file, the line, and what took effect. */
function migrationError(file: MigrationFile, err: unknown, statement: SqlStatement | undefined, done: number, database: string): RunnerError {
  const e = err as { position?: string; code?: string; detail?: string; hint?: string };
  let where = statement ? `:${statement.line}` : '';
  if (e?.position) {
    const pos = Number(e.position) - 1 + (statement?.offset ?? 0);
    const { line, col } = lineCol(file.sql, pos);
    where = `:${line}:${col}`;
  }
  const extra = [e?.detail && `detail: ${e.detail}`, e?.hint && `hint: ${e.hint}`].filter(Boolean).join('; ');
  let msg = `${database}: migration ${file.name}${where} failed: ${redactString(errorMessage(err))}${e?.code ? ` (SQLSTATE ${e.code})` : ''}${extra ? `; ${extra}` : ''}`;
  if (/preload|shared_preload_libraries/i.test(errorMessage(err))) msg += "; TimescaleDB must be in shared_preload_libraries (postgresql.conf: shared_preload_libraries = 'timescaledb', then restart PostgreSQL)";
  if (file.transactional) msg += `; rolled back: nothing of ${file.name} took effect and no later file was run`;
  else {
    msg += `; ${file.name} runs without a transaction (-- runner:no-transaction): ${done} of ${file.statements.length} statement(s) took effect and it is not recorded, so the next \`runner migrate\` runs the whole file again (write such files with IF NOT EXISTS / if_not_exists => TRUE); no later file was run`;
  }
  return new RunnerError('WRITE_FAILED', msg, { cause: err });
}

function lockIds(): { classid: number; objid: number } {
  const key = BigInt(MIGRATE_LOCK_KEY);
  return { classid: Number(key >> 32n), objid: Number(key & 0xffffffffn) };
}

async function lockHolder(db: Queryable): Promise<string> {
  const { classid, objid } = lockIds();
  const { rows } = await db.query(
    `SELECT a.pid, a.application_name, a.client_addr::text AS addr, a.backend_start
       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1`,
    [classid, objid],
  );
  const h = rows[0];
  return h ? `pid ${h.pid}${h.application_name ? ` (${h.application_name}${h.addr ? ` from ${h.addr}` : ''})` : ''}` : 'another session';
}

/** Take the migrate lock of this database, waiting for another run if there is one. */
async function acquireLock(client: pg.Client, database: string, lockTimeoutMs: number | undefined, log: (l: string) => void): Promise<boolean> {
  const { rows } = await client.query('SELECT pg_try_advisory_lock($1::bigint) AS ok', [MIGRATE_LOCK_KEY]);
  if (rows[0].ok) return false;
  const holder = await lockHolder(client);
  log(`${database}: another migrate run holds the lock (${holder}); waiting${lockTimeoutMs ? ` up to ${lockTimeoutMs / 1000} s` : ''}`);
  await client.query(`SET lock_timeout = ${Math.max(0, Math.floor(lockTimeoutMs ?? 0))}`);
  try {
    await client.query('SELECT pg_advisory_lock($1::bigint)', [MIGRATE_LOCK_KEY]);
  } catch (err) {
    if ((err as { code?: string }).code === '55P03') {
      throw new RunnerError('CONNECTION_FAILED', `${database}: another migrate run (${holder}) still holds the migrate lock after ${(lockTimeoutMs ?? 0) / 1000} s; nothing was applied. Wait for it, or raise --lock-timeout`, { retryable: true, cause: err });
    }
    throw err;
  } finally {
    await client.query('RESET lock_timeout').catch(() => {});
  }
  return true;
}

const INSERT_ROW = `INSERT INTO ${MIGRATIONS_TABLE} (version, name, checksum, applied_at, duration_ms, mode, transactional, skipped)
  VALUES ($1, $2, $3, now(), $4, $5, $6, $7)
  ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, checksum = EXCLUDED.checksum, applied_at = EXCLUDED.applied_at,
    duration_ms = EXCLUDED.duration_ms, mode = EXCLUDED.mode, transactional = EXCLUDED.transactional, skipped = EXCLUDED.skipped`;

function resolveTarget(opts: TargetOptions): { folder: string; url: string } {
  const dir = resolve(opts.dir ?? DEFAULT_MIGRATIONS_DIR);
  return { folder: join(dir, opts.database), url: opts.url ?? databaseUrl(opts.database) };
}

/**
 * Bring one database to the newest migration. Throws a RunnerError: CONFIG_INVALID for bad files,
 * an edited applied file or a missing one (then nothing is applied); WRITE_FAILED naming the file
 * and line when a migration fails (that file rolled back, no later file run); CONNECTION_FAILED /
 * AUTH_FAILED when the database cannot be reached.
 */
export async function migrateDatabase(opts: MigrateOptions): Promise<MigrateResult> {
  const { folder, url } = resolveTarget(opts);
  const log = opts.log ?? (() => {});
  const files = loadMigrations(folder);
  const client = await connect(url, opts.database);
  const database = opts.database;
  try {
    const mode = opts.mode ?? (await detectMode(client));
    const waited = await acquireLock(client, database, opts.lockTimeoutMs, log);
    try {
      const { rows: exists } = await client.query("SELECT to_regclass('public.schema_migrations') IS NOT NULL AS present");
      if (!exists[0].present) await client.query(CREATE_TABLE);
      const applied = await readApplied(client);
      const plan = planMigrations(files, applied, mode);
      if (plan.problems.length) {
        throw new RunnerError('CONFIG_INVALID', `${database}: nothing was applied: ${plan.problems.join('; ')}`);
      }
      const done: AppliedFile[] = [];
      for (const entry of plan.pending) {
        const file = entry.file!;
        if (file.timescaledbOnly && mode === 'plain') {
          await client.query(INSERT_ROW, [file.version, file.name, file.checksum, 0, mode, file.transactional, true]);
          done.push({ name: file.name, version: file.version, action: 'skipped', duration_ms: 0, transactional: file.transactional });
          log(`${database}: skipped ${file.name} (timescaledb-only; plain mode)`);
          continue;
        }
        const started = performance.now();
        let current: SqlStatement | undefined;
        let count = 0;
        try {
          if (file.transactional) {
            await client.query('BEGIN');
            await client.query(file.sql);
            const ms = Math.round(performance.now() - started);
            await client.query(INSERT_ROW, [file.version, file.name, file.checksum, ms, mode, true, false]);
            await client.query('COMMIT');
          } else {
            for (const s of file.statements) {
              current = s;
              await client.query(s.text);
              count++;
            }
            current = undefined;
            const ms = Math.round(performance.now() - started);
            await client.query(INSERT_ROW, [file.version, file.name, file.checksum, ms, mode, false, false]);
          }
        } catch (err) {
          if (file.transactional) await client.query('ROLLBACK').catch(() => {});
          throw migrationError(file, err, current, count, database);
        } finally {
          // A file may SET things (search_path, timeouts); the next file starts clean.
          await client.query('RESET ALL').catch(() => {});
        }
        const ms = Math.round(performance.now() - started);
        done.push({ name: file.name, version: file.version, action: 'applied', duration_ms: ms, transactional: file.transactional });
        log(`${database}: applied ${file.name} in ${ms} ms${file.transactional ? '' : ' (no transaction)'}`);
      }
      return { database, url: safeUrl(url), mode, files: done, alreadyApplied: applied.length, waited };
    } finally {
      await client.query('SELECT pg_advisory_unlock($1::bigint)', [MIGRATE_LOCK_KEY]).catch(() => {});
    }
  } catch (err) {
    throw queryError(err, url, opts.database, 'migrate');
  } finally {
    await client.end().catch(() => {});
  }
}

/** Applied, skipped and pending migrations of one database, and problems; changes nothing. */
export async function migrationStatus(opts: TargetOptions & { mode?: Mode }): Promise<StatusResult> {
  const { folder, url } = resolveTarget(opts);
  const files = loadMigrations(folder);
  const client = await connect(url, opts.database);
  try {
    const mode = opts.mode ?? (await detectMode(client));
    const plan = planMigrations(files, await readApplied(client), mode);
    return { database: opts.database, url: safeUrl(url), mode, ...plan };
  } catch (err) {
    throw queryError(err, url, opts.database, 'reading schema_migrations');
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * For sinks at startup: throws a CONFIG_INVALID RunnerError naming the database and its pending
 * (or edited) migrations and saying to run `runner migrate`, when the database is behind the
 * migrations folder. Timescaledb-only files recorded as skipped do not count as pending: the
 * plain tables work. `target` is a URL (a connection is opened and closed) or a pool/client.
 */
export async function assertMigrated(target: string | Queryable, database: string, opts: { dir?: string } = {}): Promise<void> {
  const { folder } = resolveTarget({ database, dir: opts.dir });
  const files = loadMigrations(folder);
  let client: pg.Client | undefined;
  let db: Queryable;
  if (typeof target === 'string') {
    client = await connect(target, database);
    db = client;
  } else db = target;
  try {
    let applied: AppliedRow[];
    let where: string;
    try {
      const { rows } = await db.query("SELECT current_database() AS db, coalesce(host(inet_server_addr()), 'local socket') AS host, inet_server_port() AS port");
      where = `database "${rows[0].db}"${rows[0].port ? ` on ${rows[0].host}:${rows[0].port}` : ''}`;
      applied = await readApplied(db);
    } catch (err) {
      throw queryError(err, typeof target === 'string' ? target : databaseUrl(database), database, 'reading schema_migrations');
    }
    // 'plain' here: a skipped timescaledb-only file is not pending for a sink.
    const plan = planMigrations(files, applied, 'plain');
    const pending = plan.entries.filter((e) => e.state === 'pending');
    const changed = plan.entries.filter((e) => e.state === 'changed');
    if (!pending.length && !changed.length) return;
    const parts: string[] = [];
    if (pending.length) parts.push(`${pending.length} pending migration(s): ${pending.map((e) => e.name).join(', ')}`);
    if (changed.length) parts.push(`changed after they were applied: ${changed.map((e) => e.name).join(', ')}`);
    throw new RunnerError(
      'CONFIG_INVALID',
      `${where} (migrations/${database}) is not migrated: ${parts.join('; ')}; run \`runner migrate --database ${database}\` before starting the pipeline`,
    );
  } finally {
    await client?.end().catch(() => {});
  }
}
