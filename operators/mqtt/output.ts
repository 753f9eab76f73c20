import { Type } from '@sinclair/typebox';
import type { IClientPublishOptions } from 'mqtt';
import { EMPTY, Observable, type Subscription, catchError, concatMap, defer, from, map, mergeMap } from 'rxjs';
import { parseDuration } from '../../core/duration.ts';
import { RunnerError, errorMessage, isRetryable } from '../../core/errors.ts';
import { compileTemplate } from '../../core/expression.ts';
import { type Msg, valueToBuffer } from '../../core/message.ts';
import { type LintIssue, defineOutput } from '../../core/operator.ts';
import { DEFAULT_BACKOFF, backoffDelay } from '../../core/retry.ts';
import { Duration, Obj, Template } from '../../core/schema.ts';
import { connectMqtt, connectionFields, describeBrokers, lintConnection } from './client.ts';
import { OutgoingStore, type TrackedPublish, canWithdraw, trackedPublish } from './outgoing.ts';
import { topicNameProblem } from './topics.ts';

const config = Obj({
  ...connectionFields,
  topic: Template('Topic to publish to: literal text or a template such as `heatpump/${! device_id }/command`. A result that is empty, has a wildcard (+, #) or starts with $ is rejected to the dead-letter output.'),
  qos: Type.Union([Type.Literal(0), Type.Literal(1), Type.Literal(2)], {
    default: 1,
    description:
      'QoS of the published messages: 1 (the default; done on PUBACK), 2 (done on PUBCOMP), or 0 (done once written to the socket; the broker may never get it).',
  }),
  retain: Type.Boolean({ default: false, description: 'Publish with the retain flag: the broker keeps the last message of each topic and gives it to every new subscriber.' }),
  user_properties: Type.Boolean({
    default: true,
    description: 'MQTT 5: send the message headers as user properties (true, the default). Ignored with protocol_version 4, which has no properties.',
  }),
  max_in_flight: Type.Integer({
    minimum: 1,
    maximum: 65_535,
    default: 64,
    description:
      'Messages published and not yet acknowledged by the broker, at most. Messages go out in the order they come, over one connection, so the broker gets them in order; a publish that fails and is retried can land after later messages. 1 keeps the order strictly, retries included.',
  }),
  publish_timeout: Duration(
    'How long a message may take from reaching the output until the broker acknowledged it, retries included. When it runs out the publish is withdrawn from the MQTT client (out of its offline queue and its store of unacknowledged messages, so it is never sent later, not after a reconnect either) and the message fails back to its input: `postgres_outbox` counts a failed attempt, `kafka` and `mqtt` inputs deliver it again. 0 (the default): wait for the broker as long as it takes.',
    '0s',
  ),
});

/** PUBACK/PUBREC reason codes (MQTT 5) that say the message itself can never be published. */
const REJECTED_CODES = new Set([0x90 /* topic name invalid */, 0x95 /* packet too large */, 0x99 /* payload format invalid */]);
/** ... and those that say this client may not publish there (not ready until someone fixes the ACL). */
const AUTH_CODES = new Set([0x87 /* not authorized */]);

export const mqttOutput = defineOutput({
  spec: {
    name: 'mqtt',
    kind: 'output',
    summary: 'Publishes messages to MQTT (3.1.1 or 5); a message is done once the broker acknowledged it (PUBACK for QoS 1, PUBCOMP for QoS 2).',
    description: [
      'Each message is published to the topic `topic` gives for it, with `qos` and `retain`: its value as JSON (strings as UTF-8 text, bytes as they are) and, with MQTT 5, its headers as user properties. A message is passed on (and its input may advance past it) only when the broker acknowledged it.',
      '',
      'While the broker is away, mqtt.js keeps unacknowledged messages and sends them again once it has reconnected (with backoff, forever); the output is not ready meanwhile and says why. A publish that fails with a retryable error (the client closing, the broker refusing for a quota, not authorised) is retried with exponential backoff, never dropped. A message that can never be published (its topic empty, with a wildcard or starting with $, the `topic` template failing, or an MQTT 5 broker answering "topic name invalid", "packet too large" or "payload format invalid") is rejected to the dead-letter output with the reason.',
      '',
      'With `publish_timeout`, every message has an outcome within that time: acknowledged (passed on), or not, and then withdrawn and failed back to its input (error `WRITE_FAILED`, "not acknowledged ... within publish_timeout"). Withdrawn means mqtt.js no longer holds it: a publish made while the broker was away is never sent, so a command given up by its sender (the dispatcher marks it failed) cannot reach a device later. A publish that was already written to the connection when the time ran out may have reached the broker (a slow broker, or a connection that broke after the write); receivers drop such repeats by an id in the message. A QoS 2 publish the broker has confirmed receiving (PUBREC) cannot be withdrawn: its handshake completes and it is passed on then.',
    ].join('\n'),
    config,
    examples: [
      {
        title: 'Commands to one heat pump each',
        config: 'urls: ["${MQTT_URL:-mqtt://127.0.0.1:1883}"]\ntopic: heatpump/${! device_id }/command\nqos: 1',
      },
      {
        title: 'Retained state per device, exactly-once handshake, MQTT 3.1.1 broker',
        config: 'urls: ["${MQTT_URL:-mqtt://127.0.0.1:1883}"]\ntopic: homelab/state/${! device_id }\nqos: 2\nretain: true\nprotocol_version: 4',
      },
    ],
    delivery:
      'At-least-once with QoS 1 and 2: a message is passed on only after PUBACK (QoS 1) or PUBCOMP (QoS 2). Duplicates happen when the connection drops after the broker took a message but before its acknowledgement arrived (mqtt.js sends it again after reconnecting, with the DUP flag; with QoS 2 the new connection starts a new session, so the broker cannot recognise it), when a publish that failed with a retryable error is sent again, and when the runner stops before an acknowledgement arrived (the input delivers the message again). QoS 0 is at-most-once: a message is passed on once written to the socket and can be lost. An MQTT 3.1.1 broker (Mosquitto) acknowledges a publish its ACL refuses and drops it: use MQTT 5, where the refusal comes back and the output retries and reports it.',
    rejects: true,
    lint(cfg) {
      const issues: LintIssue[] = lintConnection(cfg);
      const t = compileTemplate(cfg.topic);
      if (t.isStatic) {
        const problem = topicNameProblem(cfg.topic);
        if (problem) issues.push({ path: ['topic'], message: problem });
      }
      return issues;
    },
  },
  create(cfg, ctx) {
    const topicT = compileTemplate(cfg.topic);
    const log = ctx.logger;
    const v5 = cfg.protocol_version === 5;
    const timeoutMs = parseDuration(cfg.publish_timeout);
    let closed = false;

    let ready: { ok: boolean; reason?: string } | null = null;
    const setReady = (ok: boolean, reason?: string) => {
      if (closed || (ready && ready.ok === ok && ready.reason === reason)) return;
      ready = { ok, reason };
      ctx.setReady(ok, reason);
    };
    setReady(false, `connecting to MQTT broker ${describeBrokers(cfg)}`);

    // mqtt.js's store of unacknowledged publishes, whose replay skips withdrawn ones (outgoing.ts).
    const store = new OutgoingStore();
    const link = connectMqtt(cfg, ctx, {
      // Nothing to keep for a publisher: no subscriptions, and mqtt.js resends its own unacknowledged messages.
      clean: true,
      outgoingStore: store,
      onConnect: () => setReady(true),
      onDown: (reason) => setReady(false, reason),
    });
    const { client } = link;
    if (timeoutMs > 0 && !canWithdraw(client)) {
      void link.end();
      throw new RunnerError('CONFIG_INVALID', 'publish_timeout: the installed mqtt.js cannot withdraw publishes (no _storeProcessingQueue; written against mqtt 5.16); remove publish_timeout or install mqtt 5.x');
    }

    ctx.onClose(async () => {
      closed = true;
      await link.end();
    });

    /** Topic and publish options of a message; throws non-retryable errors for messages that can never go out. */
    const prepare = async (msg: Msg): Promise<{ topic: string; payload: Buffer; opts: IClientPublishOptions }> => {
      const topic = await topicT.evaluate(msg);
      const problem = topicNameProblem(topic);
      if (problem) throw new RunnerError('WRITE_REJECTED', `topic ${JSON.stringify(topic)} cannot be published to: ${problem}`);
      const opts: IClientPublishOptions = { qos: cfg.qos, retain: cfg.retain };
      if (v5 && cfg.user_properties && Object.keys(msg.headers).length) opts.properties = { userProperties: { ...msg.headers } };
      return { topic, payload: valueToBuffer(msg.value), opts };
    };

    /**
     * Publish until the broker acknowledged, retrying retryable errors with backoff; with
     * publish_timeout, until `deadline` (scheduler time): then the publish is withdrawn from mqtt.js
     * and the message fails back to its input.
     */
    const publish$ = (msg: Msg, topic: string, payload: Buffer, opts: IClientPublishOptions, deadline: number | null) =>
      new Observable<Msg>((subscriber) => {
        let attempt = 0;
        let current: TrackedPublish | null = null;
        let retryTimer: Subscription | null = null;
        let expiry: Subscription | null = null;
        let over = false;
        const end = () => {
          over = true;
          expiry?.unsubscribe();
          retryTimer?.unsubscribe();
        };
        const fail = (err: unknown, retryable: boolean) => {
          ctx.metrics.error('write');
          const reason = errorMessage(err);
          if (!retryable) {
            end();
            ctx.reject(msg, err);
            subscriber.complete();
            return;
          }
          attempt++;
          const delayMs = backoffDelay(DEFAULT_BACKOFF, attempt);
          if (err instanceof RunnerError && err.code === 'AUTH_FAILED') setReady(false, reason);
          log.warn({ err: reason, topic, attempt, retryInMs: delayMs }, 'mqtt publish failed; retrying');
          retryTimer = ctx.scheduler.schedule(start, delayMs);
        };
        function start() {
          retryTimer = null;
          if (over) return;
          if (closed) return fail(new RunnerError('WRITE_FAILED', 'the mqtt output is closed', { retryable: true }), true);
          let handle: TrackedPublish | null = null;
          const settled = (err?: Error) => {
            if (handle === null || current === handle) current = null;
            if (over) return;
            if (err) {
              const e = publishError(err, topic, link.broker());
              return fail(e, isRetryable(e));
            }
            end();
            if (ready && !ready.ok && client.connected) setReady(true);
            subscriber.next(msg);
            subscriber.complete();
          };
          // Only a publish that may time out needs tracking (it reaches into mqtt.js's internals).
          if (deadline === null) client.publish(topic, payload, opts, (err) => settled(err));
          else {
            handle = trackedPublish(client, store, topic, payload, opts, settled);
            if (!over && !retryTimer) current = handle;
          }
        }
        const expire = () => {
          expiry = null;
          if (over) return;
          const outcome = current?.withdraw() ?? 'settled';
          if (outcome === 'committed') {
            log.info({ topic, messageId: current?.messageId }, `publish_timeout ${cfg.publish_timeout} passed, but the broker already has the message (QoS 2 PUBREC) or it is being written: waiting for its acknowledgement`);
            return;
          }
          end();
          current = null;
          ctx.metrics.error('write');
          const err = new RunnerError(
            'WRITE_FAILED',
            `publishing to ${JSON.stringify(topic)} at ${link.broker()}: not acknowledged within publish_timeout ${cfg.publish_timeout}${client.connected ? '' : ' (not connected)'}; withdrawn from the client, it will not be sent later`,
            { retryable: true },
          );
          log.warn({ topic, attempts: attempt + 1, connected: client.connected }, err.message);
          msg.ack.fail(err);
          subscriber.complete();
        };
        if (deadline !== null) {
          const left = deadline - ctx.scheduler.now();
          if (left <= 0) {
            // Waited for a publish slot (max_in_flight) past its deadline: never handed to mqtt.js.
            expire();
            return () => end();
          }
          expiry = ctx.scheduler.schedule(expire, left);
        }
        start();
        // Unsubscribed (the drain timed out): stop retrying; mqtt.js keeps what it has.
        return () => end();
      });

    return (source) =>
      source.pipe(
        // The publish_timeout of a message runs from here (waiting for a publish slot included).
        map((msg) => ({ msg, deadline: timeoutMs > 0 ? ctx.scheduler.now() + timeoutMs : null })),
        // Topics are worked out one message at a time, so publishes start in the order messages came.
        concatMap(({ msg, deadline }) =>
          defer(() => from(prepare(msg))).pipe(
            map((p) => ({ msg, deadline, ...p })),
            catchError((err) => {
              ctx.metrics.error('write');
              ctx.reject(msg, err);
              return EMPTY;
            }),
          ),
        ),
        mergeMap(({ msg, deadline, topic, payload, opts }) => publish$(msg, topic, payload, opts, deadline), cfg.max_in_flight),
      );
  },
});

/** A publish callback error as a RunnerError: rejected (never publishable), not authorised, or retryable. */
export function publishError(err: unknown, topic: string, broker: string): RunnerError {
  if (err instanceof RunnerError) return err;
  const code = (err as { code?: unknown })?.code;
  const text = `publishing to ${JSON.stringify(topic)} at ${broker}: ${errorMessage(err)}`;
  if (typeof code === 'number' && REJECTED_CODES.has(code)) return new RunnerError('WRITE_REJECTED', text, { cause: err, retryable: false });
  if (typeof code === 'number' && AUTH_CODES.has(code)) {
    return new RunnerError('AUTH_FAILED', `${text}; the broker's ACL does not let this user publish to this topic`, { cause: err, retryable: true });
  }
  return new RunnerError('WRITE_FAILED', text, { cause: err, retryable: true });
}
