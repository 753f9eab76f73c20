/**
 * What the end-to-end tests of pipelines/mqtt-bridge.yaml share:
 *
 * - `bridgePipeline()` writes the real pipeline file, changed only where a test must be isolated
 *   from everything else on the shared stack: its MQTT filters and topic pattern get a unique first
 *   level, its MQTT client id is unique, and every `homelab-*` Kafka topic it names becomes a unique
 *   topic (created by `createTopics`, with the partitions topics.yaml gives the original).
 * - `RunnerProcess` runs `node bin/runner.mjs start <file>` as a child process and lets a test wait
 *   for its log lines (JSON on stderr).
 * - `KafkaTally` reads the bridge's Kafka topics from the beginning and counts records (by
 *   topic/partition/offset, so a consumer that re-reads after a broker restart does not inflate
 *   it) and distinct messages (by MQTT topic and the simulator's `seq`).
 * - `stackServer()` stops/starts/restarts one server of scripts/stack and returns its pid before and
 *   after, so that a test can show the restart happened.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import kafkajs, { type Admin, type Consumer, type Kafka } from 'kafkajs';
import mqtt from 'mqtt';
import { isMap, isScalar, isSeq, parse as parseYaml, parseDocument, visit } from 'yaml';
import { KINDS, topicOf, type Kind } from '../../simulator/heatpump.ts';
import type { Fleet } from '../../simulator/fleet.ts';
import { createTopicsReady } from '../helpers/kafka.ts';

const { Kafka: KafkaClient, logLevel } = kafkajs;

export const ROOT = new URL('../..', import.meta.url).pathname;
export const BROKERS = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
export const MQTT_URL = process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883';

export const uniqueId = () => randomBytes(4).toString('hex');
export const kafkaClient = (clientId: string): Kafka => new KafkaClient({ clientId, brokers: BROKERS, logLevel: logLevel.NOTHING });

/** Which `homelab-*` topic of pipelines/mqtt-bridge.yaml each simulator kind lands in (docs/mqtt-bridge.md). */
export const KIND_TOPIC: Readonly<Record<Kind, string>> = {
  heatpump: 'homelab-heatpump-telemetry',
  settings: 'homelab-heatpump-settings',
  energy: 'homelab-energy-realtime',
  temperature: 'homelab-temperature',
};

export interface BridgeSetup {
  id: string;
  /** The pipeline file written for this test, in its own temporary folder. */
  file: string;
  dir: string;
  /** Simulator topic_prefix: `e2e-bridge-<id>/`. */
  mqttPrefix: string;
  clientId: string;
  /** Original topic name (homelab-...) -> this test's topic. */
  kafkaTopic: (original: string) => string;
  /** This test's topics the output writes to. */
  outputTopics: string[];
  deadLetterTopic: string;
  /** Every Kafka topic to create, with its partitions. */
  topics: { topic: string; numPartitions: number }[];
}

/**
 * pipelines/mqtt-bridge.yaml with a unique MQTT topic level, client id and Kafka topics; every
 * processor and setting stays as it is. Fails if the pipeline no longer has the shape this relies on.
 */
export function bridgePipeline(id: string): BridgeSetup {
  const level = `e2e-bridge-${id}`;
  const doc = parseDocument(readFileSync(join(ROOT, 'pipelines/mqtt-bridge.yaml'), 'utf8'));
  const filters = doc.getIn(['input', 'mqtt', 'topics']);
  if (!isSeq(filters) || !filters.items.length) throw new Error('pipelines/mqtt-bridge.yaml: input.mqtt.topics is not a list');
  doc.setIn(['input', 'mqtt', 'topics'], filters.items.map((f) => `${level}/${String(isScalar(f) ? f.value : f)}`));
  const pattern = doc.getIn(['input', 'mqtt', 'topic_pattern']);
  if (typeof pattern !== 'string' || !pattern) throw new Error('pipelines/mqtt-bridge.yaml: input.mqtt.topic_pattern is missing');
  doc.setIn(['input', 'mqtt', 'topic_pattern'], `${level}/${pattern}`);
  doc.setIn(['input', 'mqtt', 'client_id'], level);

  // Every homelab-* name in any string (the lookup expression, the dead-letter topic, ...).
  const renamed = new Map<string, string>();
  const rename = (name: string) => {
    if (!renamed.has(name)) renamed.set(name, name.replace(/^homelab-/, `e2e-${id}-`));
    return renamed.get(name)!;
  };
  visit(doc, {
    Scalar(_key, node) {
      if (typeof node.value === 'string' && /homelab-/.test(node.value)) node.value = node.value.replace(/homelab-[a-z0-9-]*[a-z0-9]/g, rename);
    },
  });
  const out = doc.getIn(['output']);
  const dlq = doc.getIn(['dead_letter', 'kafka', 'topic']);
  if (!isMap(out) || typeof dlq !== 'string') throw new Error('pipelines/mqtt-bridge.yaml: no output or no kafka dead_letter topic');
  for (const t of Object.values(KIND_TOPIC)) {
    if (!renamed.has(t)) throw new Error(`pipelines/mqtt-bridge.yaml no longer names ${t}; update KIND_TOPIC in ${import.meta.url}`);
  }

  // Partitions as topics.yaml declares them for the originals (configs such as compaction are
  // left out on purpose: duplicates are counted, not compacted away).
  const declared = (parseYaml(readFileSync(join(ROOT, 'topics.yaml'), 'utf8')) as { topics: { name: string; partitions?: number }[] }).topics;
  const topics = [...renamed].map(([original, topic]) => ({ topic, numPartitions: declared.find((t) => t.name === original)?.partitions ?? 1 }));

  const dir = mkdtempSync(join(tmpdir(), 'runner-e2e-bridge-'));
  const file = join(dir, 'mqtt-bridge.yaml');
  writeFileSync(file, doc.toString({ lineWidth: 0 }));
  return {
    id,
    file,
    dir,
    mqttPrefix: `${level}/`,
    clientId: level,
    kafkaTopic: (original) => {
      const topic = renamed.get(original);
      if (!topic) throw new Error(`the pipeline does not name ${original}`);
      return topic;
    },
    outputTopics: Object.values(KIND_TOPIC).map((t) => renamed.get(t)!),
    deadLetterTopic: dlq,
    topics,
  };
}

export async function createTopics(admin: Admin, setup: BridgeSetup): Promise<void> {
  await createTopicsReady(admin, setup.topics);
}

/** Delete the test's topics and its pipeline file. */
export async function deleteTopics(admin: Admin, setup: BridgeSetup): Promise<void> {
  await admin.deleteTopics({ topics: setup.topics.map((t) => t.topic) }).catch(() => undefined);
  rmSync(setup.dir, { recursive: true, force: true });
}

/** Sum of the high watermarks of a topic (records ever written, nothing is deleted in a test). */
export async function recordsIn(admin: Admin, topic: string): Promise<number> {
  const ends = await admin.fetchTopicOffsets(topic);
  return ends.reduce((n, e) => n + Number(e.high), 0);
}

/**
 * Ends a persistent MQTT session left by a test (a clean connect and a disconnect), so the shared
 * Mosquitto does not keep it (and its subscriptions) forever.
 */
export async function dropMqttSession(clientId: string, protocolVersion: 4 | 5 = 5): Promise<void> {
  const c = await mqtt.connectAsync(MQTT_URL, { clientId, clean: true, protocolVersion, reconnectPeriod: 0, connectTimeout: 10_000 });
  await c.endAsync();
}

export interface LogLine {
  level: string;
  msg: string;
  [k: string]: unknown;
}

/** `node bin/runner.mjs start <file>` with RUNNER_HTTP_PORT=0, its JSON log lines collected. */
export class RunnerProcess {
  readonly child: ChildProcess;
  readonly lines: LogLine[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  private rest = '';
  /** Error lines of kafkajs about connections and sends (it retries them itself). */
  kafkaErrors = 0;

  /** `file`: one pipeline file, or several run in one process. */
  constructor(file: string | string[], readonly name: string, env: Record<string, string> = {}) {
    // RUNNER_NODE_ARGS: extra node flags for the runner process (benchmarks: `--cpu-prof --cpu-prof-dir=...`).
    const nodeArgs = (process.env.RUNNER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
    this.child = spawn(process.execPath, [...nodeArgs, join(ROOT, 'bin/runner.mjs'), 'start', ...(Array.isArray(file) ? file : [file])], {
      cwd: ROOT,
      env: { ...process.env, RUNNER_HTTP_PORT: '0', RUNNER_HTTP_HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (chunk: string) => {
      const parts = (this.rest + chunk).split('\n');
      this.rest = parts.pop()!;
      for (const text of parts) this.line(text);
    });
  }

  private line(text: string) {
    if (!text.trim()) return;
    let l: LogLine;
    try {
      l = JSON.parse(text) as LogLine;
    } catch {
      process.stderr.write(`[${this.name}] ${text}\n`);
      return;
    }
    this.lines.push(l);
    // kafkajs logs every refused connection at error level while Kafka is away (dozens per
    // restart): counted (kafkaErrors), shown only with E2E_VERBOSE=1.
    const kafkajsNoise = l.kafka === true && (l.kafka_ns === 'Connection' || l.kafka_ns === 'BrokerPool' || l.kafka_ns === 'Producer');
    if (kafkajsNoise && l.level === 'error') this.kafkaErrors++;
    if (process.env.E2E_VERBOSE || ((l.level === 'error' || l.level === 'fatal') && !kafkajsNoise)) process.stderr.write(`[${this.name}] ${text}\n`);
    this.waiters = this.waiters.filter((w) => (w.pred(l) ? (w.resolve(l), false) : true));
  }

  /** The first log line (already seen or to come) that satisfies `pred`. */
  logged(pred: (l: LogLine) => boolean): Promise<LogLine> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.waiters.push({ pred, resolve }));
  }

  count(pred: (l: LogLine) => boolean): number {
    return this.lines.filter(pred).length;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves once the MQTT subscriptions are granted (the persistent session exists from then on). */
  subscribed(): Promise<LogLine> {
    return this.logged((l) => l.msg === 'mqtt subscribed');
  }

  async kill9(): Promise<void> {
    this.child.kill('SIGKILL');
    const { signal } = await this.exited;
    if (signal !== 'SIGKILL') throw new Error(`${this.name} exited by itself (${signal}) before the SIGKILL`);
  }

  /** SIGTERM: the runner drains (in-flight messages finish, acknowledgements go out) and exits. */
  async stop(): Promise<number | null> {
    if (!this.running) return (await this.exited).code;
    this.child.kill('SIGTERM');
    return (await this.exited).code;
  }
}

/** A failure bound for a wait on events (never a pause that a test relies on). */
export function within<T>(ms: number, what: () => string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`not within ${ms} ms: ${what()}`)), ms);
    }),
  ]);
}

/** The id of a simulator message: its MQTT topic and its seq (a counter per device and kind). */
export const messageId = (mqttTopic: string, seq: unknown) => `${mqttTopic}#${String(seq)}`;

/** Every message id a fleet published periodically (no commands are sent, so nothing else). */
export function publishedIds(fleet: Fleet, prefix: string): Set<string> {
  const ids = new Set<string>();
  for (const d of fleet.devices) {
    for (const kind of KINDS) for (let s = 1; s <= d.seq[kind]; s++) ids.add(messageId(topicOf(kind, d.idOf(kind), prefix), s));
  }
  return ids;
}

/**
 * Reads the bridge's output topics from the beginning, as records arrive. Records are counted once
 * per topic/partition/offset; messages by their MQTT topic (header `mqtt_topic`) and `seq`.
 */
export class KafkaTally {
  /** Message id -> records carrying it. */
  readonly copies = new Map<string, number>();
  /** Problems with a record (wrong topic for its MQTT topic, header missing, key mismatch). */
  readonly problems: string[] = [];
  private readonly offsets = new Set<string>();
  /** topic/partition -> highest offset read. */
  private readonly highest = new Map<string, number>();
  private waiters: { pred: () => boolean; resolve: () => void }[] = [];
  private consumer: Consumer | null = null;
  records = 0;
  /**
   * CreateTime of each record read. The kafka output sets none, so kafkajs stamps each produce
   * request when it encodes it: the time of the write attempt that succeeded.
   */
  readonly timestamps: number[] = [];
  /** Consumer crashes (it restarts by itself): expected while Kafka restarts. */
  crashes = 0;

  constructor(
    private readonly kafka: Kafka,
    private readonly setup: BridgeSetup,
  ) {}

  get distinct(): number {
    return this.copies.size;
  }
  get duplicates(): number {
    return this.records - this.copies.size;
  }

  async start(): Promise<void> {
    const consumer = this.kafka.consumer({ groupId: `e2e-bridge-${this.setup.id}-tally`, sessionTimeout: 10_000, heartbeatInterval: 1_000 });
    this.consumer = consumer;
    consumer.on(consumer.events.CRASH, () => this.crashes++);
    await consumer.connect();
    await consumer.subscribe({ topics: this.setup.outputTopics, fromBeginning: true });
    const kindOfTopic = new Map(Object.entries(KIND_TOPIC).map(([kind, t]) => [this.setup.kafkaTopic(t), kind as Kind]));
    await consumer.run({
      eachMessage: async ({ topic, partition, message }) => {
        const where = `${topic}/${partition}/${message.offset}`;
        const tp = `${topic}/${partition}`;
        this.highest.set(tp, Math.max(this.highest.get(tp) ?? -1, Number(message.offset)));
        if (this.offsets.has(where)) return this.check();
        this.offsets.add(where);
        this.records++;
        this.timestamps.push(Number(message.timestamp));
        const mqttTopic = message.headers?.mqtt_topic?.toString();
        const value = JSON.parse(message.value!.toString()) as { seq?: number; device_id?: string; device_serial?: string; sensor_id?: string };
        if (!mqttTopic || !message.headers?.received_at) this.problems.push(`${where}: header mqtt_topic or received_at missing`);
        else {
          const [, kindLevel, source, stream] = mqttTopic.split('/');
          const kind: Kind = stream === 'settings' ? 'settings' : (kindLevel as Kind);
          if (kindOfTopic.get(topic) !== kind) this.problems.push(`${where}: MQTT topic ${mqttTopic} in the wrong Kafka topic`);
          if (message.key?.toString() !== source) this.problems.push(`${where}: key ${message.key?.toString()} for MQTT topic ${mqttTopic}`);
          if (value.seq === undefined) this.problems.push(`${where}: no seq`);
        }
        const id = messageId(mqttTopic ?? '?', value.seq);
        this.copies.set(id, (this.copies.get(id) ?? 0) + 1);
        this.check();
      },
    });
  }

  private check() {
    this.waiters = this.waiters.filter((w) => (w.pred() ? (w.resolve(), false) : true));
  }

  until(pred: () => boolean): Promise<void> {
    if (pred()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ pred, resolve }));
  }

  /** The earliest CreateTime after `wallMs` (ms since the epoch) among the records read, or null. */
  firstWrittenAfter(wallMs: number): number | null {
    let first: number | null = null;
    for (const t of this.timestamps) if (t > wallMs && (first === null || t < first)) first = t;
    return first;
  }

  /** Resolves once every record up to the topics' current ends has been read. */
  async caughtUp(admin: Admin): Promise<void> {
    const ends: [string, number][] = [];
    for (const topic of this.setup.outputTopics) {
      for (const e of await admin.fetchTopicOffsets(topic)) if (Number(e.high) > 0) ends.push([`${topic}/${e.partition}`, Number(e.high) - 1]);
    }
    await this.until(() => ends.every(([tp, last]) => (this.highest.get(tp) ?? -1) >= last));
  }

  async stop(): Promise<void> {
    await this.consumer?.disconnect();
  }

  /** Ids of `expected` never read, a few of them, for failure messages. */
  missing(expected: Set<string>, max = 5): string[] {
    const out: string[] = [];
    for (const id of expected) {
      if (!this.copies.has(id)) out.push(id);
      if (out.length >= max) break;
    }
    return out;
  }

  /** Ids read that were never published. */
  unexpected(expected: Set<string>): string[] {
    return [...this.copies.keys()].filter((id) => !expected.has(id));
  }
}

/** The pid of a stack server, from its pid file under .stack/. */
export function stackPid(server: 'kafka' | 'mosquitto'): number | null {
  try {
    return Number(readFileSync(join(ROOT, '.stack', server, `${server}.pid`), 'utf8').trim()) || null;
  } catch {
    return null;
  }
}

/**
 * `bash scripts/stack <action> <server>`: stop waits for the process to exit, start until the
 * server answers. Resolves with the time it took; rejects with the script's output on failure.
 */
export function stackServer(action: 'stop' | 'start' | 'restart', server: 'kafka' | 'mosquitto' | 'postgres'): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [join(ROOT, 'scripts/stack'), action, server], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code === 0) resolve(performance.now() - t0);
      else reject(new Error(`scripts/stack ${action} ${server} exited with ${code}:\n${out}`));
    });
  });
}
