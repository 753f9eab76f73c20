/**
 * WebSocket fan-out benchmark (issue 7). Not a test: run it by hand, under the bench lock.
 *
 *   eval "$(bash scripts/stack env)"
 *   flock /tmp/runner-bench.lock node --import tsx bench/websocket-fanout/run.ts --clients 1000 --rate 200 --duration 40s
 *
 * What it measures: pipelines/realtime-fanout.yaml with N WebSocket clients connected and R heat-pump
 * messages a second produced to Kafka: latency from Kafka to each client (client receive time - the
 * Kafka record timestamp, same machine clock) p50 / p99 / max over all frames of all clients,
 * frames received against expected (messages x clients), the runner's peak RSS and CPU, and the
 * output's slow-client metrics (runner_websocket_slow_disconnects_total,
 * runner_websocket_messages_dropped_total, refused by reason) scraped from its /metrics.
 *
 * Setup per phase: a copy of pipelines/realtime-fanout.yaml with topics of its own
 * (bench-wsfan-<id>-heatpump-realtime, -energy-realtime, -dead-letter) and a consumer group of its
 * own, started as `node bin/runner.mjs start <copy>` with REALTIME_PORT=0 (the port is read from the
 * `websocket server listening` log line) and RUNNER_HTTP_PORT on a free port. The clients run in
 * --client-procs child processes (this file with --worker; default 2: on a 2-core machine 4 or 8
 * processes made the clients' own scheduling part of the latency), so that receiving does not share
 * one event loop; they connect before anything is produced and subscribe to the heat-pump topic. The
 * producer (kafkajs, in this process) sends R messages a second in ticks of 10 ms, each with
 * `bench_ts` (ms) in the payload and the same value as the record timestamp (CreateTime); the
 * clients read `bench_ts` from the frame (the frame carries the value, not the Kafka timestamp).
 *
 * Phases:
 *   healthy   N clients, all reading.
 *   slow      N-S reading clients and S (--slow-clients, default 10) slow ones, connected from this
 *             process: half never read again (socket paused), half read at a trickle
 *             (--trickle-bytes a second, default 2048, in 10 reads a second; the stream is ~94 KB/s
 *             at 200 msg/s). They should be disconnected as slow (close 1013; the runner's log says
 *             which rule and when) without the others' latency moving.
 *
 *   recent    (not run by default) no clients; --recent-messages (default 200,000) heat-pump messages
 *             produced as fast as Kafka takes them, then GET /api/v1/heatpump/realtime/last-hour
 *             once: the runner's RSS with its recent window full (recent.max_bytes) and while it
 *             answers, messages kept and evicted.
 *
 * RUNNER_NODE_ARGS adds node flags to the runner, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`;
 * CLIENT_NODE_ARGS to the client processes.
 *
 * Output: a Markdown table on stdout, a log on stderr, results.json and the runner's log under the
 * OS temp folder (or --out).
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
import WebSocket from 'ws';
import { parseDocument } from 'yaml';
import { parseDuration } from '../../core/duration.ts';
import { createTopicsReady } from '../../tests/helpers/kafka.ts';
import { cpuSeconds as procCpuSeconds, machineInfo, machineTicks, rssMb } from '../lib/proc.ts';

const SELF = fileURLToPath(import.meta.url);
const ROOT = resolve(dirname(SELF), '..', '..');
const ALL_PHASES = ['healthy', 'slow', 'recent'];
const HIST_MS = 120_000;

const { values: args } = parseArgs({
  options: {
    clients: { type: 'string', default: '1000' },
    rate: { type: 'string', default: '200' },
    duration: { type: 'string', default: '40s' },
    devices: { type: 'string', default: '50' },
    'client-procs': { type: 'string', default: '2' },
    phases: { type: 'string', default: 'healthy,slow' },
    'slow-clients': { type: 'string', default: '10' },
    'trickle-bytes': { type: 'string', default: '2048' },
    'recent-messages': { type: 'string', default: '200000' },
    out: { type: 'string' },
    // worker mode (internal)
    worker: { type: 'boolean', default: false },
    url: { type: 'string' },
    count: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(readFileSync(SELF, 'utf8').split('*/')[0]);
  process.exit(0);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (line: string) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${line}`);

// ---------------------------------------------------------------------------------------------
// Worker: `count` clients on `url`; a latency histogram (1 ms buckets) and frame counts.
// ---------------------------------------------------------------------------------------------
interface WorkerReport {
  connected: number;
  frames: number;
  perClientMin: number;
  perClientMax: number;
  hist: [number, number][];
  over: number;
  max: number;
  closes: Record<string, number>;
  errors: number;
}

async function worker() {
  const url = args.url!;
  const count = Number(args.count);
  const hist = new Float64Array(HIST_MS + 1);
  const perClient = new Uint32Array(count);
  let over = 0;
  let max = 0;
  let errors = 0;
  const closes: Record<string, number> = {};
  const sockets: WebSocket[] = [];
  const KEY = Buffer.from('"bench_ts":');
  const onFrame = (i: number, data: Buffer) => {
    const now = Date.now();
    // bench_ts is the last field of the value: search from the end.
    const at = data.lastIndexOf(KEY);
    if (at < 0) return;
    let ts = 0;
    for (let p = at + KEY.length; p < data.length; p++) {
      const c = data[p]!;
      if (c < 48 || c > 57) break;
      ts = ts * 10 + (c - 48);
    }
    perClient[i]!++;
    const lat = Math.max(0, now - ts);
    if (lat > max) max = lat;
    if (lat > HIST_MS) over++;
    else hist[lat]!++;
  };
  const connect = (i: number) =>
    new Promise<void>((res) => {
      const ws = new WebSocket(url, { perMessageDeflate: false });
      sockets[i] = ws;
      ws.on('open', () => res());
      ws.on('message', (data, isBinary) => {
        if (!isBinary) onFrame(i, data as Buffer);
      });
      ws.on('error', () => {
        errors++;
        res();
      });
      ws.on('close', (code) => {
        closes[code] = (closes[code] ?? 0) + 1;
        res();
      });
    });
  const CONCURRENT = 25;
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENT }, async () => {
      while (next < count) await connect(next++);
    }),
  );
  const connected = sockets.filter((s) => s.readyState === WebSocket.OPEN).length;
  process.send!({ type: 'connected', connected });
  process.on('message', (m: { type: string }) => {
    if (m.type !== 'report') return;
    let frames = 0;
    let lo = Infinity;
    let hi = 0;
    for (const n of perClient) {
      frames += n;
      lo = Math.min(lo, n);
      hi = Math.max(hi, n);
    }
    const h: [number, number][] = [];
    hist.forEach((n, ms) => n && h.push([ms, n]));
    const report: WorkerReport = { connected, frames, perClientMin: lo, perClientMax: hi, hist: h, over, max, closes, errors };
    for (const s of sockets) s.terminate();
    process.send!({ type: 'report', report }, () => process.exit(0));
  });
}

// ---------------------------------------------------------------------------------------------
// /proc sampling, metrics
// ---------------------------------------------------------------------------------------------
// rssMb and the CPU readings come from bench/lib/proc.ts (NaN for a process that is gone).
const cpuSeconds = (pid: number): number => procCpuSeconds(pid) ?? NaN;
const machineBusy = machineTicks;

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

/** runner_websocket_* metrics, summed over labels; refused by reason as `refused:<reason>`. */
const scrapeStats = { ok: 0, failed: 0, slowestMs: 0 };
async function scrape(port: number): Promise<Record<string, number> | null> {
  const t0 = Date.now();
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(3000) })).text();
    scrapeStats.ok++;
    scrapeStats.slowestMs = Math.max(scrapeStats.slowestMs, Date.now() - t0);
    const out: Record<string, number> = {};
    for (const line of text.split('\n')) {
      if (!line.startsWith('runner_websocket_')) continue;
      const name = line.slice('runner_websocket_'.length, line.search(/[{ ]/));
      const reason = /(?:reason|le)="([^"]*)"/.exec(line)?.[1];
      const key = reason ? `${name}:${reason}` : name;
      out[key] = (out[key] ?? 0) + Number(line.split(' ').pop());
    }
    return out;
  } catch {
    scrapeStats.failed++;
    scrapeStats.slowestMs = Math.max(scrapeStats.slowestMs, Date.now() - t0);
    return null;
  }
}

/** The runner's heap (V8 heap used / total) and external memory (Buffers) in MB, from its default metrics. */
async function scrapeMemory(port: number): Promise<{ heap_used_mb: number; heap_total_mb: number; external_mb: number } | null> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
    const get = (name: string) => Number(new RegExp(`^runner_${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN) / 1e6;
    return { heap_used_mb: Math.round(get('nodejs_heap_size_used_bytes')), heap_total_mb: Math.round(get('nodejs_heap_size_total_bytes')), external_mb: Math.round(get('nodejs_external_memory_bytes')) };
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

async function stopChild(child: ChildProcess, ms = 20_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), ms);
  await exited;
  clearTimeout(t);
}

/** From runner_websocket_broadcast_age_seconds: the bucket (upper bound, ms) holding quantile q of the phase. */
function ageQuantile(before: Record<string, number>, after: Record<string, number>, q: number): number {
  const les = Object.keys(after).filter((k) => k.startsWith('broadcast_age_seconds_bucket:')).map((k) => k.slice('broadcast_age_seconds_bucket:'.length));
  const at = (le: string) => (after[`broadcast_age_seconds_bucket:${le}`] ?? 0) - (before[`broadcast_age_seconds_bucket:${le}`] ?? 0);
  const sorted = les.filter((le) => le !== '+Inf').sort((a, b) => Number(a) - Number(b));
  const total = at('+Inf');
  for (const le of sorted) if (at(le) >= total * q) return Math.round(Number(le) * 1000);
  return Infinity;
}

const percentile = (hist: Float64Array, total: number, q: number): number => {
  const want = Math.ceil(total * q);
  let seen = 0;
  for (let ms = 0; ms < hist.length; ms++) {
    seen += hist[ms]!;
    if (seen >= want) return ms;
  }
  return NaN;
};

// ---------------------------------------------------------------------------------------------
// A phase
// ---------------------------------------------------------------------------------------------
interface PhaseResult {
  phase: string;
  clients_reading: number;
  slow_clients: number;
  produced: number;
  seconds: number;
  rate: number;
  frames_expected: number;
  frames_received: number;
  per_client_min: number;
  per_client_max: number;
  latency_ms: { p50: number; p90: number; p99: number; p999: number; max: number };
  /** The runner's share: a message's age when written to the last client's socket (histogram bucket bounds, ms). */
  runner_age_ms: { p50: number; p99: number };
  /** The producer's share: produce request to Kafka's acknowledgement (acks 1), ms. */
  produce_ack_ms: { p50: number; p99: number };
  runner_peak_rss_mb: number;
  runner_rss_before_mb: number;
  runner_cpu_pct: number;
  clients_cpu_pct: number;
  machine_busy_pct: number;
  load_1m: number[];
  metrics: Record<string, number>;
  worker_closes: Record<string, number>;
  /** runner_websocket_clients, min and max over the 1 s scrapes while producing. */
  clients_at_server: number[];
  /** /metrics answered or not within 3 s (a busy event loop answers late), slowest answer. */
  metrics_scrapes: { ok: number; failed: number; slowestMs: number };
  /** Slow clients disconnected by the runner (its log): by rule, seconds after producing started. */
  slow_clients_disconnected?: { why: string; after_s: number }[];
  slow_client?: { disconnected_after_s: number | null; how: string };
  runner_log: string;
}

async function phase(name: string, id: string, out: string, admin: kafkajs.Admin, kafka: kafkajs.Kafka): Promise<PhaseResult> {
  const CLIENTS = Number(args.clients);
  const RATE = Number(args.rate);
  const DURATION_MS = parseDuration(args.duration!);
  const DEVICES = Number(args.devices);
  const PROCS = Math.max(1, Math.min(Number(args['client-procs']), CLIENTS));
  const slow = name === 'slow' ? Math.min(Number(args['slow-clients']), CLIENTS - 1) : 0;
  const TRICKLE = Number(args['trickle-bytes']);
  const reading = CLIENTS - slow;
  const topicOf = (t: string) => `bench-wsfan-${id}-${name}-${t}`;
  const hpTopic = topicOf('heatpump-realtime');
  await createTopicsReady(admin, [
    { topic: hpTopic, numPartitions: 3, replicationFactor: 1 },
    { topic: topicOf('energy-realtime'), numPartitions: 1, replicationFactor: 1 },
    { topic: topicOf('dead-letter'), numPartitions: 1, replicationFactor: 1 },
  ]);

  // The pipeline as shipped, with topics of its own.
  const doc = parseDocument(readFileSync(join(ROOT, 'pipelines', 'realtime-fanout.yaml'), 'utf8'));
  const expect = (path: string[], want: unknown) => {
    const have = JSON.stringify((doc.getIn(path) as { toJSON?: () => unknown })?.toJSON?.() ?? doc.getIn(path));
    if (have !== JSON.stringify(want)) throw new Error(`pipelines/realtime-fanout.yaml changed: ${path.join('.')} is ${have}; update ${SELF}`);
  };
  expect(['input', 'kafka', 'topics'], ['heatpump-realtime', 'energy-realtime']);
  expect(['output', 'websocket_server', 'topics'], ['heatpump-realtime', 'energy-realtime']);
  expect(['dead_letter', 'kafka', 'topic'], 'homelab-dead-letter');
  doc.setIn(['input', 'kafka', 'topics'], [hpTopic, topicOf('energy-realtime')]);
  doc.setIn(['output', 'websocket_server', 'topics'], [hpTopic, topicOf('energy-realtime')]);
  doc.setIn(['dead_letter', 'kafka', 'topic'], topicOf('dead-letter'));
  const file = join(out, `realtime-fanout-${name}.yaml`);
  writeFileSync(file, doc.toString({ lineWidth: 0 }));

  const httpPort = await freePort();
  const runnerLog = join(out, `runner-${name}.log`);
  const logStream = createWriteStream(runnerLog);
  // RUNNER_NODE_ARGS: extra node flags for the runner (`--cpu-prof --cpu-prof-dir=...`).
  const nodeArgs = (process.env.RUNNER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const runner = spawn(process.execPath, [...nodeArgs, join(ROOT, 'bin', 'runner.mjs'), 'start', file], {
    cwd: ROOT,
    env: { ...process.env, RUNNER_HTTP_PORT: String(httpPort), RUNNER_HTTP_HOST: '127.0.0.1', REALTIME_PORT: '0', REALTIME_HOST: '127.0.0.1', REALTIME_GROUP: `bench-wsfan-${id}-${name}`, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  runner.stdout!.pipe(logStream);
  let wsPort = 0;
  const slowEvents: { t: number; msg: string; reason?: string; why?: string }[] = [];
  let rest = '';
  runner.stderr!.setEncoding('utf8');
  runner.stderr!.on('data', (chunk: string) => {
    logStream.write(chunk);
    const parts = (rest + chunk).split('\n');
    rest = parts.pop()!;
    for (const text of parts) {
      let l: { msg?: string; port?: number; reason?: string; why?: string };
      try {
        l = JSON.parse(text);
      } catch {
        continue;
      }
      if (l.msg === 'websocket server listening') wsPort = Number(l.port);
      if (l.msg === 'websocket client too slow; disconnected' || l.msg === 'websocket client disconnected') slowEvents.push({ t: Date.now(), msg: l.msg, reason: l.reason, why: l.why });
    }
  });
  const pid = runner.pid!;
  const workers: ChildProcess[] = [];
  const producer = kafka.producer({ allowAutoTopicCreation: false, createPartitioner: kafkajs.Partitioners.DefaultPartitioner });
  const slowSockets: WebSocket[] = [];
  const trickleTimers: NodeJS.Timeout[] = [];
  try {
    const deadline = Date.now() + 60_000;
    while (!wsPort || !(await isReady(httpPort))) {
      if (runner.exitCode !== null) throw new Error(`the runner exited with ${runner.exitCode}; see ${runnerLog}`);
      if (Date.now() > deadline) throw new Error(`the runner was not ready within 60 s; see ${runnerLog}`);
      await sleep(200);
    }
    const url = `ws://127.0.0.1:${wsPort}/ws?topics=${hpTopic}`;
    log(`${name}: runner ready (ws port ${wsPort}); connecting ${reading} reading client(s) in ${PROCS} process(es)${slow ? ` and ${slow} slow ones (${Math.ceil(slow / 2)} never read, ${Math.floor(slow / 2)} read ${TRICKLE} bytes/s)` : ''}`);

    // Clients.
    const clientNodeArgs = (process.env.CLIENT_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
    const connected: Promise<number>[] = [];
    const reports: Promise<WorkerReport>[] = [];
    for (let w = 0; w < PROCS; w++) {
      const count = Math.floor(reading / PROCS) + (w < reading % PROCS ? 1 : 0);
      const child = spawn(process.execPath, [...clientNodeArgs, '--import', 'tsx', SELF, '--worker', '--url', url, '--count', String(count)], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      workers.push(child);
      connected.push(new Promise((res, rej) => {
        child.on('message', (m: { type: string; connected?: number }) => m.type === 'connected' && res(m.connected!));
        child.once('exit', (code) => rej(new Error(`a client process exited with ${code} before connecting`)));
      }));
      reports.push(new Promise((res) => child.on('message', (m: { type: string; report?: WorkerReport }) => m.type === 'report' && res(m.report!))));
    }
    const nConnected = (await Promise.all(connected)).reduce((a, b) => a + b, 0);
    if (nConnected !== reading) log(`WARNING: ${nConnected} of ${reading} clients connected`);
    for (let i = 0; i < slow; i++) {
      const ws = new WebSocket(url, { perMessageDeflate: false });
      slowSockets.push(ws);
      ws.on('error', () => undefined);
      await new Promise<void>((res, rej) => ws.once('open', () => res()).once('error', rej));
      // Paused: the server's frames pile up in the kernel buffers, then in its send buffer.
      const raw = (ws as unknown as { _socket: import('node:net').Socket })._socket;
      raw.pause();
      // The odd ones read at a trickle: read(n) on a paused socket hands n bytes to ws (a 'data'
      // event) and reads no further from the kernel than the stream's high-water mark.
      if (i % 2 === 1) trickleTimers.push(setInterval(() => raw.read(Math.max(1, Math.floor(TRICKLE / 10))), 100));
    }
    await producer.connect();
    await sleep(1000);
    const before = await scrape(httpPort);
    log(`${name}: ${before?.clients ?? '?'} clients connected at the server; producing ${RATE} msg/s for ${DURATION_MS / 1000} s`);

    // Sampling.
    let peak = 0;
    const rssBefore = rssMb(pid) ?? 0;
    const timer = setInterval(() => (peak = Math.max(peak, rssMb(pid) ?? 0)), 250);
    const cpu0 = cpuSeconds(pid);
    const wcpu0 = workers.reduce((a, w) => a + cpuSeconds(w.pid!), 0);
    const m0 = machineBusy();
    const loads = [loadavg()[0]!];
    Object.assign(scrapeStats, { ok: 0, failed: 0, slowestMs: 0 });
    const loadTimer = setInterval(() => loads.push(loadavg()[0]!), 5000);
    // The output's metrics every second: when a client was dropped (slow or heartbeat), clients left.
    const firstDrop: Record<string, number> = {};
    const clientsSeen: number[] = [];
    let polling = true;
    let last: Record<string, number> = before ?? {};
    const poll = (async () => {
      while (polling) {
        const m = await scrape(httpPort);
        if (m) {
          last = m;
          clientsSeen.push(m.clients ?? 0);
          for (const k of ['slow_disconnects_total', 'refused_total:heartbeat']) if ((m[k] ?? 0) > (before?.[k] ?? 0) && firstDrop[k] === undefined) firstDrop[k] = Date.now();
        }
        await sleep(1000);
      }
    })();

    // Producing: due = elapsed * rate, sent in 10 ms ticks.
    const started = Date.now();
    let produced = 0;
    const sends: Promise<unknown>[] = [];
    /** How long each produce request took to be acknowledged by Kafka (acks 1). */
    const ackMs: number[] = [];
    while (Date.now() - started < DURATION_MS) {
      const due = Math.floor(((Date.now() - started) * RATE) / 1000);
      if (due > produced) {
        const messages = [];
        for (; produced < due; produced++) {
          const ts = Date.now();
          const i = produced % DEVICES;
          const device_id = `device-${String(i + 1).padStart(3, '0')}`;
          const a = produced / 500 + i;
          const v = {
            device_id,
            timestamp: Math.floor(ts / 1000),
            d0: +(5 + 6 * Math.sin(a)).toFixed(1), d1: 21.1, d2: 48.6, d3: 47, d4: 1, d5: 35, d6: 30.5,
            d7: 13.7, d8: 1432, d9: 5210, d10: 1, d11: 64, d12: 19416,
            indoor_target_temp: 21.5, mode: 1, hot_water_target_temp: 50, heating_curve: 0.6, heating_curve_offset: 0, eco_mode: false,
            bench_seq: produced,
            bench_ts: ts,
          };
          messages.push({ key: device_id, value: JSON.stringify(v), timestamp: String(ts) });
        }
        const t0 = Date.now();
        sends.push(producer.send({ topic: hpTopic, messages, acks: 1 }).then(() => ackMs.push(Date.now() - t0)));
      }
      await sleep(10);
    }
    const seconds = (Date.now() - started) / 1000;
    await Promise.all(sends);
    log(`${name}: produced ${produced} in ${seconds.toFixed(1)} s; waiting for the broadcast to catch up`);

    // Drain: the runner broadcast everything, then the clients' frame counts settle.
    let metrics = (await scrape(httpPort)) ?? last;
    const drainUntil = Date.now() + 30_000;
    while ((metrics.messages_broadcast_total ?? 0) < produced && Date.now() < drainUntil) {
      await sleep(250);
      metrics = (await scrape(httpPort)) ?? metrics;
    }
    await sleep(3000);
    metrics = (await scrape(httpPort)) ?? metrics;
    clearInterval(timer);
    clearInterval(loadTimer);
    polling = false;
    await poll;
    loads.push(loadavg()[0]!);
    const wall = (Date.now() - started) / 1000;
    const cpu = cpuSeconds(pid) - cpu0;
    const wcpu = workers.reduce((a, w) => a + cpuSeconds(w.pid!), 0) - wcpu0;
    const m1 = machineBusy();

    for (const w of workers) w.send({ type: 'report' });
    const rs = await Promise.all(reports);
    const hist = new Float64Array(HIST_MS + 1);
    let total = 0;
    let over = 0;
    let max = 0;
    const closes: Record<string, number> = {};
    for (const r of rs) {
      for (const [ms, n] of r.hist) hist[ms]! += n;
      total += r.frames;
      over += r.over;
      max = Math.max(max, r.max);
      for (const [c, n] of Object.entries(r.closes)) closes[c] = (closes[c] ?? 0) + n;
    }
    const inHist = total - over;
    let slowInfo: PhaseResult['slow_client'];
    const slowDisconnected = slowEvents.filter((e) => e.msg === 'websocket client too slow; disconnected').map((e) => ({ why: e.why ?? '?', after_s: +((e.t - started) / 1000).toFixed(1) }));
    if (slow) {
      const hb = firstDrop['refused_total:heartbeat'];
      const byWhy = new Map<string, number[]>();
      for (const d of slowDisconnected) byWhy.set(d.why, [...(byWhy.get(d.why) ?? []), d.after_s]);
      const parts = [...byWhy].map(([why, ts]) => `${ts.length} by ${why} after ${Math.min(...ts)}-${Math.max(...ts)} s`);
      if (hb !== undefined) parts.push(`heartbeat drops from ${((hb - started) / 1000).toFixed(0)} s (+-1 s)`);
      slowInfo = {
        disconnected_after_s: slowDisconnected.length ? Math.max(...slowDisconnected.map((d) => d.after_s)) : null,
        how: `${slowDisconnected.length} of ${slow} as slow (1013)${parts.length ? `: ${parts.join('; ')}` : ''}`,
      };
    }
    return {
      phase: name,
      clients_reading: nConnected,
      slow_clients: slow,
      produced,
      seconds,
      rate: produced / seconds,
      frames_expected: produced * nConnected,
      frames_received: total,
      per_client_min: Math.min(...rs.map((r) => r.perClientMin)),
      per_client_max: Math.max(...rs.map((r) => r.perClientMax)),
      latency_ms: {
        p50: percentile(hist, inHist, 0.5),
        p90: percentile(hist, inHist, 0.9),
        p99: percentile(hist, inHist, 0.99),
        p999: percentile(hist, inHist, 0.999),
        max,
      },
      produce_ack_ms: (() => {
        const a = [...ackMs].sort((x, y) => x - y);
        return { p50: a[Math.floor(a.length * 0.5)] ?? NaN, p99: a[Math.floor(a.length * 0.99)] ?? NaN };
      })(),
      runner_age_ms: { p50: ageQuantile(before ?? {}, metrics, 0.5), p99: ageQuantile(before ?? {}, metrics, 0.99) },
      runner_peak_rss_mb: Math.round(peak),
      runner_rss_before_mb: Math.round(rssBefore),
      runner_cpu_pct: Math.round((cpu / wall) * 100),
      clients_cpu_pct: Math.round((wcpu / wall) * 100),
      machine_busy_pct: Math.round(((m1.busy - m0.busy) / (m1.total - m0.total)) * 100),
      load_1m: loads.map((x) => +x.toFixed(2)),
      metrics,
      worker_closes: closes,
      metrics_scrapes: { ...scrapeStats },
      clients_at_server: [Math.min(...clientsSeen), Math.max(...clientsSeen)],
      slow_client: slowInfo,
      slow_clients_disconnected: slow ? slowDisconnected : undefined,
      runner_log: runnerLog,
    };
  } finally {
    for (const t of trickleTimers) clearInterval(t);
    for (const ws of slowSockets) ws.terminate();
    await producer.disconnect().catch(() => undefined);
    // They exit on their own after reporting (and write a profile if CLIENT_NODE_ARGS asks for one).
    await Promise.race([Promise.all(workers.map((w) => (w.exitCode === null ? new Promise((r) => w.once('exit', r)) : null))), sleep(5000)]);
    for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
    await stopChild(runner);
    logStream.end();
    await admin.deleteTopics({ topics: ['heatpump-realtime', 'energy-realtime', 'dead-letter'].map(topicOf) }).catch((e) => log(`deleting topics failed: ${e}`));
    await admin.deleteGroups([`bench-wsfan-${id}-${name}`]).catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// The recent window: memory with it full, and while answering the last hour.
// ---------------------------------------------------------------------------------------------
async function recentPhase(id: string, out: string, admin: kafkajs.Admin, kafka: kafkajs.Kafka) {
  const name = 'recent';
  const N = Number(args['recent-messages']);
  const DEVICES = Number(args.devices);
  const topicOf = (t: string) => `bench-wsfan-${id}-${name}-${t}`;
  const hpTopic = topicOf('heatpump-realtime');
  await createTopicsReady(admin, [
    { topic: hpTopic, numPartitions: 3, replicationFactor: 1 },
    { topic: topicOf('energy-realtime'), numPartitions: 1, replicationFactor: 1 },
    { topic: topicOf('dead-letter'), numPartitions: 1, replicationFactor: 1 },
  ]);
  const doc = parseDocument(readFileSync(join(ROOT, 'pipelines', 'realtime-fanout.yaml'), 'utf8'));
  const recentPath = String(doc.getIn(['output', 'websocket_server', 'recent', 'path']));
  doc.setIn(['input', 'kafka', 'topics'], [hpTopic, topicOf('energy-realtime')]);
  doc.setIn(['output', 'websocket_server', 'topics'], [hpTopic, topicOf('energy-realtime')]);
  doc.setIn(['dead_letter', 'kafka', 'topic'], topicOf('dead-letter'));
  const file = join(out, `realtime-fanout-${name}.yaml`);
  writeFileSync(file, doc.toString({ lineWidth: 0 }));
  const httpPort = await freePort();
  const runnerLog = join(out, `runner-${name}.log`);
  const logStream = createWriteStream(runnerLog);
  const nodeArgs = (process.env.RUNNER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const runner = spawn(process.execPath, [...nodeArgs, join(ROOT, 'bin', 'runner.mjs'), 'start', file], {
    cwd: ROOT,
    env: { ...process.env, RUNNER_HTTP_PORT: String(httpPort), RUNNER_HTTP_HOST: '127.0.0.1', REALTIME_PORT: '0', REALTIME_HOST: '127.0.0.1', REALTIME_GROUP: `bench-wsfan-${id}-${name}`, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  runner.stdout!.pipe(logStream);
  let wsPort = 0;
  runner.stderr!.setEncoding('utf8');
  runner.stderr!.on('data', (chunk: string) => {
    logStream.write(chunk);
    const m = /"msg":"websocket server listening"/.test(chunk) ? /"port":(\d+)/.exec(chunk) : null;
    if (m) wsPort = Number(m[1]);
  });
  const pid = runner.pid!;
  const producer = kafka.producer({ allowAutoTopicCreation: false, createPartitioner: kafkajs.Partitioners.DefaultPartitioner });
  try {
    const deadline = Date.now() + 60_000;
    while (!wsPort || !(await isReady(httpPort))) {
      if (runner.exitCode !== null) throw new Error(`the runner exited with ${runner.exitCode}; see ${runnerLog}`);
      if (Date.now() > deadline) throw new Error(`the runner was not ready within 60 s; see ${runnerLog}`);
      await sleep(200);
    }
    await producer.connect();
    const rssIdle = rssMb(pid) ?? 0;
    let peak = 0;
    const timer = setInterval(() => (peak = Math.max(peak, rssMb(pid) ?? 0)), 100);
    log(`${name}: producing ${N} messages`);
    for (let sent = 0; sent < N; ) {
      const messages = [];
      for (let k = 0; k < 2000 && sent < N; k++, sent++) {
        const ts = Date.now();
        const device_id = `device-${String((sent % DEVICES) + 1).padStart(3, '0')}`;
        const v = { device_id, timestamp: Math.floor(ts / 1000), d0: +(5 + 6 * Math.sin(sent / 500)).toFixed(1), d1: 21.1, d2: 48.6, d3: 47, d4: 1, d5: 35, d6: 30.5, d7: 13.7, d8: 1432, d9: 5210, d10: 1, d11: 64, d12: 19416, indoor_target_temp: 21.5, mode: 1, hot_water_target_temp: 50, heating_curve: 0.6, heating_curve_offset: 0, eco_mode: false, bench_seq: sent, bench_ts: ts };
        messages.push({ key: device_id, value: JSON.stringify(v), timestamp: String(ts) });
      }
      await producer.send({ topic: hpTopic, messages, acks: 1 });
    }
    let metrics: Record<string, number> = {};
    const until = Date.now() + 120_000;
    while ((metrics.messages_broadcast_total ?? 0) < N && Date.now() < until) {
      await sleep(500);
      metrics = (await scrape(httpPort)) ?? metrics;
    }
    await sleep(3000);
    const fullPeak = peak;
    const rssFull = rssMb(pid) ?? 0;
    const memFull = await scrapeMemory(httpPort);
    peak = 0;
    const t0 = Date.now();
    const res = await fetch(`http://127.0.0.1:${wsPort}${recentPath}?topic=${hpTopic}`);
    const body = await res.text();
    const ms = Date.now() - t0;
    await sleep(500);
    clearInterval(timer);
    const kept = (JSON.parse(body) as { messages: unknown[] }).messages.length;
    metrics = (await scrape(httpPort)) ?? metrics;
    return {
      phase: name,
      produced: N,
      broadcast: metrics.messages_broadcast_total ?? 0,
      kept,
      evicted: metrics.recent_evicted_total ?? 0,
      answer_mb: +(body.length / 1e6).toFixed(1),
      answer_ms: ms,
      runner_rss_idle_mb: Math.round(rssIdle),
      runner_peak_rss_filling_mb: Math.round(fullPeak),
      runner_rss_full_mb: Math.round(rssFull),
      runner_memory_full: memFull,
      runner_peak_rss_answering_mb: Math.round(peak),
      runner_log: runnerLog,
    };
  } finally {
    await producer.disconnect().catch(() => undefined);
    await stopChild(runner);
    logStream.end();
    await admin.deleteTopics({ topics: ['heatpump-realtime', 'energy-realtime', 'dead-letter'].map(topicOf) }).catch((e) => log(`deleting topics failed: ${e}`));
    await admin.deleteGroups([`bench-wsfan-${id}-${name}`]).catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------
async function main() {
  const phases = args.phases!.split(',').map((p) => p.trim()).filter(Boolean);
  for (const p of phases) if (!ALL_PHASES.includes(p)) throw new Error(`unknown phase ${p}; phases: ${ALL_PHASES.join(', ')}`);
  const id = randomBytes(4).toString('hex');
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const out = resolve(args.out ?? join(tmpdir(), 'runner-bench', `websocket-fanout-${stamp}`));
  mkdirSync(out, { recursive: true });
  const brokers = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
  const kafka = new kafkajs.Kafka({ clientId: `bench-wsfan-${id}`, brokers, logLevel: kafkajs.logLevel.WARN });
  const admin = kafka.admin();
  await admin.connect();
  const results: PhaseResult[] = [];
  const recentResults: Awaited<ReturnType<typeof recentPhase>>[] = [];
  const machine = machineInfo();
  const config = { clients: Number(args.clients), rate: Number(args.rate), duration: args.duration, devices: Number(args.devices), client_procs: Number(args['client-procs']) };
  try {
    for (const p of phases) {
      log(`phase ${p} ...`);
      if (p === 'recent') {
        const r = await recentPhase(id, out, admin, kafka);
        recentResults.push(r);
        log(`${p}: ${JSON.stringify(r)}`);
        writeFileSync(join(out, 'results.json'), JSON.stringify({ machine, config, results, recent: recentResults }, null, 2));
        continue;
      }
      const r = await phase(p, id, out, admin, kafka);
      results.push(r);
      log(`${p}: ${JSON.stringify({ ...r, runner_log: undefined })}`);
      writeFileSync(join(out, 'results.json'), JSON.stringify({ machine, config, results }, null, 2));
    }
  } finally {
    await admin.disconnect();
  }
  const f = (x: number) => (Number.isFinite(x) ? x.toLocaleString('en-US') : '-');
  console.log(`\n${config.clients} clients, ${config.rate} msg/s for ${config.duration}, ${config.client_procs} client processes; machine ${machine.nproc} cores, ${machine.mem_gib} GiB, Node ${machine.node}\n`);
  console.log('| phase | msg produced | broadcast by the runner | frames received / expected | per client min-max | latency p50 / p99 / max ms | age at the last write p50 / p99 ms (runner, bucket bound) | runner peak RSS | runner CPU | clients CPU | machine busy | load 1m | slow disconnects / dropped | slow client |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of results) {
    const pct = ((r.frames_received / r.frames_expected) * 100).toFixed(2);
    console.log(
      `| ${r.phase} | ${f(r.produced)} (${r.rate.toFixed(0)}/s) | ${f(r.metrics.messages_broadcast_total ?? NaN)} | ${f(r.frames_received)} / ${f(r.frames_expected)} (${pct} %) | ${r.per_client_min}-${r.per_client_max} | ${r.latency_ms.p50} / ${r.latency_ms.p99} / ${r.latency_ms.max} | <= ${r.runner_age_ms.p50} / <= ${r.runner_age_ms.p99} | ${r.runner_peak_rss_mb} MB (${r.runner_rss_before_mb} before) | ${r.runner_cpu_pct} % | ${r.clients_cpu_pct} % | ${r.machine_busy_pct} % | ${Math.min(...r.load_1m)}-${Math.max(...r.load_1m)} | ${r.metrics.slow_disconnects_total ?? 0} / ${r.metrics.messages_dropped_total ?? 0} | ${r.slow_client ? r.slow_client.how : '-'} |`,
    );
  }
  for (const r of results) console.log(`${r.phase}: produce request acknowledged p50 ${r.produce_ack_ms.p50} ms, p99 ${r.produce_ack_ms.p99} ms`);
  for (const r of results) console.log(`${r.phase}: /metrics scrapes ok ${r.metrics_scrapes.ok}, failed ${r.metrics_scrapes.failed}, slowest ${r.metrics_scrapes.slowestMs} ms; client closes ${JSON.stringify(r.worker_closes)}; refused ${JSON.stringify(Object.fromEntries(Object.entries(r.metrics).filter(([k]) => k.startsWith('refused'))))}`);
  for (const r of recentResults) {
    console.log(`\nrecent: ${f(r.produced)} messages, ${f(r.kept)} kept in the window, ${f(r.evicted)} evicted; runner RSS ${r.runner_rss_idle_mb} MB idle, peak ${r.runner_peak_rss_filling_mb} MB filling, ${r.runner_rss_full_mb} MB full (V8 heap ${r.runner_memory_full?.heap_used_mb ?? '?'} MB used of ${r.runner_memory_full?.heap_total_mb ?? '?'}, external ${r.runner_memory_full?.external_mb ?? '?'} MB), peak ${r.runner_peak_rss_answering_mb} MB answering GET (${r.answer_mb} MB in ${r.answer_ms} ms)`);
  }
  console.log(`\nresults: ${join(out, 'results.json')}`);
}

if (args.worker) {
  worker().catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
