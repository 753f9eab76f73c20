import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { sleeper } from '../../core/timers.ts';
import { Type } from '@sinclair/typebox';
import copyStreams from 'pg-copy-streams';
import { EMPTY, type Observable, catchError, concat, defer, from, map, mergeMap } from 'rxjs';
import { batch } from '../../core/batch.ts';
import { parseDuration } from '../../core/duration.ts';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import { type Expression, LATER, compileExpression } from '../../core/expression.ts';
import type { Msg } from '../../core/message.ts';
import { type LintIssue, defineOutput } from '../../core/operator.ts';
import { retryWithBackoff } from '../../core/retry.ts';
import { Duration, Expr, Obj } from '../../core/schema.ts';
import { assertMigrated } from './migrate.ts';
import {
  COLUMN_PATTERN,
  TABLE_PATTERN,
  checkUntilReady,
  copyTextValue,
  createPool,
  describeTarget,
  escapeCopyText,
  isRowError,
  missingColumns,
  quoteIdent,
  quoteTable,
  safeUrl,
  toRunnerError,
} from './pool.ts';

const Column = (description: string) => Type.String({ pattern: COLUMN_PATTERN, description });

const config = Obj({
  url: Type.String({
    minLength: 1,
    description:
      'Connection URL, `postgres://user:password@host:5432/database` (use `${DATABASE_URL}` or `${PGPASSWORD}` parts from the environment). The password is never logged or shown.',
  }),
  table: Type.String({
    pattern: TABLE_PATTERN,
    description:
      'Table to write to, `name` or `schema.name`. Names are matched as stored in PostgreSQL (lower case unless created with quotes). It must exist with every column named in `columns`: checked at startup.',
  }),
  columns: Type.Record(Type.String({ pattern: COLUMN_PATTERN }), Expr('JSONata expression whose result is written to this column.'), {
    additionalProperties: false,
    minProperties: 1,
    description:
      'Column name -> JSONata expression evaluated against the message (`$` is the whole value, `$meta`, `$key`, `$headers` are bound), e.g. `time: $fromMillis(timestamp * 1000)`, `device_id: device_id`, `raw: $`. null or nothing gives SQL NULL; objects and arrays are written as JSON text (for json/jsonb columns; a column that is exactly `$`, of a value its input decoded from JSON and no processor replaced, gets the record\'s own JSON text, without serialising it again); numbers, booleans and strings as text that PostgreSQL converts to the column type. A message whose expression fails is rejected before its batch is written.',
  }),
  mode: Type.Union([Type.Literal('copy'), Type.Literal('upsert')], {
    default: 'upsert',
    description:
      '`copy`: plain `COPY table FROM STDIN` (fastest; a row that collides with a unique key is rejected, so a batch written again after a crash dead-letters its duplicates). `upsert`: COPY into a temporary staging table (one per connection, emptied at every commit), then `INSERT ... SELECT ... ON CONFLICT` as `conflict` says (idempotent: writing a batch twice changes nothing).',
  }),
  conflict: Obj(
    {
      keys: Type.Array(Column('A column of the unique index or primary key.'), {
        default: [],
        description: 'Conflict target: the columns of a unique index or primary key. Empty: `ON CONFLICT DO NOTHING` on any unique violation (only with action `nothing`).',
      }),
      action: Type.Union([Type.Literal('nothing'), Type.Literal('update')], {
        default: 'nothing',
        description: '`nothing`: a row whose key exists is skipped (the first write wins). `update`: the existing row gets `update_columns` from the new row (needs `keys`).',
      }),
      update_columns: Type.Array(Column('A column to update.'), {
        default: [],
        description: 'Columns set from the new row with action `update`. Empty: every column of `columns` that is not a key.',
      }),
      where: Type.String({
        default: '',
        description:
          'Optional SQL condition for action `update` (`DO UPDATE ... WHERE`): the new row is `EXCLUDED`, the existing row is the table name, e.g. `EXCLUDED.reported_at > settings.reported_at` so that an older message never overwrites a newer row. Rows of one batch with the same key are applied in message order.',
      }),
    },
    {
      default: { keys: [], action: 'nothing', update_columns: [], where: '' },
      description: 'What `upsert` does when a row collides with an existing one. Ignored by mode `copy`.',
    },
  ),
  batching: Obj(
    {
      count: Type.Integer({ minimum: 0, default: 1000, description: 'Rows per batch (one transaction); 0 = no count limit.' }),
      byte_size: Type.Integer({ minimum: 0, default: 0, description: 'Bytes of message values per batch; 0 = no byte limit.' }),
      period: Duration('How long a message waits for its batch to fill; 0 = no wait beyond what count and byte_size decide.', '200ms'),
    },
    {
      default: { count: 1000, byte_size: 0, period: '200ms' },
      description: 'A batch is written in one transaction when it holds `count` messages or `byte_size` bytes, or `period` after its first message, whichever comes first.',
    },
  ),
  max_in_flight: Type.Integer({
    minimum: 1,
    default: 1,
    description:
      'Batches written at the same time, each in its own transaction and connection. With 1 (the default) batches are committed strictly in order, so with `conflict.action: update` the last message wins; more than 1 can reorder writes.',
  }),
  migrations: Type.String({
    default: '',
    pattern: '^([a-z0-9_]+)?$',
    description:
      'Folder of `migrations/` this database must be migrated to, e.g. `telemetry`. When set, the output checks `schema_migrations` at startup and is not ready (and writes nothing) while a migration of that folder is pending or was changed after it was applied; the reason says to run `runner migrate --database <folder>`. Empty: no check.',
  }),
  max_connections: Type.Integer({ minimum: 1, default: 2, description: 'Size of the connection pool (at least `max_in_flight`; one more is used by the startup check).' }),
});

type Cfg = typeof config.static;

interface Row {
  msg: Msg;
  values: unknown[];
}

/**
 * A column value that is the message's own value, unchanged since the input decoded it from JSON
 * (`raw: $`): its COPY text is the record's JSON text as received, not JSON.stringify of the parsed
 * value (the largest per-row cost of the output in the benchmark). Valid JSON either way, so json
 * and jsonb columns take it alike; numbers beyond double precision even keep their digits.
 */
class SourceJson {
  constructor(readonly bytes: Buffer) {}
}

/** No extra variables: one shared object instead of a new `{}` per column per row. */
const NO_EXTRA: Record<string, unknown> = Object.freeze({}) as Record<string, unknown>;

/**
 * COPY text of rows as one buffer, one line each (with an extra `seq` column of the row's index
 * when asked). Text goes into the buffer as it is built; a record's own JSON (`SourceJson`) is
 * copied byte for byte unless it holds a character COPY escapes (a backslash, a tab or a line
 * break between tokens), without decoding it to a string and encoding it again.
 */
export function copyPayload(rows: readonly Row[], withSeq: boolean): Buffer {
  let buf = Buffer.allocUnsafe(Math.max(4096, rows.length * 256));
  let off = 0;
  const ensure = (n: number) => {
    if (off + n <= buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(buf.length * 2, off + n));
    buf.copy(next, 0, 0, off);
    buf = next;
  };
  /** Text not yet in the buffer. */
  let text = '';
  const flushText = () => {
    ensure(text.length * 3);
    off += buf.write(text, off, 'utf8');
    text = '';
  };
  for (let r = 0; r < rows.length; r++) {
    const values = rows[r]!.values;
    for (let i = 0; i < values.length; i++) {
      if (i > 0) text += '\t';
      const v = values[i];
      if (v instanceof SourceJson) {
        const bytes = v.bytes;
        if (needsCopyEscape(bytes)) text += escapeCopyText(bytes.toString('utf8'));
        else {
          if (text.length) flushText();
          ensure(bytes.length);
          off += bytes.copy(buf, off);
        }
      } else text += copyTextValue(v);
    }
    text += withSeq ? `\t${r}\n` : '\n';
    if (text.length > 8192) flushText();
  }
  if (text.length) flushText();
  return buf.subarray(0, off);
}

/** A backslash, tab, line feed or carriage return in the bytes (UTF-8 never has them inside a multi-byte character). */
function needsCopyEscape(bytes: Buffer): boolean {
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b === 0x5c || b === 0x09 || b === 0x0a || b === 0x0d) return true;
  }
  return false;
}

function lintConfig(cfg: Cfg, schemasDir: string): LintIssue[] {
  const issues: LintIssue[] = [];
  if (cfg.migrations && !existsSync(join(schemasDir, '..', 'migrations', cfg.migrations))) issues.push({ path: ['migrations'], message: `there is no folder migrations/${cfg.migrations}` });
  if (!/^postgres(ql)?:\/\//.test(cfg.url) && !cfg.url.includes('${')) issues.push({ path: ['url'], message: 'the url must start with postgres:// or postgresql://' });
  const cols = new Set(Object.keys(cfg.columns));
  const c = cfg.conflict;
  c.keys.forEach((k, i) => {
    if (!cols.has(k)) issues.push({ path: ['conflict', 'keys', i], message: `key column ${k} is not in columns` });
  });
  c.update_columns.forEach((k, i) => {
    if (!cols.has(k)) issues.push({ path: ['conflict', 'update_columns', i], message: `column ${k} is not in columns` });
    else if (c.keys.includes(k)) issues.push({ path: ['conflict', 'update_columns', i], message: `column ${k} is a conflict key; keys are not updated` });
  });
  if (c.action === 'update' && !c.keys.length) issues.push({ path: ['conflict', 'keys'], message: 'action update needs the conflict keys (columns of a unique index or primary key)' });
  if (c.where && c.action !== 'update') issues.push({ path: ['conflict', 'where'], message: 'where applies only to action update' });
  if (cfg.mode === 'copy' && (c.keys.length || c.action !== 'nothing' || c.update_columns.length || c.where)) {
    issues.push({ path: ['conflict'], message: 'conflict applies only to mode upsert; mode copy writes with plain COPY' });
  }
  return issues;
}

/** The SQL statements of one configuration. */
export function buildSql(cfg: Pick<Cfg, 'table' | 'columns' | 'mode' | 'conflict'>) {
  const table = quoteTable(cfg.table);
  const names = Object.keys(cfg.columns);
  const cols = names.map(quoteIdent).join(', ');
  const staging = 'runner_postgres_staging';
  const { keys, action, where } = cfg.conflict;
  const updateCols = cfg.conflict.update_columns.length ? cfg.conflict.update_columns : names.filter((n) => !keys.includes(n));
  const update = action === 'update' && updateCols.length > 0;
  const target = keys.length ? ` (${keys.map(quoteIdent).join(', ')})` : '';
  const onConflict = update
    ? `ON CONFLICT${target} DO UPDATE SET ${updateCols.map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`).join(', ')}${where ? ` WHERE ${where}` : ''}`
    : `ON CONFLICT${target} DO NOTHING`;
  return {
    names,
    /** In DO UPDATE, rows of one batch with the same key go in separate statements, in order. */
    sequenced: update,
    copy: `COPY ${table} (${cols}) FROM STDIN`,
    // Only the mapped columns, with their types, no constraints: NOT NULL and CHECK fail in the
    // INSERT. Created once per connection (not per batch: creating and dropping a table is catalog
    // work and files for PostgreSQL every time); emptied at every commit.
    createStaging: `CREATE TEMP TABLE IF NOT EXISTS ${staging} ON COMMIT DELETE ROWS AS SELECT ${cols}${update ? ', 0::integer AS runner_seq' : ''} FROM ${table} WITH NO DATA`,
    copyStaging: `COPY ${staging} (${cols}${update ? ', runner_seq' : ''}) FROM STDIN`,
    insert: `INSERT INTO ${table} (${cols}) SELECT ${cols} FROM ${staging} ${onConflict}`,
    maxPerKey: update ? `SELECT coalesce(max(n), 0)::integer AS n FROM (SELECT count(*) AS n FROM ${staging} GROUP BY ${keys.map(quoteIdent).join(', ')}) AS per_key` : '',
    insertGeneration: update
      ? `INSERT INTO ${table} (${cols}) SELECT ${cols} FROM (SELECT *, row_number() OVER (PARTITION BY ${keys.map(quoteIdent).join(', ')} ORDER BY runner_seq) AS runner_gen FROM ${staging}) AS s WHERE runner_gen = $1 ORDER BY runner_seq ${onConflict}`
      : '',
  };
}

export const postgres = defineOutput({
  spec: {
    name: 'postgres',
    kind: 'output',
    summary: 'Writes messages as rows into a PostgreSQL (or TimescaleDB) table with COPY, one transaction per batch; a message is done after COMMIT.',
    description: [
      'Each message becomes one row: `columns` maps each column to a JSONata expression evaluated against the message. Messages are batched (`batching`) and each batch is written in one transaction: mode `copy` streams it with `COPY table (columns) FROM STDIN`; mode `upsert` copies it into a temporary staging table and then runs `INSERT INTO table SELECT ... FROM staging ON CONFLICT (keys) DO NOTHING` or `DO UPDATE SET ... [WHERE ...]`. A message is passed on (and its input may advance past it) only after COMMIT.',
      '',
      'A row PostgreSQL refuses (SQLSTATE class 22 data exception such as a string in a numeric column, or class 23 integrity violation such as NULL in a NOT NULL column or a failed CHECK) does not hold up its batch: the batch is split in halves, recursively, until the bad rows are found; each is rejected with the database error and its SQLSTATE and goes to the dead-letter output, the rest is written, in order. A message whose column expression fails is rejected before the batch is written.',
      '',
      'Any other error (connection refused or lost, server shutting down, lock timeout, table dropped) is retried with exponential backoff, forever, batch by batch in order: nothing is skipped, and the output is not ready meanwhile and says why.',
      '',
      'At startup the output checks that `table` and every column exist. Until they do it is not ready (the reason names the missing table or columns, logged as an error), writes nothing and passes nothing on; it checks again with backoff, so running `runner migrate` fixes it without a restart.',
    ].join('\n'),
    config,
    examples: [
      {
        title: 'Temperature telemetry, idempotent on (device_id, time)',
        config: [
          'url: ${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/telemetry}',
          'table: temperature',
          'columns:',
          "  time: '$fromMillis(timestamp * 1000)'",
          '  device_id: device_id',
          '  flow_temp: flow_temp',
          "  raw: '$'",
          'conflict:',
          '  keys: [device_id, time]',
        ].join('\n'),
      },
      {
        title: 'Settings state, newest report wins',
        config: [
          'url: ${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/telemetry}',
          'table: heatpump_settings.settings',
          'columns:',
          '  device_id: device_id',
          "  reported_at: '$fromMillis(reported_at)'",
          "  state: '$'",
          'conflict:',
          '  keys: [device_id]',
          '  action: update',
          '  where: EXCLUDED.reported_at > settings.reported_at',
        ].join('\n'),
      },
      {
        title: 'Append-only events with plain COPY',
        config: [
          'url: ${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/telemetry}',
          'table: events',
          'mode: copy',
          'columns:',
          '  time: $now()',
          "  body: '$'",
          'batching:',
          '  count: 5000',
          '  period: 500ms',
        ].join('\n'),
      },
    ],
    delivery:
      'At-least-once. A message is passed on only after its batch is committed. If the connection is lost during COMMIT the outcome is unknown and the batch is written again: in mode `upsert` that changes nothing (idempotent on the conflict keys); in mode `copy` the rows are written twice (or, with a unique key, the duplicates are rejected to the dead-letter output). Isolating a bad row commits the rest of its batch in several smaller transactions, in order. With `max_in_flight: 1` batches are committed in message order, retries included.',
    rejects: true,
    lint: (cfg, lctx) => lintConfig(cfg, lctx.schemasDir),
  },
  create(cfg, ctx) {
    const log = ctx.logger;
    const where = describeTarget(cfg.url);
    const sql = buildSql(cfg);
    const exprs: Expression[] = sql.names.map((n) => compileExpression(cfg.columns[n]!));
    /** Columns whose expression is `$`, the whole message value. */
    const wholeValue: boolean[] = sql.names.map((n) => cfg.columns[n]!.trim() === '$');
    const checkColumns = [...new Set([...sql.names, ...cfg.conflict.keys, ...cfg.conflict.update_columns])];
    const pool = createPool(cfg.url, Math.max(cfg.max_connections, 1), (err) => log.warn({ err: safeUrl(errorMessage(err)) }, 'idle PostgreSQL connection failed'));
    let closed = false;
    /** Connections that have the staging table of mode upsert. */
    const staged = new WeakSet<object>();

    let ready: { ok: boolean; reason?: string } | null = null;
    const setReady = (ok: boolean, reason?: string) => {
      if (ready && ready.ok === ok && ready.reason === reason) return;
      ready = { ok, reason };
      ctx.setReady(ok, reason);
    };
    setReady(false, `checking table ${cfg.table} at ${where}`);

    const { sleep, cancelAll: cancelSleeps } = sleeper(ctx.scheduler);

    // Startup check: nothing is written (or passed on) before the table and its columns exist.
    let checked = false;
    let passCheck: () => void = () => undefined;
    const checkPassed = new Promise<void>((resolve) => (passCheck = resolve));
    checkUntilReady({
      check: async () => {
        if (cfg.migrations) await assertMigrated(pool, cfg.migrations);
        const missing = await missingColumns(pool, cfg.table, checkColumns);
        if (missing === null) return `table ${cfg.table} does not exist at ${where}; run \`runner migrate\` or fix the pipeline`;
        if (missing.length) return `table ${cfg.table} at ${where} has no column ${missing.join(', ')}; run \`runner migrate\` or fix the pipeline`;
        return null;
      },
      reasonFor: (err) =>
        err instanceof RunnerError && err.code === 'CONFIG_INVALID'
          ? err.message
          : `cannot check table ${cfg.table}: ${toRunnerError(err, `connecting to PostgreSQL at ${where}`).message}`,
      isClosed: () => closed,
      sleep,
      setReady,
      logError: (reason) => log.error({ table: cfg.table, database: where }, reason),
      onAttempt: (reason) => {
        if (reason !== null) return;
        checked = true;
        log.info({ table: cfg.table, database: where }, 'postgres output ready');
        passCheck();
      },
    });

    /** Evaluate the column expressions; a message whose expression fails is rejected here. */
    const prepare = async (msgs: Msg[]): Promise<Row[]> => {
      const rows: Row[] = [];
      for (const msg of msgs) {
        try {
          // Without a promise per value where the expression allows it (a batch of 1000 rows with
          // 8 columns would otherwise await 8000 promises); JSONata where it needs to.
          const values: unknown[] = new Array(exprs.length);
          const source = msg.source !== undefined && msg.source.value === msg.value && msg.value !== null && typeof msg.value === 'object' ? msg.source : undefined;
          for (let c = 0; c < exprs.length; c++) {
            if (source !== undefined && wholeValue[c]) {
              values[c] = new SourceJson(source.bytes);
              continue;
            }
            const v = exprs[c]!.now(msg, NO_EXTRA);
            values[c] = v === LATER ? await exprs[c]!.evaluate(msg) : v;
          }
          rows.push({ msg, values });
        } catch (err) {
          ctx.metrics.error('expression');
          ctx.reject(msg, err);
        }
      }
      return rows;
    };

    /** One COPY ... FROM STDIN of `payload`; resolves once PostgreSQL has taken it (ReadyForQuery). */
    const copyIn = (client: import('pg').PoolClient, statement: string, payload: Buffer) =>
      new Promise<void>((resolve, reject) => {
        const stream = client.query(copyStreams.from(statement));
        stream.once('error', reject);
        stream.once('finish', resolve);
        stream.end(payload);
      });

    /**
     * One transaction for `rows` (`payload`: their COPY text, when built already); throws a
     * RunnerError (WRITE_REJECTED for a bad row). Mode copy is one COPY statement on its own: a
     * transaction by itself, committed when PostgreSQL answers it (no BEGIN and COMMIT round
     * trips). Mode upsert copies into the connection's staging table (created at its first batch)
     * and sends the INSERT with COMMIT as one query.
     */
    const writeOnce = async (rows: Row[], payload?: Buffer): Promise<void> => {
      if (closed) throw new RunnerError('WRITE_FAILED', 'the postgres output is closed', { retryable: true });
      if (!checked) await checkPassed;
      const doing = `writing ${rows.length} rows to ${cfg.table} at ${where}`;
      let client: import('pg').PoolClient;
      try {
        client = await pool.connect();
      } catch (err) {
        throw toRunnerError(err, `connecting to PostgreSQL at ${where}`);
      }
      let discard = false;
      // A checked-out client has no error listener of the pool's: a connection lost between two
      // queries (server restart) would be an unhandled 'error' event and end the process. The
      // next query then fails and the batch is retried.
      const onError = (err: Error) => {
        discard = true;
        log.warn({ err: safeUrl(errorMessage(err)) }, 'PostgreSQL connection failed during a write');
      };
      client.on('error', onError);
      const text = payload ?? copyPayload(rows, sql.sequenced);
      try {
        if (cfg.mode === 'copy') {
          await copyIn(client, sql.copy, text);
        } else {
          if (staged.has(client)) await client.query('BEGIN');
          else {
            // Outside the transaction: a rolled-back batch does not take the staging table with it.
            await client.query(`${sql.createStaging}; BEGIN`);
            staged.add(client);
          }
          await copyIn(client, sql.copyStaging, text);
          if (!sql.sequenced) await client.query(`${sql.insert}; COMMIT`);
          else {
            const generations: number = (await client.query(sql.maxPerKey)).rows[0].n;
            if (generations <= 1) await client.query(sql.insert);
            else for (let g = 1; g <= generations; g++) await client.query(sql.insertGeneration, [g]);
            await client.query('COMMIT');
          }
        }
      } catch (err) {
        // A bad row leaves a healthy connection: roll back and reuse it. Anything else: drop it.
        discard = !isRowError(err);
        if (!discard && cfg.mode !== 'copy') await client.query('ROLLBACK').catch(() => (discard = true));
        throw toRunnerError(err, doing);
      } finally {
        client.removeListener('error', onError);
        client.release(discard);
      }
      ctx.metrics.batchSize(rows.length);
    };

    /**
     * Write rows until committed, retrying retryable errors with backoff, forever. A batch with a
     * bad row is split in halves, each written (and split) on its own, in order; a single bad row
     * is rejected with the database's error.
     */
    const deliver$ = (rows: Row[], payload?: Buffer): Observable<Msg> =>
      defer(() => from(writeOnce(rows, payload))).pipe(
        retryWithBackoff({
          scheduler: ctx.scheduler,
          onRetry: (err, attempt, delayMs) => {
            ctx.metrics.error('write');
            const reason = errorMessage(err);
            if (checked) setReady(false, `writing to PostgreSQL fails, retrying: ${reason}`);
            log.warn({ err: reason, attempt, retryInMs: delayMs, rows: rows.length }, 'postgres write failed; retrying');
          },
        }),
        mergeMap(() => {
          if (checked) setReady(true);
          return from(rows.map((r) => r.msg));
        }),
        catchError((err) => {
          ctx.metrics.error('write');
          if (rows.length > 1) {
            log.warn({ err: errorMessage(err), rows: rows.length }, 'PostgreSQL refused a row of the batch; splitting the batch to find it');
            const half = Math.ceil(rows.length / 2);
            return concat(deliver$(rows.slice(0, half)), deliver$(rows.slice(half)));
          }
          for (const r of rows) ctx.reject(r.msg, err);
          return EMPTY;
        }),
      );

    ctx.onClose(async () => {
      closed = true;
      cancelSleeps();
      await pool.end().catch((err) => log.warn({ err: safeUrl(errorMessage(err)) }, 'closing the PostgreSQL pool failed'));
    });

    const policy = { count: cfg.batching.count, byteSize: cfg.batching.byte_size, periodMs: parseDuration(cfg.batching.period) };
    /**
     * A batch's rows and COPY text, built as soon as the batch is complete: while the batch before
     * it is still being written, so that PostgreSQL does not wait for this work between batches.
     */
    const prepareBatch = async (msgs: Msg[]): Promise<{ rows: Row[]; payload: Buffer | undefined }> => {
      const rows = await prepare(msgs);
      return { rows, payload: rows.length ? copyPayload(rows, sql.sequenced) : undefined };
    };
    return (source) =>
      source.pipe(
        batch(policy, ctx.scheduler),
        map((msgs) => {
          const prepared = prepareBatch(msgs);
          // Handled when its turn comes; not an unhandled rejection meanwhile.
          prepared.catch(() => undefined);
          return prepared;
        }),
        mergeMap((prepared) => from(prepared).pipe(mergeMap(({ rows, payload }) => (rows.length ? deliver$(rows, payload) : EMPTY))), cfg.max_in_flight),
      );
  },
});
