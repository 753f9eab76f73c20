/**
 * The local stack's Kafka is a real broker with two client listeners: PLAINTEXT (open, where
 * tests run) and SASL_PLAINTEXT with ACLs enforced by the StandardAuthorizer. There the super
 * user `admin` may write (SASL/PLAIN and SCRAM-SHA-256), `limited` (no ACLs) can log in but may
 * not write, and a wrong password is refused.
 * Connection: KAFKA_BROKERS (default 127.0.0.1:9092), KAFKA_SASL_BROKERS (default 127.0.0.1:9094),
 * KAFKA_SASL_ADMIN_PASSWORD / KAFKA_SASL_LIMITED_PASSWORD (scripts/stack env; read from
 * .stack/kafka/credentials when unset).
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import kafkajs, { type SASLOptions } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTopicsReady } from '../../helpers/kafka.ts';

const { Kafka, logLevel } = kafkajs;
const brokers = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
const saslBrokers = (process.env.KAFKA_SASL_BROKERS ?? '127.0.0.1:9094').split(',');

function credential(name: string): string | undefined {
  if (process.env[name]) return process.env[name];
  const file = new URL('../../../.stack/kafka/credentials', import.meta.url);
  if (!existsSync(file)) return undefined;
  return readFileSync(file, 'utf8').match(new RegExp(`^${name}=(.*)$`, 'm'))?.[1];
}
const adminPassword = credential('KAFKA_SASL_ADMIN_PASSWORD');
const limitedPassword = credential('KAFKA_SASL_LIMITED_PASSWORD');
const skipReason = 'no SASL passwords: KAFKA_SASL_*_PASSWORD unset and no .stack/kafka/credentials (run scripts/stack up)';
if (!adminPassword || !limitedPassword) console.warn(`kafka SASL tests skipped: ${skipReason}`);
const test = adminPassword && limitedPassword ? it : it.skip;

const topic = `stack-test-acl-${randomUUID().slice(0, 8)}`;
const open = new Kafka({ clientId: 'stack-test', brokers, logLevel: logLevel.NOTHING });
const admin = open.admin();

const saslClient = (sasl: SASLOptions) =>
  new Kafka({ clientId: 'stack-test-sasl', brokers: saslBrokers, sasl, logLevel: logLevel.NOTHING, retry: { retries: 0 } });

async function produceAs(sasl: SASLOptions, value: string) {
  const producer = saslClient(sasl).producer({ allowAutoTopicCreation: false });
  await producer.connect();
  try {
    return await producer.send({ topic, acks: -1, messages: [{ value }] });
  } finally {
    await producer.disconnect();
  }
}

beforeAll(async () => {
  await admin.connect();
  await createTopicsReady(admin, [{ topic, numPartitions: 1 }]);
});

afterAll(async () => {
  await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  await admin.disconnect();
});

describe('local stack: Kafka', () => {
  it('answers metadata on the open listener and refuses to auto-create unknown topics', async () => {
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    expect(meta.topics[0].partitions).toHaveLength(1);
    const producer = open.producer({ allowAutoTopicCreation: false, retry: { retries: 0 } });
    await producer.connect();
    try {
      await expect(producer.send({ topic: `${topic}-missing`, messages: [{ value: 'x' }] })).rejects.toThrow();
    } finally {
      await producer.disconnect();
    }
  });

  test('lets the super user write over SASL/PLAIN and SCRAM-SHA-256', async () => {
    const plain = await produceAs({ mechanism: 'plain', username: 'admin', password: adminPassword! }, 'plain');
    const scram = await produceAs({ mechanism: 'scram-sha-256', username: 'admin', password: adminPassword! }, 'scram');
    expect(plain[0].errorCode).toBe(0);
    expect(scram[0].errorCode).toBe(0);
    const offsets = await admin.fetchTopicOffsets(topic);
    expect(offsets[0].high).toBe('2');
  });

  test('lets the user without ACLs log in but not write', async () => {
    const err = await produceAs({ mechanism: 'plain', username: 'limited', password: limitedPassword! }, 'denied').then(
      () => undefined,
      (e: any) => e,
    );
    expect(err).toBeDefined();
    // kafkajs: KafkaJSNonRetriableError "Not authorized to access topics: [Topic authorization
    // failed]" caused by the broker's TOPIC_AUTHORIZATION_FAILED
    expect(err.cause?.type ?? err.type).toBe('TOPIC_AUTHORIZATION_FAILED');
    const offsets = await admin.fetchTopicOffsets(topic);
    expect(offsets[0].high).toBe('2');
  });

  test('refuses a wrong password', async () => {
    await expect(produceAs({ mechanism: 'plain', username: 'admin', password: 'wrong' }, 'x')).rejects.toThrow(/SASL|authentication/i);
  });
});
