/**
 * The demo: simulated heat pumps -> validate -> map -> Kafka (bad readings to the dead-letter
 * topic), then both topics read back by a second runner process running two pipelines, and a
 * short report. Run it with `bash scripts/demo` (which starts the local stack first).
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';

const runner = (args: string[], env: Record<string, string> = {}) => spawn(process.execPath, ['bin/runner.mjs', ...args], { env: { ...process.env, RUNNER_HTTP_PORT: '0', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
const runId = `demo-${randomUUID().slice(0, 8)}`;
const count = Number(process.env.DEMO_COUNT ?? 60);
const expectedDead = Math.floor((count + 1) / 20);
const env = { DEMO_RUN_ID: runId, DEMO_COUNT: String(count) };
const say = (s: string) => process.stdout.write(`${s}\n`);

function must(cmd: string[], what: string) {
  const r = spawnSync(process.execPath, ['bin/runner.mjs', ...cmd], { stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.status !== 0) {
    say(`demo: ${what} failed (exit ${r.status})`);
    process.exit(1);
  }
}

say(`== demo run ${runId}: ${count} simulated heat-pump readings, ${expectedDead} of them broken`);
say('== runner lint');
must(['lint'], 'lint');
say('== runner topics apply');
must(['topics', 'apply'], 'topics apply');

say('== runner start demo-heatpump-simulator (stops by itself when all readings are in Kafka)');
const producer = runner(['start', 'demo-heatpump-simulator'], env);
let producerLog = '';
producer.stderr.on('data', (d) => (producerLog += d));
producer.stdout.on('data', () => undefined);
const producerExit = await new Promise<number>((resolve) => producer.on('exit', (code) => resolve(code ?? 1)));
if (producerExit !== 0) {
  say(`demo: the simulator pipeline exited with ${producerExit}; its log:\n${producerLog}`);
  process.exit(1);
}

say('== runner start demo-readback demo-dead-letters (two pipelines, one process)');
const reader = runner(['start', 'demo-readback', 'demo-dead-letters'], env);
let httpAddress = '';
createInterface({ input: reader.stderr }).on('line', (line) => {
  try {
    const rec = JSON.parse(line);
    if (rec.msg === 'runner started') httpAddress = String(rec.http).replace('0.0.0.0', '127.0.0.1');
    if (rec.level === 'error') say(`   runner error: ${rec.msg}`);
  } catch {
    say(`   ${line}`);
  }
});
const perDevice = new Map<string, { n: number; partitions: Set<number> }>();
const dead: { seq: number; reason: string }[] = [];
let telemetry = 0;
let health = '';
let metricsLines: string[] = [];
const done = new Promise<void>((resolve) => {
  createInterface({ input: reader.stdout }).on('line', async (line) => {
    const m = JSON.parse(line);
    if (m.meta.kafka_topic === 'homelab-dead-letter') dead.push({ seq: m.value.seq, reason: m.headers.dlq_error });
    else {
      telemetry++;
      const d = perDevice.get(m.key) ?? { n: 0, partitions: new Set<number>() };
      d.n++;
      d.partitions.add(m.meta.kafka_partition);
      perDevice.set(m.key, d);
    }
    if (telemetry === count - expectedDead && dead.length === expectedDead && !health) {
      health = 'pending';
      health = await fetch(`http://${httpAddress}/health/ready`).then(async (r) => `${r.status} ${(await r.json()).status}`);
      metricsLines = (await fetch(`http://${httpAddress}/metrics`).then((r) => r.text())).split('\n').filter((l) => l.startsWith('runner_component_sent_total') || l.startsWith('runner_component_discarded_total'));
      resolve();
    }
  });
});
const timeout = setTimeout(() => {
  say(`demo: timed out: read ${telemetry} of ${count - expectedDead} readings and ${dead.length} of ${expectedDead} dead letters`);
  reader.kill('SIGTERM');
  process.exit(1);
}, 60_000);
await done;
clearTimeout(timeout);
reader.kill('SIGTERM');
const readerExit = await new Promise<number>((resolve) => reader.on('exit', (code) => resolve(code ?? 1)));

say('');
say('== report');
say(`readings in homelab-heatpump-telemetry: ${telemetry} of ${count - expectedDead} valid ones`);
for (const [device, d] of [...perDevice].sort()) say(`  ${device}: ${d.n} readings, partition ${[...d.partitions].join(',')} (keyed by device)`);
say(`dead letters in homelab-dead-letter: ${dead.length} of ${expectedDead}`);
for (const d of dead) say(`  seq ${d.seq}: ${d.reason}`);
say(`readiness of the reader (/health/ready): ${health}`);
say('metrics of the reader (/metrics):');
for (const l of metricsLines) say(`  ${l}`);
say(`reader stopped on SIGTERM with exit code ${readerExit} (0 = drained and committed)`);
say('inspect the topics yourself: kcat -b 127.0.0.1:9092 -C -t homelab-heatpump-telemetry -f "%k: %s\\n" -e   (or rpk topic consume against Redpanda)');
process.exit(telemetry === count - expectedDead && dead.length === expectedDead && readerExit === 0 ? 0 : 1);
