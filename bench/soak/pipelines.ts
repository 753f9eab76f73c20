/**
 * The soak's pipelines: every pipeline of the stack (pipelines/*.yaml except the demo ones), each
 * isolated from everything else on the stack it runs against, each in a runner process of its own.
 *
 * Isolation, as the e2e tests and bench/command-loop do it (tests/e2e/mqtt-bridge-harness.ts
 * `bridgePipeline`, tests/e2e/sink-harness.ts `isolatedPipeline`), plus what those helpers do not
 * cover:
 * - mqtt-bridge: `bridgePipeline(id)`: MQTT filters and topic pattern under the level
 *   `e2e-bridge-<id>/`, its own client id, every `homelab-*` topic renamed to `e2e-<id>-*`;
 * - telemetry-sink, settings-sink, command-confirm: `isolatedPipeline(name, id)` (the same topic
 *   names) and consumer groups of their own (env);
 * - mqtt-realtime: the same MQTT level and an own client id; its realtime topics renamed to
 *   `e2e-<id>-rt-<kind>-realtime`; realtime-fanout reads those (own consumer group and port);
 * - outbox-relay: the event-type topics prefixed with `e2e-<id>-` (events keep their real types);
 * - command-events: SETTINGS_EVENTS_TOPIC; command-dispatch: COMMAND_TOPIC_PREFIX (the simulator's
 *   prefix) and its own client id; settings-api, history-api, realtime-fanout: ports of their own;
 * - every database URL points at the run's throwaway databases.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, writeFileSync, type WriteStream } from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isScalar, isSeq, parse as parseYaml, parseDocument, visit, type Document } from 'yaml';
import { ROOT, bridgePipeline, type BridgeSetup } from '../../tests/e2e/mqtt-bridge-harness.ts';
import { isolatedPipeline } from '../../tests/e2e/sink-harness.ts';

/** Every pipeline the soak runs, in start order (consumers before producers does not matter: groups start at earliest). */
export const PIPELINES = [
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
] as const;
export type PipelineName = (typeof PIPELINES)[number];

/** The outbox relay's event types (topics.yaml). */
export const EVENT_TYPES = ['user.verified', 'journey.created', 'journey.matched', 'ticket.uploaded', 'delay.detected', 'delay.updated', 'cleanup.completed'] as const;

export interface SoakTopology {
  id: string;
  dir: string;
  bridge: BridgeSetup;
  /** Pipeline -> the file it runs. */
  files: Record<PipelineName, string>;
  /** Every Kafka topic to create. */
  topics: { topic: string; numPartitions: number }[];
  /** The bridge's output topics: original homelab-* name -> this run's topic. */
  telemetryTopic: (original: string) => string;
  realtimeTopics: string[];
  eventTopic: (eventType: string) => string;
  settingsEventsTopic: string;
  deadLetterTopic: string;
  mqttPrefix: string;
  groups: { telemetrySink: string; settingsSink: string; confirm: string; realtime: string };
  mqttClientIds: string[];
}

const declaredPartitions = (): Map<string, number> => {
  const doc = parseYaml(readFileSync(join(ROOT, 'topics.yaml'), 'utf8')) as { topics: { name: string; partitions?: number }[] };
  return new Map(doc.topics.map((t) => [t.name, t.partitions ?? 1]));
};

function edit(file: string, fn: (doc: Document) => void): void {
  const doc = parseDocument(readFileSync(file, 'utf8'));
  fn(doc);
  writeFileSync(file, doc.toString({ lineWidth: 0 }));
}

function copyOf(name: string, dir: string): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, readFileSync(join(ROOT, 'pipelines', `${name}.yaml`), 'utf8'));
  return file;
}

export function buildTopology(id: string): SoakTopology {
  const dir = mkdtempSync(join(tmpdir(), 'runner-soak-'));
  const parts = declaredPartitions();
  const bridge = bridgePipeline(id);
  const level = bridge.mqttPrefix.replace(/\/$/, '');
  const files = {} as Record<PipelineName, string>;
  files['mqtt-bridge'] = bridge.file;
  const topics = new Map<string, number>(bridge.topics.map((t) => [t.topic, t.numPartitions]));
  const add = (list: { topic: string; numPartitions: number }[]) => list.forEach((t) => topics.set(t.topic, t.numPartitions));

  for (const name of ['telemetry-sink', 'settings-sink', 'command-confirm'] as const) {
    const p = isolatedPipeline(name, id);
    for (const t of p.topics) if (!topics.has(t.topic)) throw new Error(`${name} names ${t.topic}, which the bridge does not write`);
    files[name] = p.file;
  }

  // mqtt-realtime: the bridge's MQTT level, the realtime topics renamed, the dead-letter topic as the others.
  const realtime = isolatedPipeline('mqtt-realtime', id);
  // Not e2e-<id>-<kind>-realtime: that is the bridge's homelab-energy-realtime renamed.
  const realtimeTopic = (kind: string) => `e2e-${id}-rt-${kind}-realtime`;
  edit(realtime.file, (doc) => {
    const filters = doc.getIn(['input', 'mqtt', 'topics']);
    if (!isSeq(filters)) throw new Error('pipelines/mqtt-realtime.yaml: input.mqtt.topics is not a list');
    doc.setIn(['input', 'mqtt', 'topics'], filters.items.map((f) => `${level}/${String(isScalar(f) ? f.value : f)}`));
    doc.setIn(['input', 'mqtt', 'topic_pattern'], `${level}/${String(doc.getIn(['input', 'mqtt', 'topic_pattern']))}`);
    const topic = String(doc.getIn(['output', 'kafka', 'topic']));
    if (topic !== '${! $meta.mqtt_topic_kind }-realtime') throw new Error(`pipelines/mqtt-realtime.yaml writes to ${topic}; update bench/soak/pipelines.ts`);
    doc.setIn(['output', 'kafka', 'topic'], `e2e-${id}-rt-${topic}`);
  });
  files['mqtt-realtime'] = realtime.file;
  const realtimeTopics = ['heatpump', 'energy'].map(realtimeTopic);
  for (const t of realtimeTopics) if (topics.has(t)) throw new Error(`realtime topic ${t} is also a bridge topic`);
  for (const kind of ['heatpump', 'energy']) topics.set(realtimeTopic(kind), parts.get(`${kind}-realtime`) ?? 1);

  // realtime-fanout: reads the renamed realtime topics.
  const fanout = isolatedPipeline('realtime-fanout', id);
  edit(fanout.file, (doc) => {
    visit(doc, {
      Scalar(_k, node) {
        if (node.value === 'heatpump-realtime' || node.value === 'energy-realtime') node.value = realtimeTopic(String(node.value).replace(/-realtime$/, ''));
      },
    });
  });
  files['realtime-fanout'] = fanout.file;

  // outbox-relay: the event-type topics prefixed.
  const relay = copyOf('outbox-relay', dir);
  edit(relay, (doc) => {
    const topic = String(doc.getIn(['output', 'kafka', 'topic']));
    if (topic !== '${! $meta.topic }') throw new Error(`pipelines/outbox-relay.yaml writes to ${topic}; update bench/soak/pipelines.ts`);
    doc.setIn(['output', 'kafka', 'topic'], `e2e-${id}-${topic}`);
  });
  files['outbox-relay'] = relay;
  const eventTopic = (t: string) => `e2e-${id}-${t}`;
  for (const t of EVENT_TYPES) topics.set(eventTopic(t), parts.get(t) ?? 3);

  const settingsEventsTopic = `e2e-${id}-heatpump-settings-events`;
  topics.set(settingsEventsTopic, parts.get('heatpump-settings-events') ?? 3);
  for (const name of ['settings-api', 'command-dispatch', 'command-timeouts', 'command-events', 'history-api'] as const) files[name] = copyOf(name, dir);
  add([...realtime.topics, ...fanout.topics]);
  for (const name of PIPELINES) if (!files[name]) throw new Error(`no file for ${name}`);

  return {
    id,
    dir,
    bridge,
    files,
    topics: [...topics].map(([topic, numPartitions]) => ({ topic, numPartitions })),
    telemetryTopic: bridge.kafkaTopic,
    realtimeTopics,
    eventTopic,
    settingsEventsTopic,
    deadLetterTopic: bridge.deadLetterTopic,
    mqttPrefix: bridge.mqttPrefix,
    groups: { telemetrySink: `e2e-${id}-telemetry-sink`, settingsSink: `e2e-${id}-settings-sink`, confirm: `e2e-${id}-confirm`, realtime: `e2e-${id}-realtime-fanout` },
    mqttClientIds: [bridge.clientId, `e2e-realtime-${id}`, `e2e-dispatch-${id}`],
  };
}

/** A TCP port nothing listens on at the moment. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** GET a local URL; resolves with the status (0 if it could not connect or answer within `timeoutMs`) and the body. */
export function httpGet(url: string, timeoutMs = 2000): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', (err) => resolve({ status: 0, body: err.message }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => resolve({ status: 0, body: err.message }));
  });
}

/** The error lines of what a crashing process printed (Node's uncaught error output, or its last error log line). */
export function crashSummary(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const plain = lines.filter((l) => !l.startsWith('{'));
  const picked = plain.filter((l) => /^(\w*Error\b|error:)|^code: '|Unhandled/.test(l));
  if (picked.length) return [...new Set(picked)].join(' | ').slice(0, 400);
  const lastError = [...lines].reverse().find((l) => l.startsWith('{') && /"level":"(error|fatal)"/.test(l));
  return (lastError ?? plain.at(-1) ?? lines.at(-1) ?? '').slice(0, 400);
}

/**
 * One pipeline in a runner process of its own (`node bin/runner.mjs start <file>`), restartable.
 * Its stderr (JSON log lines) is appended to `<logDir>/<name>.log` across restarts.
 */
export class PipelineProcess {
  child: ChildProcess | null = null;
  starts = 0;
  kills = 0;
  /** Exits the soak did not cause (crashes), with the time and the error the process printed. */
  readonly unexpectedExits: { at: number; code: number | null; signal: string | null; error: string }[] = [];
  /** Set when the process exited by itself; cleared by start(). A supervisor restarts it. */
  crashedAt: number | null = null;
  /** The end of stderr (a crash prints its error there, not as a JSON log line). */
  private tail = '';
  private log: WriteStream;
  private expectingExit = false;
  private exited: Promise<void> = Promise.resolve();

  constructor(
    readonly name: PipelineName,
    readonly file: string,
    readonly httpPort: number,
    private readonly env: Record<string, string>,
    logDir: string,
  ) {
    this.log = createWriteStream(join(logDir, `${name}.log`), { flags: 'a' });
  }

  get pid(): number | null {
    return this.running ? (this.child?.pid ?? null) : null;
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  start(): void {
    if (this.running) return;
    this.starts++;
    this.expectingExit = false;
    this.log.write(`{"soak":"start","n":${this.starts},"time":${Date.now()}}\n`);
    // As the Dockerfile runs it: with a 512 MB heap limit.
    const child = spawn(process.execPath, ['--max-old-space-size=512', join(ROOT, 'bin/runner.mjs'), 'start', this.file], {
      cwd: ROOT,
      env: { ...process.env, ...this.env, RUNNER_HTTP_PORT: String(this.httpPort), RUNNER_HTTP_HOST: '127.0.0.1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    this.crashedAt = null;
    this.tail = '';
    child.stderr!.pipe(this.log, { end: false });
    child.stderr!.on('data', (d: Buffer) => (this.tail = (this.tail + d.toString('utf8')).slice(-16_384)));
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        this.log.write(`{"soak":"exit","code":${code},"signal":${JSON.stringify(signal)},"time":${Date.now()}}\n`);
        if (!this.expectingExit) {
          this.crashedAt = Date.now();
          this.unexpectedExits.push({ at: Date.now(), code, signal, error: crashSummary(this.tail) });
        }
        resolve();
      }),
    );
  }

  /** /health/ready of the process: true when it answers 200. */
  async ready(): Promise<boolean> {
    return (await this.readiness()).ready;
  }

  /** /health/ready with the reason when not ready (the answer's body, or why there was none). */
  async readiness(): Promise<{ ready: boolean; reason: string }> {
    if (!this.running) return { ready: false, reason: 'process not running' };
    const a = await httpGet(`http://127.0.0.1:${this.httpPort}/health/ready`);
    if (a.status === 200) return { ready: true, reason: '' };
    try {
      // core/health.ts: {status, pipelines: {<name>: {ready, reasons: [...]}}}
      const body = JSON.parse(a.body) as { pipelines?: Record<string, { reasons?: string[] }> };
      const reasons = Object.values(body.pipelines ?? {}).flatMap((p) => p.reasons ?? []);
      if (reasons.length) return { ready: false, reason: reasons.join('; ').slice(0, 300) };
    } catch {
      // not JSON: the raw answer below
    }
    return { ready: false, reason: `${a.status || 'no answer'}: ${a.body.slice(0, 280)}` };
  }

  async kill9(): Promise<void> {
    if (!this.running) return;
    this.kills++;
    this.expectingExit = true;
    this.child!.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM (drain and exit); SIGKILL after `timeoutMs`. Resolves with the exit code (null if killed). */
  async stop(timeoutMs = 60_000): Promise<{ code: number | null; signal: string | null }> {
    if (!this.running) return { code: this.child?.exitCode ?? null, signal: this.child?.signalCode ?? null };
    this.expectingExit = true;
    const child = this.child!;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(t);
    return { code: child.exitCode, signal: child.signalCode };
  }

  close(): void {
    this.log.end();
  }
}
