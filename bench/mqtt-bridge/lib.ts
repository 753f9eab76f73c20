/**
 * What bench/mqtt-bridge/run.ts needs: the bench pipelines (derived from pipelines/mqtt-bridge.yaml),
 * /proc sampling (re-exported from bench/lib/proc.ts), percentiles, and reading the bench topics
 * back with a Kafka consumer.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import kafkajs, { type Admin, type Kafka } from 'kafkajs';
import { isScalar, isSeq, parse as parseYaml, parseDocument, visit } from 'yaml';

const { Kafka: KafkaClient, logLevel } = kafkajs;

export const ROOT = new URL('../..', import.meta.url).pathname;
export const BROKERS = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
export const MQTT_URL = process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883';

export const kafkaClient = (clientId: string): Kafka => new KafkaClient({ clientId, brokers: BROKERS, logLevel: logLevel.NOTHING });

/** The MQTT topic filters of pipelines/mqtt-bridge.yaml (the simulator publishes on exactly these). */
export const BRIDGE_FILTERS = ['heatpump/+/telemetry', 'heatpump/+/settings', 'energy/+/telemetry', 'temperature/+/telemetry'];

export interface BenchTopics {
  /** `kind/stream` of the MQTT topic -> Kafka topic. */
  byKindStream: Record<string, string>;
  deadLetter: string;
  /** Every topic to create, with its partitions (as topics.yaml declares the originals). */
  create: { topic: string; numPartitions: number }[];
}

const declaredPartitions = (): Map<string, number> => {
  const doc = parseYaml(readFileSync(join(ROOT, 'topics.yaml'), 'utf8')) as { topics: { name: string; partitions?: number }[] };
  return new Map(doc.topics.map((t) => [t.name, t.partitions ?? 1]));
};

/** homelab-* topic of the real pipeline for each `kind/stream` (its `$lookup` table). */
const ORIGINAL_BY_KIND_STREAM: Record<string, string> = {
  'heatpump/telemetry': 'homelab-heatpump-telemetry',
  'heatpump/settings': 'homelab-heatpump-settings',
  'energy/telemetry': 'homelab-energy-realtime',
  'temperature/telemetry': 'homelab-temperature',
};

/** Bench topic for an original `homelab-*` name: `bench-mb-<id>-*`. */
export const benchTopicName = (id: string, original: string) => original.replace(/^homelab-/, `bench-mb-${id}-`);

export function benchTopics(id: string): BenchTopics {
  const parts = declaredPartitions();
  const byKindStream = Object.fromEntries(Object.entries(ORIGINAL_BY_KIND_STREAM).map(([ks, t]) => [ks, benchTopicName(id, t)]));
  const deadLetter = benchTopicName(id, 'homelab-dead-letter');
  const create = [
    ...Object.values(ORIGINAL_BY_KIND_STREAM).map((t) => ({ topic: benchTopicName(id, t), numPartitions: parts.get(t) ?? 3 })),
    { topic: deadLetter, numPartitions: parts.get('homelab-dead-letter') ?? 1 },
  ];
  return { byKindStream, deadLetter, create };
}

export type Variant = 'runner' | 'minimal';

/**
 * The bench pipeline file's text.
 *
 * - `runner`: pipelines/mqtt-bridge.yaml itself, changed only where the bench must be isolated from
 *   everything else on the shared stack: a first MQTT topic level `bench-mb-<id>` in its filters and
 *   topic pattern, its own MQTT client id, every `homelab-*` Kafka topic renamed to `bench-mb-<id>-*`,
 *   and a session expiry of 10 minutes (instead of 7 days) so that the broker forgets the bench's
 *   sessions soon after. Every processor and every other setting stays as it is.
 * - `minimal`: the same input and the same Kafka output settings, no processors at all: the topic
 *   and key come from the MQTT topic's metadata in the output's own `topic` and `key` fields (plain
 *   `$meta.x` paths, which the runner evaluates without JSONata).
 */
export function benchPipeline(variant: Variant, id: string): string {
  const level = `bench-mb-${id}`;
  const doc = parseDocument(readFileSync(join(ROOT, 'pipelines/mqtt-bridge.yaml'), 'utf8'));
  const filters = doc.getIn(['input', 'mqtt', 'topics']);
  if (!isSeq(filters) || !filters.items.length) throw new Error('pipelines/mqtt-bridge.yaml: input.mqtt.topics is not a list');
  const original = filters.items.map((f) => String(isScalar(f) ? f.value : f));
  if (original.join() !== BRIDGE_FILTERS.join()) throw new Error(`pipelines/mqtt-bridge.yaml subscribes to ${original.join(', ')}; update BRIDGE_FILTERS in bench/mqtt-bridge/lib.ts`);
  doc.setIn(['input', 'mqtt', 'topics'], original.map((f) => `${level}/${f}`));
  const pattern = doc.getIn(['input', 'mqtt', 'topic_pattern']);
  if (typeof pattern !== 'string' || !pattern) throw new Error('pipelines/mqtt-bridge.yaml: input.mqtt.topic_pattern is missing');
  doc.setIn(['input', 'mqtt', 'topic_pattern'], `${level}/${pattern}`);
  doc.setIn(['input', 'mqtt', 'client_id'], `${level}-${variant}`);
  doc.setIn(['input', 'mqtt', 'session_expiry'], '10m');
  doc.setIn(['name'], `bench-mqtt-bridge-${variant}`);
  visit(doc, {
    Scalar(_key, node) {
      if (typeof node.value === 'string' && /homelab-/.test(node.value)) node.value = node.value.replace(/homelab-[a-z0-9-]*[a-z0-9]/g, (t) => benchTopicName(id, t));
    },
  });
  if (variant === 'minimal') {
    doc.deleteIn(['pipeline']);
    // kind/stream -> topic without a lookup: four topics named after the MQTT topic's levels.
    doc.setIn(['output', 'kafka', 'topic'], `bench-mb-${id}-min-\${! $meta.mqtt_topic_kind }-\${! $meta.mqtt_topic_stream }`);
    doc.setIn(['output', 'kafka', 'key'], '$meta.mqtt_topic_source');
  }
  return doc.toString();
}

/** Topics the minimal variant writes to (its output template gives `bench-mb-<id>-min-<kind>-<stream>`). */
export function minimalTopics(id: string, topics: BenchTopics): BenchTopics {
  const byKindStream = Object.fromEntries(Object.keys(topics.byKindStream).map((ks) => [ks, `bench-mb-${id}-min-${ks.replace('/', '-')}`]));
  return {
    byKindStream,
    deadLetter: topics.deadLetter,
    create: [...Object.values(byKindStream).map((topic) => ({ topic, numPartitions: 3 })), { topic: topics.deadLetter, numPartitions: 1 }],
  };
}

export async function createTopics(admin: Admin, topics: BenchTopics): Promise<void> {
  // LogAppendTime: each record carries the time the broker appended it, i.e. "arrived in Kafka".
  const ok = await admin.createTopics({
    waitForLeaders: true,
    topics: topics.create.map((t) => ({ ...t, replicationFactor: 1, configEntries: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }] })),
  });
  if (!ok) throw new Error(`topics ${topics.create.map((t) => t.topic).join(', ')} existed already`);
}

export async function deleteTopics(admin: Admin, topics: BenchTopics): Promise<void> {
  await admin.deleteTopics({ topics: topics.create.map((t) => t.topic) }).catch(() => undefined);
}

/** Records in the topics (sum of high - low watermarks). */
export async function countRecords(admin: Admin, topics: string[]): Promise<number> {
  let n = 0;
  for (const t of topics) for (const p of await admin.fetchTopicOffsets(t)) n += Number(p.high) - Number(p.low);
  return n;
}

// ---------------------------------------------------------------------------------------------
// /proc sampling: shared with the other benchmarks (bench/lib/proc.ts)

export { CLK_TCK, Sampler, cpuTicks, loadavg, machineTicks, memory, readPid, type Sample } from '../lib/proc.ts';

// ---------------------------------------------------------------------------------------------
// Statistics

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (!sorted.length) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export function median(values: number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

export function latencyStats(values: number[]): { n: number; p50: number; p95: number; p99: number; max: number; mean: number } {
  const sorted = Float64Array.from(values).sort();
  const mean = values.reduce((a, b) => a + b, 0) / (values.length || 1);
  return { n: values.length, p50: percentile(sorted, 50), p95: percentile(sorted, 95), p99: percentile(sorted, 99), max: sorted.length ? sorted[sorted.length - 1]! : NaN, mean };
}

// ---------------------------------------------------------------------------------------------
// Reading the bench topics back

export interface Record_ {
  /** LogAppendTime: when the broker appended the record (ms). */
  appendMs: number;
  /** The simulator's `timestamp` in the payload (ms): when it built and published the message. */
  publishMs: number;
  /** For duplicates: topic, key and the simulator's per-device, per-kind `seq`. */
  id: string;
}

const TS = /"timestamp":(\d+(?:\.\d+)?)/;
const SEQ = /"seq":(\d+)/;

/** Every record of `topics` up to their high watermarks at the time of the call. */
export async function readBack(kafka: Kafka, admin: Admin, topics: string[], groupId: string, timeoutMs = 300_000): Promise<{ records: Record_[]; unparsable: number }> {
  const targets = new Map<string, bigint>();
  let expected = 0;
  for (const t of topics) {
    for (const p of await admin.fetchTopicOffsets(t)) {
      if (Number(p.high) > Number(p.low)) {
        targets.set(`${t}:${p.partition}`, BigInt(p.high));
        expected += Number(p.high) - Number(p.low);
      }
    }
  }
  const records: Record_[] = [];
  let unparsable = 0;
  if (expected === 0) return { records, unparsable };
  const consumer = kafka.consumer({ groupId, maxBytesPerPartition: 16 << 20, maxBytes: 64 << 20, maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topics, fromBeginning: true });
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read back ${records.length + unparsable} of ${expected} records within ${timeoutMs} ms`)), timeoutMs);
    const finished = new Set<string>();
    void consumer.run({
      partitionsConsumedConcurrently: 4,
      eachBatch: async ({ batch }) => {
        const tp = `${batch.topic}:${batch.partition}`;
        const target = targets.get(tp);
        for (const m of batch.messages) {
          if (target !== undefined && BigInt(m.offset) >= target) break;
          const text = m.value?.toString('latin1') ?? '';
          const ts = TS.exec(text);
          const seq = SEQ.exec(text);
          if (!ts) {
            unparsable++;
            continue;
          }
          records.push({ appendMs: Number(m.timestamp), publishMs: Math.round(Number(ts[1]) * 1000), id: `${batch.topic}|${m.key?.toString() ?? ''}|${seq?.[1] ?? m.offset}` });
        }
        if (target !== undefined && BigInt(batch.highWatermark) >= target && BigInt(batch.lastOffset()) + 1n >= target) finished.add(tp);
        if (finished.size === targets.size) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  try {
    await done;
  } finally {
    await consumer.disconnect().catch(() => undefined);
    await admin.deleteGroups([groupId]).catch(() => undefined);
  }
  return { records, unparsable };
}
