/**
 * What the end-to-end tests of the sink pipelines share:
 *
 * - `isolatedPipeline()` writes a pipelines/<name>.yaml with every `homelab-*` Kafka topic renamed
 *   to a topic of its own (in every string: topic lists, switch checks, lookups, the dead-letter
 *   topic), so that a test neither reads nor writes the shared topics;
 * - a fresh database migrated with one folder of migrations/;
 * - telemetry payloads with a unique (device, time) each, produced in big batches;
 * - `caughtUp()`: the consumer group has committed every partition up to its end, so nothing more
 *   will be written by the sink.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Admin, Producer } from 'kafkajs';
import { parse as parseYaml, parseDocument, visit } from 'yaml';
import { migrateDatabase } from '../../operators/postgres/migrate.ts';
import { createTopicsReady } from '../helpers/kafka.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.ts';
import { ROOT } from './mqtt-bridge-harness.ts';

export interface IsolatedPipeline {
  file: string;
  dir: string;
  /** Original topic name (homelab-...) -> this test's topic. */
  topic(original: string): string;
  topics: { topic: string; numPartitions: number }[];
  cleanup(admin: Admin): Promise<void>;
}

export function isolatedPipeline(name: string, id: string): IsolatedPipeline {
  const doc = parseDocument(readFileSync(join(ROOT, `pipelines/${name}.yaml`), 'utf8'));
  const renamed = new Map<string, string>();
  visit(doc, {
    Scalar(_key, node) {
      if (typeof node.value !== 'string' || !node.value.includes('homelab-')) return;
      node.value = node.value.replace(/homelab-[a-z0-9-]*[a-z0-9]/g, (t) => {
        if (!renamed.has(t)) renamed.set(t, t.replace(/^homelab-/, `e2e-${id}-`));
        return renamed.get(t)!;
      });
    },
  });
  const declared = (parseYaml(readFileSync(join(ROOT, 'topics.yaml'), 'utf8')) as { topics: { name: string; partitions?: number }[] }).topics;
  const topics = [...renamed].map(([original, topic]) => ({ topic, numPartitions: declared.find((t) => t.name === original)?.partitions ?? 1 }));
  const dir = mkdtempSync(join(tmpdir(), `runner-e2e-${name}-`));
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, doc.toString({ lineWidth: 0 }));
  return {
    file,
    dir,
    topics,
    topic(original) {
      const t = renamed.get(original);
      if (!t) throw new Error(`pipelines/${name}.yaml does not name ${original}`);
      return t;
    },
    async cleanup(admin) {
      await admin.deleteTopics({ topics: topics.map((t) => t.topic) }).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function createPipelineTopics(admin: Admin, p: IsolatedPipeline): Promise<void> {
  await createTopicsReady(admin, p.topics);
}

export async function migratedDatabase(folder: string): Promise<TestDatabase> {
  const db = await createTestDatabase(`e2e_${folder}`);
  await migrateDatabase({ database: folder, url: db.url, mode: 'plain' });
  return db;
}

const T0 = 1_700_000_000;

/** Heat-pump, energy and temperature payloads number `from` .. `to - 1` (unique device and time). */
export function telemetry(kind: 'heatpump' | 'energy' | 'temperature', from: number, to: number, devices = 10): { key: string; value: string }[] {
  const out: { key: string; value: string }[] = [];
  for (let i = from; i < to; i++) {
    const n = i % devices;
    const timestamp = T0 + Math.floor(i / devices);
    if (kind === 'heatpump') {
      const device_id = `device-${String(n + 1).padStart(3, '0')}`;
      out.push({ key: device_id, value: JSON.stringify({ device_id, timestamp, d0: 5.2, d4: 1, d5: 35 + (i % 7), d6: 30.5, indoor_target_temp: 21.5, mode: 1, seq: i }) });
    } else if (kind === 'energy') {
      const device_serial = `meter-${String(n + 1).padStart(3, '0')}`;
      out.push({ key: device_serial, value: JSON.stringify({ device_serial, timestamp, active_power_total: 2000 + (i % 500), energy_import_total: 16000 + i / 1000, seq: i }) });
    } else {
      const sensor_id = `sensor-${String(n + 1).padStart(3, '0')}`;
      out.push({ key: sensor_id, value: JSON.stringify({ sensor_id, timestamp, temperature: 20 + (i % 40) / 10, humidity: 45, seq: i }) });
    }
  }
  return out;
}

export async function produceAll(producer: Producer, topic: string, messages: { key: string; value: string }[]): Promise<void> {
  for (let i = 0; i < messages.length; i += 2000) {
    await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 2000) });
  }
}

/** Whether `group` has committed every partition of `topics` up to the partition's end. */
export async function caughtUp(admin: Admin, group: string, topics: string[]): Promise<boolean> {
  const committed = await admin.fetchOffsets({ groupId: group, topics });
  for (const t of committed) {
    const ends = await admin.fetchTopicOffsets(t.topic);
    for (const e of ends) {
      const c = t.partitions.find((p) => p.partition === e.partition);
      if (Number(e.high) > 0 && (!c || Number(c.offset) < Number(e.high))) return false;
    }
  }
  return true;
}

/** Re-check `pred` every `everyMs` until it holds (a poll of observable state, not a pause). */
export async function poll(pred: () => Promise<boolean>, what: () => string, timeoutMs = 120_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what()}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
