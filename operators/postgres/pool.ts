/**
 * PostgreSQL plumbing for the `postgres` output: the connection pool, identifier quoting, the
 * COPY text-format encoding, the startup check of table and columns, and the classification of
 * errors into "the row is bad" (SQLSTATE classes 22 and 23: rejected, never retried) and
 * "the database is away or busy" (everything else: retried with backoff, never skipped).
 */
import pg from 'pg';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import { redactString } from '../../core/redact.ts';
import { DEFAULT_BACKOFF, backoffDelay } from '../../core/retry.ts';

/** `name` or `schema.name`, unquoted identifiers as they are stored (case-sensitive). */
export const TABLE_PATTERN = '^[A-Za-z_][A-Za-z0-9_$]*(\\.[A-Za-z_][A-Za-z0-9_$]*)?$';
export const COLUMN_PATTERN = '^[A-Za-z_][A-Za-z0-9_$]*$';

export const quoteIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`;

/** `schema.table` -> `"schema"."table"` (each part quoted as written). */
export const quoteTable = (table: string): string => table.split('.').map(quoteIdent).join('.');

/** The URL with its password replaced, for logs and readiness reasons. */
export const safeUrl = (url: string): string => redactString(url);

/** Where we write, for messages: host:port/database, never the password. */
export function describeTarget(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || '5432'}${u.pathname}`;
  } catch {
    return safeUrl(url);
  }
}

export function createPool(url: string, max: number, onIdleError: (err: Error) => void): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max, connectionTimeoutMillis: 10_000, idleTimeoutMillis: 30_000 });
  // An idle client losing its connection must not crash the process: the next query fails and is retried.
  pool.on('error', onIdleError);
  // pg-pool listens for errors of a client only while it is idle in the pool. A checked-out client
  // whose connection ends (PostgreSQL restarted: 57P01, or the socket closed) emits 'error' too, and
  // with nobody listening Node.js ends the process. The query in progress fails with the same
  // error, which the caller retries; this listener only keeps the event from being unhandled.
  pool.on('connect', (client) => {
    client.on('error', () => undefined);
  });
  return pool;
}

/**
 * One value in COPY text format: NULL as `\N`; backslash, tab, newline and carriage return
 * escaped; booleans and numbers as text; bytes as bytea hex; objects and arrays as JSON text
 * (for json/jsonb columns). `undefined` (an expression that gave nothing) is NULL.
 */
export function copyTextValue(v: unknown): string {
  if (v === null || v === undefined) return '\\N';
  // Numbers, bigints and booleans never contain a character COPY escapes.
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  let s: string;
  if (typeof v === 'string') s = v;
  else if (Buffer.isBuffer(v) || v instanceof Uint8Array) s = `\\x${Buffer.from(v).toString('hex')}`;
  else if (v instanceof Date) s = v.toISOString();
  else s = JSON.stringify(v);
  return escapeCopyText(s);
}

const COPY_SPECIAL = /[\\\t\n\r]/;
export function escapeCopyText(s: string): string {
  if (!COPY_SPECIAL.test(s)) return s;
  return s.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r'));
}

/** One COPY text line (with its newline) for a row of values. */
export function copyTextLine(values: readonly unknown[]): string {
  let line = values.length ? copyTextValue(values[0]) : '';
  for (let i = 1; i < values.length; i++) line += `\t${copyTextValue(values[i])}`;
  return `${line}\n`;
}

/** SQLSTATE of a pg error, if any. */
export const sqlState = (err: unknown): string | undefined => {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
};

/** Classes 22 (data exception) and 23 (integrity constraint violation): the row itself is bad. */
export const isRowError = (err: unknown): boolean => {
  const s = sqlState(err);
  return s !== undefined && (s.startsWith('22') || s.startsWith('23'));
};

/** Connection-level trouble: the client holding it must be thrown away, not reused. */
export const isConnectionError = (err: unknown): boolean => {
  const s = sqlState(err);
  if (s) return s.startsWith('08') || s.startsWith('57P');
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return true; // ECONNREFUSED, ECONNRESET, EPIPE, ...
  return /terminat|connection|timeout|Client has encountered|not queryable/i.test(errorMessage(err));
};

/**
 * A RunnerError for a database error: WRITE_REJECTED (not retryable) for a bad row, with the
 * database's message, SQLSTATE and detail; CONNECTION_FAILED or WRITE_FAILED (retryable) otherwise.
 */
export function toRunnerError(err: unknown, doing: string): RunnerError {
  if (err instanceof RunnerError) return err;
  const state = sqlState(err);
  const e = err as { detail?: string; where?: string; column?: string; constraint?: string };
  const msg = redactString(errorMessage(err));
  if (isRowError(err)) {
    const extra = [e.detail, e.constraint ? `constraint ${e.constraint}` : undefined].filter(Boolean).join('; ');
    return new RunnerError('WRITE_REJECTED', `PostgreSQL rejected the row: ${msg} (SQLSTATE ${state})${extra ? `: ${extra}` : ''}`, { cause: err });
  }
  if (isConnectionError(err)) return new RunnerError('CONNECTION_FAILED', `${doing}: ${msg}${state ? ` (SQLSTATE ${state})` : ''}`, { retryable: true, cause: err });
  return new RunnerError('WRITE_FAILED', `${doing}: ${msg}${state ? ` (SQLSTATE ${state})` : ''}`, { retryable: true, cause: err });
}

export interface Queryable {
  query(text: string, values?: unknown[]): Promise<{ rows: any[] }>;
}

/**
 * The named columns of `table` that do not exist, or null when the table itself does not exist.
 * Names are compared as stored (to_regclass with the quoted name; attname as is).
 */
export async function missingColumns(db: Queryable, table: string, columns: string[]): Promise<string[] | null> {
  const { rows } = await db.query('SELECT to_regclass($1)::oid AS oid', [quoteTable(table)]);
  const oid = rows[0]?.oid;
  if (oid == null) return null;
  const { rows: cols } = await db.query('SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped', [oid]);
  const have = new Set(cols.map((r: { attname: string }) => r.attname));
  return [...new Set(columns)].filter((c) => !have.has(c));
}

/**
 * The startup check of a PostgreSQL component: `check` runs until it passes (returns null), with
 * backoff; each failure (a returned reason, or a thrown error described by `reasonFor`) makes the
 * component not ready with the reason, logged once per distinct reason. `onAttempt` runs after every
 * attempt, passed or not. Stops when `isClosed()`.
 */
export function checkUntilReady(opts: {
  check: () => Promise<string | null>;
  reasonFor: (err: unknown) => string;
  isClosed: () => boolean;
  sleep: (ms: number) => Promise<void>;
  setReady: (ok: boolean, reason?: string) => void;
  logError: (reason: string) => void;
  onAttempt: (reason: string | null) => void;
}): void {
  void (async () => {
    let lastReason = '';
    for (let attempt = 1; !opts.isClosed(); attempt++) {
      let reason: string | null;
      try {
        reason = await opts.check();
      } catch (err) {
        reason = opts.reasonFor(err);
      }
      if (reason === null) {
        opts.setReady(true);
        opts.onAttempt(null);
        return;
      }
      if (opts.isClosed()) return;
      opts.setReady(false, reason);
      opts.onAttempt(reason);
      if (reason !== lastReason) opts.logError(reason);
      lastReason = reason;
      await opts.sleep(backoffDelay(DEFAULT_BACKOFF, attempt));
    }
  })();
}
