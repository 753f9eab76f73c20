/**
 * Soak under faults (issue 8 item 6). Not a test, not run by CI: run it by hand, under the bench
 * lock, against a stack of its own (it restarts Kafka, PostgreSQL and Mosquitto).
 *
 *   export KAFKA_PORT=29092 KAFKA_CONTROLLER_PORT=29093 KAFKA_SASL_PORT=29094 PG_PORT=25432 MQTT_PORT=21883 SCHEMA_REGISTRY_PORT=28081
 *   bash <other checkout>/scripts/stack up          # a second stack with its own .stack/ (bench/README.md)
 *   eval "$(bash <other checkout>/scripts/stack env)"
 *   flock /tmp/runner-bench.lock node --import tsx bench/soak/run.ts --stack-dir <other checkout> --out <dir>
 *
 * Every pipeline of the stack (pipelines/*.yaml but the demo ones: 12) runs in a runner process of
 * its own, isolated (bench/soak/pipelines.ts): throwaway databases migrated with `runner migrate`,
 * and topics, an MQTT topic level, consumer groups, client ids and ports of its own. For --duration
 * (default 30m) this load runs:
 *
 *   telemetry  the simulator's fleet (bench/soak/publisher.ts) over MQTT, QoS 1, every kind, --devices
 *              installations answering commands, --telemetry-rate msg/s;
 *   outbox     a writer inserting --outbox-rate events/s into the four outbox tables (services);
 *   commands   --command-rate PATCH/s to the settings API (indoor_target_temp, devices round-robin);
 *   history    --history-rate GET/s to the history API; --ws-clients WebSocket clients of the fan-out.
 *
 * Default rates: --fraction (0.7) of --telemetry-peak (1100 msg/s), --outbox-peak (700 events/s)
 * and --command-peak (22 PATCH/s): the combined peak, measured with this script without faults, all
 * pipelines at once on the 2-core machine (docs/benchmarks.md, "Soak under faults"). The peaks each
 * pipeline reaches alone (bridge 10,931 msg/s, relay 12,300 events/s, API 636 PATCH/s) cannot be run
 * at the same time on that machine: at 14 % of them the confirmer and the relay fell behind for good.
 * Explicit --*-rate flags win.
 *
 * Chaos, at random intervals between --chaos-min and --chaos-max (RNG seeded by --seed, printed, so
 * a run's sequence of faults can be repeated): with probability --chaos-infra-share a restart of a
 * server (`bash <stack-dir>/scripts/stack restart kafka|postgres|mosquitto`, --servers), otherwise
 * `kill -9` of a random pipeline's runner, started again after 0..--kill-down-max. One fault at a time;
 * after each, the time until every pipeline answers /health/ready again is recorded.
 *
 * At the end: chaos stops and every server and runner is brought up; the PATCHes, history queries and
 * the outbox writer stop (the writer once every event is committed); the simulator keeps answering
 * until every command is in a terminal status, then stops (waiting for its PUBACKs). Then the script
 * polls until the pipelines have caught up (counts reach the expected value, or stop changing for
 * --settle; at most --catchup-timeout; no fixed sleeps) and checks:
 *
 *   1. every telemetry message the simulator got a PUBACK for is in its table (heatpump,
 *      energy_consumption, temperature) exactly once (publisher.ts records which were acknowledged);
 *      the bridge's and mqtt-realtime's Kafka topics are read back too, to say where a message went
 *      missing and to count duplicates;
 *   2. every outbox event written is in Kafka (the event-type topics read back by event_id;
 *      duplicates counted and reported);
 *   3. every command (outbox row of heatpump_settings) is in a terminal status: confirmed, failed,
 *      timed_out or superseded;
 *   4. memory: RSS of each runner process from /proc every --sample-every; median of the first and of
 *      the last 5 minutes of load (a third of the load each when shorter than 15 minutes) and the max;
 *      last / first above --growth-threshold is flagged;
 *   5. no runner process exited by itself. One that does is started again after --restart-delay (as
 *      compose's `restart: unless-stopped` would), and the error it printed is reported.
 *
 * Also reported: CPU per runner, readiness (share of samples ready, and why not), the chaos events,
 * dead letters, PATCH answers, settings_events relayed, the machine's load (`uptime`).
 * Prints a report; results.json and each runner's log go to --out (default under the OS temp folder).
 * Exit code 0 when every check passed, 1 when one failed, 2 on a usage or setup error.
 * --keep leaves the databases, topics and pipeline files in place (for investigating a failure).
 */
import { spawn, fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { parseDuration } from '../../core/duration.ts';
import { topicOf, type Kind } from '../../simulator/heatpump.ts';
import { Rng } from '../../simulator/rng.ts';
import { MQTT_URL, ROOT, dropMqttSession, kafkaClient } from '../../tests/e2e/mqtt-bridge-harness.ts';
import { caughtUp } from '../../tests/e2e/sink-harness.ts';
import { createTopicsReady } from '../../tests/helpers/kafka.ts';
import { ADMIN_URL, urlFor } from '../../tests/helpers/postgres.ts';
import { CLK_TCK, busyBetween, cpuTicks, machineInfo, machineTicks, rssMb, uptime } from '../lib/proc.ts';
import { MessageCopies, TABLE_OF_KIND, TERMINAL, checkCommands, checkOutbox, checkTables, commandStatuses, outboxRows, readTopics, type CommandCheck, type OutboxCheck, type TableCheck } from './checks.ts';
import { CommandLoad, HistoryLoad, OutboxWriter, WebSocketClients } from './load.ts';
import { PIPELINES, PipelineProcess, buildTopology, freePort, type PipelineName } from './pipelines.ts';
import type { PublisherResult } from './publisher.ts';
import { openStack } from './stack.ts';

const SELF = fileURLToPath(import.meta.url);
const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '30m' },
    seed: { type: 'string' },
    fraction: { type: 'string', default: '0.7' },
    'telemetry-peak': { type: 'string', default: '1100' },
    'outbox-peak': { type: 'string', default: '700' },
    'command-peak': { type: 'string', default: '22' },
    'telemetry-rate': { type: 'string' },
    'outbox-rate': { type: 'string' },
    'command-rate': { type: 'string' },
    'history-rate': { type: 'string', default: '2' },
    'ws-clients': { type: 'string', default: '2' },
    devices: { type: 'string', default: '100' },
    'chaos-min': { type: 'string', default: '20s' },
    'chaos-max': { type: 'string', default: '90s' },
    'chaos-infra-share': { type: 'string', default: '0.5' },
    'kill-down-max': { type: 'string', default: '10s' },
    'restart-delay': { type: 'string', default: '5s' },
    servers: { type: 'string', default: 'kafka,postgres,mosquitto' },
    'no-chaos': { type: 'boolean', default: false },
    'catchup-timeout': { type: 'string', default: '20m' },
    settle: { type: 'string', default: '90s' },
    'sample-every': { type: 'string', default: '5s' },
    'progress-every': { type: 'string', default: '30s' },
    'growth-threshold': { type: 'string', default: '1.5' },
    'stack-dir': { type: 'string', default: ROOT },
    'allow-shared-stack': { type: 'boolean', default: false },
    out: { type: 'string' },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(readFileSync(SELF, 'utf8').split('*/')[0]);
  process.exit(0);
}

const usage = (msg: string): never => {
  console.error(`soak: ${msg}`);
  process.exit(2);
};
const num = (name: string, v: string | undefined, min = 0): number => {
  const n = Number(v);
  if (v === undefined || !Number.isFinite(n) || n < min) usage(`--${name} must be a number >= ${min}, got ${v}`);
  return n;
};
const dur = (name: string, v: string | undefined): number => {
  try {
    return parseDuration(String(v));
  } catch {
    return usage(`--${name}: expected a duration such as 30s, 5m, got ${v}`);
  }
};

const FRACTION = num('fraction', args.fraction);
const RATES = {
  telemetry: args['telemetry-rate'] !== undefined ? num('telemetry-rate', args['telemetry-rate']) : Math.round(FRACTION * num('telemetry-peak', args['telemetry-peak'])),
  outbox: args['outbox-rate'] !== undefined ? num('outbox-rate', args['outbox-rate']) : Math.round(FRACTION * num('outbox-peak', args['outbox-peak'])),
  commands: args['command-rate'] !== undefined ? num('command-rate', args['command-rate']) : Math.round(FRACTION * num('command-peak', args['command-peak'])),
  history: num('history-rate', args['history-rate']),
};
const DURATION_MS = dur('duration', args.duration);
const DEVICES = num('devices', args.devices, 1);
const WS_CLIENTS = num('ws-clients', args['ws-clients']);
const CHAOS = {
  enabled: !args['no-chaos'],
  minMs: dur('chaos-min', args['chaos-min']),
  maxMs: dur('chaos-max', args['chaos-max']),
  infraShare: num('chaos-infra-share', args['chaos-infra-share']),
  killDownMaxMs: dur('kill-down-max', args['kill-down-max']),
  restartDelayMs: dur('restart-delay', args['restart-delay']),
  servers: args.servers!.split(',').map((s) => s.trim()).filter(Boolean) as ('kafka' | 'postgres' | 'mosquitto')[],
};
for (const s of CHAOS.servers) if (!['kafka', 'postgres', 'mosquitto'].includes(s)) usage(`--servers: unknown server ${s}`);
if (CHAOS.maxMs < CHAOS.minMs) usage('--chaos-max is shorter than --chaos-min');
const SEED = args.seed ?? String(randomBytes(4).readUInt32BE(0));
const CATCHUP_MS = dur('catchup-timeout', args['catchup-timeout']);
const SETTLE_MS = dur('settle', args.settle);
const SAMPLE_MS = dur('sample-every', args['sample-every']);
const PROGRESS_MS = dur('progress-every', args['progress-every']);
const GROWTH = num('growth-threshold', args['growth-threshold']);
const STACK_DIR = resolve(args['stack-dir']!);
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const OUT = resolve(args.out ?? join(tmpdir(), 'runner-bench', `soak-${stamp}`));
mkdirSync(join(OUT, 'logs'), { recursive: true });

const T0 = Date.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const clock = (t = Date.now()) => {
  const s = Math.round((t - T0) / 1000);
  return `${String(Math.floor(s / 60)).padStart(3, ' ')}m${String(s % 60).padStart(2, '0')}s`;
};
const log = (line: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)} ${clock()}] ${line}\n`);
const f0 = (n: number | null | undefined) => (n === null || n === undefined || !Number.isFinite(n) ? '-' : Math.round(n).toLocaleString('en-US'));

// ---------------------------------------------------------------------------------------------
// The stack: which one (bench/soak/stack.ts checks it is the one the environment points at)
// ---------------------------------------------------------------------------------------------
const STACK = openStack(STACK_DIR, { allowShared: args['allow-shared-stack']! || !CHAOS.enabled, fail: usage });
const PORTS = STACK.ports;
const stack = STACK.run;
const serverPid = STACK.serverPid;

// ---------------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------------
async function adminQuery(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

function runMigrate(urls: Record<string, string>): Promise<string> {
  return new Promise((resolveP, reject) => {
    const argv = [join(ROOT, 'bin/runner.mjs'), 'migrate', ...Object.entries(urls).flatMap(([db, url]) => ['--database', `${db}=${url}`])];
    const child = spawn(process.execPath, argv, { cwd: ROOT, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    child.once('exit', (code) => (code === 0 ? resolveP(out) : reject(new Error(`runner migrate exited with ${code}:\n${out}`))));
  });
}

/** Poll `probe` until `done(value)`, or until the value stopped changing for `settleMs`, or the deadline. */
async function settle<T>(what: string, probe: () => Promise<T>, done: (v: T) => boolean, show: (v: T) => string, deadlineMs = CATCHUP_MS, settleMs = SETTLE_MS): Promise<{ value: T; outcome: 'reached' | 'settled' | 'deadline'; seconds: number }> {
  const t0 = Date.now();
  let last: string | undefined;
  let lastChange = Date.now();
  let value: T | undefined;
  let lastLog = 0;
  for (;;) {
    try {
      value = await probe();
      const key = JSON.stringify(value);
      if (key !== last) {
        last = key;
        lastChange = Date.now();
      }
      if (done(value)) return { value, outcome: 'reached', seconds: (Date.now() - t0) / 1000 };
      if (Date.now() - lastChange >= settleMs) return { value, outcome: 'settled', seconds: (Date.now() - t0) / 1000 };
      if (Date.now() - lastLog > 15_000) {
        lastLog = Date.now();
        log(`  waiting for ${what}: ${show(value)}`);
      }
    } catch (err) {
      if (Date.now() - lastLog > 15_000) {
        lastLog = Date.now();
        log(`  waiting for ${what}: ${(err as Error).message}`);
      }
    }
    if (Date.now() - t0 > deadlineMs) {
      if (value === undefined) throw new Error(`${what}: no answer within ${deadlineMs} ms`);
      return { value, outcome: 'deadline', seconds: (Date.now() - t0) / 1000 };
    }
    await sleep(2000);
  }
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------
interface ChaosEvent {
  at_s: number;
  target: string;
  action: 'restart' | 'kill -9';
  /** Server restart: the script's time (stop + start until it answers); kill: time the pipeline was down. */
  down_ms: number;
  ok: boolean;
  /** Time from the fault's end until every pipeline answered /health/ready again (null: not within 180 s). */
  all_ready_after_ms: number | null;
  note?: string;
}

interface MemSample {
  t: number;
  rss: Record<string, number | null>;
  /** pid and CPU ticks of each runner process (to sum its CPU time across restarts). */
  cpu: Record<string, { pid: number; ticks: number } | null>;
  ready: Record<string, boolean>;
  servers: Record<string, number | null>;
  machine: { total: number; busy: number };
}

async function main(): Promise<number> {
  const id = `soak${randomBytes(3).toString('hex')}`;
  const prefix = randomBytes(4).toString('hex');
  const machine = machineInfo();
  const config = { duration_ms: DURATION_MS, seed: SEED, rates: RATES, fraction: FRACTION, devices: DEVICES, ws_clients: WS_CLIENTS, chaos: CHAOS, catchup_ms: CATCHUP_MS, settle_ms: SETTLE_MS, sample_ms: SAMPLE_MS, growth_threshold: GROWTH, stack: { dir: STACK_DIR, ports: PORTS }, id };
  log(`soak ${id}: seed ${SEED}; ${machine.nproc} cores, ${machine.mem_gib} GiB, node ${machine.node}; ${uptime()}`);
  log(`rates: telemetry ${RATES.telemetry} msg/s, outbox ${RATES.outbox} events/s, commands ${RATES.commands} PATCH/s, history ${RATES.history} GET/s, ${WS_CLIENTS} WebSocket client(s); ${DEVICES} devices; duration ${DURATION_MS / 1000} s`);
  log(`stack: ${STACK_DIR} (Kafka ${PORTS.kafka}, PostgreSQL ${PORTS.pg}, Mosquitto ${PORTS.mqtt}); out ${OUT}`);
  const rng = new Rng(`${SEED}:chaos`);

  const topo = buildTopology(id);
  const kafka = kafkaClient(`soak-${id}`);
  const admin = kafka.admin();
  const dbNames = { telemetry: `soak_${id}_telemetry`, heatpump_settings: `soak_${id}_settings`, services: `soak_${id}_services` };
  const dbUrls = Object.fromEntries(Object.entries(dbNames).map(([k, n]) => [k, urlFor(n, ADMIN_URL)])) as Record<keyof typeof dbNames, string>;
  const runners = new Map<PipelineName, PipelineProcess>();
  let publisher: ChildProcess | null = null;
  const results: Record<string, unknown> = { machine, config, uptime_start: uptime() };
  const writeResults = () => writeFileSync(join(OUT, 'results.json'), JSON.stringify(results, null, 2));
  const loads: { writer?: OutboxWriter; commands?: CommandLoad; history?: HistoryLoad; ws?: WebSocketClients } = {};
  let failed = false;
  // Ctrl-C / SIGTERM: end the child processes (runners, simulator) and leave the rest for inspection.
  const onSignal = (sig: string) => {
    log(`${sig}: killing the runner processes and the simulator; databases ${Object.values(dbNames).join(', ')} and topics e2e-${id}-* are left in place`);
    for (const r of runners.values()) r.child?.kill('SIGKILL');
    publisher?.kill('SIGKILL');
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    // Databases, migrated by the CLI; settings rows for the devices; topics.
    for (const n of Object.values(dbNames)) await adminQuery(`CREATE DATABASE ${n}`);
    const migrated = await runMigrate(dbUrls);
    log(`databases ${Object.values(dbNames).join(', ')} migrated (${migrated.split('\n').filter((l) => /mode|applied/.test(l)).length} lines of runner migrate output)`);
    writeFileSync(join(OUT, 'migrate.log'), migrated);
    const devices = Array.from({ length: DEVICES }, (_, i) => `device-${String(i + 1).padStart(3, '0')}`);
    {
      const c = new pg.Client({ connectionString: dbUrls.heatpump_settings });
      await c.connect();
      await c.query('INSERT INTO settings (device_id, indoor_target_temp, mode) SELECT unnest($1::text[]), 21, 1', [devices]);
      await c.end();
    }
    await admin.connect();
    await createTopicsReady(admin, topo.topics.map((t) => ({ ...t, replicationFactor: 1 })));
    log(`${topo.topics.length} topics created (e2e-${id}-*), MQTT level ${topo.mqttPrefix}`);

    // One runner process per pipeline.
    const ports = { api: await freePort(), history: await freePort(), realtime: await freePort() };
    const env: Record<string, string> = {
      LOG_LEVEL: 'info',
      TELEMETRY_DATABASE_URL: dbUrls.telemetry,
      HEATPUMP_SETTINGS_DATABASE_URL: dbUrls.heatpump_settings,
      SERVICES_DATABASE_URL: dbUrls.services,
      TELEMETRY_SINK_GROUP: topo.groups.telemetrySink,
      SETTINGS_SINK_GROUP: topo.groups.settingsSink,
      COMMAND_CONFIRM_GROUP: topo.groups.confirm,
      COMMAND_CONFIRM_START_FROM: 'earliest',
      REALTIME_GROUP: topo.groups.realtime,
      REALTIME_PORT: String(ports.realtime),
      REALTIME_HOST: '127.0.0.1',
      SETTINGS_API_PORT: String(ports.api),
      SETTINGS_API_ADDRESS: '127.0.0.1',
      HISTORY_API_PORT: String(ports.history),
      HISTORY_API_ADDRESS: '127.0.0.1',
      COMMAND_TOPIC_PREFIX: topo.mqttPrefix,
      COMMAND_DISPATCH_CLIENT_ID: topo.mqttClientIds[2]!,
      MQTT_REALTIME_CLIENT_ID: topo.mqttClientIds[1]!,
      SETTINGS_EVENTS_TOPIC: topo.settingsEventsTopic,
    };
    for (const name of PIPELINES) runners.set(name, new PipelineProcess(name, topo.files[name], await freePort(), env, join(OUT, 'logs')));
    for (const r of runners.values()) r.start();
    const allReady = async () => (await Promise.all([...runners.values()].map((r) => r.ready()))).every(Boolean);
    const notReady = async () => (await Promise.all([...runners.values()].map(async (r) => ((await r.ready()) ? null : r.name)))).filter(Boolean);
    {
      const deadline = Date.now() + 180_000;
      while (!(await allReady())) {
        if (Date.now() > deadline) throw new Error(`not ready within 180 s: ${(await notReady()).join(', ')} (logs in ${join(OUT, 'logs')})`);
        await sleep(500);
      }
    }
    log(`${runners.size} runner processes ready (pipelines: ${PIPELINES.join(', ')})`);

    // The simulator, in a child process that records what was acknowledged.
    publisher = fork(join(dirname(SELF), 'publisher.ts'), [
      JSON.stringify({
        url: MQTT_URL,
        client_id: `soak-sim-${id}`,
        devices: DEVICES,
        rate: RATES.telemetry,
        qos: 1,
        seq: true,
        timestamp_precision: 'ms',
        topic_prefix: topo.mqttPrefix,
        seed: `${SEED}:sim`,
        respond: true,
        drain_timeout_ms: 300_000,
        max_in_flight: 256,
      }),
    ], { cwd: ROOT, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    publisher.stderr!.pipe(createWriteStream(join(OUT, 'logs', 'publisher.log')));
    let pubStats: { acked: number; published: number; failed: number; in_flight: number; commands: { received: number; applied: number } } | null = null;
    let pubResult: PublisherResult | null = null;
    publisher.on('message', (m: { type: string; stats?: unknown }) => {
      if (m.type === 'progress') pubStats = m.stats as typeof pubStats;
      if (m.type === 'result') pubResult = m as unknown as PublisherResult;
    });
    const pubExit = new Promise<number | null>((r) => publisher!.once('exit', (code) => r(code)));
    await new Promise<void>((resolveP, reject) => {
      publisher!.on('message', (m: { type: string }) => m.type === 'started' && resolveP());
      void pubExit.then((code) => reject(new Error(`the publisher exited with ${code} before starting (see ${join(OUT, 'logs', 'publisher.log')})`)));
    });

    loads.writer = new OutboxWriter(dbUrls.services, prefix, RATES.outbox);
    loads.commands = new CommandLoad(ports.api, devices, RATES.commands);
    loads.history = new HistoryLoad(ports.history, devices, RATES.history);
    loads.ws = new WebSocketClients(`ws://127.0.0.1:${ports.realtime}/ws`, WS_CLIENTS);
    const tLoad = Date.now();
    loads.writer.start();
    loads.commands.start();
    loads.history.start();
    loads.ws.start();
    log(`load started`);

    // Sampling /proc (and readiness) every SAMPLE_MS.
    const samples: MemSample[] = [];
    const notReadyReasons: Record<string, Record<string, number>> = {};
    const sample = async () => {
      const rss: Record<string, number | null> = {};
      const cpu: MemSample['cpu'] = {};
      const ready: Record<string, boolean> = {};
      await Promise.all(
        [...runners.values()].map(async (r) => {
          const pid = r.pid;
          rss[r.name] = pid ? rssMb(pid) : null;
          const ticks = pid ? cpuTicks(pid) : null;
          cpu[r.name] = pid && ticks !== null ? { pid, ticks } : null;
          const rd = await r.readiness();
          ready[r.name] = rd.ready;
          if (!rd.ready) {
            // The reasons a pipeline was not ready, counted (numbers taken out so that equal reasons count together).
            const reason = rd.reason.replace(/\d+(\.\d+)?/g, 'N').slice(0, 200);
            const m = (notReadyReasons[r.name] ??= {});
            m[reason] = (m[reason] ?? 0) + 1;
          }
        }),
      );
      const servers: Record<string, number | null> = {};
      for (const s of ['kafka', 'postgres', 'mosquitto']) {
        const pid = serverPid(s);
        servers[s] = pid ? rssMb(pid) : null;
      }
      samples.push({ t: Date.now(), rss, cpu, ready, servers, machine: machineTicks() });
    };
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const t = Date.now();
        await sample();
        await sleep(Math.max(0, SAMPLE_MS - (Date.now() - t)));
      }
    })();

    // Progress every PROGRESS_MS: what got through, lag, backlog.
    const timeline: Record<string, unknown>[] = [];
    const lag = async (group: string, topics: string[]): Promise<number | null> => {
      try {
        const committed = await admin.fetchOffsets({ groupId: group, topics });
        let n = 0;
        for (const t of committed) {
          const ends = await admin.fetchTopicOffsets(t.topic);
          for (const e of ends) {
            const c = t.partitions.find((p) => p.partition === e.partition);
            const at = c && Number(c.offset) >= 0 ? Number(c.offset) : Number(e.low);
            n += Number(e.high) - at;
          }
        }
        return n;
      } catch {
        return null;
      }
    };
    const sinkTopics = ['homelab-heatpump-telemetry', 'homelab-energy-realtime', 'homelab-temperature'].map(topo.telemetryTopic);
    const progress = async (final = false) => {
      const tt = Date.now();
      const s = pubStats as typeof pubStats;
      const ob = await outboxRows(dbUrls.services).catch(() => null);
      const cmd = await commandStatuses(dbUrls.heatpump_settings).catch(() => null);
      const p = {
        t_s: Math.round((tt - tLoad) / 1000),
        load1: Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]),
        sim_acked: s?.acked ?? null,
        sim_in_flight: s?.in_flight ?? null,
        sink_lag: await lag(topo.groups.telemetrySink, sinkTopics),
        confirm_lag: await lag(topo.groups.confirm, [topo.telemetryTopic('homelab-heatpump-telemetry')]),
        realtime_lag: await lag(topo.groups.realtime, topo.realtimeTopics),
        outbox_generated: loads.writer!.generated,
        outbox_backlog_writer: loads.writer!.backlog,
        outbox_unpublished: ob ? ob.perTable.reduce((a, x) => a + x.unpublished, 0) : null,
        commands_sent: loads.commands!.sent,
        commands_202: loads.commands!.accepted.length,
        commands: cmd,
        ws_frames: loads.ws!.frames,
        runners_down: [...runners.values()].filter((r) => !r.running).map((r) => r.name),
      };
      timeline.push(p);
      if (!final)
        log(
          `sim acked ${f0(p.sim_acked)} (in flight ${f0(p.sim_in_flight)}); lag sink ${f0(p.sink_lag)}, confirm ${f0(p.confirm_lag)}, realtime ${f0(p.realtime_lag)}; ` +
            `outbox ${f0(p.outbox_generated)} written, ${f0(p.outbox_unpublished)} unpublished; PATCH ${f0(p.commands_sent)} sent, ${f0(p.commands_202)} x 202; ` +
            `commands ${cmd ? Object.entries(cmd).map(([k, v]) => `${k} ${v}`).join(' ') : '-'}; load ${p.load1}`,
        );
    };

    // Chaos.
    const chaos: ChaosEvent[] = [];
    let chaosStop = false;
    let wakeChaos: (() => void) | null = null;
    const waitAllReady = async (maxMs: number): Promise<number | null> => {
      const t = Date.now();
      while (Date.now() - t < maxMs) {
        if (await allReady()) return Date.now() - t;
        await sleep(500);
      }
      return null;
    };
    const chaosLoop = (async () => {
      if (!CHAOS.enabled) return;
      const names = [...runners.keys()];
      while (!chaosStop) {
        const wait = rng.range(CHAOS.minMs, CHAOS.maxMs);
        await new Promise<void>((r) => {
          const t = setTimeout(r, wait);
          wakeChaos = () => {
            clearTimeout(t);
            r();
          };
        });
        if (chaosStop) break;
        const at_s = Math.round((Date.now() - tLoad) / 1000);
        if (CHAOS.servers.length && rng.next() < CHAOS.infraShare) {
          const server = CHAOS.servers[Math.floor(rng.next() * CHAOS.servers.length)]!;
          const pidBefore = serverPid(server);
          log(`chaos: restart ${server} (pid ${pidBefore})`);
          const r = await stack('restart', server);
          const ok = r.code === 0 && serverPid(server) !== pidBefore;
          let note: string | undefined;
          if (!ok) {
            note = `scripts/stack restart ${server} exited ${r.code}: ${r.output.split('\n').slice(-5).join(' | ')}`;
            log(`chaos: ${note}; starting it`);
            const s2 = await stack('start', server);
            if (s2.code !== 0) note += `; start exited ${s2.code}`;
          }
          const readyAfter = await waitAllReady(180_000);
          chaos.push({ at_s, target: server, action: 'restart', down_ms: Math.round(r.ms), ok, all_ready_after_ms: readyAfter, note });
          log(`chaos: ${server} restarted in ${(r.ms / 1000).toFixed(1)} s (pid ${serverPid(server)}); all pipelines ready ${readyAfter === null ? 'NOT within 180 s' : `${(readyAfter / 1000).toFixed(1)} s later`}`);
        } else {
          const name = names[Math.floor(rng.next() * names.length)]!;
          const p = runners.get(name)!;
          const down = rng.range(0, CHAOS.killDownMaxMs);
          const pid = p.pid;
          const t = performance.now();
          await p.kill9();
          await sleep(down);
          p.start();
          const downMs = performance.now() - t;
          const readyAfter = await waitAllReady(180_000);
          chaos.push({ at_s, target: name, action: 'kill -9', down_ms: Math.round(downMs), ok: true, all_ready_after_ms: readyAfter });
          log(`chaos: kill -9 ${name} (pid ${pid}), restarted after ${(downMs / 1000).toFixed(1)} s; all ready ${readyAfter === null ? 'NOT within 180 s' : `${(readyAfter / 1000).toFixed(1)} s later`}`);
        }
      }
    })();

    // A supervisor, as compose's `restart: unless-stopped` is: a runner that exited by itself is
    // started again after --restart-delay. Every such exit is a finding (check 5).
    let supervising = true;
    const supervisor = (async () => {
      while (supervising) {
        for (const r of runners.values()) {
          if (!r.running && r.crashedAt !== null && Date.now() - r.crashedAt >= CHAOS.restartDelayMs) {
            const e = r.unexpectedExits.at(-1)!;
            log(`CRASH: ${r.name} exited by itself (code ${e.code}, signal ${e.signal}): ${e.error}; starting it again`);
            r.start();
          }
        }
        await sleep(500);
      }
    })();

    // The load phase.
    const loadEnd = tLoad + DURATION_MS;
    while (Date.now() < loadEnd) {
      await sleep(Math.min(PROGRESS_MS, loadEnd - Date.now()));
      await progress();
    }
    const tLoadEnd = Date.now();
    log(`load phase over after ${((tLoadEnd - tLoad) / 1000).toFixed(0)} s; stopping chaos (waiting for a fault in progress)`);
    chaosStop = true;
    (wakeChaos as (() => void) | null)?.();
    await chaosLoop;

    // Everything up again.
    const status = await stack('status');
    if (status.code !== 0) {
      log(`stack status: ${status.output.trim()}`);
      for (const s of CHAOS.servers) if (new RegExp(`^${s}\\s+DOWN`, 'm').test(status.output)) log(`starting ${s}: exit ${(await stack('start', s)).code}`);
    }
    for (const r of runners.values()) if (!r.running) r.start();

    // Stop the load (the servers are up: the writer gets its commits). The PATCHes stop first and
    // the simulator goes on (answering commands) until every command is in a terminal status, so
    // that a command sent at the end does not time out only because its device stopped.
    log('every server up; stopping the load: PATCHes, history queries, outbox writer (waiting for its commits)');
    await loads.commands.stop();
    await loads.history.stop();
    loads.ws.stop();
    const writerDone = await loads.writer.stop(300_000);
    const readyAfterChaos = await waitAllReady(300_000);
    log(`pipelines ${readyAfterChaos === null ? `NOT all ready within 300 s: ${(await notReady()).join(', ')}` : 'all ready'}; waiting for every command to end (the simulator still answers)`);
    const commandWait = await settle(
      'commands in a terminal status',
      () => commandStatuses(dbUrls.heatpump_settings),
      (v) => Object.keys(v).every((st) => TERMINAL.includes(st)),
      (v) => Object.entries(v).map(([k, n]) => `${k} ${n}`).join(', '),
    );
    log('stopping the simulator (waiting for its PUBACKs)');
    publisher.send({ type: 'stop' });
    const code = await Promise.race([pubExit, sleep(360_000).then(() => 'timeout' as const)]);
    if (!pubResult) throw new Error(`the publisher gave no result (exit ${code}); see ${join(OUT, 'logs', 'publisher.log')}`);
    const pub = pubResult as PublisherResult;
    const tStopped = Date.now();
    log(`load stopped: simulator ${pub.stats.published} published, ${pub.stats.acked} acknowledged, ${pub.stats.failed} failed, ${pub.unacked.length} unacknowledged (wrapper saw ${pub.ackedSeen} PUBACKs); ` +
      `outbox ${loads.writer.generated} events (${writerDone ? 'all committed' : 'NOT all committed'}); PATCH ${loads.commands.sent} sent, ${loads.commands.accepted.length} x 202`);

    // Catch-up: poll until the counts reach what was sent (or stop changing).
    const expectedRows: Record<string, number> = {};
    for (const [topic, kind] of Object.entries(pub.kindOf)) {
      const t = TABLE_OF_KIND[kind as Kind]?.table;
      if (t) expectedRows[t] = (expectedRows[t] ?? 0) + (pub.lastSeq[topic] ?? 0);
    }
    const uncertainCount = pub.failed.length + pub.unacked.length;
    const expectedTotal = Object.values(expectedRows).reduce((a, b) => a + b, 0);
    const tableCounts = async () => {
      const c = new pg.Client({ connectionString: dbUrls.telemetry });
      await c.connect();
      try {
        const r = (await c.query('SELECT (SELECT count(*) FROM heatpump)::int AS heatpump, (SELECT count(*) FROM energy_consumption)::int AS energy_consumption, (SELECT count(*) FROM temperature)::int AS temperature')).rows[0] as { heatpump: number; energy_consumption: number; temperature: number };
        return { ...r, caught_up: await caughtUp(admin, topo.groups.telemetrySink, sinkTopics) };
      } finally {
        await c.end();
      }
    };
    const telemetryWait = await settle(
      'telemetry rows',
      tableCounts,
      (v) => v.caught_up && v.heatpump + v.energy_consumption + v.temperature >= expectedTotal - uncertainCount,
      (v) => `${f0(v.heatpump + v.energy_consumption + v.temperature)} of ${f0(expectedTotal)} rows, sink group ${v.caught_up ? 'caught up' : 'behind'}`,
    );
    const outboxWait = await settle(
      'outbox events relayed',
      () => outboxRows(dbUrls.services),
      (v) => v.perTable.every((t) => t.unpublished === 0),
      (v) => `${f0(v.perTable.reduce((a, t) => a + t.unpublished, 0))} unpublished`,
    );
    log(`caught up: telemetry ${telemetryWait.outcome} after ${telemetryWait.seconds.toFixed(0)} s, outbox ${outboxWait.outcome} after ${outboxWait.seconds.toFixed(0)} s, commands ${commandWait.outcome} after ${commandWait.seconds.toFixed(0)} s`);
    await progress(true);
    sampling = false;
    await sampler;

    // Checks.
    log('checking: telemetry tables');
    const topicOfKind = (kind: Kind, id: string) => topicOf(kind, id, topo.mqttPrefix);
    const tables = await checkTables(dbUrls.telemetry, pub, topicOfKind);
    log('reading back the bridge topics and the realtime topics');
    const bridgeCopies = new MessageCopies(pub.lastSeq);
    const bridgeTopics = ['homelab-heatpump-telemetry', 'homelab-energy-realtime', 'homelab-temperature', 'homelab-heatpump-settings'].map(topo.telemetryTopic);
    const bridgeRead = await readTopics(kafka, admin, bridgeTopics, `soak-${id}-check-bridge`, (_t, _p, m) => bridgeCopies.add(m));
    const realtimeCopies = new MessageCopies(pub.lastSeq);
    const realtimeRead = await readTopics(kafka, admin, topo.realtimeTopics, `soak-${id}-check-realtime`, (_t, _p, m) => realtimeCopies.add(m));
    const uncertain = new Set([...pub.failed, ...pub.unacked].map((m) => `${m.topic}#${m.seq}`));
    const topicsOf = (kinds: Kind[]) => Object.entries(pub.kindOf).filter(([, k]) => kinds.includes(k)).map(([t]) => t);
    const bridge = { ...bridgeCopies.summary(topicsOf(['heatpump', 'energy', 'temperature', 'settings']), uncertain), records: bridgeRead.records, unexpected: bridgeCopies.unexpected, unparsable: bridgeCopies.unparsable, read_s: bridgeRead.seconds };
    const realtime = { ...realtimeCopies.summary(topicsOf(['heatpump', 'energy']), uncertain), records: realtimeRead.records, unexpected: realtimeCopies.unexpected, unparsable: realtimeCopies.unparsable };
    // Where did each missing table row go missing?
    const lostWhere = { in_kafka_not_in_table: 0, not_in_kafka: 0, in_realtime_topics: 0, samples: [] as string[] };
    for (const m of tables.missing) {
      const inKafka = bridgeCopies.has(m.topic, m.seq) > 0;
      if (inKafka) lostWhere.in_kafka_not_in_table++;
      else lostWhere.not_in_kafka++;
      // mqtt-realtime has its own MQTT session on heat-pump and energy telemetry: a copy there shows the broker took and delivered the message.
      const inRealtime = realtimeCopies.has(m.topic, m.seq) > 0;
      if (inRealtime) lostWhere.in_realtime_topics++;
      if (lostWhere.samples.length < 10) lostWhere.samples.push(`${m.topic}#${m.seq}: ${inKafka ? 'in the bridge topic, not in the table (sink)' : 'not in the bridge topic (MQTT -> bridge)'}${inRealtime ? '; in the realtime topic (mqtt-realtime got it)' : ''}`);
    }
    let deadLetters = 0;
    const deadLetterSamples: string[] = [];
    await readTopics(kafka, admin, [topo.deadLetterTopic], `soak-${id}-check-dlq`, (_t, _p, m) => {
      deadLetters++;
      if (deadLetterSamples.length < 5) deadLetterSamples.push(`${m.headers?.dlq_operator?.toString() ?? '?'}: ${m.headers?.dlq_error?.toString()?.slice(0, 200) ?? '?'}`);
    });
    log('checking: outbox events in Kafka');
    const outbox = await checkOutbox(kafka, admin, dbUrls.services, prefix, loads.writer.generated, topo.eventTopic, `soak-${id}-check-outbox`);
    log('checking: commands');
    const commands = await checkCommands(dbUrls.heatpump_settings, loads.commands.accepted);
    let statusEventsInKafka = 0;
    const statusEventIds = new Set<string>();
    await readTopics(kafka, admin, [topo.settingsEventsTopic], `soak-${id}-check-events`, (_t, _p, m) => {
      statusEventsInKafka++;
      statusEventIds.add(m.headers?.event_id?.toString() ?? '');
    });

    // Memory.
    const loadSamples = samples.filter((s) => s.t >= tLoad && s.t <= tLoadEnd);
    const window = Math.min(300_000, (tLoadEnd - tLoad) / 3);
    const med = (xs: number[]) => {
      const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
      if (!v.length) return NaN;
      const m = Math.floor(v.length / 2);
      return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
    };
    const memory = [...runners.values()].map((r) => {
      const all = loadSamples.map((s) => s.rss[r.name]).filter((x): x is number => x !== null && x !== undefined);
      const first = loadSamples.filter((s) => s.t <= tLoad + window).map((s) => s.rss[r.name]).filter((x): x is number => x != null);
      const last = loadSamples.filter((s) => s.t >= tLoadEnd - window).map((s) => s.rss[r.name]).filter((x): x is number => x != null);
      const f = med(first);
      const l = med(last);
      const readyShare = loadSamples.length ? loadSamples.filter((s) => s.ready[r.name]).length / loadSamples.length : NaN;
      const killedInLastWindow = chaos.some((c) => c.target === r.name && tLoad + c.at_s * 1000 >= tLoadEnd - window);
      // CPU: ticks between consecutive samples of the same process, over the load phase.
      let ticks = 0;
      for (let i = 1; i < loadSamples.length; i++) {
        const a = loadSamples[i - 1]!.cpu[r.name];
        const b = loadSamples[i]!.cpu[r.name];
        if (a && b && a.pid === b.pid) ticks += b.ticks - a.ticks;
      }
      const span = loadSamples.length > 1 ? (loadSamples.at(-1)!.t - loadSamples[0]!.t) / 1000 : NaN;
      return {
        pipeline: r.name,
        first_median_mb: +f.toFixed(1),
        last_median_mb: +l.toFixed(1),
        max_mb: all.length ? +Math.max(...all).toFixed(1) : null,
        ratio: +(l / f).toFixed(2),
        grew: l / f > GROWTH,
        starts: r.starts,
        kills: r.kills,
        killed_in_last_window: killedInLastWindow,
        unexpected_exits: r.unexpectedExits.length,
        ready_share: +readyShare.toFixed(3),
        cpu_pct: +((ticks / CLK_TCK / span) * 100).toFixed(1),
      };
    });
    const serverMemory = ['kafka', 'postgres', 'mosquitto'].map((s) => {
      const first = loadSamples.filter((x) => x.t <= tLoad + window).map((x) => x.servers[s]).filter((x): x is number => x != null);
      const last = loadSamples.filter((x) => x.t >= tLoadEnd - window).map((x) => x.servers[s]).filter((x): x is number => x != null);
      return { server: s, first_median_mb: +med(first).toFixed(1), last_median_mb: +med(last).toFixed(1) };
    });
    const busy = loadSamples.length > 1 ? busyBetween(loadSamples[0]!.machine, loadSamples.at(-1)!.machine) : NaN;
    const loads1 = timeline.map((p) => p.load1 as number);

    supervising = false;
    await supervisor;
    // Stop the runners (SIGTERM: each drains and exits 0, or that is a finding too).
    const exits: Record<string, { code: number | null; signal: string | null }> = {};
    await Promise.all([...runners.values()].map(async (r) => (exits[r.name] = await r.stop(90_000))));

    const telemetryOk = tables.tables.every((t) => t.ok);
    const outboxOk = outbox.ok;
    const commandsOk = commands.ok;
    const memoryOk = memory.every((m) => !m.grew);
    const exitsOk = Object.values(exits).every((e) => e.code === 0);
    const crashes = [...runners.values()].flatMap((r) => r.unexpectedExits.map((e) => ({ pipeline: r.name, at_s: Math.round((e.at - tLoad) / 1000), code: e.code, signal: e.signal, error: e.error })));
    const crashesOk = crashes.length === 0;
    failed = !(telemetryOk && outboxOk && commandsOk && memoryOk && crashesOk);
    Object.assign(results, {
      uptime_end: uptime(),
      seconds: { load: (tLoadEnd - tLoad) / 1000, stop: (tStopped - tLoadEnd) / 1000, catch_up: { telemetry: telemetryWait, outbox: outboxWait, commands: commandWait } },
      load: {
        simulator: pub.stats,
        simulator_failed: pub.failed.slice(0, 20),
        simulator_unacked: pub.unacked.slice(0, 20),
        simulator_wrapper: { acked_seen: pub.ackedSeen, no_seq: pub.noSeq },
        outbox: { generated: loads.writer.generated, inserted: loads.writer.committed, failed_attempts: loads.writer.failedAttempts, last_error: loads.writer.lastError, all_committed: writerDone },
        commands: { sent: loads.commands.sent, skipped_api_stalled: loads.commands.skipped, statuses: loads.commands.statuses, errors: loads.commands.errors, accepted: loads.commands.accepted.length, outcome_unknown: loads.commands.unknown },
        history: { statuses: loads.history.statuses, errors: loads.history.errors },
        websocket: { clients: WS_CLIENTS, frames: loads.ws.frames, connects: loads.ws.connects, closes: loads.ws.closes },
      },
      chaos,
      checks: {
        telemetry: { ok: telemetryOk, tables: tables.tables, lost_where: lostWhere, bridge_topics: bridge, realtime_topics: realtime, dead_letters: deadLetters, dead_letter_samples: deadLetterSamples },
        outbox: outbox,
        commands: { ...commands, status_events_in_kafka: statusEventsInKafka, status_events_distinct_in_kafka: statusEventIds.size },
        memory: { ok: memoryOk, window_s: window / 1000, growth_threshold: GROWTH, pipelines: memory, servers: serverMemory },
        crashes: { ok: crashesOk, restart_delay_ms: CHAOS.restartDelayMs, list: crashes },
        runner_exits: { ok: exitsOk, exits },
        not_ready_reasons: notReadyReasons,
      },
      machine_busy_during_load: busy,
      load1_during_load: { min: Math.min(...loads1), max: Math.max(...loads1), median: med(loads1) },
      timeline,
      memory_samples: samples.map((s) => ({ t_s: Math.round((s.t - tLoad) / 1000), rss: s.rss, servers: s.servers })),
    });
    writeResults();
    report(results, { telemetryOk, outboxOk, commandsOk, memoryOk, crashesOk, exitsOk }, tables.tables, outbox, commands);
  } catch (err) {
    failed = true;
    results.error = String((err as Error).stack ?? err);
    writeResults();
    log(`FAILED: ${(err as Error).stack ?? err}`);
  } finally {
    loads.ws?.stop();
    if (publisher && publisher.exitCode === null) publisher.kill('SIGKILL');
    await Promise.all([...runners.values()].map((r) => r.stop(30_000).catch(() => undefined)));
    for (const r of runners.values()) r.close();
    if (!args.keep) {
      await admin.deleteTopics({ topics: topo.topics.map((t) => t.topic) }).catch((e) => log(`deleting topics: ${e}`));
      await admin.deleteGroups(Object.values(topo.groups)).catch(() => undefined);
      for (const n of Object.values(dbNames)) await adminQuery(`DROP DATABASE IF EXISTS ${n} WITH (FORCE)`).catch((e) => log(`dropping ${n}: ${e}`));
      for (const c of [...topo.mqttClientIds, `soak-sim-${id}`]) await dropMqttSession(c).catch(() => undefined);
      for (const f of Object.values(topo.files)) rmSync(dirname(f), { recursive: true, force: true });
    } else {
      log(`--keep: databases ${Object.values(dbNames).join(', ')}, topics e2e-${id}-*, pipeline files under ${topo.dir} and next to it are kept`);
    }
    await admin.disconnect().catch(() => undefined);
  }
  console.log(`\nresults: ${join(OUT, 'results.json')}; runner logs: ${join(OUT, 'logs')}`);
  return failed ? 1 : 0;
}

/** What a pipeline keeps in memory by design, shown next to a growth flag. */
const MEMORY_NOTES: Record<string, string> = {
  'realtime-fanout': 'it keeps the last hour of messages for /api/v1/heatpump/realtime/last-hour (recent.window 1h): it grows until an hour is held',
};

function report(r: Record<string, unknown>, ok: Record<string, boolean>, tables: TableCheck[], outbox: OutboxCheck, commands: CommandCheck): void {
  const res = r as {
    seconds: { load: number; catch_up: Record<string, { outcome: string; seconds: number }> };
    load: { simulator: { published: number; acked: number; failed: number; commands: { received: number; applied: number } }; outbox: { generated: number; failed_attempts: number }; commands: { sent: number; statuses: Record<string, number>; errors: Record<string, number>; skipped_api_stalled: number; outcome_unknown?: number }; history: { statuses: Record<string, number> }; websocket: { frames: number; connects: number } };
    chaos: ChaosEvent[];
    checks: {
      telemetry: { lost_where: { in_kafka_not_in_table: number; not_in_kafka: number; in_realtime_topics: number; samples: string[] }; bridge_topics: { expected: number; found: number; missing: number; duplicateRecords: number; messagesWithDuplicates: number; records: number }; realtime_topics: { expected: number; found: number; missing: number; duplicateRecords: number; records: number }; dead_letters: number; dead_letter_samples: string[] };
      commands: { status_events_in_kafka: number; status_events_distinct_in_kafka: number };
      memory: { window_s: number; pipelines: { pipeline: string; first_median_mb: number; last_median_mb: number; max_mb: number | null; ratio: number; grew: boolean; starts: number; kills: number; killed_in_last_window: boolean; unexpected_exits: number; ready_share: number; cpu_pct: number }[]; servers: { server: string; first_median_mb: number; last_median_mb: number }[] };
      runner_exits: { exits: Record<string, { code: number | null; signal: string | null }> };
    };
    machine_busy_during_load: number;
    load1_during_load: { min: number; max: number; median: number };
    uptime_start: string;
    uptime_end: string;
  };
  const L: string[] = [];
  const mark = (b: boolean) => (b ? 'ok' : 'FAILED');
  L.push('', `=== soak under faults: ${(res.seconds.load / 60).toFixed(1)} min of load, seed ${SEED} ===`);
  L.push(`machine: ${JSON.stringify((r as { machine: unknown }).machine)}; busy ${(res.machine_busy_during_load * 100).toFixed(0)} % during the load; 1-min load ${res.load1_during_load.min}-${res.load1_during_load.max} (median ${res.load1_during_load.median})`);
  L.push(`uptime at start: ${res.uptime_start}`, `uptime at end:   ${res.uptime_end}`);
  const s = res.load.simulator;
  L.push(`load: telemetry ${RATES.telemetry} msg/s -> ${f0(s.published)} published, ${f0(s.acked)} acknowledged (${f0(s.acked / res.seconds.load)}/s), ${s.failed} failed; devices answered ${f0(s.commands.applied)} of ${f0(s.commands.received)} commands`);
  L.push(`      outbox ${RATES.outbox} events/s -> ${f0(res.load.outbox.generated)} events (${res.load.outbox.failed_attempts} INSERT attempts failed and were retried)`);
  L.push(`      commands ${RATES.commands} PATCH/s -> ${f0(res.load.commands.sent)} sent (${f0(res.load.commands.skipped_api_stalled)} skipped while 64 were open), answers ${JSON.stringify(res.load.commands.statuses)}, errors ${JSON.stringify(res.load.commands.errors)}`);
  L.push(`      history answers ${JSON.stringify(res.load.history.statuses)}; WebSocket ${f0(res.load.websocket.frames)} frames, ${res.load.websocket.connects} connects`);
  const kills = res.chaos.filter((c) => c.action === 'kill -9');
  const restarts = res.chaos.filter((c) => c.action === 'restart');
  L.push(`chaos: ${res.chaos.length} faults: ${restarts.length} server restarts (${['kafka', 'postgres', 'mosquitto'].map((x) => `${x} ${restarts.filter((c) => c.target === x).length}`).join(', ')}), ${kills.length} kill -9 (${[...new Set(kills.map((k) => k.target))].map((t) => `${t} ${kills.filter((k) => k.target === t).length}`).join(', ')})`);
  const slow = res.chaos.filter((c) => c.all_ready_after_ms === null);
  if (slow.length) L.push(`       after ${slow.length} fault(s) not every pipeline was ready within 180 s: ${slow.map((c) => `${c.target}@${c.at_s}s`).join(', ')}`);
  L.push(`catch-up: ${Object.entries(res.seconds.catch_up).map(([k, v]) => `${k} ${v.outcome} in ${v.seconds.toFixed(0)} s`).join(', ')}`);
  L.push('');
  L.push(`1. telemetry in the tables: ${mark(ok.telemetryOk!)}`);
  for (const t of tables) L.push(`   ${t.table.padEnd(18)} ${f0(t.rows)} rows for ${f0(t.expected)} acknowledged messages: ${f0(t.missing)} missing, ${f0(t.duplicateRows)} duplicate rows, ${f0(t.unexpectedRows)} unexpected${t.uncertain ? `; ${t.uncertain} unacknowledged publishes, ${t.uncertainPresent} of them present` : ''}${t.missingSamples.length ? `; e.g. ${t.missingSamples.slice(0, 3).join(', ')}` : ''}`);
  const tel = res.checks.telemetry;
  if (tel.lost_where.samples.length) L.push(`   where: ${tel.lost_where.in_kafka_not_in_table} in the bridge topic but not in the table, ${tel.lost_where.not_in_kafka} not in the bridge topic (${tel.lost_where.in_realtime_topics} of the missing in mqtt-realtime's topics); ${tel.lost_where.samples.slice(0, 3).join('; ')}`);
  L.push(`   bridge topics: ${f0(tel.bridge_topics.found)} of ${f0(tel.bridge_topics.expected)} messages, ${f0(tel.bridge_topics.records)} records, ${f0(tel.bridge_topics.duplicateRecords)} duplicate records (${f0(tel.bridge_topics.messagesWithDuplicates)} messages more than once), ${f0(tel.bridge_topics.missing)} missing`);
  L.push(`   realtime topics: ${f0(tel.realtime_topics.found)} of ${f0(tel.realtime_topics.expected)} messages, ${f0(tel.realtime_topics.duplicateRecords)} duplicate records, ${f0(tel.realtime_topics.missing)} missing`);
  L.push(`   dead letters: ${tel.dead_letters}${tel.dead_letter_samples.length ? ` (${tel.dead_letter_samples.join(' | ')})` : ''}`);
  L.push(`2. outbox events in Kafka: ${mark(ok.outboxOk!)}: ${f0(outbox.distinctInKafka)} of ${f0(outbox.generated)} events (${f0(outbox.rowsInTables)} rows in the tables, ${f0(outbox.unpublishedRows)} unpublished), ${f0(outbox.kafkaRecords)} records, ${f0(outbox.duplicateRecords)} duplicate records (${f0(outbox.eventsWithDuplicates)} events more than once), ${f0(outbox.missing)} missing, ${outbox.wrongTopic} in a wrong topic, ${outbox.deliveryErrors} delivery errors`);
  if (outbox.missingSamples.length) L.push(`   missing, e.g.: ${outbox.missingSamples.slice(0, 3).map((m) => `#${m.seq} ${m.table} marked published: ${m.markedPublished}, failures ${m.failures}`).join('; ')}`);
  L.push(`3. commands in a terminal status: ${mark(ok.commandsOk!)}: ${f0(commands.rows)} outbox rows: ${Object.entries(commands.byStatus).map(([k, v]) => `${k} ${f0(v)}`).join(', ')}; ${commands.nonTerminal} not terminal; ${f0(commands.accepted)} PATCHes answered 202 with an outbox id (${commands.acceptedMissing} of them without a row), ${f0(res.load.commands.outcome_unknown ?? 0)} answered 202 with outcome unknown (the server's backstop), ${f0(commands.rowsWithoutAnswer)} rows whose 202 the client never saw`);
  L.push(`   status-change events: ${f0(commands.statusEvents)} rows (${commands.statusEventsUnpublished} not relayed), ${f0(res.checks.commands.status_events_distinct_in_kafka)} distinct in Kafka (${f0(res.checks.commands.status_events_in_kafka)} records)`);
  L.push(`4. memory (RSS, median of the first / last ${(res.checks.memory.window_s / 60).toFixed(1)} min of load, max; growth flagged above x${GROWTH}): ${mark(ok.memoryOk!)}`);
  for (const m of res.checks.memory.pipelines) {
    const note = MEMORY_NOTES[m.pipeline] ? ` (${MEMORY_NOTES[m.pipeline]})` : '';
    L.push(`   ${m.pipeline.padEnd(17)} ${f0(m.first_median_mb).padStart(5)} -> ${f0(m.last_median_mb).padStart(5)} MB (x${m.ratio}), max ${f0(m.max_mb).padStart(5)} MB; ${m.starts} start(s), ${m.kills} kill(s)${m.killed_in_last_window ? ' (one in the last window)' : ''}; ready ${(m.ready_share * 100).toFixed(0)} % of samples; CPU ${m.cpu_pct} %${m.unexpected_exits ? `; ${m.unexpected_exits} exit(s) by itself` : ''}${m.grew ? `  <-- GREW${note}` : ''}`);
  }
  L.push(`   servers: ${res.checks.memory.servers.map((x) => `${x.server} ${f0(x.first_median_mb)} -> ${f0(x.last_median_mb)} MB`).join(', ')}`);
  const crashList = (r as { checks: { crashes: { list: { pipeline: string; at_s: number; code: number | null; signal: string | null; error: string }[] } } }).checks.crashes.list;
  L.push(`5. no runner process exited by itself: ${mark(ok.crashesOk!)}${crashList.length ? `: ${crashList.length} exit(s), each started again after ${CHAOS.restartDelayMs / 1000} s` : ''}`);
  for (const c of crashList.slice(0, 20)) L.push(`   ${c.pipeline} at ${c.at_s} s (code ${c.code}${c.signal ? `, ${c.signal}` : ''}): ${c.error.slice(0, 220)}`);
  L.push('readiness:');
  const reasons = (r as { checks: { not_ready_reasons: Record<string, Record<string, number>> } }).checks.not_ready_reasons;
  for (const [name, byReason] of Object.entries(reasons)) {
    const top = Object.entries(byReason).sort((a, b) => b[1] - a[1])[0]!;
    L.push(`   ${name} not ready in ${Object.values(byReason).reduce((a, b) => a + b, 0)} samples; most often: ${top[0].slice(0, 160)} (${top[1]})`);
  }
  const bad = Object.entries(res.checks.runner_exits.exits).filter(([, e]) => e.code !== 0);
  L.push(`runner exits after SIGTERM: ${bad.length ? bad.map(([n, e]) => `${n} ${e.code ?? e.signal}`).join(', ') : 'all 0'}`);
  console.log(L.join('\n'));
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);
