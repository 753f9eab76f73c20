/**
 * The mqtt output's `publish_timeout` against a real Mosquitto (a private one, tests/helpers/
 * mosquitto.ts, so the shared broker is never stopped): with the broker down, a publish fails back
 * to its input once the timeout has passed, and it is withdrawn from mqtt.js, so it is never
 * delivered after the broker is back, at QoS 1 (the client's store of unacknowledged messages)
 * and QoS 0 (its offline queue), also for a message that waited for a publish slot. An output
 * without the timeout, publishing beside them, shows what would happen otherwise: its message is
 * sent once the broker is back.
 *
 * How "never" is shown without waiting for a while: a subscriber with a persistent session sees
 * everything published on the test's topics, and the broker keeps its queue across the restart.
 * After the restart each timed output publishes a marker. mqtt.js sends what it still holds
 * before anything published later (it replays its store before it reports the connection, and
 * sends its offline queue first), and the broker delivers in the order it received, so once the
 * subscriber has a marker, a withdrawn message that was still sent would have arrived before it.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { Subject } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunnerError } from '../../../core/errors.ts';
import { type AckOutcome, type Msg, ackHandle, createMsg } from '../../../core/message.ts';
import { mqttOutput } from '../../../operators/mqtt/output.ts';
import { type PrivateBroker, privateMosquitto } from '../../helpers/mosquitto.ts';
import { Collector, type OutputCfg, uniq, watchedContext, withDefaults } from './harness.ts';

const fast = { reconnect: { min: '50ms', max: '200ms' } };

/**
 * An mqtt output run as the engine runs it: a message it emits is acknowledged (done); one it
 * fails settles its ack with the error. `send` resolves with the outcome its input would get.
 */
function output(partial: Partial<OutputCfg> & { urls: string[] }) {
  const cfg = withDefaults<OutputCfg>(mqttOutput.spec.config, { client_id: uniq('out'), ...fast, ...partial });
  const { ctx, readiness, logged } = watchedContext({ pipeline: 'mqtt-test', component: 'output.mqtt' });
  const input = new Subject<Msg>();
  const emitted = new Collector<Msg>();
  const sub = input.pipe(mqttOutput.create(cfg, ctx)).subscribe({
    next: (m) => {
      emitted.push(m);
      m.ack.done();
    },
    complete: () => emitted.complete(),
  });
  return {
    ctx,
    emitted,
    readiness,
    logged,
    send: (value: unknown): Promise<AckOutcome> =>
      new Promise((resolve) => {
        input.next(createMsg(value, { ack: ackHandle(resolve) }));
      }),
    async close() {
      input.complete();
      await emitted.done();
      await ctx.close();
      sub.unsubscribe();
    },
  };
}

describe('mqtt output publish_timeout', () => {
  let broker: PrivateBroker;
  let watcher: MqttClient;
  const base = uniq('timeout');
  /** topic -> payloads the subscriber received, in order. */
  const seen: { topic: string; value: unknown }[] = [];
  const arrived = new Subject<void>();
  const has = (topic: string, n: number) => seen.some((s) => s.topic === `${base}/${topic}` && (s.value as { n?: number }).n === n);
  const until = (pred: () => boolean) =>
    new Promise<void>((resolve) => {
      if (pred()) return resolve();
      const s = arrived.subscribe(() => {
        if (!pred()) return;
        s.unsubscribe();
        resolve();
      });
    });

  beforeAll(async () => {
    broker = await privateMosquitto();
    // Persistent session, QoS 1: the broker keeps the subscription and queues for it across its restart.
    watcher = await mqtt.connectAsync(broker.url, { clientId: uniq('watch'), clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 600 }, reconnectPeriod: 100 });
    watcher.on('message', (topic, payload) => {
      seen.push({ topic, value: JSON.parse(payload.toString()) });
      arrived.next();
    });
    await watcher.subscribeAsync(`${base}/#`, { qos: 1 });
  });
  afterAll(async () => {
    await watcher?.endAsync();
    await broker?.stop();
  });

  it('broker down: the publish fails after the timeout, withdrawn, and is never delivered after the broker is back (QoS 1, QoS 0, waiting for a slot); without the timeout it is', async () => {
    await broker.stop();
    const qos1 = output({ urls: [broker.url], topic: `${base}/qos1`, qos: 1, publish_timeout: '300ms', max_in_flight: 1 });
    const qos0 = output({ urls: [broker.url], topic: `${base}/qos0`, qos: 0, publish_timeout: '300ms' });
    const control = output({ urls: [broker.url], topic: `${base}/control`, qos: 1 });
    await qos1.readiness((r) => !r.ready && /ECONNREFUSED/.test(r.reason ?? ''));

    // Two QoS 1 messages with max_in_flight 1: the first is handed to mqtt.js (stored offline),
    // the second waits for the slot; both run out of time.
    const outcomes = await Promise.all([qos1.send({ n: 1 }), qos1.send({ n: 2 }), qos0.send({ n: 1 })]);
    const controlDone = control.send({ n: 1 });
    for (const o of outcomes) {
      expect(o.ok).toBe(false);
      const err = (o as { error: unknown }).error as RunnerError;
      expect(err).toBeInstanceOf(RunnerError);
      expect(err.code).toBe('WRITE_FAILED');
      expect(err.retryable).toBe(true);
      expect(err.message).toMatch(/not acknowledged within publish_timeout 300ms \(not connected\); withdrawn from the client, it will not be sent later/);
    }
    expect(qos1.emitted.all).toEqual([]);
    expect(qos0.emitted.all).toEqual([]);
    await qos1.logged((l) => /withdrawn from the client/.test(l.msg));

    await broker.start();
    // The output without a timeout sends its message once the broker is back.
    expect(await controlDone).toEqual({ ok: true });
    // Every client back on the broker (the subscriber's session kept), then the markers.
    await Promise.all([qos1.readiness((r) => r.ready), qos0.readiness((r) => r.ready), until(() => watcher.connected)]);
    expect(await qos1.send({ n: 3 })).toEqual({ ok: true });
    expect(await qos0.send({ n: 3 })).toEqual({ ok: true });
    await until(() => has('qos1', 3) && has('qos0', 3) && has('control', 1));

    // Only the markers: none of the withdrawn messages, before or after them.
    expect(seen.filter((m) => m.topic !== `${base}/control`).map((m) => `${m.topic.slice(base.length + 1)} ${JSON.stringify(m.value)}`).sort()).toEqual(['qos0 {"n":3}', 'qos1 {"n":3}']);
    expect(seen.filter((m) => m.topic === `${base}/control`).map((m) => m.value)).toEqual([{ n: 1 }]);
    await Promise.all([qos1.close(), qos0.close(), control.close()]);
  });
});
