/**
 * Every payload the simulator generates, of every kind, in every season, mode and level of detail,
 * validates against its schema in schemas/; and the readings agree with each other the way a real
 * installation's do.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileNamedSchema } from '../../../operators/core/validate.ts';
import { HeatpumpDevice, KINDS, SCHEMA_OF_KIND, encodePayload, type Kind } from '../../../simulator/heatpump.ts';
import type { HeatpumpSettings } from '../../../simulator/settings.ts';

const SCHEMAS = join(new URL('../../..', import.meta.url).pathname, 'schemas');
const validators = Object.fromEntries(KINDS.map((k) => [k, compileNamedSchema(SCHEMAS, SCHEMA_OF_KIND[k])])) as Record<Kind, ReturnType<typeof compileNamedSchema>>;

function expectValid(kind: Kind, payload: unknown) {
  const check = validators[kind];
  const ok = check(payload);
  expect(ok, `${kind} ${JSON.stringify(payload)}: ${JSON.stringify(check.errors)}`).toBe(true);
}

const SETUPS: { name: string; settings: Partial<HeatpumpSettings> }[] = [
  { name: 'heating', settings: { mode: 1 } },
  { name: 'auto, eco, steep curve', settings: { mode: 3, eco_mode: true, heating_curve: 1.4, heating_curve_offset: 2 } },
  { name: 'cooling', settings: { mode: 2, indoor_target_temp: 23 } },
  { name: 'off', settings: { mode: 0 } },
];

/** Two days in the middle of every month of 2024, every 20 minutes. */
function* yearOfReadings(): Generator<number> {
  for (let month = 0; month < 12; month++) {
    const start = Date.UTC(2024, month, 14);
    for (let t = start; t < start + 2 * 86_400_000; t += 20 * 60_000) yield t;
  }
}

describe('simulated payloads', () => {
  for (const detail of ['full', 'compact'] as const) {
    it(`of every kind validate against their schemas through a year (${detail})`, () => {
      const states = new Set<number>();
      let checked = 0;
      SETUPS.forEach(({ settings }, i) => {
        const device = new HeatpumpDevice({ index: i + 1, seed: 'year', start_ms: Date.UTC(2024, 0, 1), detail, seq: i % 2 === 0, initial_settings: settings });
        let lastImport = -Infinity;
        for (const t of yearOfReadings()) {
          for (const kind of KINDS) {
            const p = device.payload(kind, t);
            expectValid(kind, p);
            checked += 1;
            if (kind === 'heatpump' && detail === 'full') states.add(p.d10 as number);
            if (kind === 'energy') {
              expect(p.energy_import_total as number).toBeGreaterThanOrEqual(lastImport);
              lastImport = p.energy_import_total as number;
            }
          }
        }
      });
      expect(checked).toBe(4 * 12 * 144 * KINDS.length);
      // standby, space heating, cooling, hot water and defrost all happened
      if (detail === 'full') expect([...states].sort()).toEqual([0, 1, 2, 3, 4]);
    });
  }

  it('padded to a size are exactly that size and still valid', () => {
    const device = new HeatpumpDevice({ index: 1, seed: 7, start_ms: Date.UTC(2024, 1, 1), detail: 'compact' });
    for (const kind of KINDS) {
      const body = encodePayload(device.payload(kind, Date.UTC(2024, 1, 1, 1)), 200);
      expect(body.length).toBe(200);
      const parsed = JSON.parse(body.toString());
      expect(parsed.pad).toMatch(/^x+$/);
      expectValid(kind, parsed);
    }
    // a payload already longer than the target is sent as it is
    const full = new HeatpumpDevice({ index: 1, seed: 7, start_ms: Date.UTC(2024, 1, 1) }).heatpumpTelemetry(Date.UTC(2024, 1, 1, 1));
    expect(encodePayload(full, 200).toString()).toBe(JSON.stringify(full));
  });

  it('use the ids and topics of DOMAIN.md and carry the settings in heat-pump telemetry', () => {
    const device = new HeatpumpDevice({ index: 7, seed: 1, start_ms: Date.UTC(2024, 1, 1) });
    const t = Date.UTC(2024, 1, 1, 0, 5);
    expect(device.heatpumpTelemetry(t)).toMatchObject({ device_id: 'device-007', timestamp: t / 1000, indoor_target_temp: 21, mode: 1, eco_mode: false });
    expect(device.energyTelemetry(t)).toMatchObject({ device_serial: 'meter-007', timestamp: t / 1000 });
    expect(device.temperatureTelemetry(t)).toMatchObject({ sensor_id: 'sensor-007', timestamp: t / 1000 });
    expect(device.settingsReport(t)).toEqual({ device_id: 'device-007', timestamp: t / 1000, indoor_target_temp: 21, mode: 1, hot_water_target_temp: 50, heating_curve: 0.6, heating_curve_offset: 0, eco_mode: false });
    const ms = new HeatpumpDevice({ index: 1, seed: 1, start_ms: t, timestamp_precision: 'ms' });
    expect(ms.heatpumpTelemetry(t + 1234).timestamp).toBe((t + 1234) / 1000);
    const noSettings = new HeatpumpDevice({ index: 1, seed: 1, start_ms: t, settings_in_telemetry: false }).heatpumpTelemetry(t);
    expect(noSettings).not.toHaveProperty('indoor_target_temp');
    expect(noSettings).not.toHaveProperty('mode');
  });

  it('agree with each other like a real installation', () => {
    const device = new HeatpumpDevice({ index: 3, seed: 'physics', start_ms: Date.UTC(2024, 0, 10), initial_settings: { mode: 3 } });
    const summer = new HeatpumpDevice({ index: 4, seed: 'physics', start_ms: Date.UTC(2024, 6, 10), initial_settings: { mode: 2, indoor_target_temp: 22 } });
    for (const [d, start] of [[device, Date.UTC(2024, 0, 10)], [summer, Date.UTC(2024, 6, 10)]] as const) {
      for (let t = start; t < start + 3 * 86_400_000; t += 10 * 60_000) {
        const hp = d.heatpumpTelemetry(t) as Record<string, number>;
        const e = d.energyTelemetry(t) as Record<string, number>;
        const s = d.temperatureTelemetry(t) as Record<string, number>;
        expect(hp.d0).toBeGreaterThan(-25);
        expect(hp.d0).toBeLessThan(40);
        if (hp.d10 === 1) {
          expect(hp.d4).toBe(1);
          expect(hp.d3).toBeGreaterThanOrEqual(20);
          expect(hp.d5).toBeGreaterThan(hp.d6); // heating: the water comes back cooler
          expect(hp.d9).toBeGreaterThan(hp.d8); // COP > 1
        }
        if (hp.d10 === 2) {
          expect(hp.d5).toBeLessThan(hp.d6); // cooling: the water comes back warmer
          expect(hp.d5).toBeGreaterThanOrEqual(7);
          expect(hp.d9).toBeLessThan(0);
        }
        if (hp.d4 === 0) {
          expect(hp.d3).toBe(0);
          expect(hp.d8).toBeLessThan(100);
        }
        // the meter sees the heat pump
        expect(e.active_power_total).toBeGreaterThanOrEqual(hp.d8 - 30);
        expect(Math.abs(e.active_power_total - (e.active_power_l1 + e.active_power_l2 + e.active_power_l3))).toBeLessThanOrEqual(2);
        expect(e.power_factor).toBeGreaterThan(0.8);
        expect(e.power_factor).toBeLessThanOrEqual(1);
        for (const n of [1, 2, 3]) {
          expect(e[`voltage_l${n}`]).toBeGreaterThan(220);
          expect(e[`voltage_l${n}`]).toBeLessThan(240);
          expect(e[`current_l${n}`] * e[`voltage_l${n}`]).toBeGreaterThanOrEqual(e[`active_power_l${n}`] - 5);
        }
        // the room sensor sees the room the heat pump heats or cools
        expect(Math.abs(s.temperature - hp.d1)).toBeLessThan(1.5);
        expect(s.temperature).toBeGreaterThan(15);
        expect(s.temperature).toBeLessThan(28);
      }
    }
  });
});
