/**
 * Settings command loop benchmark (issue 6). Not a test: run it by hand, under the bench lock.
 *
 *   eval "$(bash scripts/stack env)"
 *   flock /tmp/runner-bench.lock node --import tsx bench/command-loop/run.ts
 *
 * Setup (not timed), isolated like tests/e2e/command-loop.test.ts: a fresh database (random name,
 * dropped at the end) migrated with migrations/heatpump_settings in plain mode, with a settings row
 * for device-001 .. device-NNN (direct INSERTs); pipelines/mqtt-bridge.yaml under an MQTT topic
 * level of its own and with its homelab-* Kafka topics renamed (created here, deleted at the end);
 * pipelines/command-confirm.yaml on the renamed telemetry topic with a consumer group of its own.
 * ONE runner process: settings-api (a free port on 127.0.0.1) + command-dispatch (commands under
 * the same MQTT prefix) + command-confirm + mqtt-bridge, the pipelines as shipped otherwise. Then
 * `runner simulate --devices N --kinds heatpump --topic-prefix <prefix>` as a child process:
 * devices that apply a command at once and report it (settings + telemetry) right away. The
 * benchmark starts when the confirmer has recorded telemetry of every device (device_reports).
 *
 * Phases:
 *
 *   latency     --commands PATCHes (default 1,000) spread over the devices round-robin, each
 *               changing indoor_target_temp; sent at --rate per second (default 20; each device
 *               then gets a command every devices/rate s), or with --rate 0 one worker per device
 *               that sends its next command only after the previous one is done. Each command is
 *               followed by polling the outbox table (every --poll-ms, one query for all open ids)
 *               until it is confirmed, in another final state, or --command-timeout passed.
 *               Reported: confirmed_at - created_at of the outbox row (database clock; created_at
 *               is the API transaction's start), the split at published_at, and client side from
 *               sending the PATCH to seeing `confirmed` (includes up to one poll interval).
 *   throughput  the loop runner is stopped; a runner with settings-api alone (no dispatcher)
 *               takes PATCHes from --clients concurrent keep-alive HTTP clients for --duration
 *               (after --warmup, not counted). Client k patches devices k, k + clients, ... so
 *               that no two clients wait for the same row lock. Reported: PATCH/s (202 answers),
 *               latency p50/p99/max, non-202 answers and errors, runner CPU.
 *               --dispatch-poll <time> sets COMMAND_DISPATCH_POLL_INTERVAL (shipped: 1s) for the
 *               latency phase.
 *               --api-pg-in-flight N runs a copy of settings-api.yaml whose postgres steps have
 *               max_in_flight N instead of the shipped 4 (exploration; the results say so).
 *               --patch-batch N sets SETTINGS_API_PATCH_BATCH (the PATCH step's batch_size;
 *               shipped 32; 1 = one PATCH per transaction, as before session 4) in both phases.
 *               --arrival-order-batches puts back settings_patch_batch() of migration 0004 (the
 *               requests of a batch in arrival order: batches can deadlock) after migrating.
 *               --keys sends an Idempotency-Key (a new UUID) with every PATCH of both phases, so
 *               that the key table is written too.
 *
 * The load generator runs on the same machine (node:http, keep-alive agent); its CPU is part of
 * what the machine does. `uptime` load is printed before and after each phase.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { cpuSeconds, machineInfo, machineTicks, uptime } from '../lib/proc.ts';
import { migrateDatabase } from '../../operators/postgres/migrate.ts';
import { createTestDatabase, type TestDatabase } from '../../tests/helpers/postgres.ts';
import { MQTT_URL, ROOT, RunnerProcess, bridgePipeline, createTopics, deleteTopics, dropMqttSession, kafkaClient, uniqueId, within } from '../../tests/e2e/mqtt-bridge-harness.ts';
import { isolatedPipeline } from '../../tests/e2e/sink-harness.ts';
import { isSeq, isMap, parseDocument } from 'yaml';
import { PgSampler, StageObserver, epochMs, mosquittoStore, type StageDurations } from './observe.ts';

const { values: args } = parseArgs({
  options: {
    devices: { type: 'string', default: '100' },
    commands: { type: 'string', default: '1000' },
    rate: { type: 'string', default: '20' },
    'poll-ms': { type: 'string', default: '10' },
    'command-timeout': { type: 'string', default: '30' },
    clients: { type: 'string', default: '32' },
    duration: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
    phases: { type: 'string', default: 'latency,throughput' },
    'sim-rate': { type: 'string', default: '20' },
    'api-pg-in-flight': { type: 'string', default: '' },
    'dispatch-poll': { type: 'string', default: '' },
    keys: { type: 'boolean', default: false },
    'patch-batch': { type: 'string', default: '' },
    'arrival-order-batches': { type: 'boolean', default: false },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]);
  process.exit(0);
}

const DEVICES = Number(args.devices);
const COMMANDS = Number(args.commands);
const RATE = Number(args.rate);
const POLL_MS = Number(args['poll-ms']);
const COMMAND_TIMEOUT_MS = Number(args['command-timeout']) * 1000;
const CLIENTS = Number(args.clients);
const DURATION_S = Number(args.duration);
const WARMUP_S = Number(args.warmup);
const PHASES = args.phases!.split(',').map((p) => p.trim()).filter(Boolean);
for (const p of PHASES) if (!['latency', 'throughput'].includes(p)) throw new Error(`unknown phase ${p}; phases: latency, throughput`);
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const OUT = resolve(args.out ?? join(tmpdir(), 'runner-bench', `command-loop-${stamp}`));
mkdirSync(OUT, { recursive: true });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (line: string) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
/** Nearest-rank percentile of sorted values. */
const pct = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]! : NaN);
const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, p50: pct(s, 50), p90: pct(s, 90), p99: pct(s, 99), max: s.length ? s[s.length - 1]! : NaN };
};
type Stats = ReturnType<typeof stats>;
const fmt = (s: Stats) => `p50 ${s.p50.toFixed(1)} ms, p90 ${s.p90.toFixed(1)} ms, p99 ${s.p99.toFixed(1)} ms, max ${s.max.toFixed(1)} ms (n=${s.n})`;
const round1 = (v: number | undefined) => (v === undefined ? null : Math.round(v * 10) / 10);
const deviceId = (i: number) => `device-${String(i + 1).padStart(3, '0')}`;
/** The value of a device's j-th command: 21.5, 22, ... 30, then again (always a change from the one before). */
const valueFor = (j: number) => 21.5 + 0.5 * (j % 18);

const machineBusy = machineTicks;

// ---------------------------------------------------------------------------------------------
// HTTP: node:http with a keep-alive agent (cheaper per request than fetch on a 2-core machine)
// ---------------------------------------------------------------------------------------------
interface Answer {
  status: number;
  body: string;
}
function request(agent: http.Agent, base: URL, method: string, path: string, body?: unknown): Promise<Answer> {
  return new Promise((res, rej) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        agent,
        host: base.hostname,
        port: base.port,
        method,
        path,
        headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...(args.keys && method === 'PATCH' ? { 'idempotency-key': randomUUID() } : {}) } : {},
      },
      (r) => {
        let text = '';
        r.setEncoding('utf8');
        r.on('data', (c: string) => (text += c));
        r.on('end', () => res({ status: r.statusCode ?? 0, body: text }));
        r.on('error', rej);
      },
    );
    req.on('error', rej);
    req.setTimeout(30_000, () => req.destroy(new Error('request timeout')));
    req.end(data);
  });
}

// ---------------------------------------------------------------------------------------------
// Latency phase
// ---------------------------------------------------------------------------------------------
interface Command {
  n: number;
  device: string;
  sentAt: number;
  acceptedAt?: number;
  outboxId?: number;
  status?: string;
  observedAt?: number;
  dbTotalMs?: number;
  dbPublishMs?: number;
  dbConfirmMs?: number;
  /** Epoch ms: sent, answered (client clock), and the outbox row's created_at, published_at, confirmed_at. */
  sentEpoch?: number;
  answeredEpoch?: number;
  createdEpoch?: number;
  publishedEpoch?: number;
  confirmedEpoch?: number;
  value?: number;
  stages?: StageDurations;
  error?: string;
  done: Promise<void>;
  resolve: () => void;
}

async function latencyPhase(db: TestDatabase, base: URL, observer: StageObserver | null) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: Math.max(DEVICES, 16) });
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  const open = new Map<number, Command>();
  const all: Command[] = [];
  let stopPolling = false;
  const poller = (async () => {
    while (!stopPolling) {
      const started = performance.now();
      const ids = [...open.keys()];
      if (ids.length) {
        const { rows } = await pool.query(
          `SELECT id::int AS id, status,
                  extract(epoch FROM confirmed_at - created_at) * 1000 AS total_ms,
                  extract(epoch FROM published_at - created_at) * 1000 AS publish_ms,
                  extract(epoch FROM confirmed_at - published_at) * 1000 AS confirm_ms,
                  extract(epoch FROM created_at) * 1000 AS created_epoch,
                  extract(epoch FROM published_at) * 1000 AS published_epoch,
                  extract(epoch FROM confirmed_at) * 1000 AS confirmed_epoch
             FROM outbox WHERE id = ANY($1::bigint[]) AND status NOT IN ('pending', 'published')`,
          [ids],
        );
        const now = performance.now();
        for (const r of rows) {
          const c = open.get(r.id);
          if (!c) continue;
          open.delete(r.id);
          c.status = r.status;
          c.observedAt = now;
          if (r.total_ms !== null) c.dbTotalMs = Number(r.total_ms);
          if (r.publish_ms !== null) c.dbPublishMs = Number(r.publish_ms);
          if (r.confirm_ms !== null) c.dbConfirmMs = Number(r.confirm_ms);
          if (r.created_epoch !== null) c.createdEpoch = Number(r.created_epoch);
          if (r.published_epoch !== null) c.publishedEpoch = Number(r.published_epoch);
          if (r.confirmed_epoch !== null) c.confirmedEpoch = Number(r.confirmed_epoch);
          c.resolve();
        }
        for (const c of open.values()) {
          if (now - c.sentAt > COMMAND_TIMEOUT_MS) {
            open.delete(c.outboxId!);
            c.status = 'client_timeout';
            c.resolve();
          }
        }
      }
      await sleep(Math.max(0, POLL_MS - (performance.now() - started)));
    }
  })();

  const perDevice = new Array<number>(DEVICES).fill(0);
  const send = async (n: number, deviceIndex: number): Promise<Command> => {
    let resolveFn!: () => void;
    const done = new Promise<void>((r) => (resolveFn = r));
    const c: Command = { n, device: deviceId(deviceIndex), sentAt: performance.now(), sentEpoch: epochMs(), done, resolve: resolveFn };
    all.push(c);
    const j = perDevice[deviceIndex]!++;
    c.value = valueFor(j);
    try {
      const a = await request(agent, base, 'PATCH', `/api/v1/heatpump/settings/${c.device}`, { indoor_target_temp: c.value });
      c.acceptedAt = performance.now();
      c.answeredEpoch = epochMs();
      if (a.status !== 202) throw new Error(`PATCH ${c.device}: ${a.status} ${a.body}`);
      c.outboxId = (JSON.parse(a.body) as { outbox_id: number }).outbox_id;
      open.set(c.outboxId, c);
    } catch (err) {
      c.status = 'patch_error';
      c.error = (err as Error).message;
      c.resolve();
    }
    return c;
  };

  const load0 = uptime();
  const m0 = machineBusy();
  const t0 = performance.now();
  if (RATE > 0) {
    const sent: Promise<Command>[] = [];
    for (let n = 0; n < COMMANDS; n++) {
      const due = t0 + (n * 1000) / RATE;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      sent.push(send(n, n % DEVICES));
    }
    await Promise.all((await Promise.all(sent)).map((c) => c.done));
  } else {
    let next = 0;
    await Promise.all(
      Array.from({ length: DEVICES }, async (_, d) => {
        for (let k = d; k < COMMANDS; k += DEVICES) {
          const c = await send(next++, d);
          await c.done;
        }
      }),
    );
  }
  const seconds = (performance.now() - t0) / 1000;
  const m1 = machineBusy();
  const load1 = uptime();
  stopPolling = true;
  await poller;
  await pool.end();
  agent.destroy();

  const by = (s: string) => all.filter((c) => c.status === s);
  const counts: Record<string, number> = {};
  for (const c of all) counts[c.status ?? 'unknown'] = (counts[c.status ?? 'unknown'] ?? 0) + 1;
  const confirmed = by('confirmed');
  // Give the observers a moment for the last records, then split every confirmed command into its stages.
  if (observer) await sleep(500);
  for (const c of confirmed) {
    if (observer) c.stages = observer.stages({ outboxId: c.outboxId!, device: c.device, value: c.value!, sentAt: c.sentEpoch!, answeredAt: c.answeredEpoch, createdAt: c.createdEpoch, publishedAt: c.publishedEpoch, confirmedAt: c.confirmedEpoch });
  }
  const stageNames = ['api_answer', 'dispatch', 'device', 'bridge', 'confirm', 'mark_published'] as const;
  const stageStats = Object.fromEntries(stageNames.map((k) => [k, stats(confirmed.map((c) => c.stages?.[k]).filter((v): v is number => v !== undefined))]));
  // The slowest 2 % by created -> confirmed: their stages one by one (which stage holds the tail).
  const slowest = [...confirmed].sort((a, b) => (b.dbTotalMs ?? 0) - (a.dbTotalMs ?? 0)).slice(0, Math.max(1, Math.ceil(confirmed.length * 0.02)));
  const tail = slowest.map((c) => ({ n: c.n, device: c.device, outbox_id: c.outboxId, created: c.createdEpoch ? new Date(c.createdEpoch).toISOString().slice(11, 23) : null, total: round1(c.dbTotalMs), ...Object.fromEntries(stageNames.map((k) => [k, round1(c.stages?.[k])])) }));
  const result = {
    commands: all.length,
    mode: RATE > 0 ? `${RATE}/s` : 'sequential per device',
    seconds,
    counts,
    db_created_to_confirmed: stats(confirmed.map((c) => c.dbTotalMs!)),
    db_created_to_published: stats(confirmed.map((c) => c.dbPublishMs!)),
    db_published_to_confirmed: stats(confirmed.map((c) => c.dbConfirmMs!)),
    client_patch_to_observed: stats(confirmed.map((c) => c.observedAt! - c.sentAt)),
    client_patch_answer: stats(all.filter((c) => c.acceptedAt !== undefined).map((c) => c.acceptedAt! - c.sentAt)),
    stages: stageStats,
    slowest_2_percent: tail,
    machine_busy: (m1.busy - m0.busy) / (m1.total - m0.total),
    uptime_before: load0,
    uptime_after: load1,
    errors: all.filter((c) => c.error).slice(0, 5).map((c) => c.error),
  };
  writeFileSync(join(OUT, 'latency-commands.json'), JSON.stringify(all.map(({ done: _d, resolve: _r, ...c }) => c)));
  return result;
}

// ---------------------------------------------------------------------------------------------
// Throughput phase
// ---------------------------------------------------------------------------------------------
async function throughputPhase(base: URL, runner: RunnerProcess, db: TestDatabase, metricsPort: number) {
  const runnerPid = runner.child.pid!;
  const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  const errors: string[] = [];
  let measuring = false;
  let stop = false;
  let ok = 0;
  const client = async (k: number) => {
    let d = k % DEVICES;
    let j = 0;
    while (!stop) {
      const started = performance.now();
      const device = deviceId(d);
      d = (d + CLIENTS) % DEVICES;
      try {
        const a = await request(agent, base, 'PATCH', `/api/v1/heatpump/settings/${device}`, { indoor_target_temp: valueFor(j++) });
        if (!measuring) continue;
        latencies.push(performance.now() - started);
        statuses[a.status] = (statuses[a.status] ?? 0) + 1;
        if (a.status === 202) ok++;
        else if (errors.length < 5) errors.push(`${a.status} ${a.body.slice(0, 200)}`);
      } catch (err) {
        if (!measuring) continue;
        statuses.error = (statuses.error ?? 0) + 1;
        if (errors.length < 5) errors.push((err as Error).message);
      }
    }
  };
  const clients = Array.from({ length: CLIENTS }, (_, k) => client(k));
  await sleep(WARMUP_S * 1000);
  const adminUrl = new URL(db.url);
  adminUrl.pathname = '/postgres';
  const sampler = new PgSampler(adminUrl.href, db.name);
  await sampler.start();
  const batches0 = await scrapeBatches(metricsPort);
  const retries = () => runner.count((l) => l.msg === 'postgres transaction failed; retrying');
  const retries0 = retries();
  const load0 = uptime();
  const cpu0 = cpuSeconds(runnerPid) ?? 0;
  const m0 = machineBusy();
  measuring = true;
  const t0 = performance.now();
  await sleep(DURATION_S * 1000);
  measuring = false;
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = cpuSeconds(runnerPid) ?? 0;
  const m1 = machineBusy();
  const load1 = uptime();
  const batches1 = await scrapeBatches(metricsPort);
  const retried = retries() - retries0;
  stop = true;
  await Promise.all(clients);
  agent.destroy();
  const database = await sampler.stop(seconds);
  const calls = batches1 && batches0 ? batches1.count - batches0.count : NaN;
  return {
    database,
    patch_calls_per_s: calls / seconds,
    patch_requests_per_call: batches1 && batches0 ? (batches1.sum - batches0.sum) / calls : NaN,
    transactions_retried: retried,
    clients: CLIENTS,
    seconds,
    requests: latencies.length,
    accepted: ok,
    patch_per_s: ok / seconds,
    statuses,
    latency: stats(latencies),
    runner_cpu_share: (cpu1 - cpu0) / seconds,
    machine_busy: (m1.busy - m0.busy) / (m1.total - m0.total),
    uptime_before: load0,
    uptime_after: load1,
    errors,
  };
}

/** The PATCH step's calls (runner_component_batch_size of patch_settings: count = calls, sum = requests). */
async function scrapeBatches(port: number): Promise<{ count: number; sum: number } | null> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
    const line = (name: string) => text.split('\n').find((l) => l.startsWith(`runner_component_batch_size_${name}{`) && l.includes('component="patch_settings"'));
    const count = line('count');
    const sum = line('sum');
    if (!count || !sum) return null;
    return { count: Number(count.split(' ').pop()), sum: Number(sum.split(' ').pop()) };
  } catch {
    return null;
  }
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => res(port));
    });
    s.on('error', rej);
  });
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await exited;
  clearTimeout(t);
}

async function startApi(label: string, pipelines: string[], env: Record<string, string>): Promise<{ runner: RunnerProcess; base: URL }> {
  const runner = new RunnerProcess(pipelines, label, { LOG_LEVEL: 'info', ...env });
  const line = await within(60_000, () => `${label}: no http_server listening line`, runner.logged((l) => l.msg === 'http_server listening'));
  return { runner, base: new URL(`http://${String(line.address)}`) };
}

async function main() {
  const id = `bench${uniqueId()}`;
  const results: Record<string, unknown> = {};
  const machine = machineInfo();
  const config = { arrival_order_batches: args['arrival-order-batches'], keys: args.keys, patch_batch: args['patch-batch'] || 'shipped (32)', dispatch_poll: args['dispatch-poll'] || 'shipped (1s)', api_pg_in_flight: args['api-pg-in-flight'] || 'shipped (4)', devices: DEVICES, commands: COMMANDS, rate: RATE, poll_ms: POLL_MS, clients: CLIENTS, duration_s: DURATION_S, warmup_s: WARMUP_S, sim_rate: Number(args['sim-rate']) };
  log(`machine ${machine.nproc} cores (${machine.cpu}), ${machine.mem_gib} GiB, node ${machine.node}; ${uptime()}`);

  const db = await createTestDatabase('bench_cmdloop');
  const admin = kafkaClient(`bench-cmdloop-${id}`).admin();
  await admin.connect();
  const bridge = bridgePipeline(id);
  const confirm = isolatedPipeline('command-confirm', id);
  const dispatchClientId = `bench-dispatch-${id}`;
  let loop: RunnerProcess | undefined;
  let api: RunnerProcess | undefined;
  let sim: ChildProcess | undefined;
  try {
    const mig = await migrateDatabase({ database: 'heatpump_settings', url: db.url, mode: 'plain' });
    log(`database ${db.name}: ${mig.files.length} migration file(s)`);
    if (args['arrival-order-batches']) {
      // Exploration: settings_patch_batch() as migration 0004 had it (requests in arrival order, not device order).
      await db.query(readFileSync(join(ROOT, 'migrations/heatpump_settings/0004_settings_patch_batch.sql'), 'utf8').replace('CREATE FUNCTION', 'CREATE OR REPLACE FUNCTION'));
      log('settings_patch_batch() of migration 0004 (arrival order), as before migration 0005');
    }
    const devices = Array.from({ length: DEVICES }, (_, i) => deviceId(i));
    await db.query(`INSERT INTO settings (device_id, indoor_target_temp, mode) SELECT unnest($1::text[]), 21, 1`, [devices]);
    await createTopics(admin, bridge);
    if (confirm.topic('homelab-heatpump-telemetry') !== bridge.kafkaTopic('homelab-heatpump-telemetry')) throw new Error('confirm and bridge topics differ');

    if (PHASES.includes('latency')) {
      const started = await startApi(
        'loop',
        [join(ROOT, 'pipelines/settings-api.yaml'), join(ROOT, 'pipelines/command-dispatch.yaml'), confirm.file, bridge.file],
        {
          HEATPUMP_SETTINGS_DATABASE_URL: db.url,
          ...(args['patch-batch'] ? { SETTINGS_API_PATCH_BATCH: args['patch-batch'] } : {}),
          SETTINGS_API_PORT: '0',
          SETTINGS_API_ADDRESS: '127.0.0.1',
          COMMAND_TOPIC_PREFIX: bridge.mqttPrefix,
          COMMAND_DISPATCH_CLIENT_ID: dispatchClientId,
          COMMAND_CONFIRM_GROUP: `bench-confirm-${id}`,
          COMMAND_CONFIRM_START_FROM: 'earliest',
          ...(args['dispatch-poll'] ? { COMMAND_DISPATCH_POLL_INTERVAL: args['dispatch-poll'] } : {}),
        },
      );
      loop = started.runner;
      await within(60_000, () => 'the bridge did not subscribe', loop.subscribed());
      await within(60_000, () => 'the dispatcher has no MQTT connection', loop.logged((l) => l.msg === 'mqtt connected'));
      await within(60_000, () => 'the outbox source is not ready', loop.logged((l) => l.msg === 'outbox source ready' && l.source === 'settings-commands'));
      await within(60_000, () => 'the confirmer did not join its group', loop.logged((l) => l.msg === 'joined consumer group'));
      const simLog = createWriteStream(join(OUT, 'simulator.log'));
      sim = spawn(
        process.execPath,
        [join(ROOT, 'bin/runner.mjs'), 'simulate', '--devices', String(DEVICES), '--kinds', 'heatpump', '--rate', String(args['sim-rate']), '--topic-prefix', bridge.mqttPrefix, '--client-id', `bench-sim-${id}`, '--url', MQTT_URL],
        { cwd: ROOT, env: process.env, stdio: ['ignore', 'ignore', 'pipe'] },
      );
      sim.stderr!.pipe(simLog);
      // Every device's telemetry went simulator -> MQTT -> bridge -> Kafka -> confirmer -> device_reports.
      const deadline = Date.now() + 120_000;
      for (;;) {
        const n = Number((await db.query('SELECT count(*)::int AS n FROM device_reports')).rows[0].n);
        if (n >= DEVICES) break;
        if (sim.exitCode !== null) throw new Error(`the simulator exited with ${sim.exitCode}; see ${join(OUT, 'simulator.log')}`);
        if (Date.now() > deadline) throw new Error(`only ${n} of ${DEVICES} devices reported within 120 s`);
        await sleep(250);
      }
      log(`loop ready at ${started.base.href}; ${DEVICES} devices reporting; latency phase: ${COMMANDS} commands, ${RATE > 0 ? `${RATE}/s` : 'sequential per device'} ...`);
      const store = await mosquittoStore(MQTT_URL, `bench-store-${id}`).catch(() => null);
      results.mosquitto_store = store;
      log(store ? `Mosquitto store: ${store.messages} messages, ${(store.bytes / 2 ** 20).toFixed(0)} MB (with persistence, written in one go every autosave_interval: a stall of the broker)` : 'Mosquitto store: unknown ($SYS not answered)');
      const observer = await StageObserver.start({ mqttUrl: MQTT_URL, prefix: bridge.mqttPrefix, kafka: kafkaClient(`bench-observer-${id}`), topic: bridge.kafkaTopic('homelab-heatpump-telemetry'), clientId: `bench-observer-${id}` });
      let r: Awaited<ReturnType<typeof latencyPhase>>;
      try {
        r = await latencyPhase(db, started.base, observer);
      } finally {
        await observer.stop();
      }
      results.latency = r;
      log(`latency: ${JSON.stringify(r.counts)} in ${r.seconds.toFixed(1)} s`);
      log(`  db created -> confirmed:     ${fmt(r.db_created_to_confirmed)}`);
      log(`  db created -> published:     ${fmt(r.db_created_to_published)}`);
      log(`  db published -> confirmed:   ${fmt(r.db_published_to_confirmed)}`);
      log(`  client PATCH -> confirmed:   ${fmt(r.client_patch_to_observed)}`);
      log(`  client PATCH answer:         ${fmt(r.client_patch_answer)}`);
      for (const [k, v] of Object.entries(r.stages)) log(`  stage ${k.padEnd(15)} ${fmt(v)}`);
      log(`  slowest 2 % (ms): ${r.slowest_2_percent.map((t) => JSON.stringify(t)).join('\n    ')}`);
      log(`  machine busy ${(r.machine_busy * 100).toFixed(0)} %; before: ${r.uptime_before}; after: ${r.uptime_after}`);
      writeFileSync(join(OUT, 'results.json'), JSON.stringify({ machine, config, results }, null, 2));
      await stopChild(sim);
      sim = undefined;
      await loop.stop();
      loop = undefined;
    }

    if (PHASES.includes('throughput')) {
      let apiFile = join(ROOT, 'pipelines/settings-api.yaml');
      if (args['api-pg-in-flight']) {
        const doc = parseDocument(readFileSync(apiFile, 'utf8'));
        const steps = doc.get('pipeline');
        if (!isSeq(steps)) throw new Error('settings-api.yaml: no pipeline list');
        for (const step of steps.items) if (isMap(step) && step.has('postgres')) doc.setIn(['pipeline', steps.items.indexOf(step), 'postgres', 'max_in_flight'], Number(args['api-pg-in-flight']));
        apiFile = join(confirm.dir, 'settings-api.yaml');
        writeFileSync(apiFile, doc.toString({ lineWidth: 0 }));
      }
      const metricsPort = await freePort();
      const started = await startApi('api', [apiFile], {
        RUNNER_HTTP_PORT: String(metricsPort),
        HEATPUMP_SETTINGS_DATABASE_URL: db.url,
        ...(args['patch-batch'] ? { SETTINGS_API_PATCH_BATCH: args['patch-batch'] } : {}),
        SETTINGS_API_PORT: '0',
        SETTINGS_API_ADDRESS: '127.0.0.1',
      });
      api = started.runner;
      log(`throughput phase: ${CLIENTS} clients, ${WARMUP_S} s warm-up + ${DURATION_S} s ...`);
      const r = await throughputPhase(started.base, api, db, metricsPort);
      results.throughput = r;
      log(`throughput: ${Math.round(r.patch_per_s)} PATCH/s (${r.accepted} x 202 of ${r.requests}), ${fmt(r.latency)}, statuses ${JSON.stringify(r.statuses)}`);
      log(`  runner CPU ${(r.runner_cpu_share * 100).toFixed(0)} % of a core, machine busy ${(r.machine_busy * 100).toFixed(0)} %; before: ${r.uptime_before}; after: ${r.uptime_after}`);
      log(`  PATCH step: ${r.patch_calls_per_s.toFixed(0)} calls/s, ${r.patch_requests_per_call.toFixed(1)} requests per call, ${r.transactions_retried} calls retried`);
      log(`  database: ${JSON.stringify(r.database)}`);
      if (r.errors.length) log(`  first errors: ${r.errors.join(' | ')}`);
      await api.stop();
      api = undefined;
    }
  } finally {
    if (sim) await stopChild(sim);
    if (loop) await loop.stop();
    if (api) await api.stop();
    await deleteTopics(admin, bridge).catch((e) => log(`deleting topics failed: ${e}`));
    await confirm.cleanup(admin).catch(() => undefined);
    await admin.deleteGroups([`bench-confirm-${id}`]).catch(() => undefined);
    await admin.disconnect();
    for (const c of [bridge.clientId, dispatchClientId]) await dropMqttSession(c).catch(() => undefined);
    await db.drop().catch((e) => log(`dropping ${db.name} failed: ${e}`));
  }
  writeFileSync(join(OUT, 'results.json'), JSON.stringify({ machine, config, results }, null, 2));
  console.log(`\nresults: ${join(OUT, 'results.json')}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
