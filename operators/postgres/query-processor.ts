import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Type } from '@sinclair/typebox';
import type pg from 'pg';
import { EMPTY, Observable, type Subscription, catchError, defer, from, mergeMap } from 'rxjs';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import { type Expression, type Template, compileExpression, compileTemplate } from '../../core/expression.ts';
import { type Msg, withValue } from '../../core/message.ts';
import { type LintIssue, defineProcessor } from '../../core/operator.ts';
import { retryWithBackoff } from '../../core/retry.ts';
import { parseDuration } from '../../core/duration.ts';
import { Duration, Expr, Obj, OnInvalid, Template as TemplateField } from '../../core/schema.ts';
import { sleeper } from '../../core/timers.ts';
import { assertMigrated } from './migrate.ts';
import { checkUntilReady, createPool, describeTarget, isRowError, safeUrl, toRunnerError } from './pool.ts';

const config = Obj({
  url: Type.String({
    minLength: 1,
    description:
      'Connection URL, `postgres://user:password@host:5432/database` (use `${DATABASE_URL}` or `${PGPASSWORD}` parts from the environment). The password is never logged or shown.',
  }),
  check: Expr('JSONata condition: only messages for which it is true run the statements; the others pass unchanged. The default `true` runs them for every message.', 'true'),
  statements: Type.Array(
    Obj({
      sql: Type.String({
        minLength: 1,
        description: 'One SQL statement with placeholders `$1`, `$2`, ... for the arguments (never put message data into the SQL text itself).',
      }),
      args: Type.Array(Expr('JSONata expression for one argument.'), {
        default: [],
        description:
          'One JSONata expression per placeholder, in order (`$1` is the first), evaluated against the message with `$meta`, `$key`, `$headers` and `$results` (the results of the earlier statements of this message) bound. null or nothing is SQL NULL; an object is sent as JSON text (cast it: `$2::jsonb`); an array as a PostgreSQL array (`$3::text[]`; for a JSON array use `$string(...)`); numbers, strings and booleans as text PostgreSQL converts to the parameter type.',
      }),
      result: Type.String({
        pattern: '^([a-z_][a-z0-9_]*)?$',
        default: '',
        description:
          'Name under which the rows this statement returns (SELECT, or RETURNING) are kept in `$results`: an array of row objects, or with `expect: one` the row object itself. Empty (the default): not kept. Timestamps become ISO 8601 text; other types are as node-postgres gives them (bigint and numeric as text: cast to float8 or int, or build jsonb in SQL).',
      }),
      expect: Type.Union([Type.Literal('any'), Type.Literal('one'), Type.Literal('none')], {
        default: 'any',
        description:
          'Rows the statement must return or affect. `any` (the default): no check. `one`: exactly one; none rolls the transaction back and rejects the message with code NOT_FOUND and the reason `not_found`; more than one rejects it with WRITE_REJECTED. `none`: no row; any row rejects the message with WRITE_REJECTED (e.g. a guard `SELECT ... WHERE <conflict>`).',
      }),
      not_found: TemplateField('The rejection reason when `expect: one` finds no row (the `dlq_error` of the dead letter), e.g. `device ${! $meta.device_id } not found`.', 'no matching row'),
    }),
    { minItems: 1, description: 'Statements run in order, all of one message in ONE transaction (BEGIN ... COMMIT); the first one that fails rolls back all of them.' },
  ),
  result_map: Expr(
    'JSONata expression for the message value after the transaction, evaluated against the message as it came in with `$results` bound (one field per statement `result`), e.g. `$merge([$results.settings, {"outbox_id": $results.outbox.id}])`. The default `$results` makes the value the results object; `$` keeps the value.',
    '$results',
  ),
  migrations: Type.String({
    default: '',
    pattern: '^([a-z0-9_]+)?$',
    description:
      'Folder of `migrations/` this database must be migrated to, e.g. `heatpump_settings`. When set, the processor checks `schema_migrations` at startup and is not ready (and runs nothing) while a migration of that folder is pending; the reason says to run `runner migrate --database <folder>`. Empty: only a connection check.',
  }),
  max_in_flight: Type.Integer({
    minimum: 1,
    default: 1,
    description: 'Messages processed at the same time, each in its own transaction and connection (the pool size). With 1 (the default) messages run one after another, in order; with more they may finish out of order.',
  }),
  timeout: Duration(
    'A deadline per message, measured from when the message entered the pipeline (for an `http_server` input: when the request arrived), for its whole transaction including retries. An attempt that would start after it is not started; a statement still running at it is cancelled by PostgreSQL (`SET LOCAL statement_timeout` to the time left, sent with `BEGIN`); and `COMMIT` is sent only before it. Either way the transaction is rolled back, not retried, and the message is rejected with code WRITE_FAILED and a reason that starts with `deadline passed` and says nothing was written (an HTTP API answers 504 then and can promise the change did not happen; keep the `http_server` timeout longer). Only a `COMMIT` sent before the deadline can finish after it; its outcome is then known and reported as usual. A lost connection during `COMMIT` leaves the outcome unknown: a later rejection then says so instead of `deadline passed`. `0` (the default): no deadline.',
    '0s',
  ),
  autocommit: Type.Boolean({
    default: false,
    description:
      'With exactly one statement: send it without `BEGIN` and `COMMIT`, as a transaction of its own that PostgreSQL commits when it succeeds (one round trip instead of three). The `expect` check and `result_map` then come after the commit and cannot undo it, so use it for a statement that writes nothing when it returns no row (e.g. a function that returns no row for an unknown key) and a `result_map` that cannot fail. With `timeout`, each connection gets `statement_timeout` = the whole `timeout` once (no time left is sent per message): a statement is still cancelled (and the message rejected with `deadline passed`) only if it did not finish, so a rejection still means nothing was written, but one that started late may finish, and commit, a little after the deadline.',
  }),
  batch_size: Type.Integer({
    minimum: 0,
    default: 0,
    description:
      'Batch mode, with 1 or more (`1`: batches of one message, the same SQL): messages that arrive while all `max_in_flight` connections are busy wait and are then taken together, up to this many, into ONE call of the (single) statement, in one transaction: fewer commits (and one NOTIFY lock and WAL flush per batch instead of per message) under load; a message that finds a free connection still goes alone at once. Each arg is then an array with one element per message of the batch, in order (`$1::text[]`, `$2::jsonb[]`), and the statement returns rows with a `batch_index` column (1 = the first message) telling which message each row belongs to; `expect` and `result` apply per message. A row whose `error_code` column is set (NOT_FOUND or WRITE_REJECTED) rejects its message with the `error` column as the reason; the statement must then have left nothing of that message (a PL/pgSQL EXCEPTION block per message) while the others are committed. An error of the statement itself fails the whole batch (retried or rejected as one). The deadline of `timeout` is the one of the batch\'s oldest message. Default 0: no batch mode (scalar args, one message per transaction).',
  }),
  max_retries: Type.Integer({
    minimum: 0,
    default: 0,
    description:
      'Attempts after the first for a transaction that fails for a reason retrying can help (connection refused or lost, serialization failure, deadlock, anything that is not a data error), with exponential backoff. 0 (the default): retry forever, nothing is ever given up. More: the message is then rejected with the last error (CONNECTION_FAILED or WRITE_FAILED), e.g. for an HTTP API that should answer 503 rather than wait.',
  }),
  on_invalid: OnInvalid(),
});

type Cfg = typeof config.static;

/** Placeholder numbers used by a statement ($1, $2, ...), outside quoted strings and comments. */
export function placeholders(sql: string): number[] {
  const stripped = sql
    .replace(/'(?:[^']|'')*'/g, "''")
    .replace(/"(?:[^"]|"")*"/g, '""')
    .replace(/--[^\n]*/g, '')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/\$([A-Za-z_][A-Za-z0-9_]*)?\$[\s\S]*?\$\1\$/g, '');
  return [...new Set([...stripped.matchAll(/\$(\d+)/g)].map((m) => Number(m[1])))].sort((a, b) => a - b);
}

function lintConfig(cfg: Cfg, schemasDir: string): LintIssue[] {
  const issues: LintIssue[] = [];
  if (!/^postgres(ql)?:\/\//.test(cfg.url) && !cfg.url.includes('${')) issues.push({ path: ['url'], message: 'the url must start with postgres:// or postgresql://' });
  if (cfg.migrations && !existsSync(join(schemasDir, '..', 'migrations', cfg.migrations))) issues.push({ path: ['migrations'], message: `there is no folder migrations/${cfg.migrations}` });
  const results = new Map<string, number>();
  cfg.statements.forEach((s, i) => {
    const used = placeholders(s.sql);
    const max = used.length ? used[used.length - 1]! : 0;
    if (max !== s.args.length) {
      issues.push({ path: ['statements', i, 'args'], message: `the statement uses ${max ? `placeholders up to $${max}` : 'no placeholder'} but has ${s.args.length} args; give one arg per placeholder` });
    } else if (used.length !== max) {
      const missing = Array.from({ length: max }, (_, k) => k + 1).filter((n) => !used.includes(n));
      issues.push({ path: ['statements', i, 'sql'], message: `placeholder ${missing.map((n) => `$${n}`).join(', ')} is not used; PostgreSQL cannot tell its type` });
    }
    if (s.result) {
      if (results.has(s.result)) issues.push({ path: ['statements', i, 'result'], message: `result ${s.result} is also stored by statements.${results.get(s.result)}` });
      results.set(s.result, i);
    }
    if (s.expect === 'none' && s.result) issues.push({ path: ['statements', i, 'result'], message: 'a statement with expect: none returns no rows to keep' });
  });
  if (cfg.batch_size > 0 && cfg.statements.length !== 1) issues.push({ path: ['batch_size'], message: `a batch runs one statement with array args; there are ${cfg.statements.length} statements` });
  if (cfg.autocommit && cfg.statements.length !== 1) issues.push({ path: ['autocommit'], message: `autocommit runs one statement as its own transaction; there are ${cfg.statements.length}` });
  return issues;
}

/** Argument values for node-postgres. */
function toParam(v: unknown): unknown {
  if (v === undefined || v === null) return null;
  if (Buffer.isBuffer(v) || Array.isArray(v) || typeof v !== 'object') return v;
  return JSON.stringify(v);
}

/** Rows as plain JSON-friendly objects: timestamps as ISO text. */
function plainRow(row: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(row)) out[k] = v instanceof Date ? v.toISOString() : v;
  return out;
}

/** What the attempts of one message learned: a COMMIT whose answer was lost (written or not: unknown). */
interface Attempts {
  commitUnknown: boolean;
}

const sqlStateOf = (err: unknown): string | undefined => {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
};

/** An error that rolls back the transaction and rejects the message without a retry. */
class Abort extends Error {
  constructor(readonly error: RunnerError) {
    super(error.message);
  }
}

export const postgresQuery = defineProcessor({
  spec: {
    name: 'postgres',
    kind: 'processor',
    summary: 'Runs SQL statements with arguments from each message in one transaction per message; the rows they return become part of the message.',
    description: [
      'Like `sql_raw` of Redpanda Connect, with several statements in one transaction: for each message (for which `check` is true) the processor takes a connection, runs `BEGIN`, each of `statements` in order with its `args` evaluated against the message, and `COMMIT`. Rows a statement returns are kept under its `result` name in `$results`, which later statements\' args and the final `result_map` can use (e.g. the id an `INSERT ... RETURNING id` produced). After COMMIT the message value becomes `result_map` and the message goes on.',
      '',
      'Rejections (the transaction is rolled back, nothing of it remains, and the message goes to the dead-letter output with the reason): a statement with `expect: one` that finds no row (code NOT_FOUND, reason `not_found`), or that finds several, or a statement with `expect: none` that finds some (WRITE_REJECTED); a data error or constraint violation (SQLSTATE class 22 or 23: a CHECK, a foreign key, a unique key, a value out of range) with PostgreSQL\'s message, SQLSTATE and detail (WRITE_REJECTED); an arg or `result_map` expression that fails (EXPRESSION_FAILED).',
      '',
      'Every other error (connection refused or lost, server shutting down, serialization failure, deadlock, a table that does not exist yet) rolls back and runs the whole transaction again with exponential backoff: forever by default, or `max_retries` times, after which the message is rejected with the last error. Meanwhile the processor is not ready and says why.',
      '',
      'Concurrency: with `max_in_flight` above 1, transactions of different messages run at the same time under READ COMMITTED; lock the rows you change (an `UPDATE` or `SELECT ... FOR UPDATE` as the first statement) to serialise messages that touch the same rows.',
      '',
      'At startup the processor connects (and with `migrations` checks that the database is migrated) before it runs anything; until then it is not ready and messages wait.',
    ].join('\n'),
    config,
    examples: [
      {
        title: 'Look up a row; a missing one is rejected as NOT_FOUND',
        config: [
          'url: ${HEATPUMP_SETTINGS_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/heatpump_settings}',
          'statements:',
          '  - sql: SELECT device_id, mode FROM settings WHERE device_id = $1',
          '    args: [$meta.device_id]',
          '    expect: one',
          "    not_found: 'device ${! $meta.device_id } not found'",
          '    result: settings',
          'result_map: $results.settings',
        ].join('\n'),
      },
      {
        title: 'Change a row and queue a command in one transaction',
        config: [
          'url: ${HEATPUMP_SETTINGS_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/heatpump_settings}',
          'check: $meta.http_method = "PATCH"',
          'statements:',
          '  - sql: UPDATE settings SET mode = $2, updated_at = now() WHERE device_id = $1 RETURNING device_id, mode',
          '    args: [$meta.device_id, mode]',
          '    expect: one',
          '    result: settings',
          "  - sql: INSERT INTO outbox (aggregate_id, payload) VALUES ($1, $2::jsonb) RETURNING id::float8 AS id, status",
          "    args: [$meta.device_id, '{\"settings\": $}']",
          '    expect: one',
          '    result: outbox',
          "result_map: '$merge([$results.settings, {\"outbox_id\": $results.outbox.id}])'",
          'max_retries: 3',
        ].join('\n'),
      },
    ],
    delivery:
      'At-least-once: a message goes on only after COMMIT. If the connection is lost during COMMIT the outcome is unknown and the transaction runs again, so make the statements idempotent where a repeat matters (ON CONFLICT, conditions on the current state). A rejected message leaves nothing in the database. With max_retries above 0 a message can be rejected because the database stayed away; it is not dropped (it goes to the dead-letter output).',
    rejects: true,
    lint: (cfg, lctx) => lintConfig(cfg, lctx.schemasDir),
  },
  create(cfg, ctx) {
    const problems = lintConfig(cfg, join(ctx.rootDir, 'schemas'));
    if (problems.length) throw new RunnerError('CONFIG_INVALID', problems.map((p) => `${p.path.join('.')}: ${p.message}`).join('; '));
    const log = ctx.logger;
    const where = describeTarget(cfg.url);
    const check: Expression | null = cfg.check.trim() === 'true' ? null : compileExpression(cfg.check);
    const statements = cfg.statements.map((s) => ({
      ...s,
      args: s.args.map((a) => compileExpression(a)),
      notFound: compileTemplate(s.not_found) as Template,
    }));
    const resultMap: Expression | null = cfg.result_map.trim() === '$' ? null : compileExpression(cfg.result_map);
    const pool = createPool(cfg.url, cfg.max_in_flight, (err) => log.warn({ err: safeUrl(errorMessage(err)) }, 'idle PostgreSQL connection failed'));
    const { sleep, cancelAll } = sleeper(ctx.scheduler);
    let closed = false;

    let ready: { ok: boolean; reason?: string } | null = null;
    const setReady = (ok: boolean, reason?: string) => {
      if (ready && ready.ok === ok && ready.reason === reason) return;
      ready = { ok, reason };
      ctx.setReady(ok, reason);
    };
    setReady(false, `connecting to PostgreSQL at ${where}`);

    // Startup check: nothing runs before the database answers (and is migrated, with `migrations`).
    // Until it passes, a message's attempt fails with the reason (retryable), so that it waits
    // with backoff, or is rejected after max_retries.
    let checked = false;
    let notReadyReason = `connecting to PostgreSQL at ${where}`;
    let firstAttemptDone: () => void = () => undefined;
    const firstAttempt = new Promise<void>((resolve) => (firstAttemptDone = resolve));
    checkUntilReady({
      check: async () => {
        if (cfg.migrations) await assertMigrated(pool, cfg.migrations);
        else await pool.query('SELECT 1');
        return null;
      },
      reasonFor: (err) =>
        err instanceof RunnerError && err.code === 'CONFIG_INVALID' ? err.message : `cannot reach PostgreSQL: ${toRunnerError(err, `connecting to PostgreSQL at ${where}`).message}`,
      isClosed: () => closed,
      sleep,
      setReady,
      logError: (reason) => log.error({ database: where }, reason),
      onAttempt: (reason) => {
        if (reason === null) {
          checked = true;
          log.info({ database: where }, 'postgres processor ready');
        } else notReadyReason = reason;
        firstAttemptDone();
      },
    });

    const timeoutMs = parseDuration(cfg.timeout);
    /** Connections whose session statement_timeout is set (autocommit with timeout). */
    const limited = new WeakSet<pg.PoolClient>();
    /** The rejection when the deadline passed: rolled back, or unknown after a COMMIT whose answer was lost. */
    const deadlineError = (state: Attempts, when: string): RunnerError =>
      state.commitUnknown
        ? new RunnerError('WRITE_FAILED', `the deadline (timeout ${cfg.timeout}) passed ${when}; an earlier attempt's COMMIT got no answer (connection lost), so whether it was written is unknown`)
        : new RunnerError('WRITE_FAILED', `deadline passed (timeout ${cfg.timeout}) ${when}; rolled back, nothing was written`);

    /** One transaction for one message; resolves with the new value. */
    const runOnce = async (msg: Msg, state: Attempts): Promise<unknown> => {
      if (closed) throw new RunnerError('WRITE_FAILED', 'the postgres processor is closed', { retryable: true });
      const deadline = timeoutMs > 0 ? msg.createdAt + timeoutMs : Number.POSITIVE_INFINITY;
      if (!checked) await firstAttempt;
      if (!checked) throw new RunnerError('CONNECTION_FAILED', `the postgres processor is not ready: ${notReadyReason}`, { retryable: true });
      if (Date.now() >= deadline) throw deadlineError(state, 'before the transaction started');
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (err) {
        throw toRunnerError(err, `connecting to PostgreSQL at ${where}`);
      }
      let discard = false;
      // After COMMIT (or an autocommit statement) was sent, a lost answer leaves the outcome unknown.
      let committing = false;
      const results: Record<string, unknown> = {};
      let current = 0;
      try {
        // With a deadline the time left goes with BEGIN (one round trip): PostgreSQL cancels a statement still running then.
        if (!cfg.autocommit) await client.query(timeoutMs > 0 ? `BEGIN; SET LOCAL statement_timeout = ${Math.max(1, Math.ceil(deadline - Date.now()))}` : 'BEGIN');
        else if (timeoutMs > 0 && !limited.has(client)) {
          await client.query(`SET statement_timeout = ${timeoutMs}`);
          limited.add(client);
        }
        for (const [i, s] of statements.entries()) {
          current = i;
          const values: unknown[] = [];
          for (const a of s.args) {
            try {
              values.push(toParam(await a.evaluate(msg, { results })));
            } catch (err) {
              throw new Abort(err instanceof RunnerError ? err : new RunnerError('EXPRESSION_FAILED', errorMessage(err), { cause: err }));
            }
          }
          if (cfg.autocommit) committing = true;
          const res = await client.query(s.sql, values);
          if (cfg.autocommit) committing = false;
          const count = res.rows.length || res.rowCount || 0;
          if (s.expect === 'one' && count === 0) throw new Abort(new RunnerError('NOT_FOUND', await s.notFound.evaluate(msg, { results }).catch(() => s.not_found)));
          if (s.expect === 'one' && count > 1) throw new Abort(new RunnerError('WRITE_REJECTED', `statements.${i} returned ${count} rows; expect: one allows exactly one`));
          if (s.expect === 'none' && count > 0) throw new Abort(new RunnerError('WRITE_REJECTED', `statements.${i} returned or changed ${count} rows; expect: none allows none`));
          if (s.result) {
            const rows = res.rows.map(plainRow);
            results[s.result] = s.expect === 'one' ? rows[0] : rows;
          }
        }
        let value: unknown = msg.value;
        if (resultMap) {
          try {
            value = await resultMap.evaluate(msg, { results });
          } catch (err) {
            throw new Abort(err instanceof RunnerError ? err : new RunnerError('EXPRESSION_FAILED', errorMessage(err), { cause: err }));
          }
          if (value === undefined) throw new Abort(new RunnerError('EXPRESSION_FAILED', `result_map ${JSON.stringify(cfg.result_map)} produced no value`));
        }
        if (cfg.autocommit) return value;
        if (Date.now() >= deadline) throw new Abort(deadlineError(state, 'before COMMIT'));
        committing = true;
        await client.query('COMMIT');
        return value;
      } catch (err) {
        if (committing && !(err instanceof Abort) && !isRowError(err) && sqlStateOf(err) !== '57014') state.commitUnknown = true;
        // A statement cancelled by the deadline's statement_timeout: rolled back, not retried.
        if (timeoutMs > 0 && sqlStateOf(err) === '57014') err = new Abort(deadlineError(state, `while statements.${current} ran (cancelled)`));
        // A rejection or a bad row leaves a healthy connection: roll back and reuse it. Anything else: drop it.
        discard = !(err instanceof Abort || isRowError(err));
        if (!discard && !cfg.autocommit) await client.query('ROLLBACK').catch(() => (discard = true));
        if (err instanceof Abort) throw err.error;
        const e = toRunnerError(err, `running statements.${current}`);
        throw isRowError(err) ? new RunnerError('WRITE_REJECTED', `statements.${current}: ${e.message}`, { cause: err }) : e;
      } finally {
        client.release(discard);
      }
    };

    const process$ = (msg: Msg) => {
      const state: Attempts = { commitUnknown: false };
      return defer(() => from(runOnce(msg, state))).pipe(
        retryWithBackoff({
          scheduler: ctx.scheduler,
          maxRetries: cfg.max_retries > 0 ? cfg.max_retries : undefined,
          onRetry: (err, attempt, delayMs) => {
            ctx.metrics.error('query');
            const reason = errorMessage(err);
            if (checked) setReady(false, `PostgreSQL transaction fails, retrying: ${reason}`);
            log.warn({ err: reason, attempt, retryInMs: delayMs }, 'postgres transaction failed; retrying');
          },
        }),
        mergeMap((value) => {
          if (checked) setReady(true);
          return [withValue(msg, value)];
        }),
        catchError((err) => {
          ctx.metrics.error('rejected');
          ctx.reject(msg, err);
          return EMPTY;
        }),
      );
    };

    type Outcome = { msg: Msg; value: unknown } | { msg: Msg; err: RunnerError };
    const batchStmt = statements[0]!;

    /** One transaction for a batch of messages (batch_size > 0): one call with array args. */
    const runBatch = async (batch: Msg[], state: Attempts): Promise<Outcome[]> => {
      if (closed) throw new RunnerError('WRITE_FAILED', 'the postgres processor is closed', { retryable: true });
      if (!checked) await firstAttempt;
      if (!checked) throw new RunnerError('CONNECTION_FAILED', `the postgres processor is not ready: ${notReadyReason}`, { retryable: true });
      const outcomes: Outcome[] = [];
      // Messages whose deadline passed, or whose args fail, are answered alone; the rest form the call.
      const live: Msg[] = [];
      const argRows: unknown[][] = [];
      for (const msg of batch) {
        if (timeoutMs > 0 && Date.now() >= msg.createdAt + timeoutMs) {
          outcomes.push({ msg, err: deadlineError(state, 'before the transaction started') });
          continue;
        }
        try {
          const row: unknown[] = [];
          for (const a of batchStmt.args) row.push(toParam(await a.evaluate(msg, { results: {} })));
          live.push(msg);
          argRows.push(row);
        } catch (err) {
          outcomes.push({ msg, err: err instanceof RunnerError ? err : new RunnerError('EXPRESSION_FAILED', errorMessage(err), { cause: err }) });
        }
      }
      if (!live.length) return outcomes;
      ctx.metrics.batchSize(live.length);
      const deadline = timeoutMs > 0 ? Math.min(...live.map((m) => m.createdAt)) + timeoutMs : Number.POSITIVE_INFINITY;
      const values = batchStmt.args.map((_, j) => argRows.map((r) => r[j]));
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (err) {
        throw toRunnerError(err, `connecting to PostgreSQL at ${where}`);
      }
      let discard = false;
      let committing = false;
      try {
        if (!cfg.autocommit) await client.query(timeoutMs > 0 ? `BEGIN; SET LOCAL statement_timeout = ${Math.max(1, Math.ceil(deadline - Date.now()))}` : 'BEGIN');
        else if (timeoutMs > 0 && !limited.has(client)) {
          await client.query(`SET statement_timeout = ${timeoutMs}`);
          limited.add(client);
        }
        if (cfg.autocommit) committing = true;
        const res = await client.query(batchStmt.sql, values);
        committing = false;
        const rowsOf = live.map(() => [] as Record<string, unknown>[]);
        for (const r of res.rows as Record<string, unknown>[]) {
          const k = Number(r.batch_index);
          if (!Number.isInteger(k) || k < 1 || k > live.length) throw new Abort(new RunnerError('WRITE_REJECTED', `statements.0 returned a row with batch_index ${JSON.stringify(r.batch_index)}; batch_size needs 1..${live.length}`));
          rowsOf[k - 1]!.push(plainRow(r));
        }
        for (const [k, msg] of live.entries()) {
          const rows = rowsOf[k]!;
          const failed = rows.find((r) => r.error_code != null);
          let err: RunnerError | null = null;
          if (failed) err = new RunnerError(failed.error_code === 'NOT_FOUND' ? 'NOT_FOUND' : 'WRITE_REJECTED', String(failed.error ?? failed.error_code));
          else if (batchStmt.expect === 'one' && rows.length === 0) err = new RunnerError('NOT_FOUND', await batchStmt.notFound.evaluate(msg, { results: {} }).catch(() => batchStmt.not_found));
          else if (batchStmt.expect === 'one' && rows.length > 1) err = new RunnerError('WRITE_REJECTED', `statements.0 returned ${rows.length} rows; expect: one allows exactly one`);
          else if (batchStmt.expect === 'none' && rows.length > 0) err = new RunnerError('WRITE_REJECTED', `statements.0 returned or changed ${rows.length} rows; expect: none allows none`);
          if (err) {
            outcomes.push({ msg, err });
            continue;
          }
          const results: Record<string, unknown> = batchStmt.result ? { [batchStmt.result]: batchStmt.expect === 'one' ? rows[0] : rows } : {};
          try {
            const value = resultMap ? await resultMap.evaluate(msg, { results }) : msg.value;
            outcomes.push(value === undefined ? { msg, err: new RunnerError('EXPRESSION_FAILED', `result_map ${JSON.stringify(cfg.result_map)} produced no value`) } : { msg, value });
          } catch (e) {
            outcomes.push({ msg, err: e instanceof RunnerError ? e : new RunnerError('EXPRESSION_FAILED', errorMessage(e), { cause: e }) });
          }
        }
        if (!cfg.autocommit) {
          if (Date.now() >= deadline) throw new Abort(deadlineError(state, 'before COMMIT'));
          committing = true;
          await client.query('COMMIT');
        }
        return outcomes;
      } catch (err) {
        if (committing && !(err instanceof Abort) && !isRowError(err) && sqlStateOf(err) !== '57014') state.commitUnknown = true;
        if (timeoutMs > 0 && sqlStateOf(err) === '57014') err = new Abort(deadlineError(state, 'while statements.0 ran (cancelled)'));
        discard = !(err instanceof Abort || isRowError(err));
        if (!discard && !cfg.autocommit) await client.query('ROLLBACK').catch(() => (discard = true));
        // The whole call failed: every message of it shares the outcome.
        const e = err instanceof Abort ? err.error : isRowError(err) ? new RunnerError('WRITE_REJECTED', `statements.0: ${toRunnerError(err, 'running statements.0').message}`, { cause: err }) : null;
        if (e) return [...outcomes, ...live.map((msg) => ({ msg, err: e }))];
        throw toRunnerError(err, 'running statements.0');
      } finally {
        client.release(discard);
      }
    };

    const processBatch$ = (batch: Msg[]) => {
      const state: Attempts = { commitUnknown: false };
      return defer(() => from(runBatch(batch, state))).pipe(
        retryWithBackoff({
          scheduler: ctx.scheduler,
          maxRetries: cfg.max_retries > 0 ? cfg.max_retries : undefined,
          onRetry: (err, attempt, delayMs) => {
            ctx.metrics.error('query');
            const reason = errorMessage(err);
            if (checked) setReady(false, `PostgreSQL transaction fails, retrying: ${reason}`);
            log.warn({ err: reason, attempt, retryInMs: delayMs, batch: batch.length }, 'postgres transaction failed; retrying');
          },
        }),
        mergeMap((outcomes) => {
          if (checked) setReady(true);
          const out: Msg[] = [];
          for (const o of outcomes) {
            if ('err' in o) {
              ctx.metrics.error('rejected');
              ctx.reject(o.msg, o.err);
            } else out.push(withValue(o.msg, o.value));
          }
          return out;
        }),
        catchError((err) => {
          for (const msg of batch) {
            ctx.metrics.error('rejected');
            ctx.reject(msg, err);
          }
          return EMPTY;
        }),
      );
    };

    /** batch_size > 0: messages wait while every connection is busy, then go together. */
    const batched = (source: Observable<Msg>): Observable<Msg> =>
      new Observable<Msg>((sub) => {
        const queue: Msg[] = [];
        const inner = new Set<Subscription>();
        let running = 0;
        let pendingChecks = 0;
        let sourceDone = false;
        const finishIfDone = () => {
          if (sourceDone && running === 0 && pendingChecks === 0 && queue.length === 0) sub.complete();
        };
        const pump = () => {
          while (running < cfg.max_in_flight && queue.length) {
            const batch = queue.splice(0, cfg.batch_size);
            running++;
            let s: Subscription | undefined;
            s = processBatch$(batch).subscribe({
              next: (m) => sub.next(m),
              error: (e) => sub.error(e),
              complete: () => {
                running--;
                if (s) inner.delete(s);
                pump();
                finishIfDone();
              },
            });
            if (!s.closed) inner.add(s);
          }
        };
        const take = (msg: Msg) => {
          queue.push(msg);
          pump();
        };
        const subscription = source.subscribe({
          next: (msg) => {
            if (!check) return take(msg);
            pendingChecks++;
            check.evaluate(msg).then(
              (ok) => {
                pendingChecks--;
                if (ok === true) take(msg);
                else sub.next(msg);
                finishIfDone();
              },
              (err) => {
                pendingChecks--;
                ctx.reject(msg, err);
                finishIfDone();
              },
            );
          },
          error: (e) => sub.error(e),
          complete: () => {
            sourceDone = true;
            finishIfDone();
          },
        });
        return () => {
          subscription.unsubscribe();
          for (const s of inner) s.unsubscribe();
        };
      });

    ctx.onClose(async () => {
      closed = true;
      cancelAll();
      await pool.end().catch((err) => log.warn({ err: safeUrl(errorMessage(err)) }, 'closing the PostgreSQL pool failed'));
    });

    if (cfg.batch_size > 0) return batched;
    return (source) =>
      source.pipe(
        mergeMap((msg) => {
          if (!check) return process$(msg);
          return defer(() => from(check.evaluate(msg))).pipe(
            mergeMap((ok) => (ok === true ? process$(msg) : [msg])),
            catchError((err) => {
              ctx.reject(msg, err);
              return EMPTY;
            }),
          );
        }, cfg.max_in_flight),
      );
  },
});
