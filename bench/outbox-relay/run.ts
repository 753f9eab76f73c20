/**
 * Outbox relay benchmark against the real stack: `runner start` with the relay pipeline over a
 * throwaway database migrated like `services` (four sources) and a throwaway topic.
 *
 *   throughput: N events per source already waiting (2,000 aggregates per source), then the
 *               relay starts; events/s from the first record to the last one in Kafka.
 *   latency:    the relay runs; writers insert single-row transactions at --rate events/s over the
 *               four sources for --duration. Two latencies per event, from the time COMMIT
 *               returned to the writer: `ack_*` to the broker's append time of the record (the
 *               topic has message.timestamp.type LogAppendTime; with acks=all on one broker the
 *               acknowledgement follows the append at once, so this is commit -> Kafka ack), and
 *               `read_*` to this process reading the record back (an upper bound: adds the
 *               consumer's fetch cycle; the consumer commits no offsets, which added ~20 ms).
 *
 *   eval "$(bash scripts/stack env)"
 *   flock /tmp/runner-bench.lock node --import tsx bench/outbox-relay/run.ts --phase throughput --events 25000
 *   flock /tmp/runner-bench.lock node --import tsx bench/outbox-relay/run.ts --phase latency --rate 100 --duration 20s
 *   backlog:    --prefill N events (spread over the four sources, --aggregates per source) are
 *               inserted and ANALYZEd before the relay starts, as after an outage; events/s over
 *               the first --measure of publishing (or until all are out), and readiness sampled
 *               every 250 ms from the runner's /health/ready (how often it was not ready, why).
 *
 *   eval "$(bash scripts/stack env)"
 *   flock /tmp/runner-bench.lock node --import tsx bench/outbox-relay/run.ts --phase throughput --events 25000
 *   flock /tmp/runner-bench.lock node --import tsx bench/outbox-relay/run.ts --phase latency --rate 100 --duration 20s
 *   flock /tmp/runner-bench.lock node --import tsx bench/outbox-relay/run.ts --phase backlog --prefill 2000000 --aggregates 997 --batch-size 500 --measure 60s
 *   (--input-in-flight N: batches per source, default 2; --output-in-flight N: the kafka output's max_in_flight, default 1;
 *    --batch-size N: the input's batch_size, default 1000; --aggregates N: aggregates per source, default 2000;
 *    --period D: the kafka output's batching.period, default 5ms; --client kafkajs|platformatic: the
 *    kafka output's client, default platformatic as in pipelines/outbox-relay.yaml)
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { parseDuration } from '../../core/duration.ts';
import { createTopicsReady } from '../../tests/helpers/kafka.ts';
import { FOUR_SOURCES, kafka, relayYaml, servicesDatabase } from '../../tests/integration/outbox/harness.ts';

const { values: args } = parseArgs({
  options: {
    phase: { type: 'string', default: 'throughput' },
    events: { type: 'string', default: '25000' },
    rate: { type: 'string', default: '100' },
    duration: { type: 'string', default: '20s' },
    'input-in-flight': { type: 'string', default: '2' },
    'output-in-flight': { type: 'string', default: '1' },
    'batch-size': { type: 'string', default: '1000' },
    aggregates: { type: 'string', default: '2000' },
    prefill: { type: 'string', default: '2000000' },
    measure: { type: 'string', default: '60s' },
    period: { type: 'string', default: '5ms' },
    client: { type: 'string', default: 'platformatic' },
  },
});
const root = new URL('../..', import.meta.url).pathname;
const TABLES = ['whatsapp_handler.outbox_events', 'darwin_ingestor.outbox_events', 'journey_matcher.outbox', 'data_retention.outbox'];
const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
};

const topic = `outbox-bench-${randomUUID().slice(0, 8)}`;
const admin = kafka.admin();
await admin.connect();
// LogAppendTime: each record's timestamp is the broker's clock when it appended the record, just
// before it acknowledges the write (acks=all, one broker): commit -> acknowledgement without the
// read-back consumer's own delay.
await createTopicsReady(admin, [{ topic, numPartitions: 3, configEntries: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }] }]);
const db = await servicesDatabase();
const aggregates = Number(args.aggregates);
/** Inserts n events into each table, aggregate 'agg-' || (i % aggregates), in chunks of 100,000 rows per statement. */
const fill = async (n: number) => {
  for (const t of TABLES) {
    for (let from = 1; from <= n; from += 100_000) {
      await db.query(
        `INSERT INTO ${t} (aggregate_id, aggregate_type, event_type, payload, created_at)
         SELECT 'agg-' || (i % $3::int), 'bench', 'bench.event', jsonb_build_object('seq', i, 'pad', repeat('x', 150)), clock_timestamp() FROM generate_series($1::int, $2::int) i`,
        [from, Math.min(n, from + 99_999), aggregates],
      );
    }
  }
};
const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
const httpPort = await freePort();
let prefillSeconds = 0;
if (args.phase === 'backlog') {
  // Before the relay starts: the backlog an outage leaves behind.
  const t0 = Date.now();
  await fill(Math.floor(Number(args.prefill) / TABLES.length));
  await db.query('ANALYZE');
  prefillSeconds = (Date.now() - t0) / 1000;
}
const dir = mkdtempSync(join(tmpdir(), 'outbox-bench-'));
const file = join(dir, 'outbox-bench.yaml');
writeFileSync(file, relayYaml({ name: 'outbox-bench', url: db.url, topic, sources: FOUR_SOURCES, input: `poll_interval: 1s\nbatch_size: ${args['batch-size']}\nmax_in_flight: ${args['input-in-flight']}`, kafkaExtra: `max_in_flight: ${args['output-in-flight']}\nclient: ${args.client}` }).replace('batching: { count: 500, period: 5ms }', `batching: { count: 500, period: ${args.period} }`));

const arrivals = new Map<string, number>();
/** Broker append time of each event's first record (LogAppendTime). */
const appended = new Map<string, number>();
let first = 0;
let last = 0;
const consumer = kafka.consumer({ groupId: `${topic}-check`, maxWaitTimeInMs: 5 });
await consumer.connect();
await consumer.subscribe({ topic, fromBeginning: true });
await consumer.run({
  // No offset commits: a throwaway group, and a commit per fetch would delay the next fetch.
  autoCommit: false,
  eachBatchAutoResolve: true,
  eachBatch: async ({ batch }) => {
    const now = Date.now();
    for (const m of batch.messages) {
      const id = m.headers?.event_id?.toString();
      if (id && !arrivals.has(id)) {
        arrivals.set(id, now);
        appended.set(id, Number(m.timestamp));
      }
    }
    if (!first) first = now;
    last = now;
  },
});

const runner = spawn(process.execPath, [join(root, 'bin/runner.mjs'), 'start', file], { env: { ...process.env, RUNNER_HTTP_PORT: String(httpPort), RUNNER_HTTP_HOST: '127.0.0.1', LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'inherit'] });
const until = async (pred: () => boolean) => {
  while (!pred()) await new Promise((r) => setTimeout(r, 20));
};

try {
  if (args.phase === 'backlog') {
    const total = Math.floor(Number(args.prefill) / TABLES.length) * TABLES.length;
    const measureMs = parseDuration(args.measure!);
    const samples: { ok: boolean; reason: string }[] = [];
    const reasons = new Map<string, number>();
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        try {
          const res = await fetch(`http://127.0.0.1:${httpPort}/health/ready`);
          const body = await res.text();
          samples.push({ ok: res.ok, reason: res.ok ? '' : body });
        } catch {
          // not listening yet
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    await until(() => first > 0);
    const from = first;
    await until(() => arrivals.size >= total || Date.now() - from >= measureMs);
    const secs = (Date.now() - from) / 1000;
    const published = arrivals.size;
    sampling = false;
    await sampler;
    // From the first ready answer on (before it the sources are being checked).
    const during = samples.slice(Math.max(0, samples.findIndex((x) => x.ok)));
    for (const x of during) {
      if (x.ok) continue;
      // The components' reasons without their numbers ("... for 3.1 s" -> "... for N s").
      let text = x.reason;
      try {
        const body = JSON.parse(x.reason) as { pipelines?: Record<string, { components?: Record<string, { ready: boolean; reason?: string }> }> };
        text = Object.values(body.pipelines ?? {})
          .flatMap((p) => Object.entries(p.components ?? {}).filter(([, c]) => !c.ready).map(([name, c]) => `${name}: ${c.reason ?? 'not ready'}`))
          .join('; ');
      } catch {
        // not JSON: kept as it is
      }
      const key = text.replace(/[0-9]+(\.[0-9]+)?/g, 'N').slice(0, 300);
      reasons.set(key, (reasons.get(key) ?? 0) + 1);
    }
    console.log(
      JSON.stringify({
        phase: 'backlog',
        prefilled: total,
        aggregates_per_source: aggregates,
        batch_size: Number(args['batch-size']),
        prefill_seconds: prefillSeconds,
        measured_seconds: secs,
        published,
        events_per_s: Math.round(published / secs),
        ready_samples: during.length,
        not_ready_samples: during.filter((x) => !x.ok).length,
        not_ready_reasons: Object.fromEntries(reasons),
      }),
    );
  } else if (args.phase === 'throughput') {
    const n = Number(args.events);
    await fill(n);
    await until(() => arrivals.size >= n * TABLES.length);
    const secs = (last - first) / 1000;
    console.log(JSON.stringify({ phase: 'throughput', events: n * TABLES.length, seconds: secs, events_per_s: Math.round((n * TABLES.length) / secs) }));
  } else {
    const rate = Number(args.rate);
    const durationMs = parseDuration(args.duration!);
    const pool = new pg.Pool({ connectionString: db.url, max: 8 });
    // Warm up: the relay connected and published one event.
    const warm = (await pool.query(`INSERT INTO ${TABLES[0]} (aggregate_id, aggregate_type, event_type, payload) VALUES ('warm', 'bench', 'bench.event', '{}') RETURNING id::text`)).rows[0].id;
    await until(() => arrivals.has(warm));
    const commits = new Map<string, number>();
    const start = Date.now();
    let sent = 0;
    const pending: Promise<void>[] = [];
    while (Date.now() - start < durationMs) {
      const due = Math.floor(((Date.now() - start) / 1000) * rate);
      for (; sent < due; sent++) {
        const t = TABLES[sent % 4]!;
        pending.push(
          pool.query(`INSERT INTO ${t} (aggregate_id, aggregate_type, event_type, payload) VALUES ($1, 'bench', 'bench.event', $2) RETURNING id::text`, [`agg-${sent % 500}`, JSON.stringify({ seq: sent, pad: 'x'.repeat(150) })]).then((r) => {
            commits.set(r.rows[0].id, Date.now());
          }),
        );
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    await Promise.all(pending);
    await until(() => [...commits.keys()].every((id) => arrivals.has(id)));
    const lat = [...commits].map(([id, t]) => arrivals.get(id)! - t);
    const ack = [...commits].map(([id, t]) => appended.get(id)! - t);
    console.log(
      JSON.stringify({
        phase: 'latency',
        rate,
        client: args.client,
        events: lat.length,
        achieved_rate: Math.round(lat.length / (durationMs / 1000)),
        // COMMIT returned -> the broker appended the record (its acknowledgement follows at once).
        ack_p50_ms: quantile(ack, 0.5),
        ack_p99_ms: quantile(ack, 0.99),
        ack_max_ms: Math.max(...ack),
        // COMMIT returned -> this process read the record back (adds the consumer's fetch cycle).
        read_p50_ms: quantile(lat, 0.5),
        read_p99_ms: quantile(lat, 0.99),
        read_max_ms: Math.max(...lat),
      }),
    );
    await pool.end();
  }
} finally {
  runner.kill('SIGTERM');
  await new Promise((r) => runner.on('exit', r));
  await consumer.disconnect();
  await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  await admin.disconnect();
  await db.drop();
}
