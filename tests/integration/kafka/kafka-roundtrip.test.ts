/**
 * The kafka output and input against a real Kafka (scripts/stack; KAFKA_BROKERS, default
 * 127.0.0.1:9092). Every test makes its own topics (auto topic creation is off) and consumer
 * groups. Nothing sleeps: tests wait for messages, acks and close hooks.
 */
import { randomUUID } from 'node:crypto';
import zlib from 'node:zlib';
import { createServer, connect, type Socket } from 'node:net';
import { Value } from '@sinclair/typebox/value';
import kafkajs from 'kafkajs';
import pino from 'pino';
import { BehaviorSubject, ReplaySubject, Subject, filter, firstValueFrom, from, take, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunnerError } from '../../../core/errors.ts';
import { createMsg, type Msg } from '../../../core/message.ts';
import { kafka as kafkaInput } from '../../../operators/kafka/input.ts';
import { kafka as kafkaOutput } from '../../../operators/kafka/output.ts';
import { testContext, type TestContext } from '../../helpers/context.ts';
import { createTopicsReady } from '../../helpers/kafka.ts';

const { Kafka, logLevel } = kafkajs;
const brokers = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
const runId = randomUUID().slice(0, 8);
const client = new Kafka({ clientId: 'kafka-roundtrip-test', brokers, logLevel: logLevel.NOTHING });
const admin = client.admin();
const producer = client.producer({ idempotent: true, maxInFlightRequests: 1 });
const topics: string[] = [];

type OutputConfig = Parameters<typeof kafkaOutput.create>[0];
type InputConfig = Parameters<typeof kafkaInput.create>[0];
const outputConfig = (c: Partial<OutputConfig>): OutputConfig => Value.Default(kafkaOutput.spec.config, { brokers, ...c }) as OutputConfig;
const inputConfig = (c: Partial<InputConfig>): InputConfig => Value.Default(kafkaInput.spec.config, { brokers, commit_period: '100ms', ...c }) as InputConfig;

async function newTopic(name: string, partitions = 1, configs: Record<string, string> = {}): Promise<string> {
  const topic = `it-kafka-${name}-${runId}`;
  await createTopicsReady(admin, [{ topic, numPartitions: partitions, configEntries: Object.entries(configs).map(([k, v]) => ({ name: k, value: v })) }]);
  topics.push(topic);
  return topic;
}

/** Every readiness change of a context, as a stream (the test context keeps only the last one). */
function readiness(ctx: TestContext) {
  const changes$ = new ReplaySubject<{ ready: boolean; reason?: string }>();
  const set = ctx.setReady;
  ctx.setReady = (ready, reason) => {
    set(ready, reason);
    changes$.next({ ready, reason });
  };
  return changes$;
}

/** Messages through the kafka output; resolves with what it emitted (= acknowledged by Kafka). */
async function write(cfg: Partial<OutputConfig>, msgs: Msg[]) {
  const ctx = testContext({ component: 'kafka-out' });
  const out = await firstValueFrom(from(msgs).pipe(kafkaOutput.create(outputConfig(cfg), ctx), toArray()));
  await ctx.close();
  return { out, ctx };
}

/** A running kafka input: what it handed out, a way to wait for more, and stop = stop$ + close hooks. */
function read(cfg: Partial<InputConfig>, onMsg?: (m: Msg) => void) {
  const ctx = testContext({ component: `kafka-in-${randomUUID().slice(0, 4)}` });
  const ready$ = readiness(ctx);
  // The input's debug log lines, to wait for events such as a commit.
  const logs$ = new ReplaySubject<{ msg: string; [k: string]: unknown }>();
  ctx.logger = pino({ level: 'debug' }, { write: (line: string) => logs$.next(JSON.parse(line)) });
  const received: Msg[] = [];
  const count$ = new BehaviorSubject(0);
  let completed = false;
  const sub = kafkaInput.create(inputConfig(cfg), ctx).subscribe({
    next(m) {
      received.push(m);
      onMsg?.(m);
      count$.next(received.length);
    },
    complete: () => (completed = true),
  });
  return {
    ctx,
    received,
    /** Resolves when the input logged a commit of `offset` for a partition. */
    committedLog: (offset: number) =>
      firstValueFrom(logs$.pipe(filter((l) => l.msg === 'offsets committed' && (l.offsets as { offset: number }[]).some((o) => o.offset === offset)))),
    /** Resolves when the consumer joined its group for the n-th time (each join sets it ready). */
    joined: (n: number) => firstValueFrom(ready$.pipe(filter((r) => r.ready), take(n), toArray())),
    until: (n: number) => firstValueFrom(count$.pipe(filter((c) => c >= n))),
    async stop() {
      ctx.stopSubject.next();
      expect(completed).toBe(true);
      await ctx.close();
      sub.unsubscribe();
    },
  };
}

async function committed(groupId: string, topic: string): Promise<Record<number, string>> {
  const res = await admin.fetchOffsets({ groupId, topics: [topic] });
  return Object.fromEntries(res[0]!.partitions.map((p) => [p.partition, p.offset]));
}

const produceRaw = (topic: string, values: (string | Buffer)[]) =>
  producer.send({ topic, acks: -1, messages: values.map((value, i) => ({ key: `k${i}`, value })) });

const offsets = (msgs: Msg[]) => msgs.map((m) => m.meta.kafka_offset);

beforeAll(async () => {
  await admin.connect();
  await producer.connect();
});

afterAll(async () => {
  await producer.disconnect();
  if (topics.length) await admin.deleteTopics({ topics }).catch(() => undefined);
  await admin.disconnect();
});

/** The output's two clients (`client`); each output test runs with both. */
const CLIENTS = ['kafkajs', 'platformatic'] as const;

describe('kafka output -> kafka input', () => {
  it.each(CLIENTS)('reads back what the output (client %s) wrote, with keys, headers and meta, in order per key', async (client) => {
    const topic = await newTopic(`roundtrip-${client}`, 3);
    const msgs = Array.from({ length: 12 }, (_, i) =>
      createMsg({ device_id: `device-${i % 3}`, seq: i }, { headers: { trace: `t-${i}` } }),
    );
    const { out, ctx: outCtx } = await write({ topic, key: 'device_id', client }, msgs);
    expect(out.map((m) => (m.value as { seq: number }).seq)).toEqual(msgs.map((_, i) => i));
    expect(outCtx.rejected).toEqual([]);
    expect(outCtx.ready.ready).toBe(true);

    const group = `it-roundtrip-${client}-${runId}`;
    const input = read({ topics: [topic], consumer_group: group, start_from: 'earliest' }, (m) => m.ack.done());
    await input.until(12);
    expect(input.ctx.ready.ready).toBe(true);
    const got = input.received;
    expect(got.map((m) => (m.value as { seq: number }).seq).sort((a, b) => a - b)).toEqual(msgs.map((_, i) => i));
    const partitionOf = new Map<string, number>();
    for (const m of got) {
      const v = m.value as { device_id: string; seq: number };
      expect(m.key).toBe(v.device_id);
      expect(m.headers).toEqual({ trace: `t-${v.seq}` });
      expect(m.meta).toMatchObject({ kafka_topic: topic, kafka_key: v.device_id });
      expect(typeof m.meta.kafka_offset).toBe('number');
      expect(typeof m.meta.kafka_timestamp).toBe('number');
      // One key, one partition.
      const p = m.meta.kafka_partition as number;
      expect(partitionOf.get(v.device_id) ?? p).toBe(p);
      partitionOf.set(v.device_id, p);
    }
    // Order per key is the order written.
    for (const device of partitionOf.keys()) {
      const seqs = got.filter((m) => m.key === device).map((m) => (m.value as { seq: number }).seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    }
    // Consumer lag per partition: everything read.
    const lag = await input.ctx.metricsRegistry.registry.getSingleMetric('runner_kafka_consumer_lag')!.get();
    const ours = lag.values.filter((v) => v.labels.topic === topic);
    expect(ours.length).toBeGreaterThan(0);
    expect(ours.every((v) => v.value === 0)).toBe(true);

    await input.stop();
    const c = await committed(group, topic);
    const ends = await admin.fetchTopicOffsets(topic);
    // Every partition with messages is committed to its end; an empty one has nothing to commit.
    for (const e of ends) expect(c[e.partition]).toBe(e.high === '0' ? '-1' : e.high);
  });

  it('both clients put a key on the same partition (Java\'s murmur2 partitioner), so switching clients keeps order per key', async () => {
    const partitionsByClient: Record<string, Record<string, number>> = {};
    for (const client of CLIENTS) {
      const topic = await newTopic(`partitioner-${client}`, 6);
      const msgs = Array.from({ length: 30 }, (_, i) => createMsg({ device_id: `device-${String(i).padStart(3, '0')}` }));
      await write({ topic, key: 'device_id', client }, msgs);
      const input = read({ topics: [topic], consumer_group: `it-partitioner-${client}-${runId}`, start_from: 'earliest' }, (m) => m.ack.done());
      await input.until(30);
      partitionsByClient[client] = Object.fromEntries(input.received.map((m) => [m.key, m.meta.kafka_partition as number]));
      await input.stop();
    }
    expect(new Set(Object.values(partitionsByClient.kafkajs!)).size).toBeGreaterThan(1);
    expect(partitionsByClient.platformatic).toEqual(partitionsByClient.kafkajs);
  });

  it('client platformatic with max_in_flight > 1 loses nothing: its idempotent producer is given one batch at a time', async () => {
    // Two writes in flight at once would carry the same sequence numbers, and the broker would
    // drop the second as a duplicate while acknowledging it.
    const topic = await newTopic('platformatic-in-flight', 3);
    const msgs = Array.from({ length: 2000 }, (_, i) => createMsg({ device_id: `device-${i % 7}`, seq: i }));
    const { out, ctx } = await write({ topic, key: 'device_id', client: 'platformatic', max_in_flight: 8, batching: { count: 10, byte_size: 0, period: '0ms' } }, msgs);
    expect(out).toHaveLength(2000);
    expect(ctx.rejected).toEqual([]);
    const ends = await admin.fetchTopicOffsets(topic);
    expect(ends.reduce((n, e) => n + Number(e.high), 0)).toBe(2000);
  });

  it('with regexp_topics reads every existing topic whose whole name matches, and is not ready while none does', async () => {
    const prefix = `it-kafka-re-${runId}`;
    const none = read({ topics: [`${prefix}-nothing-.*`], regexp_topics: true, consumer_group: `it-re-none-${runId}` });
    const notReady = await firstValueFrom(readiness(none.ctx).pipe(filter((r) => !r.ready && /no topic at .* matches/.test(r.reason ?? ''))));
    expect(notReady.reason).toContain(`${prefix}-nothing-.*`);
    await none.stop();

    const a = `${prefix}-a-telemetry`;
    const b = `${prefix}-b-telemetry`;
    const other = `${prefix}-b-telemetry-old`;
    await createTopicsReady(admin, [a, b, other].map((topic) => ({ topic, numPartitions: 1 })));
    topics.push(a, b, other);
    await produceRaw(a, ['{"n":1}']);
    await produceRaw(b, ['{"n":2}']);
    await produceRaw(other, ['{"n":3}']);
    const input = read({ topics: [`${prefix}-[a-z]-telemetry`], regexp_topics: true, consumer_group: `it-re-${runId}`, start_from: 'earliest' }, (m) => m.ack.done());
    await input.until(2);
    expect(input.received.map((m) => m.meta.kafka_topic).sort()).toEqual([a, b]);
    await input.stop();
  });

  it('with replay starts each partition at the messages of the last period, even past committed offsets', async () => {
    const topic = await newTopic('replay', 2);
    const old = String(Date.now() - 2 * 3600_000);
    await producer.send({ topic, acks: -1, messages: [0, 1].map((p) => ({ partition: p, value: JSON.stringify({ n: `old-${p}` }), timestamp: old })) });
    await producer.send({ topic, acks: -1, messages: [0, 1, 0].map((p, i) => ({ partition: p, value: JSON.stringify({ n: `new-${i}` }) })) });
    const group = `it-replay-${runId}`;
    // A first run reads everything and commits it all.
    const first = read({ topics: [topic], consumer_group: group, start_from: 'earliest' }, (m) => m.ack.done());
    await first.until(5);
    await first.stop();
    expect(Object.values(await committed(group, topic)).map(Number).reduce((a, b) => a + b, 0)).toBe(5);

    // Started again with replay 1h: the three recent messages again, not the old ones.
    const again = read({ topics: [topic], consumer_group: group, replay: '1h' }, (m) => m.ack.done());
    await again.until(3);
    expect(again.received.map((m) => (m.value as { n: string }).n).sort()).toEqual(['new-0', 'new-1', 'new-2']);
    await again.stop();
  });

  // platformatic has no zstd on Node.js 20 (lint refuses that combination).
  const hasZstd = typeof (zlib as { zstdCompressSync?: unknown }).zstdCompressSync === 'function';
  it.each([
    ...(['gzip', 'snappy', 'lz4', 'zstd'] as const).map((c) => ['kafkajs', c] as const),
    ...(['gzip', 'snappy', 'lz4', ...(hasZstd ? ['zstd' as const] : [])] as const).map((c) => ['platformatic', c] as const),
  ])('client %s writes %s-compressed batches that the input reads back', async (client, compression) => {
    const topic = await newTopic(`codec-${client}-${compression}`);
    const msgs = Array.from({ length: 50 }, (_, i) => createMsg({ device_id: 'device-001', seq: i, text: 'compressible '.repeat(20) }));
    const { out, ctx } = await write({ topic, key: 'device_id', compression, client }, msgs);
    expect(out).toHaveLength(50);
    expect(ctx.rejected).toEqual([]);
    const input = read({ topics: [topic], consumer_group: `it-codec-${client}-${compression}-${runId}`, start_from: 'earliest' }, (m) => m.ack.done());
    await input.until(50);
    expect(input.received.map((m) => (m.value as { seq: number }).seq)).toEqual(msgs.map((_, i) => i));
    await input.stop();
  });

  it.each(CLIENTS)('client %s writes a null value as a tombstone with null_values: tombstone, and as JSON null by default', async (outputClient) => {
    const topic = await newTopic(`tombstone-${outputClient}`);
    await write({ topic, key: 'device_id', null_values: 'tombstone', client: outputClient }, [createMsg(null, { key: 'device-001' })].map((m) => ({ ...m, value: null })));
    await write({ topic, client: outputClient }, [createMsg(null, { key: 'device-002' })]);
    const values: (Buffer | null)[] = [];
    const consumer = client.consumer({ groupId: `it-tombstone-${outputClient}-${runId}` });
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise<void>((resolve) => {
      void consumer.run({
        eachMessage: async ({ message }) => {
          values.push(message.value);
          if (values.length === 2) resolve();
        },
      });
    });
    await consumer.disconnect();
    expect(values).toEqual([null, Buffer.from('null')]);
  });

  it('commits only over acked messages: after acking the first k of n, the group resumes at k', async () => {
    const topic = await newTopic('commit-after-ack');
    await produceRaw(topic, Array.from({ length: 10 }, (_, i) => JSON.stringify({ i })));
    const group = `it-commit-${runId}`;

    const first = read({ topics: [topic], consumer_group: group });
    await first.until(10);
    expect(offsets(first.received)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // Out of order, and 6 is done while 4 and 5 are not: the commit must stop at 4.
    for (const i of [3, 1, 6, 0, 2]) first.received[i]!.ack.done();
    await first.stop();
    expect(await committed(group, topic)).toEqual({ 0: '4' });

    const second = read({ topics: [topic], consumer_group: group });
    await second.until(6);
    expect(offsets(second.received)).toEqual([4, 5, 6, 7, 8, 9]);
    for (const m of second.received) m.ack.done();
    await second.stop();
    expect(await committed(group, topic)).toEqual({ 0: '10' });
  });

  it('commits while running, stops reading at stop, and still commits acks that come after the stop', async () => {
    const topic = await newTopic('stop');
    await produceRaw(topic, Array.from({ length: 6 }, (_, i) => JSON.stringify({ i })));
    const group = `it-stop-${runId}`;
    const input = read({ topics: [topic], consumer_group: group, commit_period: '50ms' });
    await input.until(6);
    for (const m of input.received.slice(0, 3)) m.ack.done();
    await input.committedLog(3);
    expect(await committed(group, topic)).toEqual({ 0: '3' });

    // Stop: the input completes (stop() checks it) and reads nothing more...
    input.ctx.stopSubject.next();
    await produceRaw(topic, ['{"after":"stop"}']);
    // ...but the messages in flight still finish, and their offsets are committed.
    for (const m of input.received.slice(3)) m.ack.done();
    await input.committedLog(6);
    await input.stop();
    expect(input.received).toHaveLength(6);
    expect(await committed(group, topic)).toEqual({ 0: '6' });
  });

  it('redelivers a nacked message and the ones after it, and commits past them once done', async () => {
    const topic = await newTopic('nack');
    await produceRaw(topic, Array.from({ length: 5 }, (_, i) => JSON.stringify({ i })));
    const group = `it-nack-${runId}`;

    const input = read({ topics: [topic], consumer_group: group });
    await input.until(5);
    const [m0, m1, m2, m3, m4] = input.received;
    m0!.ack.done();
    m1!.ack.done();
    m2!.ack.fail(new Error('output failed'));
    // Acks of messages after the failed one no longer count: they come again with it.
    m3!.ack.done();
    m4!.ack.done();
    await input.until(8);
    expect(offsets(input.received)).toEqual([0, 1, 2, 3, 4, 2, 3, 4]);
    expect(input.received[5]!.value).toEqual({ i: 2 });
    for (const m of input.received.slice(5)) m.ack.done();
    await input.stop();
    expect(await committed(group, topic)).toEqual({ 0: '5' });
    expect(input.received).toHaveLength(8);
  });

  it('rejects a value that is not JSON, and commits past it only once the dead-letter side acked it', async () => {
    const topic = await newTopic('not-json');
    await produceRaw(topic, ['{"ok":1}', 'not json', '{"ok":2}']);
    const group = `it-notjson-${runId}`;

    const first = read({ topics: [topic], consumer_group: group, value_format: 'json' });
    await first.until(2);
    expect(first.received.map((m) => m.value)).toEqual([{ ok: 1 }, { ok: 2 }]);
    expect(first.ctx.rejected).toHaveLength(1);
    const { msg: bad, err } = first.ctx.rejected[0]!;
    expect(err).toBeInstanceOf(RunnerError);
    expect((err as RunnerError).code).toBe('MESSAGE_INVALID');
    expect(Buffer.isBuffer(bad.value) && bad.value.toString()).toBe('not json');
    expect(bad.meta).toMatchObject({ kafka_topic: topic, kafka_offset: 1 });
    // The dead-letter output has not stored it yet: the commit stays before it.
    for (const m of first.received) m.ack.done();
    await first.stop();
    expect(await committed(group, topic)).toEqual({ 0: '1' });

    const second = read({ topics: [topic], consumer_group: group, value_format: 'json' });
    await second.until(1);
    expect(second.ctx.rejected.map((r) => r.msg.meta.kafka_offset)).toEqual([1]);
    second.ctx.rejected[0]!.msg.ack.done(); // stored by the dead-letter output
    second.received[0]!.ack.done();
    await second.stop();
    expect(await committed(group, topic)).toEqual({ 0: '3' });
  });

  it('forgets a partition lost in a rebalance: late acks of its messages are never committed', async () => {
    const topic = await newTopic('rebalance', 2);
    for (const partition of [0, 1]) {
      await producer.send({ topic, acks: -1, messages: Array.from({ length: 5 }, (_, i) => ({ partition, value: JSON.stringify({ partition, i }) })) });
    }
    const group = `it-rebalance-${runId}`;
    const a = read({ topics: [topic], consumer_group: group });
    await a.until(10);
    // A second member joins: the group rebalances, each member ends up with one partition.
    const b = read({ topics: [topic], consumer_group: group });
    await b.until(5);
    await a.joined(2);
    const lost = b.received[0]!.meta.kafka_partition as number;
    const kept = 1 - lost;
    expect(new Set(b.received.map((m) => m.meta.kafka_partition))).toEqual(new Set([lost]));
    // After the rebalance a fetches its kept partition again from the committed offset (none:
    // the start). Those messages are in flight already and are not handed out twice: the next
    // new message of the partition is the only one that comes.
    await producer.send({ topic, acks: -1, messages: [{ partition: kept, value: JSON.stringify({ partition: kept, i: 5 }) }] });
    await a.until(11);
    expect(a.received).toHaveLength(11);
    expect(a.received[10]!.meta).toMatchObject({ kafka_partition: kept, kafka_offset: 5 });
    // a finishes everything it read, including the messages of the partition it lost.
    for (const m of a.received) m.ack.done();
    await a.stop();
    await b.stop();
    expect(await committed(group, topic)).toEqual({ [kept]: '6', [lost]: '-1' });
  });

  it('with later messages queued behind a full window, redelivers from a nacked message in order and loses none', async () => {
    const topic = await newTopic('nack-queued');
    await produceRaw(topic, Array.from({ length: 30 }, (_, i) => JSON.stringify({ i })));
    const group = `it-nack-queued-${runId}`;
    let autoAck = false;
    const input = read({ topics: [topic], consumer_group: group, max_in_flight: 4 }, (m) => {
      if (autoAck) setImmediate(() => m.ack.done());
    });
    // One fetch brings all 30; the window lets 4 out, the other 26 wait.
    await input.until(4);
    expect(offsets(input.received)).toEqual([0, 1, 2, 3]);
    autoAck = true;
    const [m0, m1, m2, m3] = input.received;
    m0!.ack.done();
    m1!.ack.fail(new Error('output failed'));
    m2!.ack.done();
    m3!.ack.done();
    await input.until(33);
    expect(offsets(input.received)).toEqual([0, 1, 2, 3, ...Array.from({ length: 29 }, (_, i) => i + 1)]);
    await input.committedLog(30);
    await input.stop();
    expect(await committed(group, topic)).toEqual({ 0: '30' });
  });

  it('with messages queued behind a full window, a rebalance loses none of the kept partition and hands out none twice', async () => {
    const topic = await newTopic('rebalance-queued', 2);
    for (const partition of [0, 1]) {
      await producer.send({ topic, acks: -1, messages: Array.from({ length: 6 }, (_, i) => ({ partition, value: JSON.stringify({ partition, i }) })) });
    }
    const group = `it-rebalance-queued-${runId}`;
    let autoAck = false;
    const a = read({ topics: [topic], consumer_group: group, max_in_flight: 2 }, (m) => {
      if (autoAck) setImmediate(() => m.ack.done());
    });
    await a.until(4);
    const b = read({ topics: [topic], consumer_group: group, max_in_flight: 2 });
    await b.until(2);
    await a.joined(2);
    const lost = b.received[0]!.meta.kafka_partition as number;
    const kept = 1 - lost;
    // a finishes what it has (late acks of the lost partition count for nothing) and what comes.
    autoAck = true;
    for (const m of a.received) m.ack.done();
    await a.until(8);
    const keptOffsets = a.received.filter((m) => m.meta.kafka_partition === kept).map((m) => m.meta.kafka_offset);
    expect(keptOffsets).toEqual([0, 1, 2, 3, 4, 5]);
    await a.committedLog(6);
    await a.stop();
    await b.stop();
    expect(a.received).toHaveLength(8);
    expect(await committed(group, topic)).toEqual({ [kept]: '6', [lost]: '-1' });
  });

  it('never hands out more than max_in_flight_bytes of unfinished messages (one larger message alone), and reads all in order', async () => {
    const topic = await newTopic('bytes-window', 2);
    const values = Array.from({ length: 20 }, (_, i) => JSON.stringify({ i, pad: 'x'.repeat(80) }));
    for (const partition of [0, 1]) {
      await producer.send({ topic, acks: -1, messages: values.map((value) => ({ partition, value })) });
    }
    const big = JSON.stringify({ i: 20, pad: 'y'.repeat(1000) });
    await producer.send({ topic, acks: -1, messages: [{ partition: 0, value: big }] });
    const limit = 250;
    const sizeOf = (m: Msg) => Buffer.byteLength(JSON.stringify(m.value));
    let outstanding: Msg[] = [];
    let maxBytes = 0;
    let maxCount = 0;
    const input = read({ topics: [topic], consumer_group: `it-bytes-${runId}`, max_in_flight_bytes: limit }, (m) => {
      outstanding.push(m);
      const bytes = outstanding.reduce((a, o) => a + sizeOf(o), 0);
      if (sizeOf(m) < limit) maxBytes = Math.max(maxBytes, bytes);
      maxCount = Math.max(maxCount, outstanding.length);
      // Acked after the input handed out what it would, not inside its loop.
      setImmediate(() => {
        const done = outstanding;
        outstanding = [];
        done.forEach((d) => d.ack.done());
      });
    });
    await input.until(41);
    // Each message is ~95 bytes: handed out while fewer than 250 bytes are in flight, so at most 3.
    expect(maxCount).toBeLessThanOrEqual(3);
    expect(maxBytes).toBeLessThan(limit + sizeOf(input.received[0]!));
    for (const partition of [0, 1]) {
      const got = input.received.filter((m) => m.meta.kafka_partition === partition).map((m) => (m.value as { i: number }).i);
      expect(got).toEqual(Array.from({ length: partition === 0 ? 21 : 20 }, (_, i) => i));
    }
    await input.stop();
  });

  it('never hands out more than max_in_flight unfinished messages of a partition', async () => {
    const topic = await newTopic('backpressure');
    await produceRaw(topic, Array.from({ length: 40 }, (_, i) => JSON.stringify({ i })));
    let outstanding: Msg[] = [];
    let maxOutstanding = 0;
    const input = read({ topics: [topic], consumer_group: `it-bp-${runId}`, max_in_flight: 5 }, (m) => {
      outstanding.push(m);
      maxOutstanding = Math.max(maxOutstanding, outstanding.length);
      if (outstanding.length === 5) {
        const done = outstanding;
        outstanding = [];
        // Acked after the input handed them out, not inside its loop.
        setImmediate(() => done.forEach((d) => d.ack.done()));
      }
    });
    await input.until(40);
    expect(maxOutstanding).toBe(5);
    expect(offsets(input.received)).toEqual(Array.from({ length: 40 }, (_, i) => i));
    await input.stop();
  });
});

describe.each(CLIENTS)('kafka output (client %s) while Kafka is unreachable', (outputClient) => {
  it('retries without dropping or rejecting, then writes every message in order once Kafka answers', async () => {
    const topic = await newTopic(`unreachable-${outputClient}`);
    // A stand-in for the bootstrap broker: first it hangs up on every connection (Kafka down),
    // then it forwards to the real broker.
    const [host, port] = brokers[0]!.split(':') as [string, string];
    let forwarding = false;
    const attempts$ = new BehaviorSubject(0);
    const sockets = new Set<Socket>();
    const proxy = createServer((sock) => {
      sockets.add(sock);
      sock.on('error', () => undefined);
      attempts$.next(attempts$.value + 1);
      if (!forwarding) return void sock.destroy();
      const upstream = connect(Number(port), host);
      sockets.add(upstream);
      upstream.on('error', () => sock.destroy());
      sock.pipe(upstream).pipe(sock);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const proxyPort = (proxy.address() as { port: number }).port;

    const ctx = testContext({ component: 'kafka-out-unreachable' });
    const ready$ = readiness(ctx);
    const source = new Subject<Msg>();
    const emitted$ = new ReplaySubject<Msg>();
    const sub = source
      .pipe(kafkaOutput.create(outputConfig({ brokers: [`127.0.0.1:${proxyPort}`], topic, key: '"one-key"', batching: { count: 2, byte_size: 0, period: '5ms' }, client: outputClient }), ctx))
      .subscribe(emitted$);
    for (let i = 0; i < 6; i++) source.next(createMsg({ i }));
    await firstValueFrom(attempts$.pipe(filter((n) => n >= 3)));
    expect(ctx.ready.ready).toBe(false);
    expect(ctx.rejected).toEqual([]);
    forwarding = true;
    const out = await firstValueFrom(emitted$.pipe(take(6), toArray()));
    expect(out.map((m) => (m.value as { i: number }).i)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(ctx.rejected).toEqual([]);
    await firstValueFrom(ready$.pipe(filter((r) => r.ready)));
    sub.unsubscribe();
    await ctx.close();
    proxy.close();
    for (const s of sockets) s.destroy();

    // In the topic in the order given.
    const input = read({ topics: [topic], consumer_group: `it-unreachable-${outputClient}-${runId}` }, (m) => m.ack.done());
    await input.until(6);
    expect(input.received.map((m) => (m.value as { i: number }).i)).toEqual([0, 1, 2, 3, 4, 5]);
    await input.stop();
  });
});

describe.each(CLIENTS)('kafka output (client %s) rejections', (client) => {
  it('rejects a message for a topic that does not exist instead of retrying forever', async () => {
    const missing = `it-kafka-missing-${client}-${runId}`;
    const { out, ctx } = await write({ topic: missing, client }, [createMsg({ a: 1 })]);
    expect(out).toEqual([]);
    expect(ctx.rejected).toHaveLength(1);
    const err = ctx.rejected[0]!.err as RunnerError;
    expect(err.code).toBe('WRITE_REJECTED');
    expect(err.retryable).toBe(false);
    expect(err.message).toContain('does not exist');
    expect(ctx.ready.ready).toBe(false);
    expect(ctx.ready.reason).toContain('does not exist');
  });

  it('rejects only the messages of a batch whose topic does not exist', async () => {
    const topic = await newTopic(`some-missing-${client}`);
    const missing = `it-kafka-missing2-${client}-${runId}`;
    const msgs = [createMsg({ to: topic, n: 1 }), createMsg({ to: missing, n: 2 }), createMsg({ to: topic, n: 3 })];
    const { out, ctx } = await write({ topic: '${! to }', client }, msgs);
    expect(out.map((m) => (m.value as { n: number }).n)).toEqual([1, 3]);
    expect(ctx.rejected.map((r) => (r.msg.value as { n: number }).n)).toEqual([2]);
  });

  it('rejects a message too large for the topic and writes the rest of its batch', async () => {
    const topic = await newTopic(`too-large-${client}`, 1, { 'max.message.bytes': '20000' });
    const msgs = [createMsg({ n: 1 }), createMsg({ n: 2, blob: 'x'.repeat(50_000) }), createMsg({ n: 3 })];
    const { out, ctx } = await write({ topic, client }, msgs);
    expect(out.map((m) => (m.value as { n: number }).n)).toEqual([1, 3]);
    expect(ctx.rejected).toHaveLength(1);
    expect((ctx.rejected[0]!.msg.value as { n: number }).n).toBe(2);
    expect((ctx.rejected[0]!.err as RunnerError).code).toBe('WRITE_REJECTED');
    const ends = await admin.fetchTopicOffsets(topic);
    expect(Number(ends[0]!.high)).toBeGreaterThanOrEqual(2);
  });
});

const sasl = {
  brokers: process.env.KAFKA_SASL_BROKERS,
  adminPassword: process.env.KAFKA_SASL_ADMIN_PASSWORD,
  limitedPassword: process.env.KAFKA_SASL_LIMITED_PASSWORD,
};

describe.skipIf(!sasl.brokers || !sasl.adminPassword || !sasl.limitedPassword).each(CLIENTS)('kafka over SASL, output client %s (eval "$(scripts/stack env)")', (client) => {
  it('writes and reads with SCRAM credentials', async () => {
    const topic = await newTopic(`sasl-${client}`);
    const auth = { brokers: [sasl.brokers!], sasl: { mechanism: 'scram-sha-256' as const, username: process.env.KAFKA_SASL_ADMIN_USER ?? 'admin', password: sasl.adminPassword! } };
    const { out, ctx } = await write({ ...auth, topic, client }, [createMsg({ n: 1 })]);
    expect(out).toHaveLength(1);
    expect(ctx.ready.ready).toBe(true);
    const input = read({ ...auth, topics: [topic], consumer_group: `it-sasl-${client}-${runId}` }, (m) => m.ack.done());
    await input.until(1);
    expect(input.received[0]!.value).toEqual({ n: 1 });
    await input.stop();
  });

  it('is not ready, says why, and keeps the message (no dead letter) when not authorised to write', async () => {
    const topic = await newTopic(`sasl-denied-${client}`);
    const ctx = testContext({ component: `kafka-out-denied-${client}` });
    const ready$ = readiness(ctx);
    const source = new Subject<Msg>();
    const emitted: Msg[] = [];
    const cfg = outputConfig({ brokers: [sasl.brokers!], sasl: { mechanism: 'plain', username: process.env.KAFKA_SASL_LIMITED_USER ?? 'limited', password: sasl.limitedPassword! }, topic, client });
    const sub = source.pipe(kafkaOutput.create(cfg, ctx)).subscribe((m) => emitted.push(m));
    source.next(createMsg({ n: 1 }));
    const notReady = await firstValueFrom(ready$.pipe(filter((r) => !r.ready && /authori[sz]/i.test(r.reason ?? ''))));
    expect(notReady.reason).toMatch(/authori[sz]/i);
    expect(ctx.rejected).toEqual([]);
    expect(emitted).toEqual([]);
    sub.unsubscribe();
    await ctx.close();
  });
});
