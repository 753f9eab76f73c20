/**
 * SQL of the `postgres_outbox` input (operators/postgres/outbox-input.ts): the startup check of a
 * source's table, columns and column types, and the statements of one source (claim, follow-up
 * rows, mark, failure bookkeeping, relay_state, statistics, cleanup). Kept apart from the
 * operator so the statements can be read in one place.
 */
import { type Queryable, quoteIdent, quoteTable } from './pool.ts';

export type MarkerType = 'timestamp' | 'boolean' | 'status';

/**
 * The marker of a source. `timestamp`/`boolean`: only `column` and `type` count. `status`: a text
 * column holding `pending` until published, then `published`; `failed` after the last attempt.
 * The attempt columns ('' = the table has none) mirror the failures table in the row itself:
 * `retry_count` (failed attempts), `next_attempt_at` (rows are only claimed once it has come),
 * `error_message` (the last error); `published_at` is set on publishing.
 */
export interface MarkerDef {
  column: string;
  type: MarkerType;
  pending?: string;
  published?: string;
  failed?: string;
  published_at?: string;
  retry_count?: string;
  next_attempt_at?: string;
  error_message?: string;
}

export interface SourceColumns {
  id: string;
  aggregate_id: string;
  aggregate_type: string;
  event_type: string;
  payload: string;
  created_at: string;
  /** '' = the table has none. */
  correlation_id: string;
  /** '' = the table has none. */
  headers: string;
}

export interface SourceDef {
  name: string;
  table: string;
  columns: SourceColumns;
  marker: MarkerDef;
}

/** What the startup check learnt about a source's table. */
export interface TableInfo {
  /** format_type of the id column, for `= ANY($1::<type>[])` (keeps the primary key index usable). */
  idType: string;
  /** Whether the payload column holds text (json must be parsed and checked) rather than json/jsonb. */
  payloadIsText: boolean;
  payloadIsBytes: boolean;
}

const TIMESTAMP_TYPES = new Set(['timestamptz', 'timestamp']);
const INTEGER_TYPES = new Set(['int2', 'int4', 'int8', 'numeric']);
/** A status value is written into the SQL as a literal: letters, digits, `_ . -` only (the config schema says so too). */
export const STATUS_VALUE_PATTERN = '^[A-Za-z0-9_.-]{1,64}$';
const literal = (v: string): string => {
  if (!new RegExp(STATUS_VALUE_PATTERN).test(v)) throw new Error(`status value ${JSON.stringify(v)} is not allowed`);
  return `'${v}'`;
};
/** The attempt columns of a status marker that are configured, with the type class each needs. */
function statusColumns(m: MarkerDef): [string, string, 'timestamp' | 'integer' | 'text'][] {
  if (m.type !== 'status') return [];
  const out: [string, string, 'timestamp' | 'integer' | 'text'][] = [];
  if (m.published_at) out.push(['published_at', m.published_at, 'timestamp']);
  if (m.retry_count) out.push(['retry_count', m.retry_count, 'integer']);
  if (m.next_attempt_at) out.push(['next_attempt_at', m.next_attempt_at, 'timestamp']);
  if (m.error_message) out.push(['error_message', m.error_message, 'text']);
  return out;
}
const JSON_TYPES = new Set(['json', 'jsonb']);
const TEXT_TYPES = new Set(['text', 'varchar', 'bpchar']);

/**
 * Check that the table exists with every configured column, and that the marker, payload,
 * created_at and headers columns have usable types. Returns the table info, or a reason naming
 * what is wrong (the schema, the table, the columns, or the column and its type).
 */
export async function checkSourceTable(db: Queryable, s: SourceDef): Promise<{ info: TableInfo } | { problem: string }> {
  const parts = s.table.split('.');
  const schema = parts.length > 1 ? parts[0]! : null;
  if (schema) {
    const { rows } = await db.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
    if (!rows.length) return { problem: `schema ${schema} of table ${s.table} does not exist` };
  }
  const { rows } = await db.query('SELECT to_regclass($1)::oid AS oid', [quoteTable(s.table)]);
  const oid = rows[0]?.oid;
  if (oid == null) return { problem: `table ${s.table} does not exist` };
  const { rows: cols } = await db.query(
    `SELECT a.attname, t.typname, format_type(a.atttypid, a.atttypmod) AS type
       FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
      WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`,
    [oid],
  );
  const byName = new Map<string, { typname: string; type: string }>(cols.map((c: { attname: string; typname: string; type: string }) => [c.attname, c]));
  const wanted = Object.entries(s.columns).filter(([, c]) => c !== '');
  const missing = [...wanted.map(([, c]) => c), s.marker.column, ...statusColumns(s.marker).map(([, c]) => c)].filter((c) => !byName.has(c));
  if (missing.length) return { problem: `table ${s.table} has no column ${[...new Set(missing)].join(', ')}` };
  const typeOf = (c: string) => byName.get(c)!;
  const m = typeOf(s.marker.column);
  if (s.marker.type === 'timestamp' && !TIMESTAMP_TYPES.has(m.typname)) {
    return { problem: `marker column ${s.table}.${s.marker.column} is ${m.type}, not a timestamp (NULL until published); set marker.type: boolean for a boolean column` };
  }
  if (s.marker.type === 'boolean' && m.typname !== 'bool') {
    return { problem: `marker column ${s.table}.${s.marker.column} is ${m.type}, not boolean; set marker.type: timestamp for a timestamp column that is NULL until published` };
  }
  if (s.marker.type === 'status' && !TEXT_TYPES.has(m.typname)) {
    return { problem: `marker column ${s.table}.${s.marker.column} is ${m.type}, not text; a status marker needs a text column (${s.marker.pending} until published)` };
  }
  for (const [role, col, kind] of statusColumns(s.marker)) {
    const t = typeOf(col);
    const ok = kind === 'timestamp' ? TIMESTAMP_TYPES.has(t.typname) : kind === 'integer' ? INTEGER_TYPES.has(t.typname) : TEXT_TYPES.has(t.typname);
    if (!ok) return { problem: `column ${s.table}.${col} (marker.${role}) is ${t.type}, not ${kind}` };
  }
  const created = typeOf(s.columns.created_at);
  if (!TIMESTAMP_TYPES.has(created.typname)) return { problem: `column ${s.table}.${s.columns.created_at} (created_at) is ${created.type}, not a timestamp` };
  const payload = typeOf(s.columns.payload);
  if (!JSON_TYPES.has(payload.typname) && !TEXT_TYPES.has(payload.typname) && payload.typname !== 'bytea') {
    return { problem: `column ${s.table}.${s.columns.payload} (payload) is ${payload.type}; use json, jsonb, text or bytea` };
  }
  if (s.columns.headers && !JSON_TYPES.has(typeOf(s.columns.headers).typname)) {
    return { problem: `column ${s.table}.${s.columns.headers} (headers) is ${typeOf(s.columns.headers).type}; use json or jsonb (an object of header names to values)` };
  }
  return { info: { idType: typeOf(s.columns.id).type, payloadIsText: TEXT_TYPES.has(payload.typname), payloadIsBytes: payload.typname === 'bytea' } };
}

/** The statements of one source. `$1` is always the source name where the failures table is used. */
export function sourceSql(s: SourceDef, info: TableInfo, tables: { failures: string; state: string }) {
  const t = quoteTable(s.table);
  const f = quoteTable(tables.failures);
  const c = s.columns;
  const q = quoteIdent;
  const m = q(s.marker.column);
  const mk = s.marker;
  const status = mk.type === 'status';
  const unpublished = (a: string) => (mk.type === 'timestamp' ? `${a}.${m} IS NULL` : mk.type === 'boolean' ? `NOT ${a}.${m}` : `${a}.${m} = ${literal(mk.pending!)}`);
  // Status marker with next_attempt_at: a row waits in the row itself too (attempts survive in the table).
  const rowDue = (a: string) => (status && mk.next_attempt_at ? ` AND ${a}.${q(mk.next_attempt_at)} <= now()` : '');
  const rowWaiting = (a: string) => (status && mk.next_attempt_at ? ` OR ${a}.${q(mk.next_attempt_at)} > now()` : '');
  const idIs = (n: number) => `${q(c.id)} = $${n}::text::${info.idType}`;
  const order = (a: string) => `${a}.${q(c.created_at)}, ${a}.${q(c.id)}`;
  const select = (a: string) =>
    [
      `${a}.${q(c.id)}::text AS event_id`,
      `${a}.${q(c.aggregate_id)}::text AS aggregate_id`,
      `${a}.${q(c.aggregate_type)}::text AS aggregate_type`,
      `${a}.${q(c.event_type)}::text AS event_type`,
      `${a}.${q(c.payload)} AS payload`,
      `${a}.${q(c.created_at)} AS created_at`,
      c.correlation_id ? `${a}.${q(c.correlation_id)}::text AS correlation_id` : 'NULL::text AS correlation_id',
      c.headers ? `${a}.${q(c.headers)} AS headers` : 'NULL::jsonb AS headers',
      'coalesce(f.attempts, 0) AS attempts',
    ].join(', ');
  const deadLettered = (a: string, alias: string) =>
    `EXISTS (SELECT 1 FROM ${f} ${alias} WHERE ${alias}.source = $1 AND ${alias}.event_id = ${a}.${q(c.id)}::text AND ${alias}.dead_lettered_at IS NOT NULL)`;
  const claimHeads = (after: boolean) => `WITH w AS MATERIALIZED (
  SELECT r.ctid AS tid, r.${q(c.aggregate_id)}::text COLLATE "C" AS agg, r.${q(c.created_at)} AS created, r.${q(c.id)} AS id
    FROM ${t} r
   WHERE ${unpublished('r')} AND NOT ${deadLettered('r', 'd')}${
     after ? `\n     AND (r.${q(c.created_at)}, r.${q(c.id)}) >= (SELECT x.${q(c.created_at)}, x.${q(c.id)} FROM ${t} x WHERE x.${idIs(4)})` : ''
   }
   ORDER BY ${order('r')}
   LIMIT $3
), h AS (
  SELECT DISTINCT ON (agg) tid FROM w ORDER BY agg, created, id
), heads AS MATERIALIZED (
  SELECT ${select('r')}
    FROM h
    JOIN ${t} r ON r.ctid = h.tid
    LEFT JOIN ${f} f ON f.source = $1 AND f.event_id = r.${q(c.id)}::text
   WHERE ${unpublished('r')}${rowDue('r')}
     AND (f.event_id IS NULL OR (f.dead_lettered_at IS NULL AND (f.next_attempt_at IS NULL OR f.next_attempt_at <= now())))${
       after
         ? `
     AND NOT EXISTS (
       SELECT 1 FROM ${t} p
        WHERE p.${q(c.aggregate_id)} = r.${q(c.aggregate_id)} AND ${unpublished('p')}
          AND (p.${q(c.created_at)}, p.${q(c.id)}) < (r.${q(c.created_at)}, r.${q(c.id)})
          AND NOT ${deadLettered('p', 'e')})`
         : ''
     }
   ORDER BY ${order('r')}
   LIMIT $2
   FOR UPDATE OF r SKIP LOCKED
), fol AS (
  SELECT ${select('r')}, (f.next_attempt_at IS NOT NULL AND f.next_attempt_at > now()${rowWaiting('r')}) AS waiting, (f.dead_lettered_at IS NOT NULL) AS dead, x.seq
    FROM (SELECT w.tid, (row_number() OVER (ORDER BY w.created, w.id))::int AS seq FROM w
           WHERE w.agg IN (SELECT aggregate_id FROM heads) AND (SELECT count(*) FROM heads) < $2
           ORDER BY w.created, w.id
           LIMIT $2) x
    JOIN ${t} r ON r.ctid = x.tid
    LEFT JOIN ${f} f ON f.source = $1 AND f.event_id = r.${q(c.id)}::text
   WHERE ${unpublished('r')}
)
SELECT 'h' AS kind, event_id, aggregate_id, aggregate_type, event_type, payload, created_at, correlation_id, headers, attempts, false AS waiting, false AS dead, NULL::int AS seq FROM heads
UNION ALL
SELECT 'f', event_id, aggregate_id, aggregate_type, event_type, payload, created_at, correlation_id, headers, attempts, waiting, dead, seq FROM fol
UNION ALL
SELECT 'w', (SELECT w.id::text FROM w ORDER BY w.created DESC, w.id DESC LIMIT 1), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
 WHERE NOT EXISTS (SELECT 1 FROM heads) AND (SELECT count(*) FROM w) >= $3`;
  return {
    /**
     * The heads: for each aggregate its oldest unpublished event that is not dead-lettered, if
     * that event is not waiting for a retry; oldest first; locked FOR UPDATE SKIP LOCKED. A head
     * locked by another batch (this relay's or another one's) is skipped, and so is every later
     * event of its aggregate: whoever holds the head row owns the aggregate until it commits.
     *
     * Only a window of the oldest unpublished rows is looked at ($3 rows, in (created_at, id)
     * order along the partial index of migrations/services/0001): the oldest row of each aggregate
     * in that window is the aggregate's head (every older unpublished row would be in the window
     * too), found by sorting the window, so a claim costs the same with 1,000 or 2 million rows
     * waiting. The earlier statement asked every candidate row whether an older unpublished event
     * of its aggregate exists and, when fewer than $2 heads were free (the other batches hold the
     * rest), walked the whole backlog doing so: 20 s per claim with 500,000 rows waiting.
     * The window's rows are joined back by ctid (no primary-key lookups); a row changed since
     * (marked by another relay) fails the unpublished re-check and is left out.
     *
     * One statement, one round trip, returns what the claim needs, told apart by `kind`:
     * `h` the heads (oldest first), `f` the events of their aggregates in the window (the heads
     * among them; only when fewer than $2 heads were found, at most $2 rows, `seq` their order in
     * the window: sort by it; `waiting` says whether a row waits for a retry), and, only when no
     * head was
     * free, one `w` row whose event_id is the id of the last row of the window if the window was
     * full (else NULL): where claimHeadsAfter looks next. Reading the followers in the statement
     * that locks their heads is safe: another relay can only have published events of an
     * aggregate while holding its head, and a head it held and committed fails the unpublished
     * re-check of FOR UPDATE here; a follower committed by its writer after the statement started
     * waits for the next batch. Followers come from the window only (at most $3 rows already read,
     * no more index scans): an aggregate's events in the window after its head are consecutive
     * (the window is an unbroken run in creation order), and later ones go to the next batch. Read
     * from the table instead (by aggregate, all of them, then the oldest $2), the followers of
     * 997 heads with 100 events each waiting took 220 ms, against ~2 ms for the claim itself.
     * $1 source, $2 limit, $3 window.
     */
    claimHeads: claimHeads(false),
    /**
     * The same over the window after the row with id $4 (its (created_at, id) and later): for when
     * a whole window held no free head (the aggregates of its rows are all owned or waiting for a
     * retry), so a long run of blocked events holds back only its own aggregates. Past the first
     * window an aggregate's oldest row in the window need not be its head, so each candidate is
     * also checked for an older unpublished event of its aggregate (partial index by aggregate of
     * migrations/services/0003). $1 source, $2 limit, $3 window, $4 id of the window's first row.
     */
    claimHeadsAfter: claimHeads(true),
    /**
     * Status marker: a failed attempt recorded in the row. $1 id, $2 attempts so far, $3 error,
     * $4 retry delay in ms (measured from now, the end of the attempt), $5 whether it was the last
     * attempt (the row becomes `failed`). Empty when the marker is not a status.
     */
    rowFailure: status
      ? `UPDATE ${t} SET ${[
          `${m} = CASE WHEN $5::boolean THEN ${literal(mk.failed!)} ELSE ${m} END`,
          ...(mk.retry_count ? [`${q(mk.retry_count)} = $2::integer`] : []),
          ...(mk.error_message ? [`${q(mk.error_message)} = $3::text`] : []),
          ...(mk.next_attempt_at ? [`${q(mk.next_attempt_at)} = CASE WHEN $5::boolean THEN ${q(mk.next_attempt_at)} ELSE clock_timestamp() + make_interval(secs => $4::float8 / 1000) END`] : []),
        ].join(', ')} WHERE ${idIs(1)} AND ${m} = ${literal(mk.pending!)}`
      : '',
    /**
     * The end of a batch in one statement: of the events whose messages are done ($2 ids, $3 the
     * attempts each had when claimed), those whose attempts grew meanwhile failed (the dead-letter
     * output counted them) and are returned (event_id, attempts, last_error); every other one is
     * marked, and relay_state counts them. One round trip instead of three (attempts, mark,
     * relay_state) per batch. $1 source.
     */
    markDone: `WITH c AS (SELECT c.id, c.attempts FROM unnest($2::text[], $3::int[]) AS c(id, attempts)),
bad AS (SELECT f.event_id, f.attempts, f.last_error FROM ${f} f JOIN c ON f.source = $1 AND f.event_id = c.id WHERE f.attempts > c.attempts),
marked AS (${(status
      ? `UPDATE ${t} SET ${m} = ${literal(mk.published!)}${mk.published_at ? `, ${q(mk.published_at)} = clock_timestamp()` : ''}${mk.error_message ? `, ${q(mk.error_message)} = NULL` : ''} WHERE ${q(c.id)} = ANY(ARRAY(SELECT c.id FROM c WHERE c.id NOT IN (SELECT event_id FROM bad))::${info.idType}[]) AND ${m} = ${literal(mk.pending!)}`
      : `UPDATE ${t} SET ${m} = ${s.marker.type === 'timestamp' ? 'now()' : 'true'} WHERE ${q(c.id)} = ANY(ARRAY(SELECT c.id FROM c WHERE c.id NOT IN (SELECT event_id FROM bad))::${info.idType}[])`)} RETURNING 1)${
      tables.state
        ? `,
counted AS (INSERT INTO ${quoteTable(tables.state)} AS s (source, published_total, updated_at) SELECT $1, count(*), now() FROM marked HAVING count(*) > 0
  ON CONFLICT (source) DO UPDATE SET published_total = s.published_total + EXCLUDED.published_total, updated_at = now())`
        : ''
    }
SELECT event_id, attempts, last_error FROM bad`,
    /** Attempts recorded so far. $1 source, $2 event ids. */
    attempts: `SELECT event_id, attempts, last_error, last_error_code FROM ${f} WHERE source = $1 AND event_id = ANY($2::text[])`,
    /** A failed attempt the relay saw itself (the message was nacked). $1 source, $2 event id, $3 error, $4 code. */
    recordFailure: `INSERT INTO ${f} AS f (source, event_id, attempts, last_error, last_error_code) VALUES ($1, $2, 1, $3, $4)
  ON CONFLICT (source, event_id) DO UPDATE SET attempts = f.attempts + 1, last_error = EXCLUDED.last_error, last_error_code = EXCLUDED.last_error_code, last_failed_at = now()
  RETURNING attempts`,
    /** $1 source, $2 event id, $3 retry delay in ms. */
    scheduleRetry: `UPDATE ${f} SET next_attempt_at = now() + make_interval(secs => $3::float8 / 1000) WHERE source = $1 AND event_id = $2`,
    /** $1 source, $2 event id. */
    deadLetter: `UPDATE ${f} SET dead_lettered_at = now(), next_attempt_at = NULL WHERE source = $1 AND event_id = $2`,
    /** $1 source. */
    stats: `SELECT count(*)::bigint AS pending, extract(epoch FROM now() - min(r.${q(c.created_at)}))::float8 AS oldest_age
  FROM ${t} r WHERE ${unpublished('r')} AND NOT ${deadLettered('r', 'd')}`,
    /** Published rows older than $1 ms, at most $2 of them, skipping rows someone holds. Status marker: never (lint refuses cleanup there). */
    cleanup: `DELETE FROM ${t} WHERE ctid = ANY(ARRAY(
  SELECT ctid FROM ${t}
   WHERE ${status ? 'false AND $1::float8 IS NOT NULL' : `${s.marker.type === 'timestamp' ? `${m} IS NOT NULL AND ${m}` : `${m} AND ${q(c.created_at)}`} < now() - make_interval(secs => $1::float8 / 1000)`}
   LIMIT $2 FOR UPDATE SKIP LOCKED))`,
    ...stateSql(tables.state),
  };
}

export function stateSql(state: string) {
  const st = state ? quoteTable(state) : '';
  return {
    /** $1 source. */
    statePolled: st
      ? `INSERT INTO ${st} AS s (source, last_poll_at, updated_at) VALUES ($1, now(), now())
  ON CONFLICT (source) DO UPDATE SET last_poll_at = now(), updated_at = now()`
      : '',
    /** $1 source, $2 error. */
    stateError: st
      ? `INSERT INTO ${st} AS s (source, last_error, updated_at) VALUES ($1, $2, now())
  ON CONFLICT (source) DO UPDATE SET last_error = EXCLUDED.last_error, updated_at = now()`
      : '',
  };
}
