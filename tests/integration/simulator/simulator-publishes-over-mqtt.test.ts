/**
 * The simulator against the real Mosquitto: every message of N devices at a rate arrives, and the
 * devices answer commands the way the command loop expects (applied once, reflected in the next
 * telemetry, redeliveries ignored, invalid values rejected, or not at all when told so).
 * Every test uses its own topic prefix; waits are on messages and events, never on sleeps.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { compileNamedSchema } from '../../../operators/core/validate.ts';
import { startFleet, type AppliedEvent, type CommandEvent, type Fleet, type FleetOptions } from '../../../simulator/fleet.ts';
import { KINDS, SCHEMA_OF_KIND, type Kind } from '../../../simulator/heatpump.ts';
import { Collector, MQTT_URL, uniquePrefix } from './mqtt-collector.ts';

const SCHEMAS = join(new URL('../../..', import.meta.url).pathname, 'schemas');
const validators = Object.fromEntries(KINDS.map((k) => [k, compileNamedSchema(SCHEMAS, SCHEMA_OF_KIND[k])])) as Record<Kind, ReturnType<typeof compileNamedSchema>>;
const kindOfTopic = (topic: string): Kind => {
  const [, root, , leaf] = /^(?:.*\/)?(heatpump|energy|temperature)\/([^/]+)\/(telemetry|settings)$/.exec(topic) ?? [];
  return leaf === 'settings' ? 'settings' : (root as Kind);
};

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

async function fleet(opts: FleetOptions): Promise<Fleet> {
  const f = await startFleet({ url: MQTT_URL, seed: 11, ...opts });
  cleanup.push(() => f.stop());
  return f;
}
async function collector(filters: string[]): Promise<Collector> {
  const c = await Collector.start(filters);
  cleanup.push(() => c.close());
  return c;
}
const nextEvent = <T>(f: Fleet, name: 'applied' | 'command', where: (e: T) => boolean = () => true) =>
  new Promise<T>((resolve) => {
    const listener = (e: T) => {
      if (!where(e)) return;
      f.off(name, listener);
      resolve(e);
    };
    f.on(name as 'applied', listener as unknown as (e: AppliedEvent) => void);
  });

describe('simulator over MQTT', () => {
  it('publishes every message of N devices at the set rate, and a subscriber receives each one exactly once', async () => {
    const prefix = uniquePrefix('fleet');
    const sub = await collector([`${prefix}#`]);
    const devices = 5;
    const count = 400;
    const rate = 500;
    const started = performance.now();
    const f = await fleet({ topic_prefix: prefix, devices, rate, count, qos: 1, seq: true });
    const stats = await f.done;
    const elapsed = performance.now() - started;
    expect(stats).toMatchObject({ published: count, acked: count, failed: 0, in_flight: 0, finished: true });
    expect(stats.by_kind).toEqual({ heatpump: 100, energy: 100, temperature: 100, settings: 100 });
    // the token bucket holds the rate: 400 messages at 500/s take at least (400 - 1) / 500 s
    expect(elapsed).toBeGreaterThanOrEqual(((count - 1) / rate) * 1000 - 5);
    expect(elapsed).toBeLessThan(10_000);

    await sub.until(() => sub.messages.length >= count);
    const seen = new Set<string>();
    for (const m of sub.messages) {
      const kind = kindOfTopic(m.topic);
      const id = (m.json.device_id ?? m.json.device_serial ?? m.json.sensor_id) as string;
      expect(m.topic).toBe(`${prefix}${kind === 'settings' ? `heatpump/${id}/settings` : `${kind}/${id}/telemetry`}`);
      expect(validators[kind](m.json), `${m.topic} ${JSON.stringify(m.json)}`).toBe(true);
      seen.add(`${m.topic}#${m.json.seq}`);
    }
    // every (device, kind) sent seq 1..20 and each arrived once
    expect(seen.size).toBe(count);
    for (let i = 1; i <= devices; i++) {
      const n = String(i).padStart(3, '0');
      for (const topic of [`heatpump/device-${n}/telemetry`, `energy/meter-${n}/telemetry`, `temperature/sensor-${n}/telemetry`, `heatpump/device-${n}/settings`]) {
        const seqs = sub.on(prefix + topic).map((m) => m.json.seq);
        expect(seqs, topic).toEqual(Array.from({ length: count / devices / KINDS.length }, (_, k) => k + 1));
      }
    }
  });

  it('pads payloads to the asked size and sends only the asked kinds', async () => {
    const prefix = uniquePrefix('pad');
    const sub = await collector([`${prefix}#`]);
    const f = await fleet({ topic_prefix: prefix, devices: 2, rate: 0, count: 50, kinds: ['heatpump', 'energy'], detail: 'compact', payload_bytes: 200 });
    expect((await f.done).acked).toBe(50);
    await sub.until(() => sub.messages.length >= 50);
    expect(new Set(sub.messages.map((m) => kindOfTopic(m.topic)))).toEqual(new Set(['heatpump', 'energy']));
    expect(new Set(sub.messages.map((m) => m.bytes))).toEqual(new Set([200]));
  });

  it('reflects a command in the next heat-pump telemetry of the device, and in no other device', async () => {
    const prefix = uniquePrefix('cmd');
    const sub = await collector([`${prefix}heatpump/+/telemetry`]);
    const f = await fleet({ topic_prefix: prefix, devices: 2, rate: 40, kinds: ['heatpump'], seq: true, report_on_command: false });
    const telemetry = (id: string) => sub.on(`${prefix}heatpump/${id}/telemetry`).map((m) => m.json);
    await sub.until(() => telemetry('device-002').length >= 2);
    expect(telemetry('device-002')[0]).toMatchObject({ indoor_target_temp: 21, mode: 1 });

    const applied = nextEvent<AppliedEvent>(f, 'applied');
    await sub.publish(`${prefix}heatpump/device-002/command`, { outbox_id: 42, settings: { indoor_target_temp: 23.5, mode: 3 } });
    const event = await applied;
    expect(event).toMatchObject({ device_id: 'device-002', outcome: { status: 'applied', outbox_id: 42 }, settings: { indoor_target_temp: 23.5, mode: 3 } });
    // the first telemetry built after the command took effect carries the new values, and so does every later one
    await sub.until(() => telemetry('device-002').some((t) => (t.seq as number) > event.heatpump_seq));
    await sub.until(() => telemetry('device-002').filter((t) => (t.seq as number) > event.heatpump_seq).length >= 3);
    const before = telemetry('device-002').filter((t) => (t.seq as number) <= event.heatpump_seq);
    const after = telemetry('device-002').filter((t) => (t.seq as number) > event.heatpump_seq);
    expect(before.every((t) => t.indoor_target_temp === 21 && t.mode === 1)).toBe(true);
    expect(after[0].seq).toBe(event.heatpump_seq + 1);
    expect(after.every((t) => t.indoor_target_temp === 23.5 && t.mode === 3)).toBe(true);
    expect(telemetry('device-001').every((t) => t.indoor_target_temp === 21 && t.mode === 1)).toBe(true);
    expect(f.devices[1].settings).toMatchObject({ indoor_target_temp: 23.5, mode: 3 });
  });

  it('answers at once with settings and telemetry, ignores a redelivered outbox_id and rejects an out-of-range value', async () => {
    const prefix = uniquePrefix('ack');
    const sub = await collector([`${prefix}heatpump/device-001/settings`, `${prefix}heatpump/device-001/telemetry`]);
    // no periodic messages at all (count 0): everything that arrives is an answer to a command
    const f = await fleet({ topic_prefix: prefix, devices: 1, count: 0, seq: true });
    const settings = () => sub.on(`${prefix}heatpump/device-001/settings`).map((m) => m.json);
    const telemetry = () => sub.on(`${prefix}heatpump/device-001/telemetry`).map((m) => m.json);
    const command = `${prefix}heatpump/device-001/command`;

    await sub.publish(command, { outbox_id: 7, settings: { indoor_target_temp: 22.5 } });
    await sub.until(() => settings().length === 1 && telemetry().length === 1);
    expect(settings()[0]).toMatchObject({ device_id: 'device-001', indoor_target_temp: 22.5, last_outbox_id: 7, last_command_result: 'applied' });
    expect(telemetry()[0]).toMatchObject({ device_id: 'device-001', indoor_target_temp: 22.5 });
    expect(validators.settings(settings()[0])).toBe(true);

    // QoS 1 may deliver a command twice: the second copy changes nothing and is not answered
    const duplicate = nextEvent<CommandEvent>(f, 'command');
    await sub.publish(command, { outbox_id: 7, settings: { indoor_target_temp: 18 } });
    expect((await duplicate).outcome.status).toBe('duplicate');

    const rejected = nextEvent<CommandEvent>(f, 'command');
    await sub.publish(command, { outbox_id: 8, settings: { indoor_target_temp: 35 } });
    expect((await rejected).outcome).toMatchObject({ status: 'rejected', problems: ['indoor_target_temp must be <= 30, got 35'] });
    await sub.until(() => settings().length === 2);
    expect(settings()[1]).toMatchObject({ indoor_target_temp: 22.5, last_outbox_id: 8, last_command_result: 'rejected' });
    expect(settings().map((s) => s.seq)).toEqual([1, 2]); // nothing was sent for the duplicate
    expect(f.stats().commands).toMatchObject({ received: 3, applied: 1, duplicate: 1, rejected: 1 });
    expect(f.stats().reports).toBe(4);
  });

  it('clamps instead of rejecting when told to, and applies after the set delay', async () => {
    const prefix = uniquePrefix('clamp');
    const sub = await collector([`${prefix}heatpump/device-001/settings`]);
    const f = await fleet({ topic_prefix: prefix, devices: 1, count: 0, out_of_range: 'clamp', respond_delay_ms: 300 });
    const received = nextEvent<CommandEvent>(f, 'command');
    const applied = nextEvent<AppliedEvent>(f, 'applied');
    await sub.publish(`${prefix}heatpump/device-001/command`, { outbox_id: 'a1', settings: { indoor_target_temp: 33, hot_water_target_temp: 52.2 } });
    await received;
    const receivedAt = performance.now();
    expect(f.devices[0].settings.indoor_target_temp).toBe(21); // not yet
    const e = await applied;
    expect(performance.now() - receivedAt).toBeGreaterThanOrEqual(250);
    expect(e.outcome).toMatchObject({ status: 'clamped', values: { indoor_target_temp: 30, hot_water_target_temp: 52 } });
    await sub.until(() => sub.messages.length >= 1);
    expect(sub.messages[0].json).toMatchObject({ indoor_target_temp: 30, hot_water_target_temp: 52, last_outbox_id: 'a1', last_command_result: 'clamped' });
  });

  it('ignores commands when respond is off (a device that never confirms)', async () => {
    const prefix = uniquePrefix('mute');
    const sub = await collector([`${prefix}heatpump/device-001/telemetry`]);
    const f = await fleet({ topic_prefix: prefix, devices: 1, rate: 50, kinds: ['heatpump'], seq: true, respond: false });
    const ignored = nextEvent<CommandEvent>(f, 'command');
    await sub.publish(`${prefix}heatpump/device-001/command`, { outbox_id: 1, settings: { indoor_target_temp: 25 } });
    expect((await ignored).outcome.status).toBe('ignored');
    const seqAtCommand = f.devices[0].seq.heatpump;
    await sub.until(() => sub.messages.some((m) => (m.json.seq as number) > seqAtCommand + 5));
    expect(sub.messages.every((m) => m.json.indoor_target_temp === 21)).toBe(true);
    expect(f.stats().commands).toMatchObject({ received: 1, ignored: 1, applied: 0 });
  });

  it('refuses to start, naming the broker, when it cannot connect', async () => {
    await expect(startFleet({ url: 'mqtt://user:secret@127.0.0.1:1', connect_timeout_ms: 1500 })).rejects.toThrow(/^cannot connect to MQTT broker mqtt:\/\/127\.0\.0\.1:1 within 1500 ms: connect ECONNREFUSED/);
  });
});
