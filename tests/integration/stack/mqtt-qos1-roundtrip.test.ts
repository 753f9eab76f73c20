/**
 * The local stack's Mosquitto is a real broker that keeps a persistent session: a QoS 1
 * subscriber with clean=false receives what a publisher sent while it was online, and after a
 * disconnect it receives every message published while it was offline, in order, once it comes
 * back with the same client id.
 * Connection: MQTT_URL (scripts/stack env), default mqtt://127.0.0.1:1883.
 */
import { randomUUID } from 'node:crypto';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';

const url = process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883';
const run = randomUUID().slice(0, 8);
const topic = `stack-test/${run}/qos1`;
const subscriberId = `stack-test-sub-${run}`;
const OFFLINE = 200;

const clients: MqttClient[] = [];

/** Connects with the 'message' listener attached before CONNACK, so queued messages that arrive
 * right behind it are not missed. Resolves with the client and the CONNACK's sessionPresent. */
function connect(opts: IClientOptions, onMessage?: (topic: string, payload: Buffer, qos: number) => void) {
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 10_000, ...opts });
  clients.push(client);
  if (onMessage) client.on('message', (t, payload, packet) => onMessage(t, payload, packet.qos));
  return new Promise<{ client: MqttClient; sessionPresent: boolean }>((resolve, reject) => {
    client.once('connect', (connack) => resolve({ client, sessionPresent: connack.sessionPresent }));
    client.once('error', reject);
  });
}

/** Collects messages of `topic` until `count` have arrived. */
function collector(count: number) {
  const got: { payload: string; qos: number }[] = [];
  let done!: () => void;
  const complete = new Promise<void>((resolve) => (done = resolve));
  const onMessage = (t: string, payload: Buffer, qos: number) => {
    if (t !== topic) return;
    got.push({ payload: payload.toString(), qos });
    if (got.length === count) done();
  };
  return { got, complete, onMessage };
}

afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync().catch(() => undefined)));
  // drop the persistent session from the broker
  const { client } = await connect({ clientId: subscriberId, clean: true });
  await client.endAsync();
});

describe('local stack: Mosquitto', () => {
  it('delivers QoS 1 messages to a persistent-session subscriber, including those published while it was offline', async () => {
    // 1. online: subscribe with a persistent session and receive one message
    const online = collector(1);
    const first = await connect({ clientId: subscriberId, clean: false }, online.onMessage);
    const granted = await first.client.subscribeAsync(topic, { qos: 1 });
    expect(granted[0].qos).toBe(1);

    const pub = (await connect({ clientId: `stack-test-pub-${run}`, clean: true })).client;
    await pub.publishAsync(topic, 'online-0', { qos: 1 });
    await online.complete;
    expect(online.got).toEqual([{ payload: 'online-0', qos: 1 }]);

    // 2. offline: the subscriber disconnects; every publish is acknowledged by the broker
    await first.client.endAsync();
    for (let i = 0; i < OFFLINE; i++) await pub.publishAsync(topic, `offline-${i}`, { qos: 1 });
    await pub.endAsync();

    // 3. back online with the same client id: the session is still there, nothing is lost
    const offline = collector(OFFLINE);
    const second = await connect({ clientId: subscriberId, clean: false }, offline.onMessage);
    expect(second.sessionPresent).toBe(true);
    await offline.complete;
    expect(offline.got.map((m) => m.payload)).toEqual(Array.from({ length: OFFLINE }, (_, i) => `offline-${i}`));
    expect(offline.got.every((m) => m.qos === 1)).toBe(true);
    await second.client.endAsync();
  });
});
