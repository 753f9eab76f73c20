/**
 * The demo: the whole stack doing its job on simulated heat pumps, every pipeline in one runner.
 *
 *   runner simulate (5 heat pumps with energy meters and room sensors, over MQTT, QoS 1)
 *     -> Mosquitto -> mqtt-bridge, mqtt-realtime
 *     -> Kafka: homelab-heatpump-telemetry, homelab-heatpump-settings, homelab-energy-realtime,
 *        homelab-temperature, heatpump-realtime, energy-realtime; bad payloads -> homelab-dead-letter
 *     -> telemetry-sink, settings-sink -> PostgreSQL: telemetry.heatpump, .energy_consumption,
 *        .temperature, heatpump_settings.settings (after `runner migrate`)
 *   a settings change through the API (settings-api) -> command-dispatch -> MQTT -> the simulated
 *     device -> its telemetry -> command-confirm: the command's path to `confirmed`
 *   outbox events written into the four service schemas -> outbox-relay -> Kafka
 *   realtime-fanout serves the dashboard and the WebSocket; history-api the history
 *
 * and a report read back from Kafka. Run it with `bash scripts/demo` (which starts the local stack
 * first). Ctrl-C stops it cleanly.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import kafkajs from 'kafkajs';
import mqtt from 'mqtt';
import pg from 'pg';
import WebSocket from 'ws';

const { Kafka, logLevel } = kafkajs;
const say = (s: string) => process.stdout.write(`${s}\n`);
const brokers = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
const mqttUrl = process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883';
const devices = Number(process.env.DEMO_DEVICES ?? 5);
const count = Number(process.env.DEMO_COUNT ?? 2000);
const rate = Number(process.env.DEMO_RATE ?? 500);
const runId = randomUUID().slice(0, 8);
const TOPICS = ['homelab-heatpump-telemetry', 'homelab-heatpump-settings', 'homelab-energy-realtime', 'homelab-temperature', 'heatpump-realtime', 'energy-realtime', 'homelab-dead-letter'];
const children: ChildProcess[] = [];

function fail(why: string): never {
  say(`demo: ${why}`);
  for (const c of children) c.kill('SIGTERM');
  process.exit(1);
}
// However the demo ends, its runner and simulators end with it.
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
});
process.on('SIGINT', () => {
  say('\ndemo: Ctrl-C: stopping the runner (it drains and commits) ...');
  for (const c of children) c.kill('SIGTERM');
  setTimeout(() => process.exit(130), 15_000).unref();
  Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.on('exit', r))))).then(() => process.exit(130));
});

function must(args: string[], what: string) {
  const r = spawnSync(process.execPath, ['bin/runner.mjs', ...args], { stdio: 'inherit' });
  if (r.status !== 0) fail(`${what} failed (exit ${r.status})`);
}

const kafka = new Kafka({ clientId: 'demo', brokers, logLevel: logLevel.NOTHING });
const admin = kafka.admin();
await admin.connect();
const offsets = async () => {
  const out: Record<string, number> = {};
  for (const t of TOPICS) out[t] = (await admin.fetchTopicOffsets(t)).reduce((n, p) => n + Number(p.high), 0);
  return out;
};

say(`== runner lint`);
must(['lint'], 'lint');
say(`== runner topics apply   (topics.yaml)`);
must(['topics', 'apply'], 'topics apply');
say(`== runner migrate   (migrations/: telemetry, heatpump_settings, services)`);
must(['migrate'], 'migrate');
const before = await offsets();

const telemetryDb = new pg.Client({ connectionString: process.env.TELEMETRY_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/telemetry' });
const settingsDb = new pg.Client({ connectionString: process.env.HEATPUMP_SETTINGS_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/heatpump_settings' });
// A lost connection fails the query that needs it (and the demo with a message), never the process.
for (const c of [telemetryDb, settingsDb]) c.on('error', (err) => say(`demo: PostgreSQL connection lost: ${err.message}`));
await telemetryDb.connect();
await settingsDb.connect();
const TABLES = ['heatpump', 'energy_consumption', 'temperature'] as const;
// This run's readings: the simulator stamps them with the current time (the sinks may also catch
// up on older messages left in the topics by earlier runs).
const runStart = new Date(Date.now() - 1000);
const rowCounts = async () => {
  const { rows } = await telemetryDb.query(`SELECT ${TABLES.map((t) => `(SELECT count(*) FROM ${t} WHERE time >= $1)::int AS ${t}`).join(', ')}`, [runStart]);
  return rows[0] as Record<(typeof TABLES)[number], number>;
};
const rowsBefore = await rowCounts();

const PIPELINES = [
  'mqtt-bridge',
  'mqtt-realtime',
  'telemetry-sink',
  'settings-sink',
  'settings-api',
  'command-dispatch',
  'command-confirm',
  'command-timeouts',
  'command-events',
  'outbox-relay',
  'realtime-fanout',
  'history-api',
];
say(`== runner start ${PIPELINES.join(' ')}   (${PIPELINES.length} pipelines in one process)`);
// With the heap limit the Dockerfile and bin/runner.mjs's first line give it.
const runner = spawn(process.execPath, ['--max-old-space-size=512', 'bin/runner.mjs', 'start', ...PIPELINES], { env: { ...process.env, RUNNER_HTTP_PORT: '0' }, stdio: ['ignore', 'ignore', 'pipe'] });
children.push(runner);
let http = '';
let runnerLog = '';
const started = new Promise<void>((resolve) => {
  createInterface({ input: runner.stderr! }).on('line', (line) => {
    runnerLog += `${line}\n`;
    try {
      const rec = JSON.parse(line);
      if (rec.msg === 'runner started') {
        http = String(rec.http).replace('0.0.0.0', '127.0.0.1');
        resolve();
      }
      if (rec.level === 'warn' && rec.msg === 'message sent to dead_letter') say(`   runner: dead-lettered (${rec.component}): ${rec.err}`);
      if (rec.level === 'error') say(`   runner error: ${rec.msg}`);
    } catch {
      /* not JSON */
    }
  });
});
runner.on('exit', (code) => {
  if (!stopping) fail(`the runner exited early with ${code}:\n${runnerLog.slice(-2000)}`);
});
let stopping = false;
await started;
// Wait until both pipelines are connected (inputs subscribed, outputs writable).
for (let i = 0; ; i++) {
  const r = await fetch(`http://${http}/health/ready`).catch(() => null);
  if (r?.status === 200) break;
  if (i > 300) fail(`not ready after 30 s: ${r ? JSON.stringify(await r.json()) : 'no answer'}`);
  await new Promise((res) => setTimeout(res, 100));
}
say(`   ready: http://${http}/health/ready answers 200`);

say(`== runner simulate --devices ${devices} --rate ${rate} --count ${count} --timestamp-ms   (heat pumps, meters, sensors over MQTT, QoS 1)`);
must(['simulate', '--devices', String(devices), '--rate', String(rate), '--count', String(count), '--timestamp-ms'], 'simulate');

say('== three bad payloads published by hand (they must land in homelab-dead-letter, with the reason)');
const pub = await mqtt.connectAsync(mqttUrl, { clientId: `demo-bad-${runId}` });
await pub.publishAsync('heatpump/device-001/telemetry', 'not json at all', { qos: 1 });
await pub.publishAsync('heatpump/device-001/telemetry', JSON.stringify({ device_id: 'device-001', timestamp: 'yesterday' }), { qos: 1 });
await pub.publishAsync('heatpump/device-002/telemetry', JSON.stringify({ device_id: 'device-001', timestamp: 1700000000 }), { qos: 1 });
await pub.endAsync();

// Wait until Kafka holds what was published: each kind once in its homelab topic, heat-pump and
// energy telemetry once more in the realtime topics, and 3 dead letters.
const per = count / 4;
const want: Record<string, number> = {
  'homelab-heatpump-telemetry': per,
  'homelab-heatpump-settings': per,
  'homelab-energy-realtime': per,
  'homelab-temperature': per,
  'heatpump-realtime': per + 1, // the third bad payload is valid telemetry for the realtime pipeline
  'energy-realtime': per,
  'homelab-dead-letter': 5, // bridge: all three; realtime: the first two
};
let now = await offsets();
const delta = () => Object.fromEntries(TOPICS.map((t) => [t, now[t]! - before[t]!]));
for (let i = 0; ; i++) {
  now = await offsets();
  const d = delta();
  if (TOPICS.every((t) => d[t]! >= want[t]!)) break;
  if (i > 600) fail(`timed out waiting for Kafka: ${JSON.stringify(d)}`);
  await new Promise((res) => setTimeout(res, 100));
}
const d = delta();

// Wait until the sinks have written this run's telemetry (one row per reading: (device, time) is unique).
let rowsNow = await rowCounts();
const rowDelta = () => Object.fromEntries(TABLES.map((t) => [t, rowsNow[t] - rowsBefore[t]])) as Record<(typeof TABLES)[number], number>;
for (let i = 0; ; i++) {
  rowsNow = await rowCounts();
  if (TABLES.every((t) => rowDelta()[t] >= per)) break;
  if (i > 600) fail(`timed out waiting for the telemetry tables: ${JSON.stringify(rowDelta())}`);
  await new Promise((res) => setTimeout(res, 100));
}
const settingsRows = (await settingsDb.query("SELECT device_id, indoor_target_temp::float8 AS indoor_target_temp, mode, to_char(reported_at AT TIME ZONE 'UTC', 'HH24:MI:SS.MS') AS reported_at FROM settings ORDER BY device_id LIMIT 3")).rows;
const latest = (await telemetryDb.query("SELECT device_id, to_char(time AT TIME ZONE 'UTC', 'HH24:MI:SS.MS') AS time, outdoor_temp, supply_temp, return_temp FROM heatpump ORDER BY time DESC LIMIT 2")).rows;

// Read back a few records to show keys and headers, and the dead letters with their reasons.
const sample: string[] = [];
const dead: string[] = [];
const consumer = kafka.consumer({ groupId: `demo-report-${runId}` });
await consumer.connect();
await consumer.subscribe({ topics: ['homelab-heatpump-telemetry', 'homelab-dead-letter'], fromBeginning: false });
const seekDone = new Promise<void>((resolve) => {
  consumer.on(consumer.events.GROUP_JOIN, () => resolve());
});
const got = new Promise<void>((resolve) => {
  consumer.run({
    eachMessage: async ({ topic, message }) => {
      const h = Object.fromEntries(Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)]));
      if (topic === 'homelab-dead-letter') dead.push(`${h.dlq_pipeline}/${h.dlq_operator}: ${h.dlq_error}`);
      else if (sample.length < 2) sample.push(`key=${message.key} headers=${JSON.stringify({ mqtt_topic: h.mqtt_topic, received_at: h.received_at })}\n     value=${message.value}`);
      if (sample.length >= 2 && dead.length >= d['homelab-dead-letter']!) resolve();
    },
  });
});
await seekDone;
for (const t of ['homelab-heatpump-telemetry', 'homelab-dead-letter']) {
  for (const p of await admin.fetchTopicOffsets(t)) {
    const first = t === 'homelab-dead-letter' ? Math.max(0, Number(p.high) - d[t]!) : Math.max(0, Number(p.high) - 1);
    consumer.seek({ topic: t, partition: p.partition, offset: String(first) });
  }
}
await Promise.race([got, new Promise((res) => setTimeout(res, 10_000))]);
await consumer.disconnect();

// ---- System 4: outbox events of the four services, relayed to Kafka ----------------------------
const servicesDb = new pg.Client({ connectionString: process.env.SERVICES_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/services' });
servicesDb.on('error', (err) => say(`demo: PostgreSQL connection lost: ${err.message}`));
await servicesDb.connect();
const SOURCES = [
  { table: 'whatsapp_handler.outbox_events', marker: 'published_at IS NOT NULL', event: 'user.verified', correlation: true },
  { table: 'darwin_ingestor.outbox_events', marker: 'published_at IS NOT NULL', event: 'delay.detected', correlation: false },
  { table: 'journey_matcher.outbox', marker: 'processed_at IS NOT NULL', event: 'journey.matched', correlation: true },
  { table: 'data_retention.outbox', marker: 'published', event: 'cleanup.completed', correlation: false },
];
say('== 5 outbox events written into each of the four service schemas (outbox-relay publishes them)');
const eventIds = new Map<string, string[]>();
for (const src of SOURCES) {
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    const { rows } = await servicesDb.query(
      `INSERT INTO ${src.table} (aggregate_id, aggregate_type, event_type, payload${src.correlation ? ', correlation_id' : ''}) VALUES ($1, 'demo', $2, $3${src.correlation ? ', $4' : ''}) RETURNING id`,
      [`demo-${runId}-${i % 2}`, src.event, JSON.stringify({ demo: runId, n: i }), ...(src.correlation ? [`corr-${runId}`] : [])],
    );
    ids.push(rows[0].id);
  }
  eventIds.set(src.table, ids);
}
const relayed = new Map<string, number>();
for (let i = 0; ; i++) {
  for (const src of SOURCES) {
    const { rows } = await servicesDb.query(`SELECT count(*)::int AS n FROM ${src.table} WHERE id = ANY($1::uuid[]) AND ${src.marker}`, [eventIds.get(src.table)]);
    relayed.set(src.table, rows[0].n);
  }
  if ([...relayed.values()].every((n) => n === 5)) break;
  if (i > 600) fail(`timed out waiting for the outbox relay: ${JSON.stringify(Object.fromEntries(relayed))}`);
  await new Promise((res) => setTimeout(res, 100));
}
await servicesDb.end();

// ---- System 3: a settings change, from the API to the device and back -------------------------
say('== a settings change through the API: PATCH /api/v1/heatpump/settings/device-001');
const answering = spawn(process.execPath, ['bin/runner.mjs', 'simulate', '--devices', String(devices), '--rate', '20', '--duration', '120s', '--client-id', `demo-devices-${runId}`], { stdio: ['ignore', 'ignore', 'pipe'] });
children.push(answering);
// The devices must be connected (subscribed to their command topics) before the command goes out.
await new Promise<void>((resolve) => {
  // The simulator reports on stderr: progress each second, and each command it acts on.
  createInterface({ input: answering.stderr! }).on('line', (line) => {
    if (/published=\d+/.test(line)) resolve();
    if (/command/.test(line)) say(`   device: ${line.replace(/^simulate: /, '')}`);
  });
  answering.once('exit', () => resolve());
});
const api = `http://127.0.0.1:${process.env.SETTINGS_API_PORT ?? 8080}`;
const before3 = await fetch(`${api}/api/v1/heatpump/settings/device-001`).then((r) => r.json() as Promise<{ indoor_target_temp?: number }>);
const target = before3.indoor_target_temp === 22 ? 22.5 : 22;
const t0 = Date.now();
const patch = await fetch(`${api}/api/v1/heatpump/settings/device-001`, { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ indoor_target_temp: target }) });
const accepted = (await patch.json()) as { outbox_id?: number; outbox_status?: string };
say(`   ${patch.status} ${JSON.stringify(accepted)}`);
const path: string[] = [`${patch.status === 202 ? 'pending' : `HTTP ${patch.status}`} at +0 ms`];
let finalStatus = 'none';
if (patch.status === 202) {
  let last = 'pending';
  for (;;) {
    const row = (await fetch(`${api}/api/v1/heatpump/settings/outbox/${accepted.outbox_id}`).then((r) => r.json())) as { status: string; error_message?: string };
    if (row.status !== last) {
      last = row.status;
      path.push(`${row.status} at +${Date.now() - t0} ms${row.error_message ? ` (${row.error_message})` : ''}`);
    }
    if (['confirmed', 'failed', 'timed_out', 'superseded'].includes(row.status) || Date.now() - t0 > 75_000) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  finalStatus = last;
}
const ws = await new Promise<string>((resolve) => {
  // One live frame from the dashboard's WebSocket.
  const sock = new WebSocket(`ws://127.0.0.1:${process.env.REALTIME_PORT ?? 8090}/ws?topics=heatpump-realtime`);
  const timer = setTimeout(() => resolve('(no live frame within 5 s: the simulator has stopped)'), 5000);
  sock.on('message', (data) => {
    const f = JSON.parse(String(data));
    if (f.type !== 'message') return;
    clearTimeout(timer);
    sock.close();
    resolve(`${f.topic} ${f.device}: ${JSON.stringify(f.data).slice(0, 100)}...`);
  });
  sock.on('error', () => resolve('(the WebSocket did not answer)'));
});
answering.kill('SIGTERM');

const metrics = (await fetch(`http://${http}/metrics`).then((r) => r.text())).split('\n').filter((l) => /^runner_component_sent_total\{[^}]*kind="output"/.test(l) || l.startsWith('runner_dead_letter_total{'));

say('');
say('== report');
say(`published over MQTT: ${count} simulated readings (${devices} heat pumps with meters and room sensors) + 3 bad payloads`);
say('arrived in Kafka (new records per topic):');
for (const t of TOPICS) say(`  ${t.padEnd(28)} ${String(d[t]).padStart(6)}`);
say('a record of homelab-heatpump-telemetry (keyed by device, MQTT topic and receive time as headers):');
for (const s of sample) say(`  ${s}`);
say('dead letters, with the reason from their dlq_* headers:');
for (const x of dead) say(`  ${x}`);
say('rows of this run in PostgreSQL (database telemetry; one per reading, idempotent on device and time):');
for (const t of TABLES) say(`  ${t.padEnd(28)} ${String(rowDelta()[t]).padStart(6)}`);
say('newest heat-pump rows:');
for (const r of latest) say(`  ${JSON.stringify(r)}`);
say('heatpump_settings.settings (one row per device, the newest reported state):');
for (const r of settingsRows) say(`  ${JSON.stringify(r)}`);
say(`outbox events relayed to Kafka (per service schema, of 5 written):`);
for (const [t, n] of relayed) say(`  ${t.padEnd(32)} ${n}`);
say(`the command's path (outbox id ${accepted.outbox_id ?? '-'}, indoor_target_temp -> ${target}):`);
for (const p of path) say(`  ${p}`);
say(`a live frame of the dashboard's WebSocket: ${ws}`);
say('metrics (/metrics):');
for (const l of metrics) say(`  ${l}`);
say('');
say('inspect the topics yourself:');
say(`  kcat -b ${brokers[0]} -C -t homelab-heatpump-telemetry -o -5 -e -f '%k: %s\\n'          (locally)`);
say(`  rpk topic consume homelab-heatpump-telemetry --num 5 --format '%k: %v\\n'         (against Redpanda)`);
say('  rpk topic list; rpk topic describe heatpump-realtime; rpk group describe <group>');
say('');
say(`dashboard: http://127.0.0.1:${process.env.REALTIME_PORT ?? 8090}/   settings API: ${api}/api/v1/openapi.json   (run \`bash scripts/demo --keep\` to keep everything running until Ctrl-C)`);
if (process.argv.includes('--keep')) {
  say('running; Ctrl-C stops the runner (it drains and commits)');
  const keepSim = spawn(process.execPath, ['bin/runner.mjs', 'simulate', '--devices', String(devices), '--rate', '10', '--client-id', `demo-keep-${runId}`], { stdio: 'ignore' });
  children.push(keepSim);
  await new Promise(() => undefined);
}

stopping = true;
runner.kill('SIGTERM');
const code = await new Promise<number>((resolve) => runner.on('exit', (c) => resolve(c ?? 1)));
say(`runner stopped on SIGTERM with exit code ${code} (0 = drained, every MQTT message acknowledged)`);
await admin.disconnect();
await telemetryDb.end();
await settingsDb.end();
const ok = TOPICS.every((t) => d[t] === want[t]) && TABLES.every((t) => rowDelta()[t] === per) && [...relayed.values()].every((n) => n === 5) && finalStatus === 'confirmed' && code === 0;
if (!ok) say('demo: some counts differ from what was published (duplicates are possible after a crash, never losses)');
process.exit(code === 0 ? 0 : 1);
