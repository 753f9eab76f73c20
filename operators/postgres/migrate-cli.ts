/**
 * `runner migrate`: apply the SQL migrations of migrations/<database>/, or list them (--status).
 *
 *   runner migrate                          # every database folder, URLs from <NAME>_DATABASE_URL
 *   runner migrate --database telemetry     # one of them
 *   runner migrate --database postgres://user@host/telemetry
 *   runner migrate --database telemetry=postgres://user@host/telemetry_prod
 *   runner migrate --status                 # applied, skipped and pending; changes nothing
 *
 * Exit codes: 0 done (--status: nothing pending); 1 --status: something pending or a problem;
 * 2 bad options, bad migration files, an edited applied file, or a database that cannot be
 * reached (nothing applied there); 3 a migration failed (rolled back; later files not run).
 */
import { existsSync } from 'node:fs';
import { join, relative, resolve, isAbsolute } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import {
  DEFAULT_MIGRATIONS_DIR,
  databaseUrl,
  listDatabaseFolders,
  migrateDatabase,
  migrationStatus,
  safeUrl,
  type Entry,
  type MigrateResult,
  type StatusResult,
} from './migrate.ts';

export const MIGRATE_EXIT = { OK: 0, PENDING: 1, USAGE: 2, FAILED: 3 } as const;

export interface MigrateFlags {
  database: string[];
  status?: boolean;
  dir: string;
  lockTimeout: number;
  json?: boolean;
}

export interface MigrateIo {
  stdout: (line: string) => void;
  stderr: (line: string) => void;
  env?: NodeJS.ProcessEnv;
}

export interface Target {
  database: string;
  url: string;
}

const FOLDER_NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const isUrl = (s: string) => /^postgres(ql)?:\/\//i.test(s);

/**
 * `--database` values -> (folder, URL) pairs. A name takes its URL from <NAME>_DATABASE_URL or
 * the default; a URL names its folder by its database name; `name=url` gives both.
 * No value: every folder under dir.
 */
export function resolveTargets(values: string[], dir: string, env: NodeJS.ProcessEnv = process.env): Target[] {
  const folders = listDatabaseFolders(dir);
  const known = (name: string, how: string) => {
    if (!folders.includes(name)) {
      throw new RunnerError('CONFIG_INVALID', `${how}: no folder ${join(displayPath(dir), name)}; database folders: ${folders.join(', ') || '(none)'}`);
    }
  };
  if (!values.length) return folders.map((database) => ({ database, url: databaseUrl(database, env) }));
  const out: Target[] = [];
  for (const value of values) {
    const eq = value.indexOf('=');
    let t: Target;
    if (!isUrl(value) && eq > 0) {
      const database = value.slice(0, eq);
      const url = value.slice(eq + 1);
      if (!isUrl(url)) throw new RunnerError('CONFIG_INVALID', `--database ${database}=...: expected a postgres:// URL after "="`);
      known(database, `--database ${database}=${safeUrl(url)}`);
      t = { database, url };
    } else if (isUrl(value)) {
      let name: string;
      try {
        name = decodeURIComponent(new URL(value).pathname.slice(1));
      } catch {
        throw new RunnerError('CONFIG_INVALID', `--database ${safeUrl(value)}: not a valid URL`);
      }
      if (!name) throw new RunnerError('CONFIG_INVALID', `--database ${safeUrl(value)}: the URL names no database; use --database <folder>=<url>`);
      if (!folders.includes(name)) {
        throw new RunnerError('CONFIG_INVALID', `--database ${safeUrl(value)}: no migrations folder named after its database "${name}" (folders: ${folders.join(', ')}); say which: --database <folder>=<url>`);
      }
      t = { database: name, url: value };
    } else if (FOLDER_NAME.test(value)) {
      known(value, `--database ${value}`);
      t = { database: value, url: databaseUrl(value, env) };
    } else {
      throw new RunnerError('CONFIG_INVALID', `--database ${safeUrl(value)}: expected a folder name (${folders.join(', ')}), a postgres:// URL, or <folder>=<url>`);
    }
    if (!out.some((o) => o.database === t.database)) out.push(t);
  }
  return out;
}

function displayPath(p: string): string {
  const r = relative(process.cwd(), p);
  return r && !r.startsWith('..') && !isAbsolute(r) ? r : p;
}

const modeText = (r: { mode: string }) => (r.mode === 'timescaledb' ? 'mode timescaledb' : 'mode plain (timescaledb extension not available: plain tables)');

export function formatMigrateResult(r: MigrateResult): string[] {
  const lines = [`${r.database} (${r.url}): ${modeText(r)}`];
  for (const f of r.files) {
    if (f.action === 'skipped') lines.push(`  skipped ${f.name} (timescaledb-only; applied by a later \`runner migrate\` once the extension is available)`);
    else lines.push(`  applied ${f.name} in ${f.duration_ms} ms${f.transactional ? '' : ' (no transaction)'}`);
  }
  const applied = r.files.filter((f) => f.action === 'applied').length;
  const skipped = r.files.length - applied;
  lines.push(
    r.files.length
      ? `  ${applied} applied${skipped ? `, ${skipped} skipped` : ''}; ${r.alreadyApplied + r.files.length} recorded in schema_migrations`
      : `  up to date (${r.alreadyApplied} recorded in schema_migrations${r.waited ? '; another migrate run applied them while this one waited' : ''})`,
  );
  return lines;
}

function entryLine(e: Entry): string {
  const flags = [e.file && !e.file.transactional ? 'no-transaction' : '', e.file?.timescaledbOnly ? 'timescaledb-only' : ''].filter(Boolean);
  const f = flags.length ? ` [${flags.join(', ')}]` : '';
  switch (e.state) {
    case 'applied':
      return `  applied  ${e.name}  ${e.row!.applied_at.toISOString()}  ${e.row!.mode}  ${e.row!.duration_ms} ms${f}`;
    case 'skipped':
      return `  skipped  ${e.name}  ${e.row!.applied_at.toISOString()}  (plain mode)${f}`;
    case 'pending':
      return `  pending  ${e.name}${f}${e.note ? `  (${e.note})` : ''}`;
    case 'changed':
      return `  CHANGED  ${e.name}  (${e.note})`;
    case 'missing':
      return `  MISSING  ${e.name}  (${e.note})`;
  }
}

export function formatStatus(s: StatusResult): string[] {
  const count = (st: string) => s.entries.filter((e) => e.state === st).length;
  const lines = [`${s.database} (${s.url}): ${modeText(s)}; ${count('applied')} applied, ${count('skipped')} skipped, ${count('pending')} pending`];
  for (const e of s.entries) lines.push(entryLine(e));
  for (const p of s.problems) lines.push(`  problem: ${p}`);
  return lines;
}

function statusJson(s: StatusResult) {
  return {
    database: s.database,
    url: s.url,
    mode: s.mode,
    migrations: s.entries.map((e) => ({
      version: e.version,
      name: e.name,
      state: e.state,
      applied_at: e.row?.applied_at?.toISOString() ?? null,
      mode: e.row?.mode ?? null,
      duration_ms: e.row?.duration_ms ?? null,
      transactional: e.file?.transactional ?? e.row?.transactional ?? null,
      timescaledb_only: e.file?.timescaledbOnly ?? null,
      note: e.note ?? null,
    })),
    problems: s.problems,
  };
}

/** Run `migrate` with parsed flags; returns the exit code. */
export async function runMigrate(flags: MigrateFlags, io: MigrateIo): Promise<number> {
  const dir = resolve(flags.dir);
  let targets: Target[];
  try {
    if (!existsSync(dir)) throw new RunnerError('CONFIG_INVALID', `no migrations folder ${displayPath(dir)}`);
    targets = resolveTargets(flags.database, dir, io.env ?? process.env);
    if (!targets.length) throw new RunnerError('CONFIG_INVALID', `no database folders in ${displayPath(dir)}`);
  } catch (err) {
    io.stderr(`migrate: ${errorMessage(err)}`);
    return MIGRATE_EXIT.USAGE;
  }
  const json: unknown[] = [];
  let code: number = MIGRATE_EXIT.OK;
  for (let k = 0; k < targets.length; k++) {
    const t = targets[k];
    try {
      if (flags.status) {
        const s = await migrationStatus({ database: t.database, url: t.url, dir });
        if (flags.json) json.push(statusJson(s));
        else for (const l of formatStatus(s)) io.stdout(l);
        if ((s.pending.length || s.problems.length) && code === MIGRATE_EXIT.OK) code = MIGRATE_EXIT.PENDING;
      } else {
        const r = await migrateDatabase({
          database: t.database,
          url: t.url,
          dir,
          lockTimeoutMs: flags.lockTimeout * 1000,
          log: (l) => {
            if (/waiting/.test(l)) io.stderr(`migrate: ${l}`);
          },
        });
        if (flags.json) json.push({ database: r.database, url: r.url, mode: r.mode, files: r.files, already_applied: r.alreadyApplied });
        else for (const l of formatMigrateResult(r)) io.stdout(l);
      }
    } catch (err) {
      const failed = err instanceof RunnerError && err.code === 'WRITE_FAILED';
      io.stderr(`migrate: ${errorMessage(err)}`);
      const rest = targets.slice(k + 1).map((x) => x.database);
      if (rest.length) io.stderr(`migrate: stopped; not attempted: ${rest.join(', ')}`);
      if (flags.json) io.stdout(JSON.stringify(json, null, 2));
      return failed ? MIGRATE_EXIT.FAILED : MIGRATE_EXIT.USAGE;
    }
  }
  if (flags.json) io.stdout(JSON.stringify(json, null, 2));
  return code;
}

const seconds = (text: string) => {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`expected a number of seconds >= 0, got "${text}"`);
  return n;
};

/** Add `migrate` to a commander program (the runner's CLI: `migrateCommand(program)`). */
export function migrateCommand(program: Command, io: MigrateIo & { exit?: (code: number) => void } = defaultIo()): Command {
  return program
    .command('migrate')
    .description('Apply the numbered SQL migrations of migrations/<database>/ (each in its own transaction, recorded in schema_migrations), or list them with --status.')
    .addOption(
      new Option('--database <name|url>', 'a database folder name (URL from <NAME>_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/<name>), a postgres:// URL whose database names the folder, or <name>=<url>; repeatable')
        .argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v])
        .default([], 'every folder in --dir'),
    )
    .addOption(new Option('--status', 'list applied, skipped and pending migrations per database; change nothing (exit 1 when something is pending)'))
    .addOption(new Option('--dir <dir>', 'folder with one subfolder of NNNN_description.sql files per database').default(DEFAULT_MIGRATIONS_DIR, 'migrations'))
    .addOption(new Option('--lock-timeout <seconds>', 'give up when another migrate run holds the lock this long (0 = wait)').argParser(seconds).default(0))
    .addOption(new Option('--json', 'print the result as JSON on stdout'))
    .addHelpText(
      'after',
      '\nMarkers in a file\'s first comment lines: "-- runner:no-transaction" (statement by statement, for statements that cannot run in a transaction), "-- runner:timescaledb-only" (skipped and recorded as such where the timescaledb extension is not available).\nExit codes: 0 done (--status: nothing pending), 1 --status: pending or problems, 2 bad options/files, an edited applied file or no connection, 3 a migration failed (rolled back).',
    )
    .action(async (raw: MigrateFlags) => {
      const code = await runMigrate(raw, io);
      (io.exit ?? process.exit)(code);
    });
}

function defaultIo(): MigrateIo & { exit: (code: number) => void } {
  return {
    stdout: (l) => process.stdout.write(`${l}\n`),
    stderr: (l) => process.stderr.write(`${l}\n`),
    exit: (code) => process.exit(code),
  };
}
