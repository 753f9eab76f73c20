/**
 * The bare pass-through the runner bridge is compared with: the same two client libraries, the same
 * delivery guarantee, nothing else.
 *
 *   node --import tsx bench/mqtt-bridge/bare.ts '<json config>'     (started by run.ts)
 *
 * - mqtt.js 5, MQTT 5, persistent session, receive maximum = `window` (as the runner's mqtt input),
 *   the four filters of pipelines/mqtt-bridge.yaml at QoS 1.
 * - At most `window` messages in progress: beyond that mqtt.js's `handleMessage` callback is held,
 *   which stops it from reading the socket (mqtt.js's documented way of back-pressure). The broker's
 *   receive maximum alone is not enough: Mosquitto 2.0.11 stops honouring it once PUBACKs flow (see
 *   receive-maximum-probe.ts).
 * - Each message goes straight through: the Kafka topic from the MQTT topic's kind and stream (a
 *   plain object lookup), the key = the device segment, the value = the payload bytes as received.
 *   No JSON parsing, no validation, no headers.
 * - kafkajs 2 idempotent producer, acks=-1, maxInFlightRequests 1, no compression, the runner's
 *   kafka output batching: a batch at 100 messages or 512 KiB or 10 ms after its first message,
 *   one `sendBatch` at a time. With `client: "platformatic"`: @platformatic/kafka's idempotent
 *   producer instead (acks=-1, Java's partitioner), also one `send` at a time, as the runner's kafka
 *   output with `client: platformatic`.
 * - PUBACK only after Kafka acknowledged the message's batch, in arrival order (at-least-once, like
 *   the runner). mqtt.js has no public API for acknowledging later without stopping reading
 *   (`customHandleAcks` holds the packet loop until it answers), so, like the runner's mqtt input,
 *   this swallows mqtt.js's automatic PUBACK in `_sendPacket` and sends it itself.
 *
 * Prints `ready` on stdout once subscribed and connected to Kafka; stops on SIGTERM after the
 * messages in progress are written and acknowledged.
 */
import { Producer as PlatformaticProducer, compatibilityPartitioner } from '@platformatic/kafka';
import kafkajs, { type Message } from 'kafkajs';
import mqtt, { type IPublishPacket } from 'mqtt';

const { Kafka, Partitioners, CompressionTypes, logLevel } = kafkajs;

interface BareConfig {
  mqttUrl: string;
  clientId: string;
  filters: string[];
  /** Number of leading topic levels before kind/source/stream (the bench prefix). */
  prefixLevels: number;
  /** `kind/stream` -> Kafka topic. */
  topics: Record<string, string>;
  brokers: string[];
  batch: { count: number; bytes: number; periodMs: number };
  /** Messages in progress at most (received, PUBACK not sent yet). */
  window: number;
  client?: 'kafkajs' | 'platformatic';
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as BareConfig;

interface Pending {
  messageId: number;
  topic: string;
  record: Message;
}

/** Write the batch's records with acks=all; one call at a time. */
let sendBatch: (byTopic: Map<string, Message[]>) => Promise<unknown>;
let closeProducer: () => Promise<void>;
if (cfg.client === 'platformatic') {
  const producer = new PlatformaticProducer({ clientId: 'bench-bare', bootstrapBrokers: cfg.brokers, idempotent: true, acks: -1, autocreateTopics: false, partitioner: compatibilityPartitioner, retries: 3, retryDelay: 300 });
  await producer.metadata({ topics: [] });
  closeProducer = () => producer.close();
  sendBatch = (byTopic) =>
    producer.send({
      messages: [...byTopic].flatMap(([topic, records]) => records.map((r) => ({ topic, key: r.key == null ? undefined : Buffer.from(r.key), value: r.value as Buffer }))),
    });
} else {
  const kafka = new Kafka({ clientId: 'bench-bare', brokers: cfg.brokers, logLevel: logLevel.WARN });
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner,
    retry: { retries: 3, initialRetryTime: 300, maxRetryTime: 5_000 },
  });
  await producer.connect();
  closeProducer = () => producer.disconnect();
  sendBatch = (byTopic) => producer.sendBatch({ acks: -1, compression: CompressionTypes.None, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) });
}

const client = mqtt.connect(cfg.mqttUrl, {
  protocolVersion: 5,
  clientId: cfg.clientId,
  clean: false,
  keepalive: 30,
  reconnectPeriod: 500,
  properties: { sessionExpiryInterval: 600, receiveMaximum: cfg.window },
});
type SendPacket = (packet: { cmd: string; messageId?: number; reasonCode?: number }, cb?: (err?: Error) => void, ...rest: unknown[]) => void;
const internals = client as unknown as { _sendPacket: SendPacket };
const send: SendPacket = internals._sendPacket.bind(client);
internals._sendPacket = (packet, cb, ...rest) => (packet.cmd === 'puback' ? cb?.() : send(packet, cb, ...rest));

// Local flow control: hold mqtt.js's per-packet callback while `window` messages are in progress.
let inProgress = 0;
let held: (() => void) | null = null;
client.handleMessage = (_packet, cb) => {
  if (inProgress < cfg.window) cb();
  else held = () => cb();
};
const settled = (n: number) => {
  inProgress -= n;
  if (held && inProgress < cfg.window) {
    const h = held;
    held = null;
    h();
  }
};

let current: Pending[] = [];
let currentBytes = 0;
let timer: NodeJS.Timeout | null = null;
const queue: Pending[][] = [];
let sending = false;
let written = 0;

const flush = () => {
  if (timer) clearTimeout(timer);
  timer = null;
  if (!current.length) return;
  queue.push(current);
  current = [];
  currentBytes = 0;
  void pump();
};

async function pump(): Promise<void> {
  if (sending) return;
  sending = true;
  while (queue.length) {
    const batch = queue[0]!;
    const byTopic = new Map<string, Message[]>();
    for (const p of batch) {
      let list = byTopic.get(p.topic);
      if (!list) byTopic.set(p.topic, (list = []));
      list.push(p.record);
    }
    try {
      await sendBatch(byTopic);
    } catch (err) {
      process.stderr.write(`bare: sendBatch failed, retrying: ${(err as Error).message}\n`);
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    queue.shift();
    written += batch.length;
    if (client.connected) for (const p of batch) send({ cmd: 'puback', messageId: p.messageId, reasonCode: 0 });
    settled(batch.length);
  }
  sending = false;
}

client.on('message', (topic: string, payload: Buffer, packet: IPublishPacket) => {
  const levels = topic.split('/');
  const kind = levels[cfg.prefixLevels];
  const source = levels[cfg.prefixLevels + 1];
  const stream = levels[cfg.prefixLevels + 2];
  const target = cfg.topics[`${kind}/${stream}`];
  if (!target) {
    process.stderr.write(`bare: no Kafka topic for ${topic}\n`);
    send({ cmd: 'puback', messageId: packet.messageId!, reasonCode: 0 });
    return;
  }
  inProgress++;
  current.push({ messageId: packet.messageId!, topic: target, record: { key: source ?? null, value: payload } });
  currentBytes += payload.length;
  if (current.length >= cfg.batch.count || currentBytes >= cfg.batch.bytes) flush();
  else if (current.length === 1) timer = setTimeout(flush, cfg.batch.periodMs);
});

client.on('error', (err) => process.stderr.write(`bare: mqtt error: ${err.message}\n`));
client.once('connect', () => {
  client.subscribe(Object.fromEntries(cfg.filters.map((f) => [f, { qos: 1 as const }])), (err, granted) => {
    if (err || !granted?.every((g) => g.qos === 1)) {
      process.stderr.write(`bare: subscribe failed: ${err?.message ?? JSON.stringify(granted)}\n`);
      process.exit(2);
    }
    process.stdout.write('ready\n');
  });
});

process.on('SIGTERM', () => {
  flush();
  const wait = async () => {
    while (sending || queue.length) await new Promise((r) => setTimeout(r, 20));
    await closeProducer();
    await client.endAsync();
    process.stderr.write(`bare: stopped after writing ${written} messages\n`);
    process.exit(0);
  };
  void wait();
});
