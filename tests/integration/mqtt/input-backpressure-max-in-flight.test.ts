/**
 * Inbound flow control against the real Mosquitto: with max_in_flight 5 and nothing acknowledged,
 * the input hands out 5 messages and no more, however many the broker holds; acknowledging them
 * lets the rest through, in order. MQTT 5: the broker itself stops at receive maximum 5. MQTT
 * 3.1.1: the broker sends up to its max_inflight_messages (100 in the stack) and the input stops
 * reading from the socket.
 *
 * Mosquitto 2.0.11 keeps to an MQTT 5 receive maximum only until acknowledgements flow; after that it
 * sends whatever is queued (bench/mqtt-bridge/receive-maximum-probe.ts). The input then stops
 * reading as well, after the first message beyond max_in_flight.
 *
 * "No more than 5" needs a point after which a 6th would have arrived: a second, unthrottled
 * subscriber receives all messages (the broker has dispatched every one of them), then makes a
 * round trip through the broker, and one more turn of the event loop lets anything the input's
 * socket holds be read. Only then is the count checked.
 */
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type RunningInput, client, forgetSession, startInput, subscribe, uniq } from './harness.ts';

let pub: MqttClient;
let side: MqttClient;
const running: RunningInput[] = [];
const sessions: { id: string; v: 4 | 5 }[] = [];

beforeAll(async () => {
  pub = await client();
  side = await client();
});
afterEach(async () => {
  for (const i of running.splice(0)) await i.stop();
});
afterAll(async () => {
  await pub.endAsync();
  await side.endAsync();
  for (const s of sessions) await forgetSession(s.id, undefined, s.v);
});

describe.each([5, 4] as const)('mqtt input flow control, MQTT protocol version %i', (protocol_version) => {
  it('hands out at most max_in_flight messages until they are done, then the rest in order', async () => {
    const topic = uniq('bp');
    const clientId = uniq('bp-in');
    sessions.push({ id: clientId, v: protocol_version });
    const input = startInput({ client_id: clientId, topics: [topic], protocol_version, max_in_flight: 5 });
    running.push(input);
    await input.ready();
    const seen = await subscribe(side, topic, 1);

    const N = 40;
    await Promise.all(Array.from({ length: N }, (_, n) => pub.publishAsync(topic, JSON.stringify({ n }), { qos: 1 })));
    const firstFive = await input.msgs.next(5);
    // Barrier: the broker dispatched all N, plus a round trip through it and a turn of the loop.
    await seen.next(N);
    await side.subscribeAsync(uniq('barrier'), { qos: 0 });
    await new Promise((resolve) => setImmediate(resolve));
    expect(input.msgs.all.length).toBe(5);

    // Each message done lets the next one in.
    for (const m of firstFive) m.ack.done();
    const got = [...firstFive];
    while (got.length < N) {
      const [m] = await input.msgs.next(1);
      expect(m!.meta.mqtt_duplicate).toBe(false);
      got.push(m!);
      m!.ack.done();
    }
    expect(got.map((m) => (m.value as { n: number }).n)).toEqual(Array.from({ length: N }, (_, n) => n));
  });
});

describe('mqtt input flow control with a broker that overshoots the MQTT 5 receive maximum', () => {
  it('has at most max_in_flight + 1 messages in progress while acknowledgements flow', async () => {
    const topic = uniq('bp-over');
    const clientId = uniq('bp-over-in');
    sessions.push({ id: clientId, v: 5 });
    const input = startInput({ client_id: clientId, topics: [topic], protocol_version: 5, max_in_flight: 5 });
    running.push(input);
    await input.ready();

    const N = 300;
    await Promise.all(Array.from({ length: N }, (_, n) => pub.publishAsync(topic, JSON.stringify({ n }), { qos: 1 })));
    // Messages are done five at a time, so acknowledgements flow while the broker still queues many.
    const got: number[] = [];
    const open: { ack: { done(): void } }[] = [];
    let done = 0;
    let maxInProgress = 0;
    while (done < N) {
      const [m] = await input.msgs.next(1);
      got.push((m!.value as { n: number }).n);
      open.push(m!);
      maxInProgress = Math.max(maxInProgress, input.msgs.all.length - done);
      if (open.length === 5 || done + open.length === N) {
        for (const o of open.splice(0)) o.ack.done();
        done = got.length;
      }
    }
    expect(maxInProgress).toBeLessThanOrEqual(6);
    expect(got).toEqual(Array.from({ length: N }, (_, n) => n));
  });
});
