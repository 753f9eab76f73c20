/**
 * Benchmark of the MQTT -> Kafka bridge (issue 3). Not a test: run it by hand, under the bench lock.
 *
 *   eval "$(bash scripts/stack env)"
 *   flock /tmp/runner-bench.lock node --import tsx bench/mqtt-bridge/run.ts --duration 20s --repeat 3
 *
 * A phase is `<bridge>[@<rate>]`:
 *
 *   runner    pipelines/mqtt-bridge.yaml (map, validate, map, filter -> kafka, acks=all), isolated
 *             from everything else on the shared stack as lib.ts `benchPipeline` says
 *   minimal   the same mqtt input and kafka output, no processors
 *   bare      bench/mqtt-bridge/bare.ts: mqtt.js + the same Kafka client passing messages straight through
 *   /<client> the Kafka client of the bridge: platformatic (@platformatic/kafka, the default, as the
 *             project pipelines write) or kafkajs
 *   @<rate>   the simulator publishes at this fixed rate (msg/s); without it, as fast as the broker
 *             acknowledges, with at most --sim-in-flight publishes awaiting their PUBACK
 *
 * `latency`, `latency-minimal` and `latency-bare` stand for `runner@R`, `minimal@R`, `bare@R`, R = --rate.
 *
 * Each phase gets its own MQTT topic level, client ids and Kafka topics (created with
 * `message.timestamp.type=LogAppendTime`, deleted afterwards) and runs one bridge as a child process
 * fed by `runner simulate` (QoS 1, 200-byte payloads with a millisecond `timestamp` and a `seq`).
 * Afterwards a consumer reads the topics back: a record's LogAppendTime is when Kafka appended it
 * (just before it acknowledges acks=all with one broker). Throughput = records appended within
 * [first publish + --warmup, first publish + --duration] per second; latency = LogAppendTime - the
 * payload's `timestamp` (same machine, same clock). Every 250 ms /proc gives the bridge's RSS and
 * the CPU of the bridge, the simulator, Mosquitto, Kafka and the rest of the machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import { parseDocument } from 'yaml';
import {
  BRIDGE_FILTERS,
  BROKERS,
  MQTT_URL,
  ROOT,
  Sampler,
  benchPipeline,
  benchTopics,
  countRecords,
  createTopics,
  deleteTopics,
  kafkaClient,
  latencyStats,
  loadavg,
  median,
  memory,
  minimalTopics,
  readBack,
  readPid,
  type BenchTopics,
} from './lib.ts';

const { values: args } = parseArgs({
  options: {
    rate: { type: 'string', default: '2000' },
    duration: { type: 'string', default: '20s' },
    warmup: { type: 'string', default: '5s' },
    phases: { type: 'string', default: 'runner,minimal,bare,latency,latency-minimal,latency-bare' },
    repeat: { type: 'string', default: '1' },
    devices: { type: 'string', default: '100' },
    'payload-bytes': { type: 'string', default: '200' },
    'sim-in-flight': { type: 'string', default: '256' },
    'drain-wait': { type: 'string', default: '60s' },
    'cpu-prof': { type: 'string' },
    'runner-node-args': { type: 'string', default: '--max-old-space-size=512' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (args.help) {
  process.stdout.write(`Usage: node --import tsx bench/mqtt-bridge/run.ts [options]

  --phases <list>        <bridge>[/<client>][@<rate>], bridge runner|minimal|bare, client platformatic
                         (default, as in pipelines/mqtt-bridge.yaml) or kafkajs (the kafka output's
                         client; bare uses the same library), e.g. runner/kafkajs@2000; latency, latency-minimal,
                         latency-bare = runner@R, minimal@R, bare@R with R = --rate
                         (default runner,minimal,bare,latency,latency-minimal,latency-bare)
  --rate <msg/s>         rate of the latency phases (default 2000)
  --duration <time>      publishing time of each phase: 30s, 2m (default 20s)
  --warmup <time>        start of each phase left out of the throughput window (default 5s)
  --repeat <n>           run the phase list n times; medians at the end (default 1)
  --devices <n>          simulated installations (default 100)
  --payload-bytes <n>    payload size (default 200)
  --sim-in-flight <n>    publishes awaiting their PUBACK at most (default 256)
  --drain-wait <time>    after publishing, wait at most this long for Kafka to catch up (default 60s)
  --cpu-prof <dir>       run the bridges with node --cpu-prof, one folder per phase under <dir>
                         (summarise with bench/mqtt-bridge/cpuprofile-top.ts)
  --runner-node-args=<s> node flags for runner bridges (default --max-old-space-size=512, the heap limit the
                         runner ships with: Dockerfile, bin/runner.mjs; --runner-node-args= for V8's default)
  --out <dir>            results and logs (default a new folder under the system's temp folder)
`);
  process.exit(0);
}

const seconds = (t: string): number => {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(t.trim());
  if (!m) throw new Error(`not a duration: ${t}`);
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60 }[(m[2] ?? 's') as 'ms' | 's' | 'm'];
};

const RATE = Number(args.rate);
const DURATION_S = seconds(args.duration!);
const WARMUP_S = seconds(args.warmup!);
const DRAIN_WAIT_S = seconds(args['drain-wait']!);
const OUT = args.out ?? mkdtempSync(join(tmpdir(), 'bench-mqtt-bridge-'));
mkdirSync(OUT, { recursive: true });
const CPU_PROF = args['cpu-prof'];
const KAFKA_PID_FILE = join(ROOT, '.stack/kafka/kafka.pid');
const MQTT_PID_FILE = join(ROOT, '.stack/mosquitto/mosquitto.pid');

type BridgeKind = 'runner' | 'minimal' | 'bare';
interface Phase {
  name: string;
  bridge: BridgeKind;
  /** The Kafka client library of the bridge. */
  client: 'kafkajs' | 'platformatic';
  /** msg/s; 0 = as fast as the broker acknowledges. */
  rate: number;
}
const ALIASES: Record<string, string> = { latency: `runner@${RATE}`, 'latency-minimal': `minimal@${RATE}`, 'latency-bare': `bare@${RATE}` };
const PHASES: Phase[] = args.phases!.split(',').filter(Boolean).map((text) => {
  const name = ALIASES[text.trim()] ?? text.trim();
  const m = /^(runner|minimal|bare)(?:\/(kafkajs|platformatic))?(?:@(\d+))?$/.exec(name);
  if (!m) throw new Error(`phase ${text}: expected runner|minimal|bare[/kafkajs|/platformatic][@<rate>], latency, latency-minimal or latency-bare`);
  return { name, bridge: m[1] as BridgeKind, client: (m[2] ?? 'platformatic') as Phase['client'], rate: Number(m[3] ?? 0) };
});

const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

const exited = (child: ChildProcess): Promise<number | null> =>
  child.exitCode !== null || child.signalCode !== null ? Promise.resolve(child.exitCode) : new Promise((resolve) => child.once('exit', (code) => resolve(code)));

async function stop(child: ChildProcess, what: string): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const t = setTimeout(() => {
    log(`${what} did not stop within 30 s; SIGKILL`);
    child.kill('SIGKILL');
  }, 30_000);
  await exited(child);
  clearTimeout(t);
}

const profileArgs = (name: string) => (CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${join(CPU_PROF, name)}`] : []);

/** A bridge child process; resolves `ready` once it takes messages. */
function startBridge(phase: Phase, id: string, dir: string, topics: BenchTopics, port: number): { child: ChildProcess; ready: Promise<void> } {
  const logFile = join(dir, `${phase.bridge}-${phase.client}.log`);
  if (phase.bridge === 'bare') {
    const config = {
      mqttUrl: MQTT_URL,
      clientId: `bench-mb-${id}-bare`,
      filters: BRIDGE_FILTERS.map((f) => `bench-mb-${id}/${f}`),
      prefixLevels: 1,
      topics: topics.byKindStream,
      brokers: BROKERS,
      batch: { count: 100, bytes: 524_288, periodMs: 10 }, // the kafka output's defaults
      window: 1000, // the mqtt input's max_in_flight default
      client: phase.client,
    };
    const child = spawn(process.execPath, [...profileArgs(`bare-${phase.client}-${id}`), '--import', 'tsx', join(ROOT, 'bench/mqtt-bridge/bare.ts'), JSON.stringify(config)], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stderr!.pipe(createWriteStream(logFile));
    const ready = new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      child.once('exit', (code) => reject(new Error(`bare exited with ${code}; see ${logFile}`)));
    });
    return { child, ready };
  }
  const file = join(dir, `${phase.bridge}.yaml`);
  const pipeline = parseDocument(benchPipeline(phase.bridge, id));
  for (const slot of ['output', 'dead_letter']) if (pipeline.hasIn([slot, 'kafka'])) pipeline.setIn([slot, 'kafka', 'client'], phase.client);
  writeFileSync(file, pipeline.toString());
  const extra = args['runner-node-args']!.split(/\s+/).filter(Boolean);
  const child = spawn(process.execPath, [...profileArgs(`${phase.bridge}-${phase.client}-${id}`), ...extra, join(ROOT, 'bin/runner.mjs'), 'start', file], {
    cwd: ROOT,
    env: { ...process.env, RUNNER_HTTP_PORT: String(port), RUNNER_HTTP_HOST: '127.0.0.1', MQTT_URL, KAFKA_BROKERS: BROKERS.join(',') },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr!.pipe(createWriteStream(logFile));
  const ready = (async () => {
    // Polls the runner's readiness endpoint: there is no event to wait for from outside the process.
    for (const until = Date.now() + 60_000; Date.now() < until; await sleep(200)) {
      if (child.exitCode !== null) throw new Error(`the runner exited with ${child.exitCode}; see ${logFile}`);
      const ok = await fetch(`http://127.0.0.1:${port}/health/ready`).then((r) => r.status === 200, () => false);
      if (ok) return;
    }
    throw new Error(`the runner was not ready within 60 s; see ${logFile}`);
  })();
  return { child, ready };
}

interface SimResult {
  published: number;
  acked: number;
  failed: number;
  elapsed_s: number;
}

function simulate(id: string, rate: number, dir: string): { child: ChildProcess; result: Promise<SimResult> } {
  const simArgs = [
    join(ROOT, 'bin/runner.mjs'), 'simulate',
    '--devices', args.devices!,
    '--rate', String(rate),
    '--duration', `${DURATION_S}s`,
    '--qos', '1',
    '--detail', 'compact',
    '--payload-bytes', args['payload-bytes']!,
    '--topic-prefix', `bench-mb-${id}/`,
    '--seq',
    '--timestamp-ms',
    '--max-in-flight', args['sim-in-flight']!,
    '--client-id', `bench-mb-${id}-sim`,
    '--url', MQTT_URL,
    '--drain-timeout', '60000',
    '--json',
  ];
  const child = spawn(process.execPath, simArgs, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stderr!.pipe(createWriteStream(join(dir, 'simulator.log')));
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const result = exited(child).then((code) => {
    if (code !== 0) throw new Error(`the simulator exited with ${code}; see ${join(dir, 'simulator.log')}`);
    return JSON.parse(out.slice(out.indexOf('{'))) as SimResult;
  });
  return { child, result };
}

/** Make the broker forget a bench session: connect with its client id and a clean session. */
async function dropSession(clientId: string): Promise<void> {
  const c = mqtt.connect(MQTT_URL, { clientId, clean: true, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5_000 });
  await new Promise<void>((resolve) => {
    c.once('connect', () => resolve());
    c.once('error', () => resolve());
    c.once('close', () => resolve());
  });
  await c.endAsync(true).catch(() => undefined);
}

interface Result {
  phase: string;
  repeat: number;
  id: string;
  /** Null when Kafka or Mosquitto restarted during the phase (other people's tests share the stack). */
  invalid: string | null;
  simulator: SimResult;
  /** Records appended to Kafka within the window, per second. */
  throughput: number;
  perSecond: { median: number; min: number };
  /** Acknowledged publishes not yet in Kafka when publishing ended; large = the bridge fell behind. */
  backlogAtEnd: number;
  records: number;
  duplicates: number;
  missing: number;
  deadLettered: number;
  latency: ReturnType<typeof latencyStats>;
  /** Highest RSS of the bridge (kernel high-water mark, MB). */
  peakRssMb: number | null;
  /** The runner's own account (/metrics, every second) at its highest RSS sample: V8 heap and external memory, MB. */
  memory: { rssMb: number; heapTotalMb: number; heapUsedMb: number; externalMb: number } | null;
  /** Average CPU of each process in the window, % of one core; others = the rest of the machine. */
  cpu: ReturnType<Sampler['cpuBetween']>;
  bridgeCpuUsPerMsg: number | null;
  load: { before: number[]; after: number[] };
}

async function runPhase(phase: Phase, repeat: number): Promise<Result> {
  const id = `${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
  const dir = join(OUT, `${repeat}-${phase.name.replace('@', '_').replace('/', '-')}-${id}`);
  mkdirSync(dir, { recursive: true });
  const topics = phase.bridge === 'minimal' ? minimalTopics(id, benchTopics(id)) : benchTopics(id);
  const outputTopics = Object.values(topics.byKindStream);
  const kafka = kafkaClient(`bench-mb-${id}`);
  const admin = kafka.admin();
  await admin.connect();
  await createTopics(admin, topics);
  const pids = () => `kafka ${readPid(KAFKA_PID_FILE)}, mosquitto ${readPid(MQTT_PID_FILE)}`;
  const pidsBefore = pids();
  const loadBefore = loadavg();
  log(`[${repeat}] ${phase.name}: id ${id}, load ${loadBefore.join(' ')}, ${phase.rate ? `${phase.rate} msg/s` : 'as fast as acknowledged'} for ${DURATION_S} s`);

  const port = await freePort();
  const bridge = startBridge(phase, id, dir, topics, port);
  // What the runner's RSS is made of (its /metrics), sampled every second; kept at the RSS peak.
  let memAtPeak: Result['memory'] = null;
  const memTimer =
    phase.bridge === 'bare'
      ? null
      : setInterval(() => {
          fetch(`http://127.0.0.1:${port}/metrics`)
            .then((r) => r.text())
            .then((text) => {
              const v = (name: string) => Number(new RegExp(`^runner_${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN) / 2 ** 20;
              const m = { rssMb: v('process_resident_memory_bytes'), heapTotalMb: v('nodejs_heap_size_total_bytes'), heapUsedMb: v('nodejs_heap_size_used_bytes'), externalMb: v('nodejs_external_memory_bytes') };
              if (Number.isFinite(m.rssMb) && (!memAtPeak || m.rssMb > memAtPeak.rssMb)) memAtPeak = m;
            })
            .catch(() => undefined);
        }, 1_000);
  let sim: ReturnType<typeof simulate> | null = null;
  const sampler = new Sampler(bridge.child.pid!, () => ({
    bridge: bridge.child.pid ?? null,
    simulator: sim?.child.pid ?? null,
    mosquitto: readPid(MQTT_PID_FILE),
    kafka: readPid(KAFKA_PID_FILE),
  }));
  let simResult: SimResult;
  let hwmKb: number | null = null;
  try {
    await bridge.ready;
    sampler.start();
    sim = simulate(id, phase.rate, dir);
    simResult = await sim.result;
    // Wait until everything acknowledged to the simulator is in Kafka, at most --drain-wait (Kafka's
    // offsets are polled: nothing tells from outside when the bridge has written the last message).
    for (const until = Date.now() + DRAIN_WAIT_S * 1000; ; await sleep(250)) {
      const n = await countRecords(admin, [...outputTopics, topics.deadLetter]);
      if (n >= simResult.acked) break;
      if (Date.now() > until) {
        log(`${phase.name}: ${n} of ${simResult.acked} records in Kafka ${DRAIN_WAIT_S} s after publishing ended; stopping the bridge`);
        break;
      }
    }
    hwmKb = memory(bridge.child.pid!)?.hwmKb ?? null;
  } finally {
    if (memTimer) clearInterval(memTimer);
    sampler.stop();
    await stop(bridge.child, phase.bridge);
    if (sim) await stop(sim.child, 'simulator');
    await dropSession(phase.bridge === 'bare' ? `bench-mb-${id}-bare` : `bench-mb-${id}-${phase.bridge}`);
  }
  const loadAfter = loadavg();
  const pidsAfter = pids();

  const { records } = await readBack(kafka, admin, outputTopics, `bench-mb-${id}-count`);
  const deadLettered = await countRecords(admin, [topics.deadLetter]);
  await deleteTopics(admin, topics);
  await admin.disconnect();
  if (!records.length) throw new Error(`${phase.name}: no records arrived in Kafka; see ${dir}`);

  // The simulator publishes from its first message on for --duration.
  const pubStart = records.reduce((a, r) => Math.min(a, r.publishMs), Infinity);
  const pubEnd = pubStart + DURATION_S * 1000;
  const winStart = pubStart + WARMUP_S * 1000;
  const secs = (pubEnd - winStart) / 1000;
  const perSecond = new Array<number>(Math.floor(secs)).fill(0);
  let inWindow = 0;
  let byEnd = 0;
  for (const r of records) {
    if (r.appendMs <= pubEnd) byEnd++;
    if (r.appendMs < winStart || r.appendMs > pubEnd) continue;
    inWindow++;
    const k = Math.floor((r.appendMs - winStart) / 1000);
    if (k < perSecond.length) perSecond[k]!++;
  }
  const distinct = new Set(records.map((r) => r.id)).size;
  const res: Result = {
    phase: phase.name,
    repeat,
    id,
    invalid: pidsBefore === pidsAfter ? null : `the stack restarted during the phase (${pidsBefore} -> ${pidsAfter})`,
    simulator: simResult!,
    throughput: inWindow / secs,
    perSecond: { median: median(perSecond), min: Math.min(...perSecond) },
    backlogAtEnd: simResult!.acked - byEnd,
    records: records.length,
    duplicates: records.length - distinct,
    missing: simResult!.acked - distinct,
    deadLettered,
    latency: latencyStats(records.filter((r) => r.publishMs >= winStart && r.publishMs <= pubEnd).map((r) => r.appendMs - r.publishMs)),
    peakRssMb: kbToMb(Math.max(hwmKb ?? 0, sampler.peakRssKb() ?? 0) || null),
    memory: memAtPeak,
    cpu: sampler.cpuBetween(winStart, pubEnd),
    bridgeCpuUsPerMsg: null,
    load: { before: loadBefore, after: loadAfter },
  };
  const bridgeCpu = res.cpu?.processes.bridge;
  if (bridgeCpu != null && res.throughput > 0) res.bridgeCpuUsPerMsg = ((bridgeCpu / 100) * 1e6) / res.throughput;
  writeFileSync(join(dir, 'result.json'), JSON.stringify(res, null, 2));
  log(describe(res));
  return res;
}

const kbToMb = (kb: number | null) => (kb == null ? null : Math.round(kb / 102.4) / 10);
const f0 = (n: number | undefined | null) => (n == null || !Number.isFinite(n) ? '-' : n.toFixed(0));

function describe(r: Result): string {
  const l = r.latency;
  const cpu = r.cpu
    ? `${Object.entries(r.cpu.processes).map(([k, v]) => `${k} ${f0(v)}%`).join(', ')}, others ${f0(r.cpu.othersPct)}% (machine ${f0(r.cpu.machineBusyPct)}% of ${r.cpu.machineCores * 100}%)`
    : 'no cpu samples';
  return (
    `${r.phase}${r.invalid ? ` INVALID: ${r.invalid}` : ''}: ${f0(r.throughput)} msg/s into Kafka (per second median ${f0(r.perSecond.median)}, min ${f0(r.perSecond.min)}), ` +
    `published ${f0(r.simulator.acked / DURATION_S)} msg/s, backlog at end ${r.backlogAtEnd}; latency p50 ${f0(l.p50)} p99 ${f0(l.p99)} max ${f0(l.max)} ms; ` +
    `${r.records} records, ${r.duplicates} duplicates, ${r.missing} missing, ${r.deadLettered} dead-lettered; peak RSS ${r.peakRssMb} MB` +
    (r.memory ? ` (at ${f0(r.memory.rssMb)} MB: V8 heap ${f0(r.memory.heapTotalMb)} MB, ${f0(r.memory.heapUsedMb)} used; external ${f0(r.memory.externalMb)} MB)` : '') +
    '; ' +
    `bridge ${f0(r.bridgeCpuUsPerMsg)} µs CPU/msg; cpu ${cpu}`
  );
}

log(`machine: ${cpus().length} cores, ${cpus()[0]?.model}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB; out ${OUT}`);
const results: Result[] = [];
for (let i = 1; i <= Number(args.repeat); i++) {
  for (const phase of PHASES) {
    try {
      results.push(await runPhase(phase, i));
    } catch (err) {
      log(`[${i}] ${phase.name} failed: ${(err as Error).stack ?? err}`);
    }
  }
}
writeFileSync(join(OUT, 'results.json'), JSON.stringify(results, null, 2));

// Medians over the valid runs of each phase.
const lines = [
  '',
  '| phase | runs | msg/s into Kafka | range | published msg/s | latency p50 / p99 / max ms | peak RSS MB | bridge CPU µs/msg | others CPU % |',
  '|---|---|---|---|---|---|---|---|---|',
];
const valid = (name: string) => results.filter((r) => r.phase === name && !r.invalid);
for (const { name } of PHASES) {
  const rs = valid(name);
  const tp = rs.map((r) => r.throughput);
  const m = (f: (r: Result) => number | null | undefined) => f0(median(rs.map((r) => f(r) ?? NaN)));
  lines.push(
    `| ${name} | ${rs.length} | ${f0(median(tp))} | ${f0(Math.min(...tp))}-${f0(Math.max(...tp))} | ${m((r) => r.simulator.acked / DURATION_S)} | ` +
      `${m((r) => r.latency.p50)} / ${m((r) => r.latency.p99)} / ${m((r) => r.latency.max)} | ${m((r) => r.peakRssMb)} | ${m((r) => r.bridgeCpuUsPerMsg)} | ${m((r) => r.cpu?.othersPct)} |`,
  );
}
for (const client of ['kafkajs', 'platformatic']) {
  const suffix = client === 'platformatic' ? '' : `/${client}`;
  const bare = median(valid(`bare${suffix}`).map((r) => r.throughput));
  for (const name of ['runner', 'minimal']) {
    const tp = median(valid(`${name}${suffix}`).map((r) => r.throughput));
    if (Number.isFinite(tp) && Number.isFinite(bare)) lines.push(`${name}${suffix} / bare${suffix} = ${(tp / bare).toFixed(2)}`);
  }
}
lines.push('', `results: ${join(OUT, 'results.json')}`);
process.stdout.write(`${lines.join('\n')}\n`);
process.exit(0);
