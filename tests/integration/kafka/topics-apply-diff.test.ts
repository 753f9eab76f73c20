/** `runner topics diff|apply` against the real Kafka: creates, updates configs, grows partitions, refuses to shrink. */
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import kafkajs from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTopics } from '../../../operators/kafka/topics.ts';

const { Kafka, logLevel, ConfigResourceTypes } = kafkajs;
const brokers = process.env.KAFKA_BROKERS ?? '127.0.0.1:9092';
const root = new URL('../../..', import.meta.url).pathname;
const id = randomUUID().slice(0, 8);
const a = `it-topics-${id}-a`;
const b = `it-topics-${id}-b`;
const dir = mkdtempSync(join(tmpdir(), 'topics-'));
const file = join(dir, 'topics.yaml');
const runner = (...args: string[]) => spawnSync(process.execPath, [`${root}bin/runner.mjs`, 'topics', ...args, '-f', file, '--brokers', brokers], { encoding: 'utf8' });
const admin = new Kafka({ clientId: 'it-topics', brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();

const configsOf = async (topic: string, names: string[]) => {
  const res = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: names }] });
  return Object.fromEntries(res.resources[0]!.configEntries.map((e) => [e.configName, e.configValue]));
};
const partitionsOf = async (topic: string) => (await admin.fetchTopicMetadata({ topics: [topic] })).topics[0]!.partitions.length;

describe('runner topics', () => {
  beforeAll(() => admin.connect());
  afterAll(async () => {
    await admin.deleteTopics({ topics: [a, b] }).catch(() => undefined);
    await admin.disconnect();
  });

  it('diff shows, apply creates with configs, a second apply changes nothing, config and partition changes are applied', async () => {
    writeFileSync(file, `topics:\n  - name: ${a}\n    partitions: 2\n    configs: { retention.ms: "3600000", segment.ms: "300000" }\n  - { name: ${b}, partitions: 1 }\n`);
    const diff = runner('diff');
    expect(diff.status).toBe(1);
    expect(diff.stdout).toContain(`+ create ${a} (partitions 2, replication 1, retention.ms=3600000, segment.ms=300000)`);
    expect((await admin.listTopics()).includes(a)).toBe(false);

    const apply = runner('apply');
    expect(apply.status).toBe(0);
    expect(apply.stdout).toContain('2 change(s) applied');
    expect(await partitionsOf(a)).toBe(2);
    expect(await configsOf(a, ['retention.ms', 'segment.ms'])).toEqual({ 'retention.ms': '3600000', 'segment.ms': '300000' });

    expect(runner('apply').stdout).toContain('topics are up to date');
    expect(runner('diff').status).toBe(0);

    writeFileSync(file, `topics:\n  - name: ${a}\n    partitions: 3\n    configs: { retention.ms: "7200000", segment.ms: "300000" }\n  - { name: ${b}, partitions: 1, configs: { cleanup.policy: compact } }\n`);
    const diff2 = runner('diff');
    expect(diff2.stdout.trim().split('\n').sort()).toEqual([`~ ${a}: partitions 2 -> 3`, `~ ${a}: retention.ms 3600000 -> 7200000`, `~ ${b}: cleanup.policy delete -> compact`].sort());
    expect(runner('apply').status).toBe(0);
    expect(await partitionsOf(a)).toBe(3);
    expect(await configsOf(a, ['retention.ms', 'segment.ms'])).toEqual({ 'retention.ms': '7200000', 'segment.ms': '300000' });
    expect(await configsOf(b, ['cleanup.policy'])).toEqual({ 'cleanup.policy': 'compact' });
  });

  it('refuses to shrink partitions: an error naming the topic, exit 1, nothing changed', async () => {
    writeFileSync(file, `topics:\n  - name: ${a}\n    partitions: 1\n    configs: { retention.ms: "1000" }\n`);
    const apply = runner('apply');
    expect(apply.status).toBe(1);
    expect(apply.stderr).toContain(`! ${a}: has 3 partitions, topics.yaml says 1`);
    expect(apply.stderr).toContain('nothing was changed');
    expect(await configsOf(a, ['retention.ms'])).toEqual({ 'retention.ms': '7200000' });
  });

  it('reports a bad topics file with file:line:col and exit 2, without connecting', () => {
    writeFileSync(file, `topics:\n  - name: ok\n    partitons: 3\n`);
    const r = runner('apply');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/topics\.yaml:3:5: unknown field "partitons"; did you mean "partitions"\?/);
  });

  it('the project topics.yaml declares every topic of the stack and validates', () => {
    const { topics, problems } = loadTopics(join(root, 'topics.yaml'), join(root, 'schemas', 'topics.schema.json'), {});
    expect(problems).toEqual([]);
    const byName = Object.fromEntries(topics.map((t) => [t.name, t]));
    for (const name of ['homelab-heatpump-telemetry', 'homelab-energy-realtime', 'homelab-temperature', 'homelab-heatpump-settings', 'heatpump-realtime', 'energy-realtime', 'homelab-dead-letter', 'user.verified', 'journey.created', 'journey.matched', 'ticket.uploaded', 'delay.detected', 'delay.updated', 'cleanup.completed']) {
      expect(byName[name], name).toBeDefined();
    }
    expect(byName['heatpump-realtime']).toMatchObject({ partitions: 1, configs: { 'retention.ms': '3600000', 'segment.ms': '300000' } });
    expect(byName['energy-realtime']!.configs).toMatchObject({ 'retention.ms': '86400000', 'segment.ms': '900000' });
  });

  it('apply of the project topics.yaml leaves every topic with its partitions and configs, as the admin API describes them', async () => {
    const real = join(root, 'topics.yaml');
    const r = spawnSync(process.execPath, [`${root}bin/runner.mjs`, 'topics', 'apply', '-f', real, '--brokers', brokers], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    const { topics } = loadTopics(real, join(root, 'schemas', 'topics.schema.json'));
    for (const t of topics) {
      expect(await partitionsOf(t.name), t.name).toBe(t.partitions);
      expect(await configsOf(t.name, Object.keys(t.configs)), t.name).toEqual(t.configs);
    }
  });
});
