import { sleeper } from '../../core/timers.ts';
import { Type } from '@sinclair/typebox';
import type { Admin, Message } from 'kafkajs';
import zlib from 'node:zlib';
import { EMPTY, type Observable, concatMap, catchError, defer, from, mergeMap } from 'rxjs';
import { batch } from '../../core/batch.ts';
import { parseDuration } from '../../core/duration.ts';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import { LATER, compileExpression, compileTemplate } from '../../core/expression.ts';
import { COMPRESSION, registerCodecs } from './codecs.ts';
import { type Msg, copyRecord, msgBytes, msgSize } from '../../core/message.ts';
import { defineOutput } from '../../core/operator.ts';
import { DEFAULT_BACKOFF, backoffDelay, retryWithBackoff } from '../../core/retry.ts';
import { Duration, Expr, Obj, Template } from '../../core/schema.ts';
import { connectionFields, describeBrokers, kafkaClient, kafkaErrorType, toRunnerError } from './client.ts';
import { createProducer, type RecordProducer } from './producer.ts';

const config = Obj({
  ...connectionFields,
  topic: Template('Topic to write to: literal text or a template such as `telemetry-${! device_type }`. The topic must exist (topics are declared in topics.yaml).'),
  key: Expr(
    'Expression for the record key, evaluated against the message (e.g. `device_id`). Records with the same key go to the same partition and keep their order. The default `$key` keeps the key the message came with; a result of null means no key.',
    '$key',
  ),
  max_in_flight: Type.Integer({
    minimum: 1,
    default: 1,
    description:
      'Batches being written at the same time. With 1 (the default) batches are written strictly one after another and a failed batch is retried whole before the next, so messages of one key keep their order; more than 1 can reorder messages of one key when a write is retried.',
  }),
  batching: Obj(
    {
      count: Type.Integer({ minimum: 0, default: 100, description: 'Messages per batch; 0 = no count limit.' }),
      byte_size: Type.Integer({
        minimum: 0,
        default: 524_288,
        description: 'Bytes of message values per batch; 0 = no byte limit. Keep it below the topic\'s max.message.bytes (1 MiB by default).',
      }),
      period: Duration('How long a message waits for its batch to fill; 0 = no wait beyond what count and byte_size decide.', '10ms'),
    },
    {
      default: { count: 100, byte_size: 524_288, period: '10ms' },
      description: 'A batch is written when it holds `count` messages or `byte_size` bytes, or `period` after its first message, whichever comes first.',
    },
  ),
  acks: Type.Literal('all', {
    default: 'all',
    description: 'Acknowledgement the output waits for: `all` in-sync replicas (acks=-1), with the idempotent producer. The only setting: anything less could lose acknowledged messages.',
  }),
  null_values: Type.Union([Type.Literal('json'), Type.Literal('tombstone')], {
    default: 'json',
    description:
      'What a message whose value is null becomes: `json` (the default) a record with the JSON text `null`; `tombstone` a record with no value, which a compacted topic (`cleanup.policy: compact`) takes as "delete this key" — e.g. to forget a device in homelab-heatpump-settings.',
  }),
  compression: Type.Union([Type.Literal('none'), Type.Literal('gzip'), Type.Literal('snappy'), Type.Literal('lz4'), Type.Literal('zstd')], {
    default: 'none',
    description: 'Compression of record batches: `none`, `gzip`, `snappy`, `lz4` or `zstd` (Kafka 2.1+ / Redpanda). The topic keeps what the producer sent unless its `compression.type` says otherwise; consumers decompress whatever they get.',
  }),
  client: Type.Union([Type.Literal('kafkajs'), Type.Literal('platformatic')], {
    default: 'kafkajs',
    description:
      'Kafka client library that writes the records: `kafkajs` (the default), or `platformatic` (@platformatic/kafka), which needs less than half the CPU per record (docs/benchmarks.md) and writes one batch at a time whatever `max_in_flight` says (its idempotent producer is only safe that way); it has no `zstd` on Node.js 20. Both use acks=all and the idempotent producer; metadata checks use kafkajs either way.',
  }),
});

interface Item {
  msg: Msg;
  topic: string;
  record: Message;
}

/** Kafka's rule for topic names. */
const TOPIC_NAME = /^[a-zA-Z0-9._-]{1,249}$/;
/** How often the output checks that the cluster answers, and how long it waits for the answer (readiness). */
const PROBE_INTERVAL_MS = 2_000;
const PROBE_TIMEOUT_MS = 5_000;
/** Errors after which the idempotent producer's sequence state is unusable: start a new producer. */
const PRODUCER_RESET_TYPES = new Set(['OUT_OF_ORDER_SEQUENCE_NUMBER', 'UNKNOWN_PRODUCER_ID', 'INVALID_PRODUCER_EPOCH', 'PRODUCER_FENCED', 'INVALID_PRODUCER_ID_MAPPING']);

export const kafka = defineOutput({
  spec: {
    name: 'kafka',
    kind: 'output',
    summary: 'Writes messages to a Kafka topic with the idempotent producer; a message is done once all in-sync replicas have it.',
    description: [
      'Each message becomes one record: its value as JSON (strings and bytes as they are), the key from `key`, and the message headers as record headers. Messages are batched (`batching`) and written with acks=all by the idempotent producer; a message is passed on (and its input may advance past it) only after Kafka acknowledged its batch.',
      '',
      'Errors a retry can fix (broker down, leader election, not authorised yet) are retried with exponential backoff, forever: the output is not ready meanwhile and says why, and nothing is dropped. A message Kafka can never take (too large, topic name invalid, topic does not exist, `topic` or `key` expression failing) is rejected with the reason and goes to the dead-letter output; the rest of its batch is written.',
      '',
      'Every 2 s the output asks the cluster for its brokers (a metadata request without topics). While that fails or gets no answer within 5 s, the output is not ready with the reason `Kafka at <brokers> does not answer: ...`, also while it has nothing to write (an idle producer would otherwise look ready with Kafka away); it is ready again once the cluster answers and writes go through.',
    ].join('\n'),
    config,
    examples: [
      {
        title: 'Telemetry keyed by device',
        config: 'brokers: ["${KAFKA_BROKERS:-127.0.0.1:9092}"]\ntopic: homelab-heatpump-telemetry\nkey: device_id',
      },
      {
        title: 'Topic per message type, larger gzip batches',
        config:
          'brokers: ["${KAFKA_BROKERS:-127.0.0.1:9092}"]\ntopic: homelab-${! type }\nkey: device_id\nbatching:\n  count: 1000\n  period: 50ms\ncompression: gzip',
      },
    ],
    delivery:
      'At-least-once. A message is passed on only after acks=all, so nothing acknowledged is lost. Duplicates happen when an acknowledgement is lost and the batch is written again, and when a batch with a message Kafka refuses is written again message by message to find it. With `max_in_flight: 1` messages of one key keep their order, retries included.',
    rejects: true,
    lint: (cfg) =>
      cfg.client === 'platformatic' && cfg.compression === 'zstd' && typeof (zlib as { zstdCompressSync?: unknown }).zstdCompressSync !== 'function'
        ? [{ path: ['compression'], message: `client platformatic has no zstd on Node.js ${process.versions.node} (it needs Node.js 22.15 or later); use client kafkajs, or gzip, snappy or lz4` }]
        : [],
  },
  create(cfg, ctx) {
    const topicT = compileTemplate(cfg.topic);
    const keyE = compileExpression(cfg.key);
    const where = describeBrokers(cfg);
    const log = ctx.logger;
    const client = kafkaClient(cfg, log);
    // kafkajs needs plug-ins for snappy, lz4 and zstd; @platformatic/kafka has its own codecs, and
    // none/gzip need none. Not loaded otherwise: zstd's WebAssembly memory alone is ~16 MB.
    const codecsReady = cfg.client === 'kafkajs' && cfg.compression !== 'none' && cfg.compression !== 'gzip' ? registerCodecs() : Promise.resolve();
    const newProducer = () => createProducer(cfg.client, cfg, cfg.compression, COMPRESSION[cfg.compression], log);
    let producer: RecordProducer = newProducer();
    const admin: Admin = client.admin();
    /** Topics known to exist; a topic is checked with the cluster before its first write. */
    const knownTopics = new Set<string>();
    let closed = false;
    let resetProducer = false;

    // Readiness: what connecting and writing found (`base`), overridden while the cluster does
    // not answer the periodic probe (an idle producer would otherwise look ready with Kafka away).
    let ready: { ok: boolean; reason?: string } | null = null;
    let base: { ok: boolean; reason?: string } = { ok: false };
    let unreachable: string | null = null;
    const publishReady = () => {
      const next = unreachable ? { ok: false, reason: unreachable } : base;
      if (ready && ready.ok === next.ok && ready.reason === next.reason) return;
      ready = next;
      ctx.setReady(next.ok, next.reason);
    };
    const setReady = (ok: boolean, reason?: string) => {
      base = { ok, reason };
      publishReady();
    };
    setReady(false, `connecting to Kafka at ${where}`);

    let connecting: Promise<void> | null = null;
    const connect = (): Promise<void> =>
      (connecting ??= (async () => {
        await codecsReady;
        await admin.connect();
        await producer.connect();
      })().catch((err) => {
        connecting = null;
        throw toRunnerError(err, `connecting to Kafka at ${where}`);
      }));

    /**
     * Topics among `topics` that do not exist, asking the cluster about the ones not known yet.
     * Each is asked for by name: the answer then tells "does not exist" (UNKNOWN_TOPIC_OR_PARTITION)
     * from "not authorised" (TOPIC_AUTHORIZATION_FAILED, retried: never a reason to dead-letter).
     */
    const missingTopics = async (topics: Set<string>): Promise<Set<string>> => {
      const missing = new Set<string>();
      await Promise.all(
        [...topics]
          .filter((t) => !knownTopics.has(t))
          .map(async (t) => {
            try {
              await admin.fetchTopicMetadata({ topics: [t] });
              knownTopics.add(t);
            } catch (err) {
              if (kafkaErrorType(err) === 'UNKNOWN_TOPIC_OR_PARTITION') missing.add(t);
              else throw toRunnerError(err, `checking topic ${t}`);
            }
          }),
      );
      return missing;
    };

    const { sleep, cancelAll: cancelSleeps } = sleeper(ctx.scheduler);
    /**
     * Every PROBE_INTERVAL_MS, ask the cluster for its brokers (a metadata request without topics).
     * No answer within PROBE_TIMEOUT_MS, or an error: not ready, naming Kafka and the error, until
     * it answers again. Writes report their own failures too, but only after kafkajs' retries, and
     * an output with nothing to write would never notice.
     */
    const probe = async () => {
      while (!closed) {
        await sleep(PROBE_INTERVAL_MS);
        if (closed) return;
        let timer: { unsubscribe(): void } | undefined;
        try {
          const answer = admin.describeCluster();
          answer.catch(() => undefined); // a late failure after the timeout is not unhandled
          await Promise.race([
            answer,
            new Promise<never>((_, reject) => {
              timer = ctx.scheduler.schedule(() => reject(new Error(`no answer within ${PROBE_TIMEOUT_MS} ms`)), PROBE_TIMEOUT_MS);
            }),
          ]);
          if (unreachable) {
            log.info({ brokers: where }, 'Kafka answers again');
            unreachable = null;
            publishReady();
          }
        } catch (err) {
          if (closed) return;
          const reason = `Kafka at ${where} does not answer: ${toRunnerError(err, 'metadata request').message}`;
          if (!unreachable) log.warn({ brokers: where, err: reason }, 'Kafka does not answer; not ready until it does');
          unreachable = reason;
          publishReady();
        } finally {
          timer?.unsubscribe();
        }
      }
    };

    // Connect now, so readiness tells the truth before the first message; retried with backoff.
    void (async () => {
      for (let attempt = 1; !closed; attempt++) {
        try {
          await connect();
          if (closed) return;
          if (topicT.isStatic && !TOPIC_NAME.test(cfg.topic)) setReady(false, `topic name ${JSON.stringify(cfg.topic)} is not valid`);
          else if (topicT.isStatic && (await missingTopics(new Set([cfg.topic]))).size) {
            setReady(false, `topic ${cfg.topic} does not exist at ${where}; messages for it go to the dead-letter output`);
          } else setReady(true);
          log.info({ brokers: where }, 'kafka producer connected');
          void probe();
          return;
        } catch (err) {
          if (closed) return;
          const reason = errorMessage(err);
          setReady(false, reason);
          const ms = backoffDelay(DEFAULT_BACKOFF, attempt);
          log.warn({ err: reason, retryInMs: ms }, 'kafka producer cannot connect; retrying');
          await sleep(ms);
        }
      }
    })();

    const reject = (msg: Msg, err: unknown) => ctx.reject(msg, err);

    // Batching by byte_size needs each value's size, which for a JSON value means serialising it:
    // the bytes are kept for the record instead of serialising the value a second time.
    const encoded = new WeakMap<Msg, Buffer>();
    const tombstones = cfg.null_values === 'tombstone';
    const sizeOf = (msg: Msg): number => {
      // The source bytes of an unchanged value cost nothing to find again: no entry for them.
      if (msg.source !== undefined && msg.source.value === msg.value && msg.value !== null && typeof msg.value === 'object') return msg.source.bytes.length;
      let buf: Buffer;
      try {
        buf = msgBytes(msg);
      } catch {
        return msgSize(msg); // as before; `prepare` rejects the message with the error
      }
      encoded.set(msg, buf);
      return buf.length;
    };
    const encode = (msg: Msg): Buffer => {
      const buf = encoded.get(msg);
      if (buf === undefined) return msgBytes(msg);
      encoded.delete(msg);
      return buf;
    };
    /** Topic names that passed the name check (a template yields the same few names over and over). */
    const validNames = new Set<string>();

    /** Evaluate topic and key; messages whose expressions fail are rejected here. */
    const prepare = async (msgs: Msg[]): Promise<Item[]> => {
      const items: Item[] = [];
      for (const msg of msgs) {
        try {
          const topicNow = topicT.now(msg);
          const topic = topicNow === LATER ? await topicT.evaluate(msg) : topicNow;
          if (!validNames.has(topic)) {
            if (!TOPIC_NAME.test(topic) || topic === '.' || topic === '..') {
              throw new RunnerError('WRITE_REJECTED', `topic name ${JSON.stringify(topic)} is not valid (letters, digits, . _ - up to 249)`);
            }
            if (validNames.size >= 10_000) validNames.clear();
            validNames.add(topic);
          }
          const kNow = keyE.now(msg);
          const k = kNow === LATER ? await keyE.evaluate(msg) : kNow;
          const key = k === null || k === undefined ? null : Buffer.isBuffer(k) ? k : typeof k === 'string' ? k : JSON.stringify(k);
          const value = tombstones && msg.value === null ? null : encode(msg);
          items.push({ msg, topic, record: { key, value, headers: copyRecord(msg.headers) } });
        } catch (err) {
          reject(msg, err);
        }
      }
      return items;
    };

    /** One attempt at writing `state.items`; items for topics that do not exist are rejected and removed. */
    const sendOnce = async (state: { items: Item[] }): Promise<Msg[]> => {
      if (closed) throw new RunnerError('WRITE_FAILED', 'the kafka output is closed', { retryable: true });
      if (resetProducer) {
        resetProducer = false;
        log.warn('starting a new idempotent producer after a sequence error');
        await producer.disconnect().catch(() => undefined);
        producer = newProducer();
        connecting = null;
      }
      await connect();
      const missing = await missingTopics(new Set(state.items.map((i) => i.topic)));
      if (missing.size) {
        for (const i of state.items) {
          if (missing.has(i.topic)) reject(i.msg, new RunnerError('WRITE_REJECTED', `topic ${i.topic} does not exist at ${where}`));
        }
        state.items = state.items.filter((i) => !missing.has(i.topic));
        if (topicT.isStatic) setReady(false, `topic ${cfg.topic} does not exist at ${where}; messages for it go to the dead-letter output`);
      }
      if (!state.items.length) return [];
      const byTopic = new Map<string, Message[]>();
      for (const i of state.items) {
        const list = byTopic.get(i.topic) ?? [];
        list.push(i.record);
        byTopic.set(i.topic, list);
      }
      try {
        await producer.send([...byTopic].map(([topic, messages]) => ({ topic, messages })));
      } catch (err) {
        const type = kafkaErrorType(err);
        // A topic deleted since it was checked, or a leader moving: check again before the retry.
        if (type === 'UNKNOWN_TOPIC_OR_PARTITION') for (const t of byTopic.keys()) knownTopics.delete(t);
        if (type && PRODUCER_RESET_TYPES.has(type)) resetProducer = true;
        // Connect again before the retry if kafkajs considers the producer gone.
        if (/producer is disconnect/i.test(errorMessage(err))) connecting = null;
        throw toRunnerError(err, `writing ${state.items.length} messages to Kafka at ${where}`);
      }
      ctx.metrics.batchSize(state.items.length);
      return state.items.map((i) => i.msg);
    };

    /**
     * Write items until Kafka acknowledged them, retrying retryable errors with backoff, forever.
     * A non-retryable error of a batch is narrowed down by writing its messages one by one, in
     * order; a single message Kafka refuses is rejected.
     */
    const deliver$ = (items: Item[]): Observable<Msg> => {
      const state = { items };
      return defer(() => from(sendOnce(state))).pipe(
        retryWithBackoff({
          scheduler: ctx.scheduler,
          onRetry: (err, attempt, delayMs) => {
            ctx.metrics.error('write');
            const reason = errorMessage(err);
            setReady(false, `writing to Kafka fails, retrying: ${reason}`);
            log.warn({ err: reason, attempt, retryInMs: delayMs, messages: state.items.length }, 'kafka write failed; retrying');
          },
        }),
        mergeMap((msgs) => {
          // A write went through: whatever was wrong (broker away, topic missing) is fixed.
          if (msgs.length) setReady(true);
          return from(msgs);
        }),
        catchError((err) => {
          ctx.metrics.error('write');
          if (state.items.length > 1) {
            log.warn({ err: errorMessage(err), messages: state.items.length }, 'Kafka refused a batch; writing its messages one by one');
            return from(state.items).pipe(concatMap((i) => deliver$([i])));
          }
          for (const i of state.items) reject(i.msg, err);
          return EMPTY;
        }),
      );
    };

    ctx.onClose(async () => {
      closed = true;
      cancelSleeps();
      await producer.disconnect().catch((err) => log.warn({ err: errorMessage(err) }, 'kafka producer disconnect failed'));
      await admin.disconnect().catch(() => undefined);
    });

    const policy = { count: cfg.batching.count, byteSize: cfg.batching.byte_size, periodMs: parseDuration(cfg.batching.period) };
    return (source) =>
      source.pipe(
        batch(policy, ctx.scheduler, sizeOf),
        mergeMap((msgs) => defer(() => from(prepare(msgs))).pipe(mergeMap((items) => (items.length ? deliver$(items) : EMPTY))), cfg.max_in_flight),
      );
  },
});
