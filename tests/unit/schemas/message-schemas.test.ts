/**
 * The message schemas of schemas/: described field by field, strict where it matters (ids usable
 * as Kafka key and MQTT topic segment, timestamps, numeric readings, settable ranges), open to the
 * extra fields devices add, with one definition of the settable fields, and the examples of
 * DOMAIN.md and docs/payloads.md valid.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileNamedSchema } from '../../../operators/core/validate.ts';

const ROOT = new URL('../../..', import.meta.url).pathname;
const SCHEMAS = join(ROOT, 'schemas');
const NAMES = ['heatpump-telemetry', 'energy-telemetry', 'temperature-telemetry', 'heatpump-settings', 'heatpump-settings-patch', 'heatpump-command'];
type Schema = { $id: string; title: string; description: string; properties: Record<string, Schema & { properties?: Record<string, Schema> }>; patternProperties?: Record<string, Schema>; examples?: unknown[] };
const load = (name: string): Schema => JSON.parse(readFileSync(join(SCHEMAS, `${name}.schema.json`), 'utf8'));
const check = (name: string) => {
  const v = compileNamedSchema(SCHEMAS, name);
  return (value: unknown) => v(value);
};

describe('message schemas', () => {
  it.each(NAMES)('%s has its name as $id, a title, a description, and a description on every field', (name) => {
    const s = load(name);
    expect(s.$id).toBe(name);
    expect(s.title).toBeTruthy();
    expect(s.description.length).toBeGreaterThan(40);
    const fields = { ...s.properties, ...s.patternProperties, ...(s.properties.settings?.properties ?? {}) };
    for (const [field, def] of Object.entries(fields)) expect(def.description, `${name}.${field}`).toBeTruthy();
    for (const example of s.examples ?? []) expect(check(name)(example), JSON.stringify(example)).toBe(true);
  });

  it('repeat the settable fields of heatpump-settings-patch verbatim', () => {
    const fields = load('heatpump-settings-patch').properties;
    expect(Object.keys(fields)).toEqual(['indoor_target_temp', 'mode', 'hot_water_target_temp', 'heating_curve', 'heating_curve_offset', 'eco_mode']);
    const settings = load('heatpump-settings').properties;
    for (const [name, def] of Object.entries(fields)) expect(settings[name], name).toEqual(def);
    expect(load('heatpump-command').properties.settings.properties).toEqual(fields);
  });

  it.each([
    ['heatpump-telemetry', 'device_id'],
    ['energy-telemetry', 'device_serial'],
    ['temperature-telemetry', 'sensor_id'],
    ['heatpump-settings', 'device_id'],
  ])('%s requires %s to be usable as Kafka key and MQTT topic segment, and a timestamp >= 0', (name, idField) => {
    const valid = check(name);
    const base = { timestamp: 1698765432, active_power_total: 100, temperature: 20, indoor_target_temp: 21, mode: 1 };
    for (const id of ['device-001', 'meter_7.2:a', 'A'.repeat(64)]) expect(valid({ ...base, [idField]: id }), id).toBe(true);
    for (const id of ['', 'dev/1', 'a+b', '#', 'a b', 'A'.repeat(65), 7, null]) expect(valid({ ...base, [idField]: id }), String(id)).toBe(false);
    expect(valid({ ...base, [idField]: 'x', timestamp: -1 })).toBe(false);
    expect(valid({ ...base, [idField]: 'x', timestamp: '1698765432' })).toBe(false);
    expect(valid({ ...base, [idField]: 'x', timestamp: 1698765432.5 })).toBe(true);
    expect(valid({ ...base })).toBe(false);
    expect(valid({ ...base, [idField]: 'x', some_vendor_field: 'extra' })).toBe(true);
  });

  it('heatpump-telemetry: the example of DOMAIN.md is valid; registers are numbers or null; settings have their types', () => {
    const valid = check('heatpump-telemetry');
    expect(valid({ device_id: 'device-001', timestamp: 1698765432, d0: 5.2, d5: 35.0, d6: 30.5 })).toBe(true);
    expect(valid({ device_id: 'device-001', timestamp: 1, d5: null, d42: 1 })).toBe(true);
    expect(valid({ device_id: 'device-001', timestamp: 1, d5: 'n/a' })).toBe(false);
    expect(valid({ device_id: 'device-001', timestamp: 1, d77: '3' })).toBe(false);
    expect(valid({ device_id: 'device-001', timestamp: 1, mode: 4 })).toBe(false);
    expect(valid({ device_id: 'device-001', timestamp: 1, indoor_target_temp: '21' })).toBe(false);
    expect(valid({ device_id: 'device-001', timestamp: 1, eco_mode: 1 })).toBe(false);
  });

  it('energy-telemetry and temperature-telemetry: readings are numbers in their physical range', () => {
    const energy = check('energy-telemetry');
    const e = { device_serial: 'meter-001', timestamp: 1 };
    expect(energy({ ...e, active_power_total: -1200, energy_import_total: 0 })).toBe(true); // exporting
    expect(energy({ ...e, active_power_total: '1200' })).toBe(false);
    expect(energy({ ...e, active_power_total: 1, voltage_l1: -230 })).toBe(false);
    expect(energy({ ...e, active_power_total: 1, energy_import_total: -1 })).toBe(false);
    expect(energy({ ...e, active_power_total: 1, power_factor: 1.2 })).toBe(false);
    const temp = check('temperature-telemetry');
    const t = { sensor_id: 'sensor-001', timestamp: 1 };
    expect(temp({ ...t, temperature: -12.5 })).toBe(true);
    expect(temp({ ...t, temperature: 20, humidity: 101 })).toBe(false);
    expect(temp({ ...t, temperature: '20' })).toBe(false);
    expect(temp({ ...t, humidity: 40 })).toBe(false);
  });

  it('heatpump-settings-patch: at least one known field, each in its range and step', () => {
    const valid = check('heatpump-settings-patch');
    expect(valid({ indoor_target_temp: 21.5 })).toBe(true);
    expect(valid({ indoor_target_temp: 15, mode: 0, hot_water_target_temp: 65, heating_curve: 3.5, heating_curve_offset: -5, eco_mode: true })).toBe(true);
    for (const bad of [{}, { indoor_target_temp: 21.3 }, { indoor_target_temp: 30.5 }, { indoor_target_temp: 14.5 }, { mode: 4 }, { mode: 1.5 }, { mode: -1 }, { eco_mode: 'true' }, { heating_curve: 0.1 }, { hot_water_target_temp: 34.5 }, { heating_curve_offset: 0.25 }, { fan_speed: 2 }, { device_id: 'device-001', mode: 1 }]) {
      expect(valid(bad), JSON.stringify(bad)).toBe(false);
    }
  });

  it('heatpump-command: an outbox id and settings with the patch rules', () => {
    const valid = check('heatpump-command');
    expect(valid({ outbox_id: 42, settings: { indoor_target_temp: 21.5 } })).toBe(true);
    expect(valid({ outbox_id: '0b9d7c1e-5a8f-4c2b-9a51-1f3c2d4e5f60', device_id: 'device-001', issued_at: 1698765432.1, settings: { mode: 3 } })).toBe(true);
    for (const bad of [{ settings: { mode: 1 } }, { outbox_id: 1 }, { outbox_id: 1, settings: {} }, { outbox_id: 1, settings: { mode: 9 } }, { outbox_id: 1, settings: { colour: 'red' } }, { outbox_id: -1, settings: { mode: 1 } }, { outbox_id: '', settings: { mode: 1 } }, { outbox_id: 1.5, settings: { mode: 1 } }]) {
      expect(valid(bad), JSON.stringify(bad)).toBe(false);
    }
  });

  it('the examples in docs/payloads.md are valid against the schema they are shown for', () => {
    const doc = readFileSync(join(ROOT, 'docs/payloads.md'), 'utf8');
    const blocks = [...doc.matchAll(/<!-- schema: ([a-z-]+) -->\s*```json\n([\s\S]*?)```/g)];
    expect(blocks.map((b) => b[1]).sort()).toEqual([...NAMES].sort());
    for (const [, name, json] of blocks) expect(check(name)(JSON.parse(json)), name).toBe(true);
  });
});
