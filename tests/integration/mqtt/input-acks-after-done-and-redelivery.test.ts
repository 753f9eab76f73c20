/**
 * The ack contract of the mqtt input against the real Mosquitto, for MQTT 5 and 3.1.1: a message
 * is acknowledged (PUBACK / PUBREC) only once it is done, in arrival order; what is not done when
 * the input stops is delivered again by the broker on the next start (same client id, persistent
 * session); what is done is not; a failed message makes the input reconnect and the broker resend
 * it; messages published while the input is down arrive when it is back.
 *
 * "Not delivered again" is proven without waiting for silence: after a restart a new message is
 * published, and the broker sends queued and unacknowledged messages of a session before newer
 * ones, so the new message arriving first means nothing older was pending.
 */
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type RunningInput, client, forgetSession, startInput, uniq } from './harness.ts';

let pub: MqttClient;
const running: RunningInput[] = [];
const sessions: { id: string; v: 4 | 5 }[] = [];

beforeAll(async () => {
  pub = await client();
});
afterEach(async () => {
  for (const i of running.splice(0)) await i.stop();
});
afterAll(async () => {
  await pub.endAsync();
  for (const s of sessions) await forgetSession(s.id, undefined, s.v);
});

const values = (msgs: { value: unknown }[]) => msgs.map((m) => m.value);

describe.each([5, 4] as const)('mqtt input, MQTT protocol version %i', (protocol_version) => {
  const session = (qos: 0 | 1 | 2 = 1) => {
    const clientId = uniq(`acks-v${protocol_version}`);
    const topic = uniq('acks');
    sessions.push({ id: clientId, v: protocol_version });
    const start = () => {
      const i = startInput({ client_id: clientId, topics: [`${topic}/#`], protocol_version, qos });
      running.push(i);
      return i;
    };
    const stop = async (i: RunningInput) => {
      running.splice(running.indexOf(i), 1);
      await i.stop();
    };
    return { clientId, topic, start, stop };
  };

  it('a QoS 1 message not done before the input stops is delivered again after a restart, marked duplicate; once done it is not', async () => {
    const s = session();
    const first = s.start();
    await first.ready();
    await pub.publishAsync(`${s.topic}/a`, '{"n":1}', { qos: 1 });
    const [m1] = await first.msgs.next(1);
    expect(m1!.meta.mqtt_duplicate).toBe(false);
    await s.stop(first); // m1 never acked

    const second = s.start();
    const [again] = await second.msgs.next(1);
    expect(again!.value).toEqual({ n: 1 });
    expect(again!.meta.mqtt_duplicate).toBe(true);
    again!.ack.done();
    await s.stop(second);

    const third = s.start();
    await third.ready();
    await pub.publishAsync(`${s.topic}/b`, '{"n":2}', { qos: 1 });
    const [next] = await third.msgs.next(1);
    expect(next!.value).toEqual({ n: 2 });
    next!.ack.done();
  });

  it('a QoS 2 message not done is delivered again (PUBREC waits for done too)', async () => {
    const s = session(2);
    const first = s.start();
    await first.ready();
    await pub.publishAsync(`${s.topic}/a`, '{"q":2}', { qos: 2 });
    const [m1] = await first.msgs.next(1);
    expect(m1!.meta.mqtt_qos).toBe(2);
    await s.stop(first);

    const second = s.start();
    const [again] = await second.msgs.next(1);
    expect(again!.value).toEqual({ q: 2 });
    again!.ack.done();
    await s.stop(second);

    const third = s.start();
    await third.ready();
    await pub.publishAsync(`${s.topic}/b`, '{"q":3}', { qos: 2 });
    const [next] = await third.msgs.next(1);
    expect(next!.value).toEqual({ q: 3 });
    next!.ack.done();
  });

  it('acknowledges in arrival order: a done message behind one still in progress is held back and comes again after a restart', async () => {
    const s = session();
    const first = s.start();
    await first.ready();
    for (let n = 1; n <= 3; n++) await pub.publishAsync(`${s.topic}/x`, JSON.stringify({ n }), { qos: 1 });
    const [m1, m2, m3] = await first.msgs.next(3);
    m1!.ack.done();
    m3!.ack.done(); // done, but 2 is not: its PUBACK must wait
    void m2;
    await s.stop(first);

    const second = s.start();
    const again = await second.msgs.next(2);
    expect(values(again)).toEqual([{ n: 2 }, { n: 3 }]);
    for (const m of again) m.ack.done();
    await second.ready();
    await pub.publishAsync(`${s.topic}/x`, '{"n":4}', { qos: 1 });
    const [next] = await second.msgs.next(1);
    expect(next!.value).toEqual({ n: 4 });
    next!.ack.done();
  });

  it('a failed message (ack.fail) is delivered again while the input keeps running, without handing out twice the ones still in progress', async () => {
    const s = session();
    const input = s.start();
    await input.ready();
    for (let n = 1; n <= 3; n++) await pub.publishAsync(`${s.topic}/x`, JSON.stringify({ n }), { qos: 1 });
    const [m1, m2, m3] = await input.msgs.next(3);
    m1!.ack.done();
    m3!.ack.done();
    m2!.ack.fail(new Error('downstream refused'));
    // The input reconnects; the broker resends 2 (failed) and 3 (done, but held back behind 2).
    const [again] = await input.msgs.next(1);
    expect(again!.value).toEqual({ n: 2 });
    expect(again!.meta.mqtt_duplicate).toBe(true);
    again!.ack.done();
    await input.readiness((r) => r.ready);
    await pub.publishAsync(`${s.topic}/x`, '{"n":4}', { qos: 1 });
    const [next] = await input.msgs.next(1);
    expect(next!.value).toEqual({ n: 4 }); // 3 was acknowledged on the resend, not handed out again
    next!.ack.done();
  });

  it('messages published while the input is down arrive, in order, when it is back', async () => {
    const s = session();
    const first = s.start();
    await first.ready();
    await s.stop(first);
    for (let n = 1; n <= 20; n++) await pub.publishAsync(`${s.topic}/x`, JSON.stringify({ n }), { qos: 1 });
    const second = s.start();
    const got = await second.msgs.next(20);
    expect(values(got)).toEqual(Array.from({ length: 20 }, (_, i) => ({ n: i + 1 })));
    for (const m of got) m.ack.done();
  });

  it('with clean_session: true nothing survives a restart', async () => {
    const s = session();
    const start = () => {
      const i = startInput({ client_id: s.clientId, topics: [`${s.topic}/#`], protocol_version, clean_session: true });
      running.push(i);
      return i;
    };
    const first = start();
    await first.ready();
    await pub.publishAsync(`${s.topic}/a`, '{"n":1}', { qos: 1 });
    await first.msgs.next(1); // not acked
    await s.stop(first);
    await pub.publishAsync(`${s.topic}/a`, '{"n":2}', { qos: 1 }); // while down
    const second = start();
    await second.ready();
    await pub.publishAsync(`${s.topic}/a`, '{"n":3}', { qos: 1 });
    const [next] = await second.msgs.next(1);
    expect(next!.value).toEqual({ n: 3 });
    next!.ack.done();
  });
});
