/**
 * The demo: simulated heat pumps through the bridge into Kafka and on into PostgreSQL.
 *
 *   runner simulate (5 heat pumps with energy meters and room sensors, over MQTT, QoS 1)
 *     -> Mosquitto -> runner start mqtt-bridge mqtt-realtime telemetry-sink settings-sink
 *        (one process, four pipelines)
 *     -> Kafka: homelab-heatpump-telemetry, homelab-heatpump-settings, homelab-energy-realtime,
 *        homelab-temperature, heatpump-realtime, energy-realtime; bad payloads -> homelab-dead-letter
 *     -> PostgreSQL: telemetry.heatpump, telemetry.energy_consumption, telemetry.temperature,
 *        heatpump_settings.settings (after `runner migrate`)
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

const PIPELINES = ['mqtt-bridge', 'mqtt-realtime', 'telemetry-sink', 'settings-sink'];
say(`== runner start ${PIPELINES.join(' ')}   (four pipelines in one process)`);
const runner = spawn(process.execPath, ['bin/runner.mjs', 'start', ...PIPELINES], { env: { ...process.env, RUNNER_HTTP_PORT: '0' }, stdio: ['ignore', 'ignore', 'pipe'] });
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
say('metrics (/metrics):');
for (const l of metrics) say(`  ${l}`);
say('');
say('inspect the topics yourself:');
say(`  kcat -b ${brokers[0]} -C -t homelab-heatpump-telemetry -o -5 -e -f '%k: %s\\n'          (locally)`);
say(`  rpk topic consume homelab-heatpump-telemetry --num 5 --format '%k: %v\\n'         (against Redpanda)`);
say('  rpk topic list; rpk topic describe heatpump-realtime; rpk group describe <group>');

stopping = true;
runner.kill('SIGTERM');
const code = await new Promise<number>((resolve) => runner.on('exit', (c) => resolve(c ?? 1)));
say(`runner stopped on SIGTERM with exit code ${code} (0 = drained, every MQTT message acknowledged)`);
await admin.disconnect();
await telemetryDb.end();
await settingsDb.end();
const ok = TOPICS.every((t) => d[t] === want[t]) && TABLES.every((t) => rowDelta()[t] === per) && code === 0;
if (!ok) say('demo: some counts differ from what was published (duplicates are possible after a crash, never losses)');
process.exit(code === 0 ? 0 : 1);
