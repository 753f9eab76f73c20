import { Type } from '@sinclair/typebox';
import type { IClientPublishOptions } from 'mqtt';
import { EMPTY, catchError, concatMap, defer, from, map, mergeMap } from 'rxjs';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import { compileTemplate } from '../../core/expression.ts';
import { type Msg, valueToBuffer } from '../../core/message.ts';
import { type LintIssue, defineOutput } from '../../core/operator.ts';
import { retryWithBackoff } from '../../core/retry.ts';
import { Obj, Template } from '../../core/schema.ts';
import { connectMqtt, connectionFields, describeBrokers, lintConnection } from './client.ts';
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
    let closed = false;

    let ready: { ok: boolean; reason?: string } | null = null;
    const setReady = (ok: boolean, reason?: string) => {
      if (closed || (ready && ready.ok === ok && ready.reason === reason)) return;
      ready = { ok, reason };
      ctx.setReady(ok, reason);
    };
    setReady(false, `connecting to MQTT broker ${describeBrokers(cfg)}`);

    const link = connectMqtt(cfg, ctx, {
      // Nothing to keep for a publisher: no subscriptions, and mqtt.js resends its own unacknowledged messages.
      clean: true,
      onConnect: () => setReady(true),
      onDown: (reason) => setReady(false, reason),
    });
    const { client } = link;

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

    const publishOnce = (topic: string, payload: Buffer, opts: IClientPublishOptions) =>
      new Promise<void>((resolve, reject) => {
        if (closed) return reject(new RunnerError('WRITE_FAILED', 'the mqtt output is closed', { retryable: true }));
        client.publish(topic, payload, opts, (err) => (err ? reject(publishError(err, topic, link.broker())) : resolve()));
      });

    /** Publish until the broker acknowledged, retrying retryable errors with backoff, forever. */
    const publish$ = (msg: Msg, topic: string, payload: Buffer, opts: IClientPublishOptions) =>
      defer(() => from(publishOnce(topic, payload, opts))).pipe(
        retryWithBackoff({
          scheduler: ctx.scheduler,
          onRetry: (err, attempt, delayMs) => {
            ctx.metrics.error('write');
            const reason = errorMessage(err);
            if (err instanceof RunnerError && err.code === 'AUTH_FAILED') setReady(false, reason);
            log.warn({ err: reason, topic, attempt, retryInMs: delayMs }, 'mqtt publish failed; retrying');
          },
        }),
        map(() => {
          if (ready && !ready.ok && client.connected) setReady(true);
          return msg;
        }),
        catchError((err) => {
          ctx.metrics.error('write');
          ctx.reject(msg, err);
          return EMPTY;
        }),
      );

    return (source) =>
      source.pipe(
        // Topics are worked out one message at a time, so publishes start in the order messages came.
        concatMap((msg) =>
          defer(() => from(prepare(msg))).pipe(
            map((p) => ({ msg, ...p })),
            catchError((err) => {
              ctx.metrics.error('write');
              ctx.reject(msg, err);
              return EMPTY;
            }),
          ),
        ),
        mergeMap(({ msg, topic, payload, opts }) => publish$(msg, topic, payload, opts), cfg.max_in_flight),
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
