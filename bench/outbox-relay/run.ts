/**
 * Outbox relay benchmark against the real stack: `runner start` with the relay pipeline over a
 * throwaway database migrated like `services` (four sources) and a throwaway topic.
 *
 *   throughput: N events per source already waiting (2,000 aggregates per source), then the
 *               relay starts; events/s from the first record to the last one in Kafka.
 *   latency:    the relay runs; writers insert single-row transactions at --rate events/s over the
 *               four sources for --duration; latency = time the record is read from Kafka minus
 *               the time COMMIT returned (an upper bound of commit -> Kafka ack).
 *
 *   eval "$(bash scripts/stack env)"
 *   flock /tmp/runner-bench.lock node --import tsx bench/outbox-relay/run.ts --phase throughput --events 25000
 *   flock /tmp/runner-bench.lock node --import tsx bench/outbox-relay/run.ts --phase latency --rate 100 --duration 20s
 *   (--input-in-flight N: batches per source, default 2; --output-in-flight N: the kafka output's max_in_flight, default 1)
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { parseDuration } from '../../core/duration.ts';
import { FOUR_SOURCES, createTopics, kafka, relayYaml, servicesDatabase } from '../../tests/integration/outbox/harness.ts';

const { values: args } = parseArgs({
  options: {
    phase: { type: 'string', default: 'throughput' },
    events: { type: 'string', default: '25000' },
    rate: { type: 'string', default: '100' },
    duration: { type: 'string', default: '20s' },
    'input-in-flight': { type: 'string', default: '2' },
    'output-in-flight': { type: 'string', default: '1' },
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
await createTopics(admin, [topic], 3);
const db = await servicesDatabase();
const dir = mkdtempSync(join(tmpdir(), 'outbox-bench-'));
const file = join(dir, 'outbox-bench.yaml');
writeFileSync(file, relayYaml({ name: 'outbox-bench', url: db.url, topic, sources: FOUR_SOURCES, input: `poll_interval: 1s\nbatch_size: 1000\nmax_in_flight: ${args['input-in-flight']}`, kafkaExtra: `max_in_flight: ${args['output-in-flight']}` }));

const arrivals = new Map<string, number>();
let first = 0;
let last = 0;
const consumer = kafka.consumer({ groupId: `${topic}-check`, maxWaitTimeInMs: 5 });
await consumer.connect();
await consumer.subscribe({ topic, fromBeginning: true });
await consumer.run({
  eachBatchAutoResolve: true,
  eachBatch: async ({ batch }) => {
    const now = Date.now();
    for (const m of batch.messages) {
      const id = m.headers?.event_id?.toString();
      if (id && !arrivals.has(id)) arrivals.set(id, now);
    }
    if (!first) first = now;
    last = now;
  },
});

const runner = spawn(process.execPath, [join(root, 'bin/runner.mjs'), 'start', file], { env: { ...process.env, RUNNER_HTTP_PORT: '0', LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'inherit'] });
const until = async (pred: () => boolean) => {
  while (!pred()) await new Promise((r) => setTimeout(r, 20));
};

try {
  if (args.phase === 'throughput') {
    const n = Number(args.events);
    for (const t of TABLES) {
      await db.query(`INSERT INTO ${t} (aggregate_id, aggregate_type, event_type, payload, created_at)
        SELECT 'agg-' || (i % 2000), 'bench', 'bench.event', jsonb_build_object('seq', i, 'pad', repeat('x', 150)), clock_timestamp() FROM generate_series(1, $1::int) i`, [n]);
    }
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
    console.log(JSON.stringify({ phase: 'latency', rate, events: lat.length, achieved_rate: Math.round(lat.length / (durationMs / 1000)), p50_ms: quantile(lat, 0.5), p99_ms: quantile(lat, 0.99), max_ms: Math.max(...lat) }));
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
