/**
 * topics.yaml and `runner topics apply|diff|list`: declarative Kafka topics.
 * apply creates missing topics, adds partitions, and sets the declared configs; it never deletes a
 * topic or a config it does not know. A topic that would need fewer partitions is an error.
 */
import { readFileSync } from 'node:fs';
import kafkajs, { type Admin } from 'kafkajs';
import { parseYamlWithEnv, validateParsed, type Problem } from '../../core/config.ts';

const { ConfigResourceTypes } = kafkajs;

export interface TopicSpec {
  name: string;
  partitions: number;
  replicationFactor: number;
  configs: Record<string, string>;
}

export function loadTopics(file: string, schemaFile: string, env?: Record<string, string | undefined>): { topics: TopicSpec[]; problems: Problem[] } {
  const parsed = parseYamlWithEnv(file, { env });
  if (!parsed.doc) return { topics: [], problems: parsed.problems };
  const problems = [...parsed.problems, ...validateParsed(parsed, JSON.parse(readFileSync(schemaFile, 'utf8')))];
  const d = parsed.data ?? {};
  const defaults = d.defaults ?? {};
  const topics: TopicSpec[] = (Array.isArray(d.topics) ? d.topics : []).map((t: any) => ({
    name: t.name,
    partitions: Number(t.partitions ?? defaults.partitions ?? 1),
    replicationFactor: Number(t.replication_factor ?? defaults.replication_factor ?? 1),
    configs: Object.fromEntries(Object.entries({ ...(defaults.configs ?? {}), ...(t.configs ?? {}) }).map(([k, v]) => [k, String(v)])),
  }));
  const seen = new Set<string>();
  topics.forEach((t, i) => {
    if (seen.has(t.name)) problems.push(parsed.loc.problem(['topics', i, 'name'], `topic ${t.name} is declared twice`));
    seen.add(t.name);
  });
  return { topics, problems };
}

export type TopicChange =
  | { kind: 'create'; topic: TopicSpec }
  | { kind: 'partitions'; topic: string; from: number; to: number }
  | { kind: 'config'; topic: string; key: string; from: string | undefined; to: string }
  | { kind: 'error'; topic: string; message: string };

export async function planTopics(admin: Admin, wanted: TopicSpec[]): Promise<TopicChange[]> {
  const existing = new Set(await admin.listTopics());
  const changes: TopicChange[] = [];
  const present = wanted.filter((t) => existing.has(t.name));
  for (const t of wanted) if (!existing.has(t.name)) changes.push({ kind: 'create', topic: t });
  if (!present.length) return changes;
  const meta = await admin.fetchTopicMetadata({ topics: present.map((t) => t.name) });
  const described = await admin.describeConfigs({
    includeSynonyms: false,
    resources: present.map((t) => ({ type: ConfigResourceTypes.TOPIC, name: t.name, configNames: Object.keys(t.configs) })),
  });
  for (const t of present) {
    const m = meta.topics.find((x) => x.name === t.name);
    const have = m?.partitions.length ?? 0;
    if (have > t.partitions) changes.push({ kind: 'error', topic: t.name, message: `has ${have} partitions, topics.yaml says ${t.partitions}: Kafka cannot reduce partitions; raise the number in topics.yaml or recreate the topic by hand` });
    else if (have < t.partitions) changes.push({ kind: 'partitions', topic: t.name, from: have, to: t.partitions });
    const replicas = m?.partitions[0]?.replicas.length;
    if (replicas !== undefined && replicas !== t.replicationFactor) {
      changes.push({ kind: 'error', topic: t.name, message: `has replication factor ${replicas}, topics.yaml says ${t.replicationFactor}: changing it needs a partition reassignment, which apply does not do` });
    }
    const res = described.resources.find((r) => r.resourceName === t.name);
    for (const [key, value] of Object.entries(t.configs)) {
      const current = res?.configEntries.find((e) => e.configName === key)?.configValue;
      if (current !== value) changes.push({ kind: 'config', topic: t.name, key, from: current, to: value });
    }
  }
  return changes;
}

export function describeChange(c: TopicChange): string {
  switch (c.kind) {
    case 'create':
      return `+ create ${c.topic.name} (partitions ${c.topic.partitions}, replication ${c.topic.replicationFactor}${Object.keys(c.topic.configs).length ? `, ${Object.entries(c.topic.configs).map(([k, v]) => `${k}=${v}`).join(', ')}` : ''})`;
    case 'partitions':
      return `~ ${c.topic}: partitions ${c.from} -> ${c.to}`;
    case 'config':
      return `~ ${c.topic}: ${c.key} ${c.from ?? '(default)'} -> ${c.to}`;
    case 'error':
      return `! ${c.topic}: ${c.message}`;
  }
}

/** Apply a plan (errors are not applied; the caller reports them and exits non-zero). */
export async function applyTopics(admin: Admin, wanted: TopicSpec[], changes: TopicChange[]): Promise<void> {
  const creates = changes.flatMap((c) => (c.kind === 'create' ? [c.topic] : []));
  if (creates.length) {
    await admin.createTopics({
      waitForLeaders: true,
      topics: creates.map((t) => ({ topic: t.name, numPartitions: t.partitions, replicationFactor: t.replicationFactor, configEntries: Object.entries(t.configs).map(([name, value]) => ({ name, value })) })),
    });
  }
  const grow = changes.flatMap((c) => (c.kind === 'partitions' ? [{ topic: c.topic, count: c.to }] : []));
  if (grow.length) await admin.createPartitions({ topicPartitions: grow });
  const touched = new Set(changes.flatMap((c) => (c.kind === 'config' ? [c.topic] : [])));
  if (touched.size) {
    // kafkajs alterConfigs replaces a topic's dynamic configs: send every declared one, and keep
    // dynamic configs set outside topics.yaml as they are.
    const current = await admin.describeConfigs({ includeSynonyms: false, resources: [...touched].map((name) => ({ type: ConfigResourceTypes.TOPIC, name })) });
    await admin.alterConfigs({
      validateOnly: false,
      resources: [...touched].map((name) => {
        const t = wanted.find((w) => w.name === name)!;
        const keep = (current.resources.find((r) => r.resourceName === name)?.configEntries ?? [])
          .filter((e) => !e.isDefault && !e.readOnly && (e as { configSource?: number }).configSource === 1 && !(e.configName in t.configs))
          .map((e) => ({ name: e.configName, value: e.configValue }));
        return { type: ConfigResourceTypes.TOPIC, name, configEntries: [...keep, ...Object.entries(t.configs).map(([n, v]) => ({ name: n, value: v }))] };
      }),
    });
  }
}
