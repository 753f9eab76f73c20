/**
 * `postgres_outbox`: the transactional-outbox relay's input. Reads unpublished events from outbox
 * tables (several sources), hands them to the pipeline (normally a kafka output), and marks each
 * row published only after its message is done.
 *
 * How several relays share the tables, and why (per-aggregate order):
 *
 *   A batch is one transaction per source. It first claims the *heads*: for each aggregate the
 *   oldest unpublished event, oldest first, `FOR UPDATE SKIP LOCKED`. Holding the head row lock
 *   means owning the aggregate: another relay skips the locked head, and it never takes a later
 *   event of that aggregate either, because the claim only takes an event when no earlier event
 *   of its aggregate is unpublished (the head still is, until the owner commits). The same
 *   statement reads the following events of those aggregates (no extra lock needed); the owner
 *   emits them one after the other per aggregate: event n+1 only after event n is done, so a
 *   failing event holds back later events of its own aggregate and nothing else. When every
 *   emitted message has settled, the transaction marks the published rows, records failures and
 *   commits; the locks go with it.
 *   A crash (or a lost connection) rolls the transaction back: nothing is marked, another relay
 *   or the restart publishes the events again (at-least-once, with the event id as a header).
 *
 *   Chosen over advisory locks on a hash of the aggregate id: row locks need no hashing (no
 *   false sharing between aggregates), are released by PostgreSQL on commit, rollback or a dead
 *   connection, and SKIP LOCKED lets the second relay move straight to the next free aggregates
 *   instead of failing a try-lock on the same first heads. The cost: one connection per batch in
 *   flight, held from claim to commit (`max_in_flight` per source).
 *
 * Failures: the engine settles a message `done` both when the output wrote it and when the
 * dead-letter output stored it. The relay tells them apart through the attempts counter of
 * `failures_table`, which the dead-letter output increments (pipelines/outbox-relay.yaml writes
 * dead letters into outbox_relay.delivery_errors, whose trigger counts the attempt): done with
 * more attempts than at the claim means the attempt failed.
 */
import { Type } from '@sinclair/typebox';
import pg from 'pg';
import { Counter, Gauge, type Registry } from 'prom-client';
import { Observable } from 'rxjs';
import { parseDuration } from '../../core/duration.ts';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import { ackHandle, createMsg, type Headers, type Msg } from '../../core/message.ts';
import { type LintIssue, defineInput } from '../../core/operator.ts';
import { DEFAULT_BACKOFF, backoffDelay } from '../../core/retry.ts';
import { Duration, Obj } from '../../core/schema.ts';
import { sleeper } from '../../core/timers.ts';
import { STATUS_VALUE_PATTERN, type SourceDef, type TableInfo, checkSourceTable, sourceSql } from './outbox-sql.ts';
import { COLUMN_PATTERN, TABLE_PATTERN, createPool, describeTarget, missingColumns, quoteIdent, safeUrl, toRunnerError } from './pool.ts';

const Column = (description: string, def: string) => Type.String({ pattern: COLUMN_PATTERN, description, default: def });
const OptionalColumn = (description: string) => Type.String({ pattern: `^$|${COLUMN_PATTERN}`, description, default: '' });

const COLUMNS_DEFAULT = {
  id: 'id',
  aggregate_id: 'aggregate_id',
  aggregate_type: 'aggregate_type',
  event_type: 'event_type',
  payload: 'payload',
  created_at: 'created_at',
  correlation_id: '',
  headers: '',
};

const source = Obj({
  name: Type.String({
    default: '',
    pattern: '^[A-Za-z0-9_.-]*$',
    description: 'Name of the source in relay_state, metrics (label `source`), metadata `outbox_source` and the failure record. Empty: the table name as written in `table`.',
  }),
  table: Type.String({
    pattern: TABLE_PATTERN,
    description: 'The outbox table, `schema.table` or `table`. Checked at startup together with every column below: until it exists with them the input is not ready and the reason names what is missing.',
  }),
  columns: Obj(
    {
      id: Column('Event id: unique (primary key); written as header `event_id` so consumers can drop duplicates.', COLUMNS_DEFAULT.id),
      aggregate_id: Column('Aggregate id: the record key, and the unit of ordering (events of one aggregate are published in creation order).', COLUMNS_DEFAULT.aggregate_id),
      aggregate_type: Column('Aggregate type: header `aggregate_type`.', COLUMNS_DEFAULT.aggregate_type),
      event_type: Column('Event type: header and metadata `event_type` (the pipeline routes topics by it).', COLUMNS_DEFAULT.event_type),
      payload: Column('Payload: the message value. json/jsonb as they are; text or bytea must hold JSON, else the event fails (retried, then dead-lettered).', COLUMNS_DEFAULT.payload),
      created_at: Column('Creation time (timestamp): events are claimed oldest first, ordered by (created_at, id).', COLUMNS_DEFAULT.created_at),
      correlation_id: OptionalColumn('Correlation id column, or empty when the table has none; written as header `correlation_id` only where the row has one.'),
      headers: OptionalColumn('A json/jsonb column holding an object of extra headers (name -> value), or empty for none. The standard headers win over these.'),
    },
    { default: COLUMNS_DEFAULT, description: 'Column names of the table; defaults fit the usual outbox layout.' },
  ),
  marker: Obj(
    {
      column: Column('Column that says the row is published.', 'published_at'),
      type: Type.Union([Type.Literal('timestamp'), Type.Literal('boolean'), Type.Literal('status')], {
        default: 'timestamp',
        description:
          '`timestamp`: NULL until published, then set to now(). `boolean`: false until published, then true. `status`: a text column, `pending` until published, then `published`, `failed` after the last attempt (the attempt columns below are kept in the row). The column type is checked at startup.',
      }),
      pending: Type.String({ pattern: STATUS_VALUE_PATTERN, default: 'pending', description: 'Status marker: the value of a row waiting to be published (only these rows are claimed).' }),
      published: Type.String({ pattern: STATUS_VALUE_PATTERN, default: 'published', description: 'Status marker: the value written once the message is done.' }),
      failed: Type.String({ pattern: STATUS_VALUE_PATTERN, default: 'failed', description: 'Status marker: the value written after `max_attempts` failed attempts.' }),
      published_at: OptionalColumn('Status marker: a timestamp column set to clock_timestamp() when the row is marked published (the acknowledgement time, not the claim time). Empty: none.'),
      retry_count: OptionalColumn('Status marker: an integer column holding the failed attempts so far. Empty: none.'),
      next_attempt_at: OptionalColumn('Status marker: a timestamp column; a pending row is claimed only once it is <= now(), and a failed attempt sets it to now + the backoff. Empty: none.'),
      error_message: OptionalColumn('Status marker: a text column holding the last error (cleared when published). Empty: none.'),
    },
    {
      default: { column: 'published_at', type: 'timestamp', pending: 'pending', published: 'published', failed: 'failed', published_at: '', retry_count: '', next_attempt_at: '', error_message: '' },
      description:
        'The published marker, e.g. `{column: processed_at}`, `{column: published, type: boolean}` or `{column: status, type: status, published_at: published_at, retry_count: retry_count, next_attempt_at: next_attempt_at, error_message: error_message}`.',
    },
  ),
  notify_channel: Type.String({
    default: '',
    pattern: '^$|^[a-z_][a-z0-9_]*$',
    description:
      'LISTEN channel that an insert trigger notifies (migrations/services/0003 installs `outbox_relay`, payload `schema.table`), so new events are read at once. Empty: polling only. Polling continues either way, so a missed notification only delays.',
  }),
  cleanup: Obj(
    {
      older_than: Duration('Delete published rows whose marker time (boolean marker: created_at) is older than this. 0 turns cleanup off.', '0s'),
      batch_size: Type.Integer({ minimum: 1, default: 500, description: 'Rows deleted per statement; small batches keep locks short (rows in use are skipped).' }),
      interval: Duration('Pause between cleanup rounds once no more old rows are found.', '1m'),
    },
    { default: { older_than: '0s', batch_size: 500, interval: '1m' }, description: 'Deleting published rows, off by default. Runs on its own connection, never in the publishing transactions.' },
  ),
});

const config = Obj({
  url: Type.String({
    minLength: 1,
    description: 'Connection URL of the database holding the outbox tables, `postgres://user:password@host:5432/services`. The password is never logged or shown.',
  }),
  sources: Type.Array(source, { minItems: 1, description: 'The outbox tables to relay; each is claimed, published, marked and cleaned up on its own.' }),
  batch_size: Type.Integer({ minimum: 1, default: 500, description: 'Events claimed per transaction of a source (heads of aggregates plus their following events).' }),
  max_in_flight: Type.Integer({
    minimum: 1,
    default: 2,
    description: 'Transactions (batches) per source open at the same time, each on its own connection, from claim to commit. The pool holds sources x max_in_flight + 2 connections, plus one for LISTEN.',
  }),
  poll_interval: Duration('How often each source is polled when no notification comes. Readiness fails when within twice this neither a poll of a source completed nor one of its batches committed.', '1s'),
  max_attempts: Type.Integer({
    minimum: 1,
    default: 5,
    description: 'Failed attempts after which an event is dead-lettered: recorded in `failures_table` with dead_lettered_at, and no longer published; later events of its aggregate go on.',
  }),
  retry_backoff: Obj(
    {
      initial: Duration('Wait before the second attempt of a failed event.', '1s'),
      max: Duration('Longest wait between attempts (the wait doubles per attempt up to this).', '5m'),
    },
    { default: { initial: '1s', max: '5m' }, description: 'Backoff between attempts of a failed event; its aggregate waits meanwhile, other aggregates do not.' },
  ),
  failures_table: Type.String({
    pattern: TABLE_PATTERN,
    default: 'outbox_relay.event_failures',
    description: 'Per event: attempts, last error, next attempt, dead-lettered time (migrations/services/0004). Must exist: checked at startup.',
  }),
  state_table: Type.String({
    pattern: `^$|${TABLE_PATTERN}`,
    default: 'relay_state',
    description: 'Per source: last poll time, events published, last error (migrations/services/0002). Empty: not kept.',
  }),
  attempt_timeout: Duration(
    'A message not done within this long counts as a failed attempt (error "not done within ..."), retried with backoff and given up after `max_attempts` like any failure; a done that comes later is ignored, though the output may still deliver the message. For outputs that wait forever while their broker is away and cannot give up a message themselves (the mqtt output can: its `publish_timeout`). 0: off (the default).',
    '0s',
  ),
  stats_interval: Duration('How often the pending rows and the age of the oldest pending row are counted per source (metrics); a count that takes long (millions of waiting rows) is repeated no sooner than 20 times its duration.', '5s'),
});

type Cfg = typeof config.static;
type SourceCfg = Cfg['sources'][number];

interface Row {
  event_id: string;
  aggregate_id: string;
  aggregate_type: string;
  event_type: string;
  payload: unknown;
  created_at: Date;
  correlation_id: string | null;
  headers: unknown;
  attempts: number;
  waiting?: boolean;
  dead?: boolean;
  /** Set once the message settled or its attempt timed out: later outcomes are ignored. */
  over?: boolean;
  timer?: { unsubscribe(): void };
}

const sourceName = (s: SourceCfg) => s.name || s.table;

/** A claim looks for heads among the oldest CLAIM_WINDOW_FACTOR x batch_size unpublished rows (outbox-sql.ts, claimHeads). */
const CLAIM_WINDOW_FACTOR = 4;
/** Windows without a free head looked at one after the other before waiting for a wake-up or the poll interval. */
const WALK_WINDOWS = 8;
/** The statistics of a source are counted again no earlier than this many times the last count took. */
const STATS_SPACING = 20;

function lintConfig(cfg: Cfg): LintIssue[] {
  const issues: LintIssue[] = [];
  if (!/^postgres(ql)?:\/\//.test(cfg.url) && !cfg.url.includes('${')) issues.push({ path: ['url'], message: 'the url must start with postgres:// or postgresql://' });
  const names = new Map<string, number>();
  const tables = new Map<string, number>();
  cfg.sources.forEach((s, i) => {
    const n = sourceName(s);
    if (names.has(n)) issues.push({ path: ['sources', i, 'name'], message: `source name ${n} is used by sources.${names.get(n)} too; give each source its own name` });
    names.set(n, i);
    if (tables.has(s.table)) issues.push({ path: ['sources', i, 'table'], message: `table ${s.table} is relayed by sources.${tables.get(s.table)} too` });
    tables.set(s.table, i);
    const used = Object.entries(s.columns).filter(([, c]) => c !== '');
    if (used.some(([, c]) => c === s.marker.column)) issues.push({ path: ['sources', i, 'marker', 'column'], message: `marker column ${s.marker.column} is also mapped in columns` });
    if (s.marker.type === 'status') {
      const m = s.marker;
      if (new Set([m.pending, m.published, m.failed]).size < 3) issues.push({ path: ['sources', i, 'marker'], message: 'marker pending, published and failed must be three different values' });
      if (parseDuration(s.cleanup.older_than) > 0) issues.push({ path: ['sources', i, 'cleanup', 'older_than'], message: 'cleanup is not supported with marker type status (rows go on to other states after publishing)' });
    } else {
      for (const k of ['published_at', 'retry_count', 'next_attempt_at', 'error_message'] as const) {
        if (s.marker[k]) issues.push({ path: ['sources', i, 'marker', k], message: `marker.${k} is only used with marker type status` });
      }
    }
  });
  return issues;
}

// ---- metrics: one set per process registry, labelled by pipeline, component and source --------

type Labels = 'pipeline' | 'component' | 'source';
function shared<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}
function outboxMetrics(registry: Registry) {
  const labelNames = ['pipeline', 'component', 'source'] as const;
  const r = [registry];
  return {
    pending: shared(registry, 'runner_outbox_pending_rows', () => new Gauge<Labels>({ name: 'runner_outbox_pending_rows', help: 'Unpublished, not dead-lettered rows of an outbox source', labelNames, registers: r })),
    oldest: shared(
      registry,
      'runner_outbox_oldest_pending_age_seconds',
      () => new Gauge<Labels>({ name: 'runner_outbox_oldest_pending_age_seconds', help: 'Age of the oldest pending row of an outbox source (0 when none)', labelNames, registers: r }),
    ),
    published: shared(registry, 'runner_outbox_published_total', () => new Counter<Labels>({ name: 'runner_outbox_published_total', help: 'Outbox events published and marked', labelNames, registers: r })),
    failed: shared(registry, 'runner_outbox_failed_total', () => new Counter<Labels>({ name: 'runner_outbox_failed_total', help: 'Failed attempts to publish an outbox event', labelNames, registers: r })),
    deadLettered: shared(
      registry,
      'runner_outbox_dead_lettered_total',
      () => new Counter<Labels>({ name: 'runner_outbox_dead_lettered_total', help: 'Outbox events given up after max_attempts', labelNames, registers: r }),
    ),
  };
}

export const postgresOutbox = defineInput({
  spec: {
    name: 'postgres_outbox',
    kind: 'input',
    summary: 'Relays transactional-outbox tables: claims unpublished events oldest first, keeps per-aggregate order across relays, marks a row published only after its message is done.',
    description: [
      'Each source is an outbox table with an id, aggregate id and type, event type, payload, creation time, optionally a correlation id and a headers column, and a published marker: a timestamp column that is NULL until published (`published_at`, `processed_at`, ...) or a boolean column. Each event becomes a message: the payload as value, the aggregate id as key, headers `event_id`, `event_type`, `aggregate_type` and `correlation_id` (only when the row has one) plus the headers column, and metadata `outbox_source`, `outbox_table`, `event_id`, `event_type`, `aggregate_id`, `aggregate_type`, `correlation_id`, `created_at` (ISO time) and `attempt` (1 for the first try).',
      '',
      'Claiming: per source, a batch is one transaction. It locks the heads of aggregates (the oldest unpublished event of each, oldest first) with `FOR UPDATE SKIP LOCKED` and, in the same statement (one round trip), reads the following events of those aggregates. Holding an aggregate\'s head row means owning the aggregate: another relay skips the locked head and never takes a later event of it, because an event is only claimed when no earlier event of its aggregate is unpublished. Within the batch, event n+1 of an aggregate is emitted only after event n is done. When every emitted message has settled, the transaction marks the published rows (`now()` or `true`), updates `relay_state` and commits, releasing the aggregates. Row locks rather than advisory locks on a hash of the aggregate id: no false sharing between aggregates, released by PostgreSQL on commit, rollback or a dead connection, and a second relay skips straight to the next free aggregates. Heads are looked for among the oldest 4 x `batch_size` unpublished rows (a window, along the partial index on the unpublished rows in creation order), so a claim costs the same with a thousand or two million rows waiting; when a whole window holds no free head (its aggregates are owned by other batches or wait for a retry), the next claims look at the following windows, up to 8 at once, then again at the next wake-up, so a long run of blocked events holds back only its own aggregates.',
      '',
      'Waking: with `notify_channel` the input LISTENs and claims as soon as an insert trigger notifies; it also polls every `poll_interval`, and claims again at once after a full batch or a finished batch.',
      '',
      'Failures: a message that comes back failed, or done after the dead-letter output counted an attempt in `failures_table` (the relay pipeline\'s dead_letter output writes `outbox_relay.delivery_errors`, whose trigger counts it), is a failed attempt: the row stays unpublished, its aggregate waits `retry_backoff` (doubling), other aggregates go on. After `max_attempts` the event is dead-lettered: `dead_lettered_at` is set in `failures_table` with the attempts and the last error, it is no longer published, and the next events of its aggregate follow. The input itself rejects a text/bytea payload that is not JSON (unknown topic and too large come from the kafka output). With a dead_letter output that does not count attempts (e.g. a Kafka topic), a dead-lettered message counts as published.',
      '',
      'Status marker (`marker.type: status`, e.g. a command outbox whose rows go on to other states): a text column holds `pending` until published; only pending rows whose `next_attempt_at` has come are claimed. On done the row becomes `published` with `published_at = clock_timestamp()` (the acknowledgement time). A failed attempt (the message came back failed, the dead-letter output counted it in `failures_table`, or it was not done within `attempt_timeout`) is written into the row too, in the transaction that records it in `failures_table`: `retry_count` = failed attempts, `error_message`, `next_attempt_at` = now + `retry_backoff` (doubling); after `max_attempts` the status becomes `failed` (the error kept). So attempts survive restarts, and the row alone says where a command stands. `attempt_timeout` turns an output that waits forever into failed attempts, but the output may still deliver the message later, after the row was given up (at-least-once: consumers drop repeats by id); with the mqtt output, use its `publish_timeout` instead (it withdraws the publish, so a failed attempt is never sent later) and leave `attempt_timeout` off.',
      '',
      'Readiness: not ready, with the reason, while a source\'s schema, table or a column is missing, a marker or other column has the wrong type, `failures_table` or `state_table` is missing (checked at startup and again with backoff, so `runner migrate` fixes it without a restart), when claiming fails (database away), and when within twice `poll_interval` neither a poll of a source completed nor one of its batches committed (while every slot is busy working off a backlog, committed batches show it is publishing). Other sources keep publishing meanwhile.',
      '',
      'Metrics per source: `runner_outbox_pending_rows`, `runner_outbox_oldest_pending_age_seconds` (every `stats_interval`), `runner_outbox_published_total`, `runner_outbox_failed_total`, `runner_outbox_dead_lettered_total`. `relay_state` keeps last poll time (at most once per poll_interval), events published and the last error per source. Cleanup (`cleanup.older_than`, off by default) deletes old published rows in small batches on its own connection.',
    ].join('\n'),
    config,
    examples: [
      {
        title: 'Two outbox tables, woken by NOTIFY',
        config: [
          'url: ${SERVICES_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/services}',
          'sources:',
          '  - table: whatsapp_handler.outbox_events',
          '    columns: { correlation_id: correlation_id }',
          '    notify_channel: outbox_relay',
          '  - table: data_retention.outbox',
          '    marker: { column: published, type: boolean }',
          '    notify_channel: outbox_relay',
          '    cleanup: { older_than: 7d }',
        ].join('\n'),
      },
    ],
    delivery:
      'At-least-once, in creation order per aggregate. A row is marked published in the same transaction that claimed it, after its message is done; a crash, a lost connection or a failed COMMIT between the Kafka acknowledgement and the mark publishes the events of that batch again (each carries header `event_id`, the same every time, so consumers can drop duplicates). Two relays never publish the same row in normal operation (the aggregate\'s head row is locked by one of them). Events of one aggregate are emitted one after the other, each only after the previous one is done, also across relays; a failing event holds back only its own aggregate, until it is published or dead-lettered. Events of one aggregate committed by writers out of creation order are published in the order they become visible.',
    rejects: true,
    lint: (cfg) => lintConfig(cfg),
  },
  create(cfg, ctx) {
    const log = ctx.logger;
    const where = describeTarget(cfg.url);
    const pollMs = Math.max(1, parseDuration(cfg.poll_interval));
    const statsMs = Math.max(100, parseDuration(cfg.stats_interval));
    const attemptTimeoutMs = parseDuration(cfg.attempt_timeout);
    const backoff = { initialMs: parseDuration(cfg.retry_backoff.initial), maxMs: parseDuration(cfg.retry_backoff.max), multiplier: 2, jitter: 0.2 };
    const metrics = outboxMetrics(ctx.metrics.registry);
    const pool = createPool(cfg.url, cfg.sources.length * cfg.max_in_flight + 2, (err) => log.warn({ err: safeUrl(errorMessage(err)) }, 'idle PostgreSQL connection failed'));
    const { sleep, cancelAll: cancelSleeps } = sleeper(ctx.scheduler);

    let stopped = false;
    let closed = false;

    interface SourceState {
      def: SourceDef;
      cfg: SourceCfg;
      labels: Record<Labels, string>;
      sql: ReturnType<typeof sourceSql> | null;
      info: TableInfo | null;
      /** Why this source cannot work right now (schema check, claim error), or null. */
      problem: string | null;
      lastPollAt: number;
      lastStateWrite: number;
      stateWriting: boolean;
      statsRunning: boolean;
      /** No counting before this (a slow count, e.g. over millions of waiting rows, spaces itself out). */
      statsNotBefore: number;
      batches: Set<Batch>;
      dirty: boolean;
      wakeUp: (() => void) | null;
      /**
       * Where the next claim looks when whole windows held no free head: the id of the first row
       * of the window to look at, or null for the oldest rows. Back to null after a window that
       * was not full (the end of the backlog) and when a batch claimed from the oldest rows
       * finishes (its aggregates are free again, in the first window).
       */
      cursor: string | null;
      /** Windows looked at in a row without a free head (at most WALK_WINDOWS per wake-up). */
      walked: number;
    }
    interface Batch {
      client: pg.PoolClient;
      /** The source's cursor when the batch was claimed (null: from the oldest rows). */
      from: string | null;
      src: SourceState;
      /** Rows still to emit per aggregate, after the one in flight. */
      chains: Map<string, Row[]>;
      outstanding: number;
      published: Row[];
      /** Done messages whose attempts are checked at the end (no follower waits for them). */
      toCheck: Row[];
      failed: { row: Row; attempts: number; error: string }[];
      finished: Promise<void>;
      finish: () => void;
      broken: boolean;
      /** The connection went back to the pool (or was destroyed); nothing more runs on it. */
      released: boolean;
      onError: (err: Error) => void;
      /**
       * A query on the batch's connection, after the ones already asked for: messages settle
       * concurrently, and one connection runs one query at a time (pg 8 queues them with a
       * deprecation warning; pg 9 refuses).
       */
      query(text: string, params?: unknown[]): Promise<pg.QueryResult>;
      /** The end of the queue of queries. */
      tail: Promise<unknown>;
    }

    const sources: SourceState[] = cfg.sources.map((s) => {
      const name = sourceName(s);
      return {
        def: { name, table: s.table, columns: s.columns, marker: s.marker },
        cfg: s,
        labels: { ...ctx.metrics.labels, source: name },
        sql: null,
        info: null,
        problem: `checking table ${s.table} at ${where}`,
        lastPollAt: 0,
        lastStateWrite: 0,
        stateWriting: false,
        statsRunning: false,
        statsNotBefore: 0,
        batches: new Set(),
        dirty: true,
        wakeUp: null,
        cursor: null,
        walked: 0,
      };
    });

    // ---- readiness: every source checked and polled within twice the interval ------------------
    let ready: { ok: boolean; reason?: string } | null = null;
    const refreshReady = () => {
      if (closed) return;
      const now = Date.now();
      const reasons: string[] = [];
      for (const s of sources) {
        if (s.problem) reasons.push(`${s.def.name}: ${s.problem}`);
        else if (now - s.lastPollAt > 2 * pollMs) {
          const busy = s.batches.size >= cfg.max_in_flight ? `; ${s.batches.size} batches wait for their messages to finish` : '';
          reasons.push(`${s.def.name}: no poll or batch completed for ${((now - s.lastPollAt) / 1000).toFixed(1)} s (more than twice poll_interval ${cfg.poll_interval})${busy}`);
        }
      }
      const next = reasons.length ? { ok: false, reason: reasons.join('; ') } : { ok: true };
      if (ready && ready.ok === next.ok && ready.reason === next.reason) return;
      ready = next;
      ctx.setReady(next.ok, next.reason);
    };
    refreshReady();

    const setProblem = (s: SourceState, problem: string | null) => {
      if (s.problem === problem) return;
      s.problem = problem;
      refreshReady();
    };

    const wake = (s: SourceState) => {
      s.dirty = true;
      const w = s.wakeUp;
      s.wakeUp = null;
      w?.();
    };
    /** Wait for a wake-up (notification, finished batch, stop) or `ms`, whichever comes first. */
    const waitWake = (s: SourceState, ms: number) =>
      new Promise<void>((resolve) => {
        if (s.dirty || stopped) return resolve();
        let timer: { unsubscribe(): void } | null = null;
        s.wakeUp = () => {
          timer?.unsubscribe();
          resolve();
        };
        timer = ctx.scheduler.schedule(() => {
          if (s.wakeUp) s.wakeUp = null;
          resolve();
        }, ms);
      });

    const writeState = (s: SourceState, kind: 'polled' | 'error', error?: string) => {
      if (!s.sql || !cfg.state_table || closed) return;
      const text = kind === 'polled' ? s.sql.statePolled : s.sql.stateError;
      if (kind === 'polled') {
        // Not more than once per poll_interval, never queued up, never awaited by the poll loop.
        if (s.stateWriting || Date.now() - s.lastStateWrite < pollMs) return;
        s.stateWriting = true;
        s.lastStateWrite = Date.now();
      }
      pool
        .query(text, kind === 'polled' ? [s.def.name] : [s.def.name, error ?? null])
        .catch((err) => log.debug({ source: s.def.name, err: safeUrl(errorMessage(err)) }, 'relay_state update failed'))
        .finally(() => {
          if (kind === 'polled') s.stateWriting = false;
        });
    };

    const recordError = (s: SourceState, error: string) => {
      writeState(s, 'error', error);
    };

    return new Observable<Msg>((subscriber) => {
      // ---- messages ------------------------------------------------------------------------------
      const toMsg = (b: Batch, row: Row): { msg: Msg; invalid: unknown } => {
        const s = b.src;
        let value: unknown = row.payload;
        let invalid: unknown = null;
        if (s.info!.payloadIsText || s.info!.payloadIsBytes) {
          const text = Buffer.isBuffer(value) ? value.toString('utf8') : String(value);
          value = text;
          try {
            value = JSON.parse(text);
          } catch (err) {
            invalid = new RunnerError('MESSAGE_INVALID', `payload of event ${row.event_id} (${s.def.table}) is not JSON: ${errorMessage(err)}`);
          }
        }
        const headers: Headers = {};
        if (row.headers && typeof row.headers === 'object' && !Array.isArray(row.headers)) {
          for (const [k, v] of Object.entries(row.headers as Record<string, unknown>)) if (v !== null && v !== undefined) headers[k] = typeof v === 'string' ? v : JSON.stringify(v);
        }
        headers.event_id = row.event_id;
        headers.event_type = row.event_type;
        headers.aggregate_type = row.aggregate_type;
        if (row.correlation_id !== null && row.correlation_id !== undefined) headers.correlation_id = row.correlation_id;
        else delete headers.correlation_id;
        const meta: Record<string, unknown> = {
          outbox_source: s.def.name,
          outbox_table: s.def.table,
          event_id: row.event_id,
          event_type: row.event_type,
          aggregate_id: row.aggregate_id,
          aggregate_type: row.aggregate_type,
          created_at: row.created_at instanceof Date ? row.created_at.toISOString() : String(row.created_at),
          attempt: row.attempts + 1,
        };
        if (row.correlation_id !== null && row.correlation_id !== undefined) meta.correlation_id = row.correlation_id;
        const ack = ackHandle((outcome) => settleOnce(b, row, outcome.ok ? null : outcome.error));
        return { msg: createMsg(value, { key: row.aggregate_id, headers, meta, ack }), invalid };
      };

      /** The first outcome of a row's attempt counts: its message settling, or attempt_timeout. */
      const settleOnce = (b: Batch, row: Row, error: unknown) => {
        if (row.over) return;
        row.over = true;
        row.timer?.unsubscribe();
        void settled(b, row, error);
      };

      const emit = (b: Batch, row: Row) => {
        b.outstanding++;
        if (attemptTimeoutMs > 0) {
          row.timer = ctx.scheduler.schedule(() => {
            if (row.over) return;
            log.warn({ source: b.src.def.name, event_id: row.event_id, aggregate_id: row.aggregate_id, attempt: row.attempts + 1 }, `outbox event not done within attempt_timeout ${cfg.attempt_timeout}; counted as a failed attempt`);
            settleOnce(b, row, new RunnerError('WRITE_FAILED', `not done within attempt_timeout ${cfg.attempt_timeout} (the output could not deliver it, e.g. its broker is away)`, { retryable: true }));
          }, attemptTimeoutMs);
        }
        const { msg, invalid } = toMsg(b, row);
        if (invalid) ctx.reject(msg, invalid);
        else subscriber.next(msg);
      };

      /** A message of the batch settled: find out whether it was published, emit the next event of its aggregate. */
      const settled = async (b: Batch, row: Row, error: unknown) => {
        const chain = b.chains.get(row.aggregate_id);
        try {
          if (b.broken) return;
          if (error !== null) {
            const { rows } = await b.query(b.src.sql!.recordFailure, [b.src.def.name, row.event_id, errorMessage(error), error instanceof RunnerError ? error.code : 'INTERNAL']);
            b.failed.push({ row, attempts: rows[0].attempts, error: errorMessage(error) });
            return;
          }
          if (!chain?.length || stopped) {
            b.toCheck.push(row);
            return;
          }
          // A follower waits: check now whether this attempt failed (dead-letter output counted it).
          const { rows } = await b.query(b.src.sql!.attempts, [b.src.def.name, [row.event_id]]);
          const now = rows[0];
          if (now && now.attempts > row.attempts) {
            b.failed.push({ row, attempts: now.attempts, error: now.last_error ?? 'dead-lettered' });
            return;
          }
          b.published.push(row);
          const next = chain.shift()!;
          if (!stopped && !subscriber.closed) emit(b, next);
        } catch (err) {
          brokenBatch(b, err);
        } finally {
          if (--b.outstanding === 0) void finishBatch(b);
        }
      };

      const brokenBatch = (b: Batch, err: unknown) => {
        if (b.broken) return;
        b.broken = true;
        const reason = toRunnerError(err, `relaying ${b.src.def.table}`).message;
        log.warn({ source: b.src.def.name, err: reason }, 'outbox batch lost its connection; its events are published again');
        for (const c of b.chains.values()) c.length = 0;
      };

      /** Every emitted message settled: mark, record failures, commit, release the aggregates. */
      const finishBatch = async (b: Batch) => {
        const s = b.src;
        const sql = s.sql!;
        if (b.released) return;
        let published = 0;
        let failedN = 0;
        let deadN = 0;
        try {
          if (b.broken) throw new Error('batch connection failed');
          // Mark what was published, find what failed after all, count it in relay_state: one statement.
          const done = [...b.published, ...b.toCheck];
          if (done.length) {
            const { rows } = await b.query(sql.markDone, [s.def.name, done.map((r) => r.event_id), done.map((r) => r.attempts)]);
            const bad = new Map<string, { attempts: number; last_error: string | null }>(rows.map((r: { event_id: string; attempts: number; last_error: string | null }) => [r.event_id, r]));
            b.published = [];
            for (const row of done) {
              const a = bad.get(row.event_id);
              if (a) b.failed.push({ row, attempts: a.attempts, error: a.last_error ?? 'dead-lettered' });
              else b.published.push(row);
            }
          }
          for (const f of b.failed) {
            failedN++;
            const last = f.attempts >= cfg.max_attempts;
            const ms = last ? 0 : backoffDelay(backoff, f.attempts);
            // Status marker: the attempt is recorded in the row as well (retry_count, next_attempt_at,
            // error_message; the status `failed` after the last one), in the same transaction.
            if (sql.rowFailure) await b.query(sql.rowFailure, [f.row.event_id, f.attempts, f.error, ms, last]);
            if (last) {
              deadN++;
              await b.query(sql.deadLetter, [s.def.name, f.row.event_id]);
              log.error({ source: s.def.name, event_id: f.row.event_id, aggregate_id: f.row.aggregate_id, attempts: f.attempts, err: f.error }, 'outbox event dead-lettered after its last attempt');
            } else {
              await b.query(sql.scheduleRetry, [s.def.name, f.row.event_id, ms]);
              log.warn({ source: s.def.name, event_id: f.row.event_id, aggregate_id: f.row.aggregate_id, attempts: f.attempts, retryInMs: ms, err: f.error }, 'outbox event failed; its aggregate waits for the retry');
            }
          }
          if (b.failed.length && sql.stateError) await b.query(sql.stateError, [s.def.name, `event ${b.failed.at(-1)!.row.event_id}: ${b.failed.at(-1)!.error}`]);
          await b.query('COMMIT');
          published = b.published.length;
          // Progress: while every slot is busy with a backlog no claim can run, but committed
          // batches show the source is publishing (readiness counts them as polls).
          s.lastPollAt = Date.now();
          b.released = true;
          b.client.removeListener('error', b.onError);
          b.client.release();
        } catch (err) {
          const reason = toRunnerError(err, `marking ${b.published.length} events of ${s.def.table} published`).message;
          log.warn({ source: s.def.name, err: reason, events: b.published.length }, 'outbox batch not committed; its events are published again');
          ctx.metrics.error('mark');
          recordError(s, reason);
          if (!b.released) {
            b.client.removeListener('error', b.onError);
            b.client.release(true);
          }
          b.released = true;
        } finally {
          if (published) metrics.published.inc(s.labels, published);
          if (published || failedN) {
            metrics.failed.inc(s.labels, failedN);
            metrics.deadLettered.inc(s.labels, deadN);
          }
          s.batches.delete(b);
          if (b.from === null) s.cursor = null;
          b.finish();
          wake(s);
        }
      };

      /** Claim one batch of a source; returns the number of events claimed. */
      const claim = async (s: SourceState): Promise<number> => {
        const sql = s.sql!;
        let client: pg.PoolClient;
        try {
          client = await pool.connect();
        } catch (err) {
          throw toRunnerError(err, `connecting to PostgreSQL at ${where}`);
        }
        let heads: Row[];
        let followers: Row[] = [];
        try {
          await client.query('BEGIN');
          const window = CLAIM_WINDOW_FACTOR * cfg.batch_size;
          const after = s.cursor;
          // One statement: the heads, their aggregates' following events and, when no head was free,
          // where the window ended (outbox-sql.ts, claimHeads).
          const { rows } = await client.query(after ? sql.claimHeadsAfter : sql.claimHeads, after ? [s.def.name, cfg.batch_size, window, after] : [s.def.name, cfg.batch_size, window]);
          heads = [];
          let end: string | null = null;
          for (const r of rows as (Row & { kind: string; seq: number | null })[]) {
            if (r.kind === 'h') heads.push(r);
            else if (r.kind === 'f') followers.push(r);
            else end = r.event_id;
          }
          // In creation order (the statement does not sort the rows it returns).
          followers.sort((a, b) => (a as Row & { seq: number }).seq - (b as Row & { seq: number }).seq);
          // Heads found: the next claim starts at the same window (null: the oldest rows) again.
          // None: if the window was full, the next claim looks at the next one.
          if (!heads.length) s.cursor = end !== null && end !== after ? end : null;
        } catch (err) {
          await client.query('ROLLBACK').catch(() => undefined);
          client.release(true);
          throw toRunnerError(err, `claiming events of ${s.def.table}`);
        }
        if (!heads.length || stopped || subscriber.closed) {
          await client.query('ROLLBACK').catch(() => undefined);
          client.release();
          return 0;
        }
        let finish!: () => void;
        const b: Batch = {
          client,
          from: s.cursor,
          src: s,
          chains: new Map(),
          outstanding: 0,
          published: [],
          toCheck: [],
          failed: [],
          finished: new Promise<void>((resolve) => (finish = resolve)),
          finish: () => finish(),
          broken: false,
          released: false,
          onError: (err) => brokenBatch(b, err),
          tail: Promise.resolve(),
          query(text, params) {
            const run = b.tail.then(() => client.query(text, params));
            b.tail = run.catch(() => undefined);
            return run;
          },
        };
        client.on('error', b.onError);
        // Chains: per aggregate the events after the head, in order, up to the first one that
        // waits for a retry (it and everything after it stay for a later batch).
        const headOf = new Map<string, Row>(heads.map((h) => [h.aggregate_id, h]));
        let total = heads.length;
        for (const h of heads) b.chains.set(h.aggregate_id, []);
        const cut = new Set<string>();
        for (const r of followers) {
          const head = headOf.get(r.aggregate_id);
          if (!head || r.event_id === head.event_id || cut.has(r.aggregate_id) || r.dead) continue;
          // Visible now but older than the head (committed late by its writer): not ours to take.
          if (r.created_at < head.created_at) continue;
          if (r.waiting || total >= cfg.batch_size) {
            cut.add(r.aggregate_id);
            continue;
          }
          b.chains.get(r.aggregate_id)!.push(r);
          total++;
        }
        s.batches.add(b);
        ctx.metrics.batchSize(total);
        // One guard count while emitting: a message settling at once must not finish the batch early.
        b.outstanding++;
        for (const h of heads) emit(b, h);
        if (--b.outstanding === 0) void finishBatch(b);
        return total;
      };

      // ---- per source: startup check, then the poll loop -----------------------------------------
      const checkSource = async (s: SourceState): Promise<void> => {
        let lastReason = '';
        for (let attempt = 1; !stopped; attempt++) {
          let reason: string;
          try {
            const r = await checkSourceTable(pool, s.def);
            if ('info' in r) {
              const missingF = await missingColumns(pool, cfg.failures_table, ['source', 'event_id', 'attempts', 'last_error', 'last_error_code', 'next_attempt_at', 'dead_lettered_at']);
              const missingS = cfg.state_table ? await missingColumns(pool, cfg.state_table, ['source', 'last_poll_at', 'published_total', 'last_error', 'updated_at']) : [];
              if (missingF === null || missingF.length) reason = `failures table ${cfg.failures_table} ${missingF === null ? 'does not exist' : `has no column ${missingF.join(', ')}`}; run \`runner migrate\``;
              else if (missingS === null || missingS.length) reason = `state table ${cfg.state_table} ${missingS === null ? 'does not exist' : `has no column ${missingS.join(', ')}`}; run \`runner migrate\``;
              else {
                s.info = r.info;
                s.sql = sourceSql(s.def, r.info, { failures: cfg.failures_table, state: cfg.state_table });
                log.info({ source: s.def.name, table: s.def.table, database: where }, 'outbox source ready');
                return;
              }
            } else reason = `${r.problem} (database ${where}); run \`runner migrate\` or fix the pipeline`;
          } catch (err) {
            reason = `cannot check table ${s.def.table}: ${toRunnerError(err, `connecting to PostgreSQL at ${where}`).message}`;
          }
          if (stopped) return;
          setProblem(s, reason);
          if (reason !== lastReason) log.error({ source: s.def.name, table: s.def.table }, reason);
          lastReason = reason;
          await sleep(backoffDelay(DEFAULT_BACKOFF, attempt));
        }
      };

      const runSource = async (s: SourceState) => {
        await checkSource(s);
        let failures = 0;
        while (!stopped && !subscriber.closed) {
          if (s.batches.size >= cfg.max_in_flight) {
            // Every slot busy: wait for a batch to finish (it wakes us); a claim follows at once.
            s.dirty = false;
            await waitWake(s, pollMs);
            // Waiting for slots is not a completed poll; readiness tells if it takes too long.
            continue;
          }
          s.dirty = false;
          let n: number;
          try {
            n = await claim(s);
            failures = 0;
          } catch (err) {
            if (stopped) return;
            failures++;
            const reason = errorMessage(err);
            ctx.metrics.error('claim');
            setProblem(s, reason);
            recordError(s, reason);
            const ms = backoffDelay(DEFAULT_BACKOFF, failures);
            log.warn({ source: s.def.name, err: reason, retryInMs: ms }, 'claiming outbox events failed; retrying');
            await sleep(ms);
            continue;
          }
          s.lastPollAt = Date.now();
          setProblem(s, null);
          refreshReady();
          writeState(s, 'polled');
          if (n >= cfg.batch_size) continue;
          // A full window without a free head: look at the next window at once, a few at a time.
          if (n === 0 && s.cursor && ++s.walked < WALK_WINDOWS) continue;
          s.walked = 0;
          await waitWake(s, pollMs);
        }
      };

      const updateStats = async (s: SourceState) => {
        if (!s.sql || s.statsRunning || closed || Date.now() < s.statsNotBefore) return;
        s.statsRunning = true;
        const started = Date.now();
        try {
          const { rows } = await pool.query(s.sql.stats, [s.def.name]);
          metrics.pending.set(s.labels, Number(rows[0].pending));
          metrics.oldest.set(s.labels, Math.max(0, Number(rows[0].oldest_age ?? 0)));
        } catch (err) {
          log.debug({ source: s.def.name, err: safeUrl(errorMessage(err)) }, 'outbox statistics failed');
        } finally {
          s.statsRunning = false;
          // Counting 500,000 waiting rows takes ~0.5 s of a core: at most ~5 % of the time goes to it.
          s.statsNotBefore = Date.now() + STATS_SPACING * (Date.now() - started);
        }
      };

      const runCleanup = async (s: SourceState) => {
        const olderMs = parseDuration(s.cfg.cleanup.older_than);
        if (olderMs <= 0) return;
        const intervalMs = Math.max(10, parseDuration(s.cfg.cleanup.interval));
        while (!s.sql && !stopped) await sleep(pollMs);
        let failures = 0;
        while (!stopped) {
          try {
            const r = await pool.query(s.sql!.cleanup, [olderMs, s.cfg.cleanup.batch_size]);
            failures = 0;
            if ((r as { rowCount?: number }).rowCount) log.debug({ source: s.def.name, deleted: (r as { rowCount?: number }).rowCount }, 'outbox cleanup deleted published rows');
            if (((r as { rowCount?: number }).rowCount ?? 0) >= s.cfg.cleanup.batch_size) {
              await sleep(0);
              continue;
            }
            await sleep(intervalMs);
          } catch (err) {
            if (stopped) return;
            failures++;
            log.warn({ source: s.def.name, err: safeUrl(errorMessage(err)) }, 'outbox cleanup failed; retrying');
            await sleep(backoffDelay(DEFAULT_BACKOFF, failures));
          }
        }
      };

      // ---- LISTEN -----------------------------------------------------------------------------------
      const channels = [...new Set(cfg.sources.map((s) => s.notify_channel).filter(Boolean))];
      let listener: pg.Client | null = null;
      const listen = async () => {
        for (let attempt = 1; channels.length && !stopped; attempt++) {
          const client = new pg.Client({ connectionString: cfg.url, connectionTimeoutMillis: 10_000 });
          try {
            await client.connect();
            client.on('notification', (n) => {
              const table = n.payload ?? '';
              const matching = sources.filter((s) => s.cfg.notify_channel === n.channel);
              const exact = matching.filter((s) => s.def.table === table || table.endsWith(`.${s.def.table}`));
              for (const s of exact.length ? exact : matching) wake(s);
            });
            const lost = new Promise<void>((resolve) => {
              client.on('error', (err) => {
                log.warn({ err: safeUrl(errorMessage(err)) }, 'LISTEN connection lost; polling continues, reconnecting');
                resolve();
              });
              client.on('end', () => resolve());
            });
            for (const ch of channels) await client.query(`LISTEN ${quoteIdent(ch)}`);
            listener = client;
            attempt = 0;
            // Events inserted while not listening: look now.
            for (const s of sources) wake(s);
            await lost;
            listener = null;
            await client.end().catch(() => undefined);
          } catch (err) {
            await client.end().catch(() => undefined);
            if (stopped) return;
            log.warn({ err: safeUrl(errorMessage(err)), channels }, 'LISTEN failed; polling continues, retrying');
          }
          if (!stopped) await sleep(backoffDelay(DEFAULT_BACKOFF, Math.max(1, attempt)));
        }
      };

      // ---- start ------------------------------------------------------------------------------------
      const loops = sources.map((s) => runSource(s).catch((err) => log.error({ source: s.def.name, err: errorMessage(err) }, 'outbox source loop failed')));
      for (const s of sources) void runCleanup(s);
      void listen();
      const tick = Math.max(50, Math.min(pollMs, statsMs) / 2);
      let lastStats = 0;
      const watchdog = ctx.scheduler.schedule(function (this: { schedule(state?: unknown, delay?: number): void }) {
        refreshReady();
        if (Date.now() - lastStats >= statsMs) {
          lastStats = Date.now();
          for (const s of sources) void updateStats(s);
        }
        if (!closed) this.schedule(undefined, tick);
      }, tick);

      const stop = () => {
        if (stopped) return;
        stopped = true;
        for (const s of sources) wake(s);
      };
      const stopSub = ctx.stop$.subscribe(() => {
        stop();
        log.info('stopping: no more claiming; in-flight events are marked as they finish');
        subscriber.complete();
      });

      ctx.onClose(async () => {
        stop();
        await Promise.all(loops);
        // Batches whose messages never settled (the drain timed out): roll back, publish again later.
        for (const s of sources) {
          for (const b of s.batches) {
            if (b.outstanding > 0 && !b.released) {
              b.broken = true;
              b.released = true;
              b.client.release(true);
              s.batches.delete(b);
              b.finish();
            }
          }
        }
        await Promise.all(sources.flatMap((s) => [...s.batches].map((b) => b.finished)));
        closed = true;
        watchdog.unsubscribe();
        cancelSleeps();
        await (listener as pg.Client | null)?.end().catch(() => undefined);
        for (const s of sources) {
          metrics.pending.remove(s.labels);
          metrics.oldest.remove(s.labels);
        }
        await pool.end().catch((err) => log.warn({ err: safeUrl(errorMessage(err)) }, 'closing the PostgreSQL pool failed'));
      });

      return () => {
        stop();
        stopSub.unsubscribe();
      };
    });
  },
});
