/**
 * Kafka -> PostgreSQL sink benchmark (issue 4). Not a test: run it by hand, under the bench lock.
 *
 *   eval "$(bash scripts/stack env)"
 *   flock /tmp/runner-bench.lock node --import tsx bench/postgres-sink/run.ts --rows 1000000 --repeat 3
 *
 * Setup (not timed): a fresh database (random name, dropped at the end) migrated with
 * migrations/telemetry in plain mode; N heat-pump telemetry messages (unique device_id, timestamp;
 * d0 d1 d2 d5 d6) produced to a fresh topic with --partitions partitions, keyed by device_id; the
 * same rows written as a CSV file. The topic and the consumer groups are deleted at the end.
 *
 * Phases (each against the `heatpump` table of that database, TRUNCATEd and CHECKPOINTed first,
 * except upsert-again which writes the same rows again over the full table):
 *
 *   psql-copy        psql -c "\copy heatpump(...) FROM 'rows.csv' CSV": the ceiling
 *   psql-upsert      psql: one transaction, \copy into a temporary staging table, then
 *                    INSERT INTO heatpump SELECT ... ON CONFLICT DO NOTHING
 *   runner-copy      `runner start bench/postgres-sink/pipeline.yaml` with mode copy
 *   runner-upsert    the same with mode upsert (staging + ON CONFLICT DO NOTHING per batch)
 *   upsert-again     mode upsert again, a new consumer group, every row already there
 *
 * A runner phase starts the runner as a child process with a consumer group of its own, so it
 * faces the whole backlog. Its time runs from /health/ready (consumer joined, table checked) to
 * the moment the output has committed N rows (runner_component_sent_total of the output, scraped
 * every 250 ms; the row count in the table is checked afterwards); the time from spawning the
 * process is reported too. RSS of the runner (/proc/<pid>/status VmRSS) is sampled every 250 ms.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import kafkajs from 'kafkajs';
import pg from 'pg';
import { migrateDatabase } from '../../operators/postgres/migrate.ts';
import { createTopicsReady } from '../../tests/helpers/kafka.ts';
import { cpuSeconds, machineInfo, machineTicks, rssMb } from '../lib/proc.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const PIPELINE = join(ROOT, 'bench', 'postgres-sink', 'pipeline.yaml');
const COLUMNS = ['time', 'device_id', 'outdoor_temp', 'indoor_temp', 'hot_water_temp', 'supply_temp', 'return_temp', 'raw'];
const ALL_PHASES = ['psql-copy', 'psql-upsert', 'runner-copy', 'runner-upsert', 'upsert-again'];

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    devices: { type: 'string', default: '1000' },
    partitions: { type: 'string', default: '6' },
    repeat: { type: 'string', default: '1' },
    phases: { type: 'string', default: ALL_PHASES.join(',') },
    batch: { type: 'string', default: '' },
    'max-in-flight': { type: 'string', default: '' },
    'input-in-flight': { type: 'string', default: '' },
    'fetch-max-bytes': { type: 'string', default: '' },
    'input-in-flight-bytes': { type: 'string', default: '' },
    'cpu-prof': { type: 'string' },
    'runner-node-args': { type: 'string', default: '' },
    out: { type: 'string' },
    timeout: { type: 'string', default: '600' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]);
  process.exit(0);
}

const ROWS = Number(args.rows);
const DEVICES = Math.min(Number(args.devices), ROWS);
const PARTITIONS = Number(args.partitions);
const REPEAT = Number(args.repeat);
const PHASES = args.phases!.split(',').map((p) => p.trim()).filter(Boolean);
for (const p of PHASES) if (!ALL_PHASES.includes(p)) throw new Error(`unknown phase ${p}; phases: ${ALL_PHASES.join(', ')}`);
const BROKERS = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
const ADMIN_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const suffix = randomBytes(4).toString('hex');
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const OUT = resolve(args.out ?? join(tmpdir(), 'runner-bench', `postgres-sink-${stamp}`));
mkdirSync(OUT, { recursive: true });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (line: string) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2) : NaN;
};

function urlFor(database: string): string {
  const u = new URL(ADMIN_URL);
  u.pathname = `/${database}`;
  return u.toString();
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------------------------------------
// The rows: device i of DEVICES, reading j every 10 s; values vary smoothly with one decimal.
// ---------------------------------------------------------------------------------------------
const T0 = 1698765432;
const perDevice = Math.ceil(ROWS / DEVICES);
const round1 = (x: number) => Math.round(x * 10) / 10;
function payload(n: number): { key: string; json: string; ts: number } {
  const i = n % DEVICES;
  const j = Math.floor(n / DEVICES);
  const device_id = `device-${String(i + 1).padStart(4, '0')}`;
  const ts = T0 + j * 10;
  const a = (j + i * 7) / 50;
  const v = {
    device_id,
    timestamp: ts,
    d0: round1(5 + 6 * Math.sin(a)),
    d1: round1(21 + Math.sin(a / 3)),
    d2: round1(48 + 3 * Math.cos(a)),
    d5: round1(35 + 4 * Math.cos(a / 2)),
    d6: round1(30.5 + 3 * Math.sin(a / 2)),
  };
  return { key: device_id, json: JSON.stringify(v), ts };
}

async function produce(topic: string): Promise<number> {
  const kafka = new kafkajs.Kafka({ clientId: `bench-pgsink-${suffix}`, brokers: BROKERS, logLevel: kafkajs.logLevel.WARN });
  const producer = kafka.producer({ allowAutoTopicCreation: false, createPartitioner: kafkajs.Partitioners.DefaultPartitioner });
  await producer.connect();
  const started = performance.now();
  const CHUNK = 20_000;
  const CONCURRENT = 4;
  let next = 0;
  const worker = async () => {
    for (;;) {
      const from = next;
      if (from >= ROWS) return;
      next = Math.min(ROWS, from + CHUNK);
      const messages = [];
      for (let n = from; n < next; n++) {
        const p = payload(n);
        messages.push({ key: p.key, value: p.json });
      }
      await producer.send({ topic, messages, acks: -1 });
    }
  };
  await Promise.all(Array.from({ length: CONCURRENT }, worker));
  await producer.disconnect();
  return (performance.now() - started) / 1000;
}

async function writeCsv(file: string): Promise<void> {
  const out = createWriteStream(file);
  let buf = '';
  for (let n = 0; n < ROWS; n++) {
    const p = payload(n);
    const v = JSON.parse(p.json);
    buf += `${new Date(p.ts * 1000).toISOString()},${v.device_id},${v.d0},${v.d1},${v.d2},${v.d5},${v.d6},"${p.json.replace(/"/g, '""')}"\n`;
    if (buf.length > 1 << 20) {
      if (!out.write(buf)) await new Promise<void>((r) => out.once('drain', () => r()));
      buf = '';
    }
  }
  out.end(buf);
  await new Promise<void>((r, j) => out.on('finish', () => r()).on('error', j));
}

// ---------------------------------------------------------------------------------------------
// Sampling /proc
// ---------------------------------------------------------------------------------------------
// rssMb, cpuSeconds and the machine's busy time: bench/lib/proc.ts.
const machineBusy = machineTicks;

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------
interface PhaseResult {
  phase: string;
  repeat: number;
  rows: number;
  seconds: number;
  rows_per_s: number;
  seconds_from_spawn?: number;
  peak_rss_mb?: number;
  /** RSS every 250 ms from spawning the runner, MB; with the rows committed at each scrape. */
  rss_mb?: number[];
  /** Largest V8 heap used / total and external memory seen at the scrapes (prom-client default metrics), MB. */
  max_heap_mb?: { used: number; total: number; external: number };
  progress?: [number, number][];
  runner_cpu_s?: number;
  machine_busy?: number;
  load_avg_1m: [number, number];
  rows_in_table: number;
  dead_letters?: number;
  batch_count?: number;
}

function run(cmd: string, argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  return new Promise((res, rej) => {
    const p = spawn(cmd, argv, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr!.on('data', (d) => (err += d));
    p.on('error', rej);
    p.on('exit', (code) => (code === 0 ? res() : rej(new Error(`${cmd} exited with ${code}: ${err}`))));
  });
}

async function prepareTable(url: string, truncate: boolean) {
  await withClient(url, async (c) => {
    if (truncate) await c.query('TRUNCATE heatpump');
    await c.query('CHECKPOINT');
  });
}

const countRows = (url: string): Promise<number> => withClient(url, async (c) => Number((await c.query('SELECT count(*)::bigint AS n FROM heatpump')).rows[0].n));

async function psqlPhase(phase: string, repeat: number, url: string, csv: string): Promise<PhaseResult> {
  await prepareTable(url, true);
  const cols = COLUMNS.join(', ');
  const load0 = loadavg()[0]!;
  const m0 = machineBusy();
  const started = performance.now();
  if (phase === 'psql-copy') {
    await run('psql', [url, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', `\\copy heatpump(${cols}) FROM '${csv}' CSV`]);
  } else {
    const script = join(OUT, 'psql-upsert.sql');
    writeFileSync(
      script,
      [
        'BEGIN;',
        `CREATE TEMP TABLE staging ON COMMIT DROP AS SELECT ${cols} FROM heatpump WITH NO DATA;`,
        `\\copy staging(${cols}) FROM '${csv}' CSV`,
        `INSERT INTO heatpump (${cols}) SELECT ${cols} FROM staging ON CONFLICT DO NOTHING;`,
        'COMMIT;',
        '',
      ].join('\n'),
    );
    await run('psql', [url, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', script]);
  }
  const seconds = (performance.now() - started) / 1000;
  const m1 = machineBusy();
  const n = await countRows(url);
  return { phase, repeat, rows: ROWS, seconds, rows_per_s: ROWS / seconds, load_avg_1m: [load0, loadavg()[0]!], machine_busy: (m1.busy - m0.busy) / (m1.total - m0.total), rows_in_table: n };
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
    s.on('error', rej);
  });
}

interface Scrape {
  sent: number;
  dead: number;
  batches: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
}

async function scrape(port: number): Promise<Scrape | null> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
    let sent = 0;
    let dead = 0;
    let batches = 0;
    let heapUsed = 0;
    let heapTotal = 0;
    let external = 0;
    const mb = (line: string) => Number(line.split(' ').pop()) / 2 ** 20;
    for (const line of text.split('\n')) {
      if (line.startsWith('runner_nodejs_heap_size_used_bytes')) heapUsed = mb(line);
      else if (line.startsWith('runner_nodejs_heap_size_total_bytes')) heapTotal = mb(line);
      else if (line.startsWith('runner_nodejs_external_memory_bytes')) external = mb(line);
      if (line.startsWith('runner_component_sent_total{') && line.includes('component="output.postgres"')) sent += Number(line.split(' ').pop());
      else if (line.startsWith('runner_dead_letter_total{')) dead += Number(line.split(' ').pop());
      else if (line.startsWith('runner_component_batch_size_count{') && line.includes('component="output.postgres"')) batches += Number(line.split(' ').pop());
    }
    return { sent, dead, batches, heapUsed, heapTotal, external };
  } catch {
    return null;
  }
}

async function isReady(port: number): Promise<boolean> {
  try {
    return (await fetch(`http://127.0.0.1:${port}/health/ready`, { signal: AbortSignal.timeout(1000) })).status === 200;
  } catch {
    return false;
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await exited;
  clearTimeout(t);
}

async function runnerPhase(phase: string, repeat: number, url: string, topic: string, groups: string[]): Promise<PhaseResult> {
  await prepareTable(url, phase !== 'upsert-again');
  const group = `bench-pgsink-${suffix}-${phase}-${repeat}`;
  groups.push(group);
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    BENCH_TOPIC: topic,
    BENCH_GROUP: group,
    BENCH_DATABASE_URL: url,
    BENCH_MODE: phase === 'runner-copy' ? 'copy' : 'upsert',
    RUNNER_HTTP_PORT: String(port),
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
  };
  if (args.batch) env.BENCH_BATCH = args.batch;
  if (args['max-in-flight']) env.BENCH_MAX_IN_FLIGHT = args['max-in-flight'];
  if (args['max-in-flight']) env.BENCH_MAX_CONNECTIONS = String(Number(args['max-in-flight']) + 1);
  if (args['input-in-flight']) env.BENCH_INPUT_IN_FLIGHT = args['input-in-flight'];
  if (args['fetch-max-bytes']) env.BENCH_FETCH_MAX_BYTES = args['fetch-max-bytes'];
  if (args['input-in-flight-bytes']) env.BENCH_INPUT_IN_FLIGHT_BYTES = args['input-in-flight-bytes'];
  const nodeArgs: string[] = args['runner-node-args']!.split(' ').filter(Boolean);
  if (args['cpu-prof']) {
    // One folder per phase: node writes one profile per thread (the tsx loader runs in a worker).
    const dir = resolve(args['cpu-prof'], `${phase}-${repeat}`);
    mkdirSync(dir, { recursive: true });
    nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${dir}`);
  }
  const logFile = join(OUT, `${phase}-${repeat}.log`);
  const logStream = createWriteStream(logFile);
  const load0 = loadavg()[0]!;
  const m0 = machineBusy();
  const spawned = performance.now();
  const child = spawn(process.execPath, [...nodeArgs, join(ROOT, 'bin', 'runner.mjs'), 'start', PIPELINE], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(logStream);
  child.stderr!.pipe(logStream);
  const pid = child.pid!;
  let peak = 0;
  const rssSeries: number[] = [];
  const progress: [number, number][] = [];
  let readyAt: number | null = null;
  let doneAt: number | null = null;
  let last: Scrape = { sent: 0, dead: 0, batches: 0, heapUsed: 0, heapTotal: 0, external: 0 };
  let heap = { used: 0, total: 0, external: 0 };
  let cpu = 0;
  let busy = 0;
  const rssTimer = setInterval(() => {
    const r = rssMb(pid);
    if (r !== null) {
      peak = Math.max(peak, r);
      rssSeries.push(Math.round(r));
    }
    cpu = cpuSeconds(pid) ?? cpu;
  }, 250);
  const deadline = spawned + Number(args.timeout) * 1000;
  try {
    while (doneAt === null) {
      if (child.exitCode !== null) throw new Error(`the runner exited with ${child.exitCode} during ${phase}; see ${logFile}`);
      if (performance.now() > deadline) throw new Error(`${phase}: ${last.sent} of ${ROWS} rows after ${args.timeout} s; see ${logFile}`);
      await sleep(250);
      if (readyAt === null) {
        if (await isReady(port)) readyAt = performance.now();
        continue;
      }
      const m = await scrape(port);
      if (!m) continue;
      last = m;
      heap = { used: Math.max(heap.used, m.heapUsed), total: Math.max(heap.total, m.heapTotal), external: Math.max(heap.external, m.external) };
      progress.push([+((performance.now() - spawned) / 1000).toFixed(2), m.sent]);
      if (m.sent + m.dead >= ROWS) doneAt = performance.now();
    }
  } finally {
    cpu = cpuSeconds(pid) ?? cpu;
    clearInterval(rssTimer);
    const m1 = machineBusy();
    busy = (m1.busy - m0.busy) / (m1.total - m0.total);
    await stopChild(child);
    logStream.end();
  }
  const n = await countRows(url);
  const seconds = (doneAt - readyAt!) / 1000;
  return {
    phase,
    repeat,
    rows: ROWS,
    seconds,
    rows_per_s: ROWS / seconds,
    seconds_from_spawn: (doneAt - spawned) / 1000,
    peak_rss_mb: peak,
    max_heap_mb: { used: Math.round(heap.used), total: Math.round(heap.total), external: Math.round(heap.external) },
    rss_mb: rssSeries,
    progress,
    runner_cpu_s: cpu,
    machine_busy: busy,
    load_avg_1m: [load0, loadavg()[0]!],
    rows_in_table: n,
    dead_letters: last.dead,
    batch_count: last.batches,
  };
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------
async function main() {
  const dbName = `bench_pgsink_${suffix}`;
  const topic = `bench-pgsink-${suffix}`;
  const url = urlFor(dbName);
  const csv = join(OUT, 'rows.csv');
  const groups: string[] = [];
  const results: PhaseResult[] = [];
  const kafka = new kafkajs.Kafka({ clientId: `bench-pgsink-admin-${suffix}`, brokers: BROKERS, logLevel: kafkajs.logLevel.WARN });
  const admin = kafka.admin();
  await admin.connect();
  await withClient(ADMIN_URL, (c) => c.query(`CREATE DATABASE ${dbName}`));
  let topicCreated = false;
  try {
    const mig = await migrateDatabase({ database: 'telemetry', url, mode: 'plain' });
    log(`database ${dbName}: ${mig.files.length} migration file(s), mode ${mig.mode}`);
    await createTopicsReady(admin, [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }]);
    topicCreated = true;
    log(`producing ${ROWS} messages to ${topic} (${PARTITIONS} partitions, ${DEVICES} devices)`);
    const produceS = await produce(topic);
    log(`produced in ${produceS.toFixed(1)} s (${Math.round(ROWS / produceS)} msg/s)`);
    await writeCsv(csv);
    log(`wrote ${csv}`);
    const offsets = await admin.fetchTopicOffsets(topic);
    const inTopic = offsets.reduce((a, o) => a + Number(o.high) - Number(o.low), 0);
    if (inTopic !== ROWS) throw new Error(`the topic holds ${inTopic} messages, expected ${ROWS}`);
    await sleep(3000);

    for (let r = 1; r <= REPEAT; r++) {
      for (const phase of PHASES) {
        log(`repeat ${r}: ${phase} ...`);
        const res = phase.startsWith('psql') ? await psqlPhase(phase, r, url, csv) : await runnerPhase(phase, r, url, topic, groups);
        results.push(res);
        log(
          `repeat ${r}: ${phase}: ${res.seconds.toFixed(2)} s, ${Math.round(res.rows_per_s)} rows/s` +
            (res.peak_rss_mb !== undefined ? `, peak RSS ${res.peak_rss_mb.toFixed(0)} MB (heap used/total/external ${res.max_heap_mb?.used}/${res.max_heap_mb?.total}/${res.max_heap_mb?.external}), runner CPU ${res.runner_cpu_s?.toFixed(1)} s, ${res.batch_count} batches` : '') +
            `, machine busy ${((res.machine_busy ?? 0) * 100).toFixed(0)}%, load ${res.load_avg_1m.map((x) => x.toFixed(2)).join('->')}, ${res.rows_in_table} rows in table`,
        );
        if (res.rows_in_table !== ROWS) log(`WARNING: ${res.rows_in_table} rows in the table after ${phase}, expected ${ROWS}`);
        writeFileSync(join(OUT, 'results.json'), JSON.stringify({ results }, null, 2));
      }
    }
  } finally {
    if (topicCreated) await admin.deleteTopics({ topics: [topic] }).catch((e) => log(`deleting topic ${topic} failed: ${e}`));
    if (groups.length) await admin.deleteGroups(groups).catch((e) => log(`deleting groups failed: ${e}`));
    await admin.disconnect();
    await withClient(ADMIN_URL, (c) => c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)).catch((e) => log(`dropping ${dbName} failed: ${e}`));
  }

  // Summary: medians per phase, ratios against psql \copy.
  const by = (p: string) => results.filter((r) => r.phase === p);
  const med = (p: string, f: (r: PhaseResult) => number | undefined) => median(by(p).map(f).filter((x): x is number => x !== undefined));
  const ceiling = med('psql-copy', (r) => r.rows_per_s);
  const summary = PHASES.map((p) => ({
    phase: p,
    runs: by(p).length,
    median_seconds: med(p, (r) => r.seconds),
    median_rows_per_s: med(p, (r) => r.rows_per_s),
    ratio_to_psql_copy: med(p, (r) => r.rows_per_s) / ceiling,
    median_seconds_from_spawn: med(p, (r) => r.seconds_from_spawn),
    max_peak_rss_mb: Math.max(...by(p).map((r) => r.peak_rss_mb ?? NaN)),
    median_runner_cpu_s: med(p, (r) => r.runner_cpu_s),
  }));
  const machine = machineInfo();
  const config = { rows: ROWS, devices: DEVICES, partitions: PARTITIONS, repeat: REPEAT, batch: args.batch || 'pipeline default', max_in_flight: args['max-in-flight'] || 'pipeline default', input_in_flight: args['input-in-flight'] || 'pipeline default', fetch_max_bytes: args['fetch-max-bytes'] || 'pipeline default', input_in_flight_bytes: args['input-in-flight-bytes'] || 'pipeline default', runner_node_args: args['runner-node-args'] };
  writeFileSync(join(OUT, 'results.json'), JSON.stringify({ machine, config, summary, results }, null, 2));
  console.log(`\n${ROWS} rows, ${PARTITIONS} partitions, ${REPEAT} repeat(s); medians; machine ${machine.nproc} cores, ${machine.mem_gib} GiB\n`);
  console.log('| phase | s | rows/s | x psql \\copy | s from spawn | peak RSS MB | runner CPU s |');
  console.log('|---|---|---|---|---|---|---|');
  const f = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '-');
  for (const s of summary) {
    console.log(`| ${s.phase} | ${f(s.median_seconds, 2)} | ${f(s.median_rows_per_s)} | ${f(s.ratio_to_psql_copy, 2)} | ${f(s.median_seconds_from_spawn, 2)} | ${f(s.max_peak_rss_mb)} | ${f(s.median_runner_cpu_s, 1)} |`);
  }
  console.log(`\nresults: ${join(OUT, 'results.json')}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
