/** The same seed and the same clock give the same payloads; another seed or device gives others. */
import { describe, expect, it } from 'vitest';
import { createDevices, resolveOptions } from '../../../simulator/fleet.ts';
import { HeatpumpDevice, KINDS } from '../../../simulator/heatpump.ts';

const START = Date.UTC(2024, 10, 3, 6);

function run(devices: HeatpumpDevice[], steps = 300): string[] {
  const out: string[] = [];
  for (let i = 0; i < steps; i++) {
    const t = START + i * 7_000;
    const d = devices[i % devices.length];
    out.push(JSON.stringify(d.payload(KINDS[i % KINDS.length], t)));
  }
  return out;
}

const fleetDevices = (seed: number | string) => {
  let now = START;
  const o = resolveOptions({ devices: 4, seed, clock: () => now });
  now += 1;
  return createDevices(o);
};

describe('simulator determinism', () => {
  it('gives identical payloads for the same seed and clock', () => {
    expect(run(fleetDevices(1234))).toEqual(run(fleetDevices(1234)));
    expect(run(fleetDevices('lab'))).toEqual(run(fleetDevices('lab')));
  });

  it('gives different payloads for another seed', () => {
    // settings reports carry no measurement, so they are the same; every reading differs
    const readings = (seed: number) => run(fleetDevices(seed)).filter((p) => !p.includes('"hot_water_target_temp"') || p.includes('"d0"'));
    const a = readings(1234);
    const b = readings(1235);
    expect(a.length).toBe(225);
    expect(a.filter((p, i) => p !== b[i]).length).toBe(a.length);
  });

  it('gives each device of a fleet its own values', () => {
    const [d1, d2] = fleetDevices(99);
    const a = d1.heatpumpTelemetry(START + 60_000);
    const b = d2.heatpumpTelemetry(START + 60_000);
    expect(a.device_id).toBe('device-001');
    expect(b.device_id).toBe('device-002');
    expect({ ...a, device_id: '' }).not.toEqual({ ...b, device_id: '' });
  });

  it('numbers devices from first_index with at least three digits', () => {
    const devices = createDevices(resolveOptions({ devices: 3, first_index: 999, seed: 1 }));
    expect(devices.map((d) => [d.id, d.meterSerial, d.sensorId])).toEqual([
      ['device-999', 'meter-999', 'sensor-999'],
      ['device-1000', 'meter-1000', 'sensor-1000'],
      ['device-1001', 'meter-1001', 'sensor-1001'],
    ]);
  });

  it('counts seq per device and kind from 1 when asked', () => {
    const d = new HeatpumpDevice({ index: 1, seed: 1, start_ms: START, seq: true });
    expect([d.heatpumpTelemetry(START).seq, d.heatpumpTelemetry(START + 1).seq, d.energyTelemetry(START + 2).seq]).toEqual([1, 2, 1]);
    expect(new HeatpumpDevice({ index: 1, seed: 1, start_ms: START }).heatpumpTelemetry(START)).not.toHaveProperty('seq');
  });
});
