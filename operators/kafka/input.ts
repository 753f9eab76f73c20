import { Type } from '@sinclair/typebox';
import type { Consumer, ConsumerRunConfig, EachBatchPayload, KafkaMessage } from 'kafkajs';
import { Gauge, type Registry } from 'prom-client';
import { Observable, interval } from 'rxjs';
import { parseDuration } from '../../core/duration.ts';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import { connectionFields as registryConnectionFields, registryClient } from '../schema-registry/client.ts';
import { decodeWire } from '../schema-registry/codec.ts';
import { isRetryable } from '../../core/errors.ts';
import { ackHandle, bufferToValue, createMsg, type Headers, type Msg } from '../../core/message.ts';
import { defineInput } from '../../core/operator.ts';
import { DEFAULT_BACKOFF, backoffDelay } from '../../core/retry.ts';
import { Duration, Obj, withoutDefaults } from '../../core/schema.ts';
import { connectionFields, describeBrokers, kafkaClient, toRunnerError } from './client.ts';
import { registerCodecs } from './codecs.ts';
import { OffsetTracker, partitionKey, type OffsetToken } from './offsets.ts';

const config = Obj({
  ...connectionFields,
  topics: Type.Array(Type.String({ minLength: 1, description: 'A topic name, or a regular expression with `regexp_topics`.' }), { minItems: 1, description: 'Topics to read; their partitions are shared among the members of the consumer group.' }),
  regexp_topics: Type.Boolean({
    default: false,
    description:
      'Treat each entry of `topics` as a regular expression matched against the whole topic name (e.g. `homelab-.*-telemetry`), as Redpanda Connect does. The expressions are resolved against the cluster\'s topics when the consumer starts (a topic created later is read after a restart); until at least one topic matches, the input is not ready and says so.',
  }),
  consumer_group: Type.String({ minLength: 1, description: 'Consumer group id: offsets are committed for it, and pipelines with the same group share the partitions.' }),
  replay: Duration(
    'On start, each partition begins at the first message written within this long before now (offsets by timestamp), whatever offset the group committed and whatever `start_from` says; later rebalances keep the usual committed positions. For live fan-outs that want the recent past again after a restart, e.g. `1h` for a "last hour" view. 0: off.',
    '0s',
  ),
  start_from: Type.Union([Type.Literal('earliest'), Type.Literal('latest')], {
    default: 'earliest',
    description: 'Where a group without a committed offset starts reading a partition: its oldest message, or only messages written from now on.',
  }),
  max_in_flight: Type.Integer({
    minimum: 1,
    default: 1000,
    description: 'Unfinished messages per partition: reading a partition pauses while this many of its messages are not done, and resumes when half of them are.',
  }),
  max_in_flight_bytes: Type.Integer({
    minimum: 0,
    default: 16 * 1024 * 1024,
    description:
      'Bytes (record value and key) of unfinished messages, all partitions together: while this many are unfinished no further message is handed out (one message larger than the limit still goes out alone); reading goes on when half of them are done. With `max_in_flight` (a count per partition) and `fetch_max_bytes` it bounds the memory of the input by size whatever the backlog: messages in flight plus at most one fetch per assigned partition. 0: no byte limit.',
  }),
  fetch_max_bytes: Type.Integer({
    minimum: 1024,
    default: 256 * 1024,
    description:
      'Most bytes one fetch brings of one partition (a record larger than this still comes whole). Records beyond the in-flight window wait, decoded once, in a queue of their partition, and a partition is not fetched again while its queue holds any: besides the messages in flight the input holds at most this much per assigned partition.',
  }),
  value_format: Type.Union([Type.Literal('json'), Type.Literal('auto'), Type.Literal('string'), Type.Literal('bytes'), Type.Literal('schema_registry')], {
    default: 'json',
    description:
      'How record values become message values: `json` parses JSON and rejects (dead-letters) a value that is not JSON; `auto` parses JSON and keeps other text as a string; `string` keeps the text; `bytes` keeps the raw bytes; `schema_registry` decodes the Confluent wire format (Avro or JSON Schema) with the registry in `schema_registry` (a value that is not in the wire format or names an unknown schema is dead-lettered; while the registry is unreachable the partition waits and retries).',
  }),
  schema_registry: Type.Union([Type.Null(), withoutDefaults(Obj(registryConnectionFields, { description: 'The registry to decode with (basic_auth defaults to null, timeout to 10s).' }))], {
    default: null,
    description: 'The Confluent-compatible schema registry for `value_format: schema_registry`: `url`, optional `basic_auth`, `timeout` (as in schema_registry_decode).',
  }),
  session_timeout: Duration(
    'How long the group waits for a silent member (a crashed process) before its partitions move to the others; heartbeats go every tenth of it. Lower means faster recovery after a crash, higher tolerates longer pauses.',
    '10s',
  ),
  commit_period: Duration('How often offsets of done messages are committed (and once more when the pipeline stops).', '1s'),
  fetch_max_wait: Duration('Longest time a fetch waits at the broker for new data; also how soon a partition paused by backpressure is read again (kafkajs cannot wake a waiting fetch).', '100ms'),
});

const LAG_METRIC = 'runner_kafka_consumer_lag';

/** Queued messages handed out in one turn of the event loop at most. */
const DRAIN_CHUNK = 250;

/** The lag gauge, shared by every kafka input of the process (one registry, one metric). */
function lagGauge(registry: Registry): Gauge<'pipeline' | 'component' | 'topic' | 'partition'> {
  const existing = registry.getSingleMetric(LAG_METRIC);
  if (existing) return existing as Gauge<'pipeline' | 'component' | 'topic' | 'partition'>;
  return new Gauge({
    name: LAG_METRIC,
    help: 'Messages in a partition after the last one the kafka input handed out (high watermark - next offset)',
    labelNames: ['pipeline', 'component', 'topic', 'partition'],
    registers: [registry],
  });
}

function headerStrings(headers: KafkaMessage['headers']): Headers {
  const out: Headers = {};
  if (!headers) return out;
  for (const k in headers) {
    const v = headers[k];
    if (v === undefined) continue;
    // A header repeated in one record: the last value wins.
    const last = Array.isArray(v) ? v[v.length - 1] : v;
    if (last === undefined) continue;
    out[k] = Buffer.isBuffer(last) ? last.toString('utf8') : String(last);
  }
  return out;
}

export const kafka = defineInput({
  spec: {
    name: 'kafka',
    kind: 'input',
    summary: 'Reads topics as a member of a Kafka consumer group; commits an offset only after every message below it is done.',
    description: [
      'Each record becomes a message: the value decoded by `value_format`, the key as a string, headers as strings, and metadata `kafka_topic`, `kafka_partition`, `kafka_offset`, `kafka_timestamp` (ms), `kafka_key` and `kafka_lag` (messages behind the high watermark).',
      '',
      'Offsets are committed every `commit_period` and when the pipeline stops, per partition, only up to the first message that is not done yet: a message finished by the output, dropped by a processor or stored by the dead-letter output is done; later messages finished earlier wait for it. A message that fails (is nacked) is read again from its offset after a backoff, together with the messages after it. On a rebalance, partitions this member loses are forgotten: nothing is committed for them any more.',
      '',
      'Backpressure: a partition is paused while `max_in_flight` of its messages are unfinished. Records a fetch brought beyond that window wait, decoded once, in a queue of their partition and are handed out as the window frees; the partition is not fetched again until its queue is empty, so a queue holds at most one fetch of its partition. Readiness: not ready until the consumer joined its group.',
    ].join('\n'),
    config,
    examples: [
      {
        title: 'Telemetry from the start of the topic',
        config: 'brokers: ["${KAFKA_BROKERS:-127.0.0.1:9092}"]\ntopics: [homelab-heatpump-telemetry]\nconsumer_group: telemetry-sink\nstart_from: earliest',
      },
      {
        title: 'Dead letters as text, small in-flight window',
        config:
          'brokers: ["${KAFKA_BROKERS:-127.0.0.1:9092}"]\ntopics: [homelab-dead-letter]\nconsumer_group: dead-letter-reader\nvalue_format: auto\nmax_in_flight: 100\ncommit_period: 5s',
      },
    ],
    delivery:
      'At-least-once. An offset is committed only when every message below it is done, so a crash, a failed message or a rebalance delivers messages again, never loses them. Duplicates: everything after the last commit after a crash or restart; messages after a failed one (they are read again with it); in-flight messages of a partition that moved to another member.',
    rejects: true,
    lint(cfg) {
      if (cfg.regexp_topics) {
        const bad = cfg.topics.flatMap((t, i) => {
          try {
            new RegExp(t);
            return [];
          } catch (err) {
            return [{ path: ['topics', i], message: `not a regular expression: ${(err as Error).message}` }];
          }
        });
        if (bad.length) return bad;
      }
      if (cfg.value_format === 'schema_registry' && !cfg.schema_registry) return [{ path: ['schema_registry'], message: 'value_format: schema_registry needs schema_registry: { url: ... }' }];
      if (cfg.value_format !== 'schema_registry' && cfg.schema_registry) return [{ path: ['schema_registry'], message: 'schema_registry is only used with value_format: schema_registry' }];
      return [];
    },
  },
  create(cfg, ctx) {
    const where = describeBrokers(cfg);
    const registry = cfg.value_format === 'schema_registry' && cfg.schema_registry ? registryClient({ ...cfg.schema_registry, basic_auth: cfg.schema_registry.basic_auth ?? null, timeout: cfg.schema_registry.timeout ?? '10s' }) : null;
    let registryDown = false;
    const log = ctx.logger.child({ consumer_group: cfg.consumer_group });
    const commitPeriodMs = parseDuration(cfg.commit_period);
    const fetchMaxWaitMs = parseDuration(cfg.fetch_max_wait);
    const resumeBelow = Math.floor(cfg.max_in_flight / 2);
    const gauge = lagGauge(ctx.metrics.registry);
    const labels = (topic: string, partition: number) => ({ ...ctx.metrics.labels, topic, partition: String(partition) });
    ctx.setReady(false, `joining consumer group ${cfg.consumer_group} at ${where}`);

    return new Observable<Msg>((subscriber) => {
      const client = kafkaClient(cfg, log);
      const consumer: Consumer = client.consumer({
        groupId: cfg.consumer_group,
        allowAutoTopicCreation: false,
        maxWaitTimeInMs: fetchMaxWaitMs,
        maxBytesPerPartition: cfg.fetch_max_bytes,
        sessionTimeout: parseDuration(cfg.session_timeout),
        heartbeatInterval: Math.max(100, Math.floor(parseDuration(cfg.session_timeout) / 10)),
        // kafkajs restarts a crashed consumer after retriable errors; we also restart after the others.
        retry: { restartOnFailure: async () => true },
      });
      const tracker = new OffsetTracker();
      /** Why a partition is paused: its in-flight window is full, or it waits to redeliver a failed message. */
      const pausedFor = new Map<string, { topic: string; partition: number; reasons: Set<'full' | 'nack'> }>();
      const lastNack = new Map<string, { offset: number; attempt: number }>();
      const timers = new Set<{ unsubscribe(): void }>();
      let stopped = false;
      let closed = false;

      const later = (ms: number, fn: () => void) => {
        const action = ctx.scheduler.schedule(() => {
          timers.delete(action);
          fn();
        }, ms);
        timers.add(action);
      };
      const sleep = (ms: number) => new Promise<void>((resolve) => later(ms, resolve));
      const quietly = (what: string, fn: () => void) => {
        try {
          fn();
        } catch (err) {
          // The consumer is between a crash and its restart; the next group join re-applies state.
          log.debug({ err: errorMessage(err) }, `${what} skipped`);
        }
      };

      /** The topics subscribed to: `topics`, or the names the expressions matched. */
      let topicNames: string[] = cfg.regexp_topics ? [] : cfg.topics;
      const pauseAll = () => quietly('pause', () => consumer.pause(topicNames.map((topic) => ({ topic }))));
      const pause = (topic: string, partition: number, reason: 'full' | 'nack') => {
        const key = partitionKey(topic, partition);
        const p = pausedFor.get(key) ?? { topic, partition, reasons: new Set() };
        p.reasons.add(reason);
        pausedFor.set(key, p);
        quietly('pause', () => consumer.pause([{ topic, partitions: [partition] }]));
      };
      const unpause = (topic: string, partition: number, reason: 'full' | 'nack') => {
        const key = partitionKey(topic, partition);
        const p = pausedFor.get(key);
        if (!p || !p.reasons.delete(reason) || p.reasons.size) return;
        pausedFor.delete(key);
        // After stop the whole topic is paused; resuming one partition would undo that.
        if (!stopped) quietly('resume', () => consumer.resume([{ topic, partitions: [partition] }]));
      };

      // Commits: serialised, only offsets the tracker allows.
      let committing: Promise<void> = Promise.resolve();
      const commit = (): Promise<void> =>
        (committing = committing.then(async () => {
          const entries = tracker.committable();
          if (!entries.length) return;
          try {
            await consumer.commitOffsets(entries.map((e) => ({ topic: e.topic, partition: e.partition, offset: String(e.offset) })));
            tracker.committed(entries);
            log.debug({ offsets: entries }, 'offsets committed');
          } catch (err) {
            ctx.metrics.error('commit');
            log.warn({ err: errorMessage(err), offsets: entries }, 'offset commit failed; retried at the next commit');
          }
        }));
      const commitTimer = commitPeriodMs > 0 ? interval(commitPeriodMs, ctx.scheduler).subscribe(() => void commit()) : null;

      /** A nacked message: read its partition again from it, after a backoff that grows while the same offset keeps failing. */
      const redeliver = (topic: string, partition: number, offset: number, err: unknown) => {
        const key = partitionKey(topic, partition);
        const prev = lastNack.get(key);
        const attempt = prev && prev.offset === offset ? prev.attempt + 1 : 1;
        lastNack.set(key, { offset, attempt });
        const ms = backoffDelay(DEFAULT_BACKOFF, attempt);
        log.warn({ topic, partition, offset, attempt, retryInMs: ms, err: errorMessage(err) }, 'message failed; reading its partition again from it');
        // Seek now (kafkajs drops batches fetched before the seek), read again after the backoff;
        // what was queued after the failed message comes again with it.
        dropQueue(topic, partition);
        quietly('seek', () => consumer.seek({ topic, partition, offset: String(offset) }));
        pause(topic, partition, 'nack');
        later(ms, () => unpause(topic, partition, 'nack'));
      };


      // Bytes of the messages handed out and not settled, all partitions (max_in_flight_bytes).
      const bytesLimit = cfg.max_in_flight_bytes;
      let bytesInFlight = 0;
      /** Partitions whose queue waits for bytes in flight to fall under half the limit. */
      const waitingForBytes = new Set<string>();
      const bytesFull = () => bytesLimit > 0 && bytesInFlight >= bytesLimit;

      const toMsg = (topic: string, partition: number, m: KafkaMessage, highWatermark: number, token: OffsetToken, partKey: string): Msg => {
        const key = m.key ? m.key.toString('utf8') : null;
        const offset = Number(m.offset);
        const size = (m.value?.length ?? 0) + (m.key?.length ?? 0);
        bytesInFlight += size;
        const ack = ackHandle((outcome) => {
          bytesInFlight -= size;
          if (waitingForBytes.size && bytesInFlight <= bytesLimit / 2) {
            const waiting = [...waitingForBytes];
            waitingForBytes.clear();
            for (const k of waiting) {
              const q = queues.get(k);
              if (q) refill(q.topic, q.partition, k);
            }
          }
          if (outcome.ok) tracker.done(token);
          else {
            const from = tracker.fail(token);
            if (from !== null && !closed) redeliver(topic, partition, from, outcome.error);
          }
          refill(topic, partition, partKey);
        });
        const meta = {
          kafka_topic: topic,
          kafka_partition: partition,
          kafka_offset: offset,
          kafka_timestamp: Number(m.timestamp),
          kafka_key: key,
          kafka_lag: Math.max(0, highWatermark - offset - 1),
        };
        return createMsg(null, { key, headers: headerStrings(m.headers), meta, ack });
      };

      // Replay: partitions assigned for the first time wait (hand out nothing) until they have been
      // moved to the offset of `replay` ago; nothing is tracked before that, so the tracker starts there.
      const replayMs = parseDuration(cfg.replay);
      const replayStarted = new Set<string>();
      const replayPending = new Set<string>();
      const replayTo = async (parts: { topic: string; partition: number }[]) => {
        const since = Date.now() - replayMs;
        const admin = client.admin();
        try {
          await admin.connect();
          for (const topic of [...new Set(parts.map((p) => p.topic))]) {
            const byTime = await admin.fetchTopicOffsetsByTimestamp(topic, since);
            const ends = await admin.fetchTopicOffsets(topic);
            for (const p of parts.filter((x) => x.topic === topic)) {
              const at = byTime.find((o) => o.partition === p.partition)?.offset;
              const offset = at === undefined || Number(at) < 0 ? (ends.find((o) => o.partition === p.partition)?.high ?? '0') : at;
              quietly('seek', () => consumer.seek({ topic, partition: p.partition, offset: String(offset) }));
              log.info({ topic, partition: p.partition, offset: Number(offset), since: new Date(since).toISOString() }, 'replaying from this offset');
              replayPending.delete(partitionKey(topic, p.partition));
            }
          }
        } catch (err) {
          log.warn({ err: errorMessage(err) }, 'replay: cannot look up offsets by time; retrying');
          later(backoffDelay(DEFAULT_BACKOFF, 1), () => void replayTo(parts.filter((p) => replayPending.has(partitionKey(p.topic, p.partition)))));
        } finally {
          await admin.disconnect().catch(() => undefined);
        }
      };

      /**
       * Fetched records not handed out yet, per partition. kafkajs fetches up to 1 MB of a
       * partition at once (thousands of small records); the window lets only `max_in_flight` of
       * them out. The rest wait here, already decoded by kafkajs, instead of being fetched and
       * decoded again after every pause (which cost more CPU than everything else the input does).
       * The fetch position is resolved past them; the partition stays paused while its queue is
       * not empty, so a queue holds at most one fetch of its partition. Nothing here is tracked:
       * offsets are committed only for messages handed out and done.
       */
      interface Queued {
        topic: string;
        partition: number;
        highWatermark: number;
        messages: KafkaMessage[];
        at: number;
        draining: boolean;
      }
      const queues = new Map<string, Queued>();
      const dropQueue = (topic: string, partition: number) => queues.delete(partitionKey(topic, partition));

      /** Hand out queued messages while the partition's window has room. */
      const drain = async (q: Queued, limit: number): Promise<number> => {
        if (q.draining) return 0;
        q.draining = true;
        const { topic, partition } = q;
        const key = partitionKey(topic, partition);
        const current = () => queues.get(key) === q && !stopped && !closed && !subscriber.closed;
        let next: number | null = null;
        const from = q.at;
        const chunkEnd = q.at + limit;
        try {
          while (q.at < q.messages.length && current()) {
            if (q.at >= chunkEnd) break;
            if (tracker.inFlightOf(key) >= cfg.max_in_flight) break;
            if (bytesFull()) {
              waitingForBytes.add(key);
              break;
            }
            const m = q.messages[q.at]!;
            q.messages[q.at++] = undefined as unknown as KafkaMessage;
            const offset = Number(m.offset);
            const token = tracker.track(topic, partition, offset);
            next = offset + 1;
            // Already handed out before a re-fetch (after a rebalance): in flight or done, not again.
            if (!token) continue;
            const msg = toMsg(topic, partition, m, q.highWatermark, token, key);
            if (registry) {
              try {
                const decoded = await decodeWire(registry, m.value);
                msg.value = decoded.value;
                msg.meta.schema_id = decoded.schemaId;
                msg.meta.schema_type = decoded.schemaType;
                if (registryDown) {
                  registryDown = false;
                  ctx.setReady(true);
                }
              } catch (err) {
                if (isRetryable(err)) {
                  // Registry away: not handed out; the nack seeks back here (dropping the queue) and retries after a backoff.
                  ctx.setReady(false, `schema registry: ${errorMessage(err)}`);
                  registryDown = true;
                  msg.ack.fail(err);
                  break;
                }
                msg.value = m.value;
                ctx.reject(msg, err);
                continue;
              }
              if (!current()) {
                // Stopped, redelivered or revoked while decoding: the message comes again from Kafka.
                msg.ack.fail(new RunnerError('CONNECTION_FAILED', 'not handed out', { retryable: true }));
                break;
              }
              subscriber.next(msg);
              continue;
            }
            try {
              msg.value = bufferToValue(m.value, cfg.value_format as 'json' | 'auto' | 'string' | 'bytes');
              if (m.value && msg.value !== null && typeof msg.value === 'object' && !Buffer.isBuffer(msg.value)) msg.source = { value: msg.value, bytes: m.value };
            } catch (err) {
              // Not JSON under `json`: to the dead letters with the raw bytes; done once stored there.
              msg.value = m.value;
              ctx.reject(msg, err);
              continue;
            }
            subscriber.next(msg);
          }
        } finally {
          q.draining = false;
        }
        if (next !== null) gauge.set(labels(topic, partition), Math.max(0, q.highWatermark - next));
        if (q.at >= q.messages.length && queues.get(key) === q) queues.delete(key);
        refill(topic, partition, key);
        return q.at - from;
      };

      /**
       * Queues waiting to be drained, served in turns of the event loop, at most DRAIN_CHUNK
       * messages per turn for all partitions together: a backlog goes out in slices, and I/O
       * that arrives meanwhile (the database's answer to the output's write, a fetch, an HTTP
       * request) is served between them instead of after every queue.
       */
      const wanting = new Set<Queued>();
      let drainTurn = false;
      /** Messages that may still go out in this turn; reset at the next one. */
      let budget = DRAIN_CHUNK;
      let budgetResets = false;
      const drainWithin = async (q: Queued) => {
        if (budget <= 0) return void requestDrain(q);
        if (!budgetResets) {
          budgetResets = true;
          setImmediate(() => {
            budget = DRAIN_CHUNK;
            budgetResets = false;
          });
        }
        budget -= await drain(q, budget);
      };
      const requestDrain = (q: Queued) => {
        wanting.add(q);
        if (drainTurn) return;
        drainTurn = true;
        setImmediate(() => void drainSome());
      };
      const drainSome = async () => {
        drainTurn = false;
        const turn = [...wanting];
        wanting.clear();
        for (const q of turn) await drainWithin(q);
      };

      /** After an ack, a drain or a rebalance: hand out what is queued, or fetch again once the window is half empty. */
      const refill = (topic: string, partition: number, key = partitionKey(topic, partition)) => {
        const q = queues.get(key);
        if (q) {
          // Woken when the bytes in flight fall under half the limit.
          if (bytesFull()) waitingForBytes.add(key);
          else if (!q.draining && tracker.inFlightOf(key) < cfg.max_in_flight && !stopped && !closed) {
            // In a later turn, not from inside the ack (the output is mid-emission): whatever the
            // acks started (the output's next write) goes first, then the next messages.
            requestDrain(q);
          }
          return;
        }
        if (tracker.inFlightOf(key) <= resumeBelow) unpause(topic, partition, 'full');
      };

      const eachBatch = async ({ batch, resolveOffset, isRunning, isStale }: EachBatchPayload) => {
        const { topic, partition } = batch;
        if (replayPending.has(partitionKey(topic, partition))) return;
        if (stopped || closed || subscriber.closed) {
          // A restarted consumer forgot the pause of stop(): pause again, hand out nothing.
          pause(topic, partition, 'full');
          return;
        }
        if (!isRunning() || isStale() || !batch.messages.length) return;
        const key = partitionKey(topic, partition);
        const hw = Number(batch.highWatermark);
        const q = queues.get(key);
        if (q) {
          // A fetch that was under way when the partition paused: after what is queued.
          q.messages = q.messages.slice(q.at).concat(batch.messages);
          q.at = 0;
          q.highWatermark = hw;
        } else queues.set(key, { topic, partition, highWatermark: hw, messages: batch.messages, at: 0, draining: false });
        // kafkajs fetches from after the queued messages next time; the partition pauses until they are out.
        resolveOffset(batch.messages[batch.messages.length - 1]!.offset);
        pause(topic, partition, 'full');
        // Right away while this turn's budget lasts: a partition whose records all went out is
        // resumed before kafkajs fetches again (a paused one would wait out that fetch's
        // fetch_max_wait); the rest of a long queue goes out in later turns.
        await drainWithin(queues.get(key)!);
      };

      const runConfig: ConsumerRunConfig = { autoCommit: false, eachBatchAutoResolve: false, partitionsConsumedConcurrently: 1, eachBatch };

      consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
        const assigned = Object.entries(payload.memberAssignment).flatMap(([topic, partitions]) => partitions.map((partition) => ({ topic, partition })));
        for (const r of tracker.assign(assigned)) {
          const key = partitionKey(r.topic, r.partition);
          pausedFor.delete(key);
          lastNack.delete(key);
          gauge.remove(labels(r.topic, r.partition));
        }
        if (replayMs > 0) {
          const fresh = assigned.filter((p) => !replayStarted.has(partitionKey(p.topic, p.partition)));
          for (const p of fresh) {
            replayStarted.add(partitionKey(p.topic, p.partition));
            replayPending.add(partitionKey(p.topic, p.partition));
          }
          if (fresh.length) void replayTo(fresh);
        }
        // A new generation fetches every partition again from its committed offset: what is queued
        // comes again (the tracker skips what was handed out already).
        queues.clear();
        // A restarted consumer has a fresh pause state: apply ours again.
        if (stopped) pauseAll();
        for (const p of pausedFor.values()) quietly('pause', () => consumer.pause([{ topic: p.topic, partitions: [p.partition] }]));
        // Partitions paused only to empty a queue that is gone: read them again.
        for (const p of assigned) refill(p.topic, p.partition);
        log.info({ assigned: payload.memberAssignment }, 'joined consumer group');
        ctx.setReady(true);
      });
      // Before the group rebalances, commit what is done (best effort: the rebalance may win).
      consumer.on(consumer.events.REBALANCING, () => void commit());
      consumer.on(consumer.events.CRASH, ({ payload }) => {
        const reason = errorMessage(payload.error);
        ctx.setReady(false, `kafka consumer crashed: ${reason}`);
        if (!payload.restart && !closed) {
          log.error({ err: reason }, 'kafka consumer crashed; restarting it');
          void start();
        }
      });

      let subscribed = false;
      const start = async () => {
        for (let attempt = 1; !closed && !subscriber.closed; attempt++) {
          try {
            await registerCodecs();
            await consumer.connect();
            if (!subscribed) {
              if (cfg.regexp_topics) topicNames = await matchTopics(client, cfg.topics, where);
              await consumer.subscribe({ topics: topicNames, fromBeginning: cfg.start_from === 'earliest' });
              if (cfg.regexp_topics) log.info({ topics: topicNames }, 'topics matched');
              subscribed = true;
            }
            // Closed while connecting: the close hook's disconnect came too early to stop this.
            if (closed) return void (await consumer.disconnect().catch(() => undefined));
            await consumer.run(runConfig);
            return;
          } catch (err) {
            const e = toRunnerError(err, `joining consumer group ${cfg.consumer_group} at ${where}`);
            ctx.setReady(false, e.message);
            const ms = backoffDelay(DEFAULT_BACKOFF, attempt);
            log.warn({ err: e.message, retryInMs: ms }, 'kafka consumer cannot start; retrying');
            await consumer.disconnect().catch(() => undefined);
            await sleep(ms);
          }
        }
      };
      void start();

      // Stop: read no more, keep the consumer in the group so the acks of in-flight messages
      // are still committed; the close hook commits once more and leaves.
      const stopSub = ctx.stop$.subscribe(() => {
        stopped = true;
        pauseAll();
        log.info('stopping: no more reading; in-flight messages are committed as they finish');
        subscriber.complete();
      });

      ctx.onClose(async () => {
        stopped = true;
        closed = true;
        commitTimer?.unsubscribe();
        for (const t of timers) t.unsubscribe();
        timers.clear();
        queues.clear();
        await commit();
        await consumer.disconnect().catch((err) => log.warn({ err: errorMessage(err) }, 'kafka consumer disconnect failed'));
        for (const tp of tracker.partitions()) gauge.remove(labels(tp.topic, tp.partition));
        tracker.revokeAll();
      });

      return () => {
        stopped = true;
        stopSub.unsubscribe();
        pauseAll();
      };
    });
  },
});

/** The existing topics that match one of `patterns` (each anchored: it must match the whole name). */
async function matchTopics(client: ReturnType<typeof kafkaClient>, patterns: string[], where: string): Promise<string[]> {
  const res = patterns.map((p) => new RegExp(`^(?:${p})$`));
  const admin = client.admin();
  await admin.connect();
  try {
    const names = (await admin.listTopics()).filter((t) => !t.startsWith('__') && res.some((re) => re.test(t))).sort();
    if (!names.length) throw new RunnerError('CONFIG_INVALID', `no topic at ${where} matches ${patterns.join(', ')} (regexp_topics); create one (runner topics apply) or fix the expression`, { retryable: true });
    return names;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}
