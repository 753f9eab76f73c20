/**
 * The mqtt output against a real Mosquitto: a message is passed on only once the broker has it
 * (and a subscriber receives it with the configured QoS, retain flag, JSON payload and, with MQTT
 * 5, the headers as user properties); a topic that cannot be published to is rejected; while the
 * broker is away nothing is passed on and nothing is lost.
 */
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunnerError } from '../../../core/errors.ts';
import { type PrivateBroker, privateMosquitto } from '../../helpers/mosquitto.ts';
import { client, startOutput, subscribe, uniq } from './harness.ts';

let side: MqttClient;
beforeAll(async () => {
  side = await client();
});
afterAll(async () => {
  await side.endAsync();
});

describe('mqtt output', () => {
  it('MQTT 5, QoS 1: the subscriber gets the value as JSON at QoS 1, not retained, with the headers as user properties', async () => {
    const base = uniq('out');
    const seen = await subscribe(side, `${base}/#`, 2);
    const out = startOutput({ client_id: uniq('out'), topic: `${base}/\${! device_id }/command`, qos: 1 });
    const sent = out.send({ device_id: 'device-001', setpoint: 45 }, { command_id: 'c-1' });
    const [emitted] = await out.emitted.next(1);
    expect(emitted).toBe(sent);
    const [packet] = await seen.next(1);
    expect(packet!.topic).toBe(`${base}/device-001/command`);
    expect(JSON.parse(packet!.payload.toString())).toEqual({ device_id: 'device-001', setpoint: 45 });
    expect(packet!.qos).toBe(1);
    expect(packet!.retain).toBe(false);
    expect(packet!.properties?.userProperties).toEqual({ command_id: 'c-1' });
    await out.close();
  });

  it('MQTT 3.1.1, QoS 2, retain: done after PUBCOMP, and a subscriber arriving later gets it retained at QoS 2; bytes stay bytes', async () => {
    const base = uniq('retain');
    const out = startOutput({ client_id: uniq('out'), topic: `${base}/state`, qos: 2, retain: true, protocol_version: 4 });
    const bytes = Buffer.from([0, 1, 2, 250]);
    out.send(bytes);
    await out.emitted.next(1);
    const late = await client();
    const seen = await subscribe(late, `${base}/state`, 2);
    const [packet] = await seen.next(1);
    expect(packet!.retain).toBe(true);
    expect(packet!.qos).toBe(2);
    expect(Buffer.compare(packet!.payload as Buffer, bytes)).toBe(0);
    await late.publishAsync(`${base}/state`, '', { qos: 1, retain: true }); // clear it
    await late.endAsync();
    await out.close();
  });

  it('rejects a message whose topic is empty, has a wildcard, starts with $ or cannot be worked out, and goes on with the next', async () => {
    const base = uniq('bad');
    const seen = await subscribe(side, `${base}/#`, 1);
    const out = startOutput({ client_id: uniq('out'), topic: '${! t }' });
    out.send({ t: `${base}/+/x` });
    out.send({ t: `${base}/#` });
    out.send({ t: '' });
    out.send({ t: '$SYS/x' });
    out.send({ other: 1 });
    out.send({ t: `${base}/ok` });
    const rejected = await out.rejections(5);
    expect(rejected.map((r) => [(r.err as RunnerError).code, (r.err as RunnerError).retryable])).toEqual([
      ['WRITE_REJECTED', false],
      ['WRITE_REJECTED', false],
      ['WRITE_REJECTED', false],
      ['WRITE_REJECTED', false],
      ['EXPRESSION_FAILED', false],
    ]);
    expect((rejected[0]!.err as Error).message).toMatch(/wildcards/);
    expect((rejected[2]!.err as Error).message).toMatch(/empty/);
    expect((rejected[3]!.err as Error).message).toMatch(/reserved/);
    const [ok] = await out.emitted.next(1);
    expect(ok!.value).toEqual({ t: `${base}/ok` });
    const [packet] = await seen.next(1);
    expect(packet!.topic).toBe(`${base}/ok`);
    expect(out.emitted.all).toHaveLength(1);
    await out.close();
  });

  describe('while the broker is away', () => {
    let broker: PrivateBroker;
    beforeAll(async () => {
      broker = await privateMosquitto();
    });
    afterAll(async () => {
      await broker.stop();
    });

    it('passes nothing on and is not ready (saying why); once the broker is back the message is published and passed on', async () => {
      await broker.stop();
      const base = uniq('away');
      const out = startOutput({ urls: [broker.url], client_id: uniq('out'), topic: `${base}/cmd`, retain: true, reconnect: { min: '50ms', max: '200ms' } });
      out.send({ n: 1 });
      const down = await out.readiness((r) => !r.ready && /ECONNREFUSED/.test(r.reason ?? ''));
      expect(down.reason).toContain(`127.0.0.1:${broker.port}`);
      // Two more failed attempts, backing off: never connected, so nothing can have been acknowledged.
      await out.logged((l) => l.msg === 'mqtt reconnecting' && l.attempt === 2);
      expect(out.emitted.all).toEqual([]);
      expect(out.ctx.ready.ready).toBe(false);

      await broker.start();
      const [emitted] = await out.emitted.next(1);
      expect(emitted!.value).toEqual({ n: 1 });
      expect(out.ctx.ready.ready).toBe(true);
      const late = await client({ url: broker.url });
      const seen = await subscribe(late, `${base}/cmd`, 1);
      const [packet] = await seen.next(1);
      expect(JSON.parse(packet!.payload.toString())).toEqual({ n: 1 });
      await late.endAsync();
      await out.close();
    });
  });
});
