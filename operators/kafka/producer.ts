/**
 * The record producer behind the kafka output, with two clients to choose from (`client`):
 *
 * - `kafkajs` (the default): the client the rest of the kafka operators use.
 * - `platformatic`: @platformatic/kafka, a newer pure-JavaScript client that spends less than half
 *   of kafkajs' CPU per record (docs/benchmarks.md). Its idempotent producer advances its sequence
 *   numbers only when a write is acknowledged, so two writes in flight at once would reuse the same
 *   sequence numbers and the broker would discard the second as a duplicate: this adapter writes one
 *   batch at a time, whatever `max_in_flight` says. It has no zstd on Node.js 20 (lint says so).
 *
 * Both write with acks=all and the idempotent producer; errors are classified by client.ts.
 */
import kafkajs, { type CompressionTypes, type Message } from 'kafkajs';
import { Producer as PlatformaticProducer, compatibilityPartitioner, type MessageToProduce, type ProducerOptions, type SASLMechanismValue } from '@platformatic/kafka';
import type { Logger } from 'pino';
import { kafkaClient, tlsOptions, type KafkaConnection } from './client.ts';

const { Partitioners } = kafkajs;

export type KafkaClientName = 'kafkajs' | 'platformatic';
export type Compression = 'none' | 'gzip' | 'snappy' | 'lz4' | 'zstd';

export interface TopicMessages {
  topic: string;
  messages: Message[];
}

export interface RecordProducer {
  connect(): Promise<void>;
  /** Write the records with acks=all; resolves when every one is acknowledged. */
  send(topicMessages: TopicMessages[]): Promise<void>;
  disconnect(): Promise<void>;
}

export function createProducer(client: KafkaClientName, cfg: KafkaConnection, compression: Compression, kafkajsCompression: CompressionTypes | undefined, log: Logger): RecordProducer {
  return client === 'platformatic' ? platformaticProducer(cfg, compression) : kafkajsProducer(cfg, kafkajsCompression, log);
}

function kafkajsProducer(cfg: KafkaConnection, compression: CompressionTypes | undefined, log: Logger): RecordProducer {
  const producer = kafkaClient(cfg, log).producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner,
    // Few retries inside kafkajs: the output's own loop backs off and retries forever.
    retry: { retries: 3, initialRetryTime: 300, maxRetryTime: 5_000 },
  });
  return {
    connect: () => producer.connect(),
    send: async (topicMessages) => {
      await producer.sendBatch({ acks: -1, compression, topicMessages });
    },
    disconnect: () => producer.disconnect(),
  };
}

const SASL: Record<string, SASLMechanismValue> = { plain: 'PLAIN', 'scram-sha-256': 'SCRAM-SHA-256', 'scram-sha-512': 'SCRAM-SHA-512' };

function platformaticProducer(cfg: KafkaConnection, compression: Compression): RecordProducer {
  const tls = tlsOptions(cfg.tls);
  const options: ProducerOptions<Buffer, Buffer, Buffer, Buffer> = {
    clientId: cfg.client_id,
    bootstrapBrokers: cfg.brokers,
    idempotent: true,
    acks: -1,
    compression,
    autocreateTopics: false,
    // Java's (and kafkajs') murmur2 partitioner: a key lands on the same partition whichever client
    // wrote it (the client's own default differs), so switching clients keeps order per key.
    partitioner: compatibilityPartitioner,
    // Few retries inside the client: the output's own loop backs off and retries forever.
    retries: 3,
    retryDelay: 300,
    connectTimeout: 5_000,
    timeout: 30_000,
  };
  if (tls) options.tls = tls === true ? {} : tls;
  if (cfg.sasl) options.sasl = { mechanism: SASL[cfg.sasl.mechanism]!, username: cfg.sasl.username, password: cfg.sasl.password };
  let producer: PlatformaticProducer<Buffer, Buffer, Buffer, Buffer> | null = null;
  const open = () => (producer ??= new PlatformaticProducer(options));
  /** One write at a time (see the header comment). */
  let last: Promise<unknown> = Promise.resolve();
  const toBuffer = (v: Buffer | string | null | undefined): Buffer | undefined => (v === null || v === undefined ? undefined : Buffer.isBuffer(v) ? v : Buffer.from(v));
  // Header names are the same few on every record: their bytes are made once (the client copies
  // them into the request and never changes them).
  const names = new Map<string, Buffer>();
  const nameBytes = (k: string): Buffer => {
    let b = names.get(k);
    if (b === undefined) {
      if (names.size >= 1_000) names.clear();
      names.set(k, (b = Buffer.from(k)));
    }
    return b;
  };
  return {
    // The client connects on its first request; asking for the cluster's brokers checks that it can.
    connect: async () => {
      await open().metadata({ topics: [] });
    },
    send: (topicMessages) => {
      const messages: MessageToProduce[] = [];
      for (const { topic, messages: records } of topicMessages) {
        for (const r of records) {
          const headers = new Map<Buffer, Buffer>();
          if (r.headers) {
            for (const k in r.headers) {
              const v = r.headers[k];
              if (v !== undefined) headers.set(nameBytes(k), toBuffer(v as Buffer | string)!);
            }
          }
          messages.push({ topic, key: toBuffer(r.key), value: toBuffer(r.value), headers });
        }
      }
      const p = open();
      const write = last.then(() => p.send({ messages }));
      last = write.catch(() => undefined);
      return write.then(() => undefined);
    },
    disconnect: async () => {
      const p = producer;
      producer = null;
      if (p && !p.closed) await p.close();
    },
  };
}
