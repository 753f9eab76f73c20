/**
 * The mqtt connection against private Mosquitto brokers (real processes, see
 * tests/helpers/mosquitto.ts): credentials the broker refuses keep the operator not ready with a
 * reason naming the broker and the user, and an error log, while it keeps retrying; a broker
 * restart is survived by the persistent session: the input reconnects by itself, the broker
 * resends what was not acknowledged, and a message still in progress is not handed out twice.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PrivateBroker, privateMosquitto } from '../../helpers/mosquitto.ts';
import { client, startInput, startOutput, uniq } from './harness.ts';

const fast = { reconnect: { min: '50ms', max: '500ms' } };

describe('mqtt credentials', () => {
  let broker: PrivateBroker;
  beforeAll(async () => {
    broker = await privateMosquitto({ users: { runner: 'right-password' } });
  });
  afterAll(async () => {
    await broker.stop();
  });

  it('a wrong password: not ready, AUTH_FAILED naming broker and user, logged as an error, retried with backoff; the password itself never shows', async () => {
    const input = startInput({ urls: [broker.url], client_id: uniq('auth'), username: 'runner', password: 'wrong-password', topics: ['x/#'], ...fast });
    const down = await input.readiness((r) => !r.ready && /refused/.test(r.reason ?? ''));
    expect(down.reason).toContain(`MQTT broker mqtt://127.0.0.1:${broker.port} refused user "runner"`);
    expect(down.reason).toMatch(/check username and password/);
    const logged = await input.logged((l) => l.level === 50 && /refused user "runner"/.test(l.msg));
    expect(logged.broker).toBe(`mqtt://127.0.0.1:${broker.port}`);
    await input.logged((l) => l.msg === 'mqtt reconnecting' && l.attempt === 2);
    expect(JSON.stringify(input.ctx.ready)).not.toContain('wrong-password');
    await input.stop();
  });

  it('no username on a broker that requires one: AUTH_FAILED saying the client was anonymous', async () => {
    const out = startOutput({ urls: [broker.url], client_id: uniq('anon'), topic: 'x/y', ...fast });
    const down = await out.readiness((r) => !r.ready && /refused/.test(r.reason ?? ''));
    expect(down.reason).toMatch(/refused an anonymous client \(no username\)/);
    await out.close();
  });

  it('the right password: ready', async () => {
    const out = startOutput({ urls: [broker.url], client_id: uniq('ok'), username: 'runner', password: 'right-password', topic: 'x/y' });
    await out.readiness((r) => r.ready);
    out.send({ ok: true });
    await out.emitted.next(1);
    await out.close();
  });
});

describe('mqtt subscriptions the broker does not grant as asked', () => {
  // Mosquitto 2.0 grants every subscription and applies read ACLs when delivering, so the SUBACK
  // check is shown with a listener limited to QoS 0 (max_qos 0): it grants QoS 0 for QoS 1.
  let broker: PrivateBroker;
  beforeAll(async () => {
    broker = await privateMosquitto({ config: ['max_qos 0'] });
  });
  afterAll(async () => {
    await broker.stop();
  });

  it.each([5, 4] as const)('MQTT %i: granted QoS 0 for QoS 1 keeps the input not ready, naming the filter, logged as an error', async (protocol_version) => {
    const input = startInput({ urls: [broker.url], client_id: uniq('maxqos'), topics: ['heatpump/+/telemetry'], protocol_version, ...fast });
    const down = await input.readiness((r) => !r.ready && /granted/.test(r.reason ?? ''));
    expect(down.reason).toBe(`the broker granted QoS 0 instead of 1 for "heatpump/+/telemetry"; messages can be lost at mqtt://127.0.0.1:${broker.port}`);
    await input.logged((l) => l.level === 50 && l.msg === down.reason);
    await input.stop();
  });
});

describe('mqtt input across a broker restart', () => {
  let broker: PrivateBroker;
  beforeAll(async () => {
    broker = await privateMosquitto();
  });
  afterAll(async () => {
    await broker.stop();
  });

  it.each([5, 4] as const)('MQTT %i: reconnects by itself; the resent message still in progress is not handed out again and is acknowledged once done', async (protocol_version) => {
    const topic = uniq('restart');
    const clientId = uniq('restart-in');
    const start = () => startInput({ urls: [broker.url], client_id: clientId, topics: [topic], protocol_version, ...fast });
    const input = start();
    await input.ready();
    let pub = await client({ url: broker.url });
    await pub.publishAsync(topic, '{"n":1}', { qos: 1 });
    const [m1] = await input.msgs.next(1);
    await pub.endAsync();

    await broker.stop(); // saves the session with m1 unacknowledged
    const down = await input.readiness((r) => !r.ready);
    expect(down.reason).toContain(`127.0.0.1:${broker.port}`);
    await broker.start();
    await input.logged((l) => l.msg === 'mqtt reconnected' && l.sessionPresent === true);
    await input.readiness((r) => r.ready);
    // The broker (which persisted the session) sends m1 again; the input knows it is in progress.
    const resend = await input.logged((l) => /^resend of a message/.test(l.msg));
    expect(resend.messageId).toBe(m1!.meta.mqtt_message_id);
    expect(input.msgs.all).toHaveLength(1);
    m1!.ack.done();

    pub = await client({ url: broker.url });
    await pub.publishAsync(topic, '{"n":2}', { qos: 1 });
    const [m2] = await input.msgs.next(1);
    expect(m2!.value).toEqual({ n: 2 }); // not m1 again
    m2!.ack.done();
    await input.stop();

    const again = start();
    await again.ready();
    await pub.publishAsync(topic, '{"n":3}', { qos: 1 });
    const [m3] = await again.msgs.next(1);
    expect(m3!.value).toEqual({ n: 3 }); // m1 and m2 were acknowledged
    m3!.ack.done();
    await again.stop();
    await pub.endAsync();
  });
});
