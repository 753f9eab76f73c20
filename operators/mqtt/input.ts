import { Type } from '@sinclair/typebox';
import type { IConnackPacket, IPublishPacket, MqttClient } from 'mqtt';
import { Observable } from 'rxjs';
import { parseDuration } from '../../core/duration.ts';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import { type Msg, type ValueFormat, ackHandle, bufferToValue } from '../../core/message.ts';
import { type LintIssue, defineInput } from '../../core/operator.ts';
import { DEFAULT_BACKOFF, backoffDelay } from '../../core/retry.ts';
import { Duration, Obj } from '../../core/schema.ts';
import { type AckSender, type Delivery, OrderedAcks } from './acks.ts';
import { InboundKeepalive } from './keepalive.ts';
import { type MqttLink, connectMqtt, connectionFields, describeBrokers, lintConnection } from './client.ts';
import { parseTopicPattern, topicFilterProblem, topicMatches, topicMetadata, type TopicPattern } from './topics.ts';

const QoS = (description: string, def: 0 | 1 | 2) => Type.Union([Type.Literal(0), Type.Literal(1), Type.Literal(2)], { default: def, description });

/** Topics whose metadata the input keeps worked out (the cache starts over when full). */
const TOPIC_CACHE_SIZE = 10_000;

/** The longest session expiry MQTT 5 can express (0xFFFFFFFF s means "never expires"). */
const MAX_SESSION_EXPIRY_S = 0xffff_fffe;

const config = Obj({
  ...connectionFields,
  topics: Type.Array(Type.String({ minLength: 1, description: 'A topic filter: `heatpump/+/telemetry`, `homelab/#`, or `$share/<group>/<filter>`.' }), {
    minItems: 1,
    description:
      'Topic filters to subscribe to, with the wildcards `+` (one level) and `#` (all levels below). `$share/<group>/<filter>` is a shared subscription (MQTT 5, and Mosquitto also for 3.1.1): the broker gives each message of the filter to one of the clients in the group, so several runner instances (each with its own client_id) split the load.',
  }),
  qos: QoS(
    'QoS of the subscriptions: 1 (the default) for at-least-once, 2 (the broker does its exactly-once handshake; the runner still gives at-least-once), 0 for at-most-once (messages can be lost).',
    1,
  ),
  clean_session: Type.Boolean({
    default: false,
    description:
      'false (the default): a persistent session, so the broker keeps the subscriptions and queues QoS 1/2 messages while the runner is down, and sends unacknowledged messages again. true: a new session on every connection (messages published meanwhile, and messages not yet acknowledged when a connection drops, are lost).',
  }),
  session_expiry: Duration(
    'MQTT 5: how long the broker keeps the persistent session (and queues messages for it) after the runner disconnected. Ignored with clean_session: true and with MQTT 3.1.1, where the broker decides (Mosquitto: persistent_client_expiration).',
    '7d',
  ),
  topic_pattern: Type.String({
    default: '',
    description:
      'Names for topic levels, e.g. `heatpump/{device_id}/telemetry`: each `{name}` level becomes metadata `mqtt_topic_<name>` (here `mqtt_topic_device_id`); `+` matches one level without a name, a final `#` any number of levels. A message whose topic does not match is rejected to the dead-letter output. Empty (the default): no names, only `mqtt_topic_segments`.',
  }),
  value_format: Type.Union([Type.Literal('json'), Type.Literal('auto'), Type.Literal('string'), Type.Literal('bytes')], {
    default: 'json',
    description:
      'How the payload becomes the message value: `json` parses it (a payload that is not JSON is rejected to the dead-letter output, with its bytes as they were), `auto` parses JSON and keeps anything else as text, `string` keeps UTF-8 text, `bytes` keeps the bytes.',
  }),
  max_in_flight: Type.Integer({
    minimum: 1,
    maximum: 65_535,
    default: 1000,
    description:
      'Messages handed to the pipeline and not yet done, at most. With MQTT 5 it is sent to the broker as receive maximum, so the broker itself holds back further QoS 1/2 messages until earlier ones are acknowledged; should the broker send more anyway (Mosquitto 2.0.11 does under load), the input stops reading from the connection after the first message beyond `max_in_flight` until there is room again. Otherwise (MQTT 3.1.1, or QoS 0) the input stops reading from the connection while this many are in flight; if that lasts longer than 1.5 keepalive intervals the connection times out and is made again (nothing is lost).',
  }),
});

export const mqttInput = defineInput({
  spec: {
    name: 'mqtt',
    kind: 'input',
    summary: 'Subscribes to MQTT topics (3.1.1 or 5) with a persistent session; a message is acknowledged to the broker only once it is done downstream.',
    description: [
      'Each message becomes one pipeline message: the payload as `value_format` says, MQTT 5 user properties as headers, and metadata `mqtt_topic`, `mqtt_qos`, `mqtt_retained`, `mqtt_duplicate`, `mqtt_message_id` (null for QoS 0), `mqtt_topic_segments` (the topic split at `/`), one `mqtt_topic_<name>` per named level of `topic_pattern`, and with MQTT 5 `mqtt_content_type` and `mqtt_response_topic` when the publisher set them. Several values of one user property become a JSON array in the header.',
      '',
      'Acknowledgement: the PUBACK (QoS 1) or PUBREC (QoS 2) for a message is sent only when the message is done (written by the output, deliberately dropped, or stored by the dead-letter output), and in the order the messages arrived, as MQTT requires: a message still in progress holds back the acknowledgements of later ones. A message that fails (is not done) is never acknowledged; the input then reconnects (with backoff) and the broker, which resends unacknowledged messages of a persistent session on every reconnect, delivers it again. When the broker resends a message that is still in progress on a new connection, it is not handed out twice.',
      '',
      'Flow control: at most `max_in_flight` messages are in progress. With MQTT 5 that number is the receive maximum the broker must respect for QoS 1/2; with 3.1.1 the broker\'s own limit applies (Mosquitto: max_inflight_messages) and the input also stops reading from the socket when `max_in_flight` is reached (as it does for QoS 0 messages with MQTT 5, and for QoS 1/2 messages beyond the receive maximum from a broker that does not keep to it).',
      '',
      'Stopping: the input stops handing out messages and completes; the connection stays open until in-flight messages are drained so their acknowledgements reach the broker, then it disconnects without ending the session (no unsubscribe). Messages that arrived after the stop are not acknowledged and come again on the next start.',
      '',
      'The broker connection is retried forever with backoff; the input is not ready until it is connected and its subscriptions are granted, and says why (a refused subscription names the filter and the reason). Subscriptions are made on the first connection and whenever the broker has no session for the client. A message on a topic matched by none of `topics` (a subscription left in the persistent session by an earlier configuration) is acknowledged, dropped and counted as discarded.',
    ].join('\n'),
    config,
    examples: [
      {
        title: 'Heat-pump telemetry with the device id from the topic',
        config: 'urls: ["${MQTT_URL:-mqtt://127.0.0.1:1883}"]\ntopics: [heatpump/+/telemetry]\ntopic_pattern: heatpump/{device_id}/telemetry',
      },
      {
        title: 'Several bridge instances sharing the load (MQTT 5 shared subscription)',
        config:
          'urls: ["${MQTT_URL:-mqtt://127.0.0.1:1883}"]\nclient_id: bridge-${HOSTNAME:-1}\ntopics: ["$share/bridge/heatpump/+/telemetry", "$share/bridge/energy/+/telemetry"]\ntopic_pattern: "+/{device_id}/telemetry"\nmax_in_flight: 2000',
      },
      {
        title: 'TLS and a password, MQTT 3.1.1 broker, payloads kept as text',
        config:
          'urls: ["mqtts://mqtt.example.net:8883"]\nusername: runner\npassword: ${MQTT_PASSWORD:-}\ntls:\n  ca: /etc/ssl/certs/homelab-ca.pem\nprotocol_version: 4\ntopics: ["homelab/#"]\nvalue_format: auto',
      },
    ],
    delivery:
      'At-least-once with QoS 1 or 2 and a persistent session (clean_session: false): nothing is acknowledged before it is done, so a crash, a lost connection or a failed message makes the broker deliver it again. Duplicates happen when: the runner stops or crashes after messages were done but before their acknowledgement reached the broker (including done messages held back behind one still in progress); a message failed downstream, and the reconnect makes the broker resend it together with every later message not yet acknowledged; the session expired or the broker lost it (then unacknowledged messages are lost instead); retained messages are sent again on every new subscription (with MQTT 5 only when the subscription did not exist yet). QoS 2 is at-least-once here too: PUBREC waits for the message to be done, and a resent PUBLISH is a new delivery. Losses: QoS 0 messages, and with clean_session: true any message not done when a connection drops. Two instances with the same client_id take the session from each other on every connect: messages then go to whichever is connected and unacknowledged ones are resent to the other; do not do that (use $share with distinct client ids).',
    rejects: true,
    lint(cfg) {
      const issues: LintIssue[] = lintConnection(cfg);
      cfg.topics.forEach((t, i) => {
        const problem = topicFilterProblem(t);
        if (problem) issues.push({ path: ['topics', i], message: `${JSON.stringify(t)}: ${problem}` });
      });
      if (cfg.topic_pattern) {
        try {
          parseTopicPattern(cfg.topic_pattern);
        } catch (err) {
          issues.push({ path: ['topic_pattern'], message: errorMessage(err) });
        }
      }
      const expiryS = parseDuration(cfg.session_expiry) / 1000;
      if (expiryS > MAX_SESSION_EXPIRY_S) issues.push({ path: ['session_expiry'], message: 'session_expiry is longer than MQTT 5 allows (about 136 years)' });
      if (cfg.protocol_version === 5 && !cfg.clean_session && expiryS < 1) {
        issues.push({ path: ['session_expiry'], message: 'with session_expiry 0 the broker ends the session when the connection closes, so nothing is kept while the runner is down; give it a duration, or say clean_session: true' });
      }
      return issues;
    },
  },
  create(cfg, ctx) {
    for (const t of cfg.topics) {
      const problem = topicFilterProblem(t);
      if (problem) throw new RunnerError('CONFIG_INVALID', `topic filter ${JSON.stringify(t)}: ${problem}`);
    }
    const pattern: TopicPattern | null = cfg.topic_pattern ? parseTopicPattern(cfg.topic_pattern) : null;
    const topics = [...new Set(cfg.topics)];
    const format = cfg.value_format as ValueFormat;
    const v5 = cfg.protocol_version === 5;
    const log = ctx.logger;
    const where = describeBrokers(cfg);
    let link: MqttLink | null = null;
    let closed = false;
    let nackTimer: { unsubscribe(): void } | null = null;
    let subscribeTimer: { unsubscribe(): void } | null = null;
    let keepaliveTimer: { unsubscribe(): void } | null = null;
    let flushAcks: () => void = () => undefined;

    let ready: { ok: boolean; reason?: string } | null = null;
    const setReady = (ok: boolean, reason?: string) => {
      if (closed || (ready && ready.ok === ok && ready.reason === reason)) return;
      ready = { ok, reason };
      ctx.setReady(ok, reason);
    };
    setReady(false, `connecting to MQTT broker ${where}`);

    ctx.onClose(async () => {
      // After the drain: send the acknowledgements that are due, then disconnect, keeping the session.
      flushAcks();
      closed = true;
      nackTimer?.unsubscribe();
      subscribeTimer?.unsubscribe();
      keepaliveTimer?.unsubscribe();
      await link?.end();
    });

    return new Observable<Msg>((subscriber) => {
      if (link) throw new RunnerError('INTERNAL', 'the mqtt input was subscribed twice');
      let handingOut = true;
      /** Messages handed out and not settled. */
      let inFlight = 0;
      /** mqtt.js packet callbacks held back while `max_in_flight` messages are in flight. */
      const held: (() => void)[] = [];
      let subscribed = false;
      let subscribeAttempt = 0;
      let nacks = 0;
      const warnedTopics = new Set<string>();
      // What a topic name gives (subscribed or not, its metadata) depends on the topic alone, and a
      // bridge sees the same few thousand topics over and over: worked out once per topic.
      const topicCache = new Map<string, { subscribed: boolean; fromTopic: ReturnType<typeof topicMetadata> }>();
      const topicInfo = (topic: string) => {
        let info = topicCache.get(topic);
        if (!info) {
          if (topicCache.size >= TOPIC_CACHE_SIZE) topicCache.clear();
          info = { subscribed: topics.some((f) => topicMatches(f, topic)), fromTopic: topicMetadata(topic, pattern) };
          topicCache.set(topic, info);
        }
        return info;
      };
      const policy = { ...DEFAULT_BACKOFF, initialMs: Math.max(1, parseDuration(cfg.reconnect.min)), maxMs: Math.max(1, parseDuration(cfg.reconnect.max)) };

      let keepalive: InboundKeepalive | null = null;
      // PUBACK/PUBREC go out only from here, in order, once messages are done (see acks.ts).
      let sendAck: AckSender = () => undefined;
      const acks = new OrderedAcks((messageId, qos) => sendAck(messageId, qos));

      const releaseHeld = () => {
        while (held.length && (inFlight < cfg.max_in_flight || !handingOut)) held.shift()!();
      };

      const onConnect = (connack: IConnackPacket) => {
        if (closed) return;
        keepalive?.connected();
        const sessionPresent = Boolean(connack.sessionPresent) && !cfg.clean_session;
        if (!sessionPresent) acks.sessionLost();
        if (!cfg.clean_session && !connack.sessionPresent && subscribed) {
          log.warn({ broker: link!.broker(), clientId: link!.clientId }, 'the broker had no session for this client (expired or lost): messages not acknowledged before are not sent again');
        }
        if (!subscribed || !sessionPresent) subscribe();
        else setReady(true);
      };

      const subscribe = () => {
        subscribeTimer?.unsubscribe();
        subscribeTimer = null;
        const client = link!.client;
        if (closed || !client.connected) return;
        setReady(false, `subscribing to ${topics.join(', ')} at ${link!.broker()}`);
        // MQTT 5 retain handling 1: retained messages only for a subscription that did not exist
        // yet, so a restart with a persistent session does not deliver them again.
        const rh = v5 && !cfg.clean_session ? 1 : 0;
        const request = Object.fromEntries(topics.map((t) => [t, v5 ? { qos: cfg.qos, rh } : { qos: cfg.qos }]));
        client.subscribe(request, (err, _granted, packet) => {
          if (closed) return;
          const codes: number[] = (packet as { granted?: number[] } | undefined)?.granted ?? [];
          if (err && codes.length !== topics.length) {
            // No SUBACK (the connection closed): the next connection subscribes again.
            log.warn({ err: errorMessage(err) }, 'mqtt subscribe did not complete');
            return;
          }
          const problems: string[] = [];
          topics.forEach((t, i) => {
            const code = codes[i]!;
            if (code >= 0x80) problems.push(`the broker refused the subscription to ${JSON.stringify(t)} (${subackReason(code)})`);
            else if (code < cfg.qos) problems.push(`the broker granted QoS ${code} instead of ${cfg.qos} for ${JSON.stringify(t)}; messages can be lost`);
          });
          if (problems.length) {
            const reason = `${problems.join('; ')} at ${link!.broker()}`;
            subscribeAttempt++;
            const ms = backoffDelay(policy, subscribeAttempt);
            log.error({ clientId: link!.clientId, retryInMs: ms }, reason);
            ctx.metrics.error('subscribe');
            setReady(false, reason);
            subscribed = codes.some((c) => c < 0x80);
            // Permissions can change on the broker: ask again, with backoff.
            subscribeTimer = ctx.scheduler.schedule(() => subscribe(), ms);
            return;
          }
          subscribed = true;
          subscribeAttempt = 0;
          log.info({ broker: link!.broker(), clientId: link!.clientId, topics, qos: cfg.qos }, 'mqtt subscribed');
          setReady(true);
        });
      };

      const onDown = (reason: string) => {
        acks.connectionLost();
        setReady(false, reason);
      };

      link = connectMqtt(cfg, ctx, {
        clean: cfg.clean_session,
        sessionExpirySec: Math.floor(parseDuration(cfg.session_expiry) / 1000),
        receiveMaximum: cfg.max_in_flight,
        onConnect,
        onDown,
      });
      const client: MqttClient = link.client;
      const internals = client as unknown as Internals;
      if (typeof internals._sendPacket !== 'function' || typeof internals.handleMessage !== 'function') {
        throw new RunnerError('INTERNAL', 'this mqtt.js version has no _sendPacket/handleMessage: acknowledging after done is not possible');
      }
      if (typeof internals.reschedulePing !== 'function' || typeof internals.sendPing !== 'function') {
        throw new RunnerError('INTERNAL', 'this mqtt.js version has no reschedulePing/sendPing: the keepalive of a reading input cannot be kept');
      }

      // A handled PUBLISH proves the connection alive; a PINGREQ keeps the broker's side (keepalive.ts).
      const keepaliveMs = parseDuration(cfg.keepalive);
      if (keepaliveMs > 0) {
        keepalive = new InboundKeepalive(keepaliveMs, () => ctx.scheduler.now(), {
          proveAlive: () => {
            if (client.connected) internals.reschedulePing(true);
          },
          ping: () => {
            if (client.connected) internals.sendPing();
          },
        });
        const ka = keepalive;
        const tick = () => {
          if (closed) return;
          if (client.connected) ka.tick();
          keepaliveTimer = ctx.scheduler.schedule(tick, ka.tickEveryMs);
        };
        keepaliveTimer = ctx.scheduler.schedule(tick, ka.tickEveryMs);
      }

      const send = internals._sendPacket.bind(client);
      sendAck = (messageId, qos) => {
        if (!client.connected) return;
        keepalive?.sent();
        send({ cmd: qos === 1 ? 'puback' : 'pubrec', messageId, reasonCode: 0 });
      };
      flushAcks = () => acks.flush();
      // Holding one of mqtt.js's packet callbacks stops it from reading further packets: that is the
      // local flow control, applied once `max_in_flight` messages are in flight.
      const whenRoom = (cb: () => void, limit = cfg.max_in_flight) => {
        if (inFlight < limit || !handingOut) cb();
        else held.push(cb);
      };
      // With MQTT 5 the broker should keep QoS 1/2 within the receive maximum (= max_in_flight), so
      // reading goes on (and PINGRESPs are seen) with max_in_flight messages in progress. A broker
      // that sends more (Mosquitto 2.0.11 does once acknowledgements flow: see
      // bench/mqtt-bridge/receive-maximum-probe.ts) would flood the pipeline: past max_in_flight the
      // input stops reading, as with 3.1.1.
      const qos12Limit = v5 ? cfg.max_in_flight + 1 : cfg.max_in_flight;
      // mqtt.js acknowledges a QoS 1/2 PUBLISH as soon as it has parsed it: swallow those
      // acknowledgements (calling their callbacks, so it goes on reading). Everything else passes.
      internals._sendPacket = (packet, cb, ...rest) => {
        if (packet.cmd === 'puback' || packet.cmd === 'pubrec') return whenRoom(() => cb?.(), qos12Limit);
        keepalive?.sent();
        return send(packet, cb, ...rest);
      };
      // Called by mqtt.js for a QoS 0 or 1 PUBLISH after the 'packetreceive' event that handed it
      // out, and for QoS 2 on PUBREL (after our PUBREC: let it answer with PUBCOMP).
      internals.handleMessage = (packet, cb) => {
        if (packet.qos === 0) whenRoom(() => cb());
        else cb();
      };

      const onNack = (err: unknown, delivery: Delivery | null) => {
        ctx.metrics.error('nack');
        if (!delivery) {
          log.warn({ err: errorMessage(err) }, 'a QoS 0 message failed downstream; QoS 0 messages are not delivered again');
          return;
        }
        if (nackTimer || closed) return;
        nacks++;
        const ms = backoffDelay(policy, nacks);
        log.warn({ err: errorMessage(err), messageId: delivery.messageId, reconnectInMs: ms }, 'a message failed downstream; reconnecting so that the broker sends it again');
        nackTimer = ctx.scheduler.schedule(() => {
          nackTimer = null;
          // A connection lost meanwhile already brings the resend.
          if (closed || !acks.blocked || !client.connected) return;
          client.reconnect();
        }, ms);
      };

      const handOut = (packet: IPublishPacket, delivery: Delivery | null) => {
        inFlight++;
        const topic = packet.topic;
        const ack = ackHandle((outcome) => {
          inFlight--;
          if (delivery) {
            const sent = acks.settle(delivery, outcome.ok);
            if (sent > 0) nacks = 0;
          }
          if (!outcome.ok) onNack(outcome.error, delivery);
          releaseHeld();
        });
        const meta: Record<string, unknown> = {
          mqtt_topic: topic,
          mqtt_qos: packet.qos,
          mqtt_retained: packet.retain,
          mqtt_duplicate: packet.dup,
          mqtt_message_id: packet.messageId ?? null,
        };
        const headers: Record<string, string> = {};
        const props = packet.properties;
        if (props) {
          if (props.contentType !== undefined) meta.mqtt_content_type = props.contentType;
          if (props.responseTopic !== undefined) meta.mqtt_response_topic = props.responseTopic;
          for (const [k, v] of Object.entries(props.userProperties ?? {})) headers[k] = Array.isArray(v) ? JSON.stringify(v) : String(v);
        }
        const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
        const msg: Msg = { value: payload, key: null, headers, meta, ack, createdAt: Date.now() };

        const known = topicInfo(topic);
        if (!known.subscribed) {
          if (!warnedTopics.has(topic) && warnedTopics.size < 1000) {
            warnedTopics.add(topic);
            log.warn({ topic, topics }, 'message on a topic none of `topics` matches (a subscription left in the persistent session by an earlier configuration?); acknowledged and dropped');
          }
          ctx.metrics.discarded('unsubscribed_topic');
          ack.done();
          return;
        }
        const fromTopic = known.fromTopic;
        if ('error' in fromTopic) {
          // Rejected here: the dead-letter flow's completion calls ack.done(), which sends the PUBACK.
          ctx.reject(msg, new RunnerError('MESSAGE_INVALID', fromTopic.error));
          return;
        }
        // Each message gets its own copies: the cached entry must not change with the message.
        Object.assign(meta, fromTopic.meta);
        meta.mqtt_topic_segments = [...(fromTopic.meta.mqtt_topic_segments as string[])];
        try {
          msg.value = bufferToValue(payload, format);
          if (msg.value !== null && typeof msg.value === 'object' && !Buffer.isBuffer(msg.value)) msg.source = { value: msg.value, bytes: payload };
        } catch (err) {
          ctx.reject(msg, err); // the value stays the payload's bytes, as they came
          return;
        }
        subscriber.next(msg);
      };

      client.on('packetreceive', (p) => {
        keepalive?.received();
        if (p.cmd !== 'publish' || closed) return;
        const packet = p as IPublishPacket;
        if (packet.qos === 0) {
          if (handingOut && !subscriber.closed) handOut(packet, null);
          return;
        }
        const id = packet.messageId!;
        if (!handingOut || subscriber.closed) {
          // After the stop only resends of messages already handed out are tracked (to acknowledge them).
          if (acks.isResend(id, packet.dup)) acks.received(id, packet.qos, packet.dup);
          return;
        }
        const { delivery, fresh } = acks.received(id, packet.qos, packet.dup);
        if (fresh) handOut(packet, delivery);
        else log.debug({ messageId: id, topic: packet.topic }, 'resend of a message still in progress or done; not handed out again');
      });

      const stopSub = ctx.stop$.subscribe(() => {
        handingOut = false;
        releaseHeld();
        log.info({ inFlight }, 'mqtt input stopping: no new messages; acknowledging in-flight ones as they finish');
        subscriber.complete();
      });

      return () => {
        handingOut = false;
        stopSub.unsubscribe();
        releaseHeld();
      };
    });
  },
});

/** mqtt.js internals the input relies on (mqtt.js 5; checked at start). */
interface Internals {
  _sendPacket(packet: { cmd: string; messageId?: number; reasonCode?: number }, cb?: (err?: Error) => void, ...rest: unknown[]): void;
  handleMessage(packet: IPublishPacket, cb: (err?: Error) => void): void;
  reschedulePing(force?: boolean): void;
  sendPing(): void;
}

const SUBACK_REASONS: Record<number, string> = {
  0x80: 'unspecified error or not authorised',
  0x83: 'implementation specific error',
  0x87: 'not authorised',
  0x8f: 'topic filter invalid',
  0x91: 'packet identifier in use',
  0x97: 'quota exceeded',
  0x9e: 'shared subscriptions not supported',
  0xa1: 'subscription identifiers not supported',
  0xa2: 'wildcard subscriptions not supported',
};
const subackReason = (code: number) => `reason code ${code}: ${SUBACK_REASONS[code] ?? 'refused'}; check the broker's ACL for this user and topic`;
