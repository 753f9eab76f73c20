/**
 * The mqtt input against the real Mosquitto: what a message carries (value, metadata from the
 * topic and the packet, MQTT 5 user properties as headers), and what it rejects to the dead-letter
 * flow (payload not JSON, topic not matching topic_pattern) — acknowledged to the broker once the
 * dead-letter output stored it.
 */
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RunnerError } from '../../../core/errors.ts';
import { type RunningInput, client, forgetSession, startInput, uniq } from './harness.ts';

let pub: MqttClient;
const running: RunningInput[] = [];
const sessions: { id: string; v: 4 | 5 }[] = [];
const start = (...args: Parameters<typeof startInput>) => {
  const i = startInput(...args);
  running.push(i);
  sessions.push({ id: i.cfg.client_id, v: i.cfg.protocol_version });
  return i;
};

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

describe('mqtt input: messages', () => {
  it('MQTT 5: value parsed as JSON, topic and packet facts as metadata, named levels from topic_pattern, user properties as headers', async () => {
    const base = uniq('meta');
    const input = start({ client_id: uniq('in'), topics: [`${base}/+/telemetry`], topic_pattern: `${base}/{device_id}/telemetry` });
    await input.ready();
    await pub.publishAsync(`${base}/device-001/telemetry`, JSON.stringify({ d0: 5.2 }), {
      qos: 1,
      properties: { userProperties: { source: 'simulator', tag: ['a', 'b'] }, contentType: 'application/json', responseTopic: `${base}/device-001/reply` },
    });
    const [msg] = await input.msgs.next(1);
    expect(msg!.value).toEqual({ d0: 5.2 });
    expect(msg!.key).toBeNull();
    expect(msg!.meta).toEqual({
      mqtt_topic: `${base}/device-001/telemetry`,
      mqtt_qos: 1,
      mqtt_retained: false,
      mqtt_duplicate: false,
      mqtt_message_id: expect.any(Number),
      mqtt_topic_segments: [base, 'device-001', 'telemetry'],
      mqtt_topic_device_id: 'device-001',
      mqtt_content_type: 'application/json',
      mqtt_response_topic: `${base}/device-001/reply`,
    });
    expect(msg!.headers).toEqual({ source: 'simulator', tag: '["a","b"]' });
    msg!.ack.done();
  });

  it('MQTT 3.1.1: the same metadata, no headers; a retained message says so; QoS is the lower of publish and subscription', async () => {
    const base = uniq('v4');
    await pub.publishAsync(`${base}/state`, '"kept"', { qos: 1, retain: true });
    const input = start({ client_id: uniq('in'), protocol_version: 4, topics: [`${base}/#`], qos: 2 });
    await input.ready();
    const [retained] = await input.msgs.next(1);
    expect(retained!.meta).toMatchObject({ mqtt_topic: `${base}/state`, mqtt_retained: true, mqtt_qos: 1 });
    expect(retained!.value).toBe('kept');
    await pub.publishAsync(`${base}/live`, '{"n":1}', { qos: 0 });
    const [live] = await input.msgs.next(1);
    expect(live!.meta).toMatchObject({ mqtt_topic: `${base}/live`, mqtt_qos: 0, mqtt_retained: false, mqtt_message_id: null, mqtt_topic_segments: [base, 'live'] });
    expect(live!.headers).toEqual({});
    retained!.ack.done();
    live!.ack.done();
    await pub.publishAsync(`${base}/state`, '', { qos: 1, retain: true }); // clear the retained message
  });

  it('value_format auto keeps text that is not JSON, bytes keeps the bytes', async () => {
    const base = uniq('formats');
    const auto = start({ client_id: uniq('in'), topics: [`${base}/#`], value_format: 'auto' });
    const bytes = start({ client_id: uniq('in'), topics: [`${base}/#`], value_format: 'bytes' });
    await Promise.all([auto.ready(), bytes.ready()]);
    await pub.publishAsync(`${base}/x`, 'not json', { qos: 1 });
    const [a] = await auto.msgs.next(1);
    const [b] = await bytes.msgs.next(1);
    expect(a!.value).toBe('not json');
    expect(Buffer.isBuffer(b!.value) && (b!.value as Buffer).toString()).toBe('not json');
    a!.ack.done();
    b!.ack.done();
  });
});

describe('mqtt input: rejects', () => {
  it('rejects a payload that is not JSON with the reason and its bytes; PUBACK follows the dead-letter store', async () => {
    const base = uniq('reject');
    const clientId = uniq('in');
    const first = start({ client_id: clientId, topics: [`${base}/#`] });
    await first.ready();
    await pub.publishAsync(`${base}/a`, 'temperature=21', { qos: 1 });
    const [{ msg, err }] = (await first.rejections(1)) as [{ msg: any; err: unknown }];
    expect(err).toBeInstanceOf(RunnerError);
    expect((err as RunnerError).code).toBe('MESSAGE_INVALID');
    expect((err as RunnerError).message).toMatch(/payload is not JSON/);
    expect(Buffer.isBuffer(msg.value) && msg.value.toString()).toBe('temperature=21');
    expect(msg.meta.mqtt_topic).toBe(`${base}/a`);
    expect(first.msgs.all).toEqual([]);
    msg.ack.done(); // the dead-letter output stored it
    await first.stop();

    // Acknowledged: after a restart of the persistent session, the next message is a new one.
    const second = start({ client_id: clientId, topics: [`${base}/#`] });
    await second.ready();
    await pub.publishAsync(`${base}/b`, '{"next":true}', { qos: 1 });
    const [next] = await second.msgs.next(1);
    expect(next!.value).toEqual({ next: true });
    expect(second.ctx.rejected).toEqual([]);
    next!.ack.done();
  });

  it('rejects a message whose topic does not match topic_pattern, naming both', async () => {
    const base = uniq('pattern');
    const input = start({ client_id: uniq('in'), topics: [`${base}/#`], topic_pattern: `${base}/{device_id}/telemetry` });
    await input.ready();
    await pub.publishAsync(`${base}/device-1/settings`, '{}', { qos: 1 });
    await pub.publishAsync(`${base}/device-1/telemetry`, '{"ok":1}', { qos: 1 });
    const [{ err, msg }] = await input.rejections(1);
    expect((err as RunnerError).message).toBe(`topic "${base}/device-1/settings" does not match topic_pattern "${base}/{device_id}/telemetry"`);
    const [ok] = await input.msgs.next(1);
    expect(ok!.meta.mqtt_topic_device_id).toBe('device-1');
    msg.ack.done();
    ok!.ack.done();
  });
});

describe('mqtt input: retained messages and restarts', () => {
  it.each([
    [5, 'once: a restart of the persistent session does not deliver them again'],
    [4, 'again on every start (3.1.1 has no retain handling): a documented duplicate'],
  ] as const)('MQTT %i: retained messages arrive %s', async (protocol_version, _how) => {
    const base = uniq('retained');
    const clientId = uniq('in');
    await pub.publishAsync(`${base}/state`, '{"kept":true}', { qos: 1, retain: true });
    const first = start({ client_id: clientId, protocol_version, topics: [`${base}/#`] });
    const [r] = await first.msgs.next(1);
    expect(r!.meta.mqtt_retained).toBe(true);
    r!.ack.done();
    await first.ready();
    running.splice(running.indexOf(first), 1);
    await first.stop();

    const second = start({ client_id: clientId, protocol_version, topics: [`${base}/#`] });
    await second.ready();
    await pub.publishAsync(`${base}/live`, '{"live":true}', { qos: 1 });
    const [next] = await second.msgs.next(1);
    if (protocol_version === 5) expect(next!.value).toEqual({ live: true });
    else {
      expect(next!.value).toEqual({ kept: true });
      expect(next!.meta.mqtt_retained).toBe(true);
      const [live] = await second.msgs.next(1);
      expect(live!.value).toEqual({ live: true });
      live!.ack.done();
    }
    next!.ack.done();
    await pub.publishAsync(`${base}/state`, '', { qos: 1, retain: true });
  });
});
