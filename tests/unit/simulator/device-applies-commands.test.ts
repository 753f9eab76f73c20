/**
 * The device side of the command loop: a valid command is applied once and reported in the next
 * telemetry and settings; a repeated outbox_id is ignored; out-of-range values are rejected or
 * clamped as configured; and the device's rules are exactly those of heatpump-settings-patch.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileNamedSchema } from '../../../operators/core/validate.ts';
import { HeatpumpDevice, parseCommand } from '../../../simulator/heatpump.ts';
import { SETTABLE_FIELDS, checkField, DEFAULT_SETTINGS } from '../../../simulator/settings.ts';

const SCHEMAS = join(new URL('../../..', import.meta.url).pathname, 'schemas');
const T = Date.UTC(2024, 1, 5, 12);
const device = (out_of_range: 'reject' | 'clamp' = 'reject') => new HeatpumpDevice({ index: 2, seed: 3, start_ms: T, out_of_range });

describe('a simulated heat pump receiving a command', () => {
  it('applies valid values and reports them in its next telemetry and settings', () => {
    const d = device();
    expect(d.heatpumpTelemetry(T).indoor_target_temp).toBe(21);
    const outcome = d.handleCommand({ outbox_id: 42, settings: { indoor_target_temp: 21.5 } });
    expect(outcome).toEqual({ status: 'applied', outbox_id: 42, values: { indoor_target_temp: 21.5 }, problems: [] });
    expect(d.heatpumpTelemetry(T + 1000)).toMatchObject({ device_id: 'device-002', indoor_target_temp: 21.5, mode: 1 });
    const report = d.settingsReport(T + 1000);
    expect(report).toMatchObject({ indoor_target_temp: 21.5, mode: 1, hot_water_target_temp: 50, last_outbox_id: 42, last_command_result: 'applied' });
    expect(compileNamedSchema(SCHEMAS, 'heatpump-settings')(report)).toBe(true);

    const all = { indoor_target_temp: 19, mode: 3, hot_water_target_temp: 55.5, heating_curve: 1.2, heating_curve_offset: -1.5, eco_mode: true };
    expect(d.handleCommand({ outbox_id: 43, settings: all }).status).toBe('applied');
    expect(d.settings).toEqual(all);
    expect(d.heatpumpTelemetry(T + 2000)).toMatchObject(all);
  });

  it('ignores a repeated outbox_id, also when the values differ or the id comes as text', () => {
    const d = device();
    d.handleCommand({ outbox_id: 42, settings: { indoor_target_temp: 21.5 } });
    d.handleCommand({ outbox_id: 43, settings: { indoor_target_temp: 22 } });
    const again = d.handleCommand({ outbox_id: 42, settings: { indoor_target_temp: 21.5 } });
    expect(again.status).toBe('duplicate');
    expect(d.handleCommand({ outbox_id: '43', settings: { indoor_target_temp: 25 } }).status).toBe('duplicate');
    expect(d.settings.indoor_target_temp).toBe(22);
    expect(d.settingsReport(T).last_outbox_id).toBe(43);
    expect(d.heatpumpTelemetry(T + 1000).indoor_target_temp).toBe(22);
    // a UUID outbox id works the same way
    expect(d.handleCommand({ outbox_id: '0b9d7c1e-5a8f-4c2b-9a51-1f3c2d4e5f60', settings: { mode: 2 } }).status).toBe('applied');
    expect(d.handleCommand({ outbox_id: '0b9d7c1e-5a8f-4c2b-9a51-1f3c2d4e5f60', settings: { mode: 0 } }).status).toBe('duplicate');
    expect(d.settings.mode).toBe(2);
  });

  it('rejects a command with an out-of-range or off-step value and changes nothing (out_of_range: reject)', () => {
    const d = device('reject');
    for (const [id, settings] of [
      [1, { indoor_target_temp: 31 }],
      [2, { indoor_target_temp: 21.3 }],
      [3, { mode: 4 }],
      [4, { mode: 1.5 }],
      [5, { indoor_target_temp: 22, hot_water_target_temp: 80 }],
      [6, { eco_mode: 'yes' }],
      [7, { fan_speed: 3 }],
      [8, {}],
    ] as const) {
      const outcome = d.handleCommand({ outbox_id: id, settings });
      expect(outcome.status, JSON.stringify(settings)).toBe('rejected');
      expect(outcome.values).toEqual({});
    }
    expect(d.settings).toEqual(DEFAULT_SETTINGS);
    expect(d.heatpumpTelemetry(T + 1000)).toMatchObject({ indoor_target_temp: 21, mode: 1 });
    expect(d.settingsReport(T + 1000)).toMatchObject({ last_outbox_id: 8, last_command_result: 'rejected' });
    expect(d.lastCommand?.problems).toEqual(['no settings to change']);
  });

  it('clamps out-of-range values into range and onto the step (out_of_range: clamp)', () => {
    const d = device('clamp');
    const outcome = d.handleCommand({ outbox_id: 1, settings: { indoor_target_temp: 31, mode: 7, hot_water_target_temp: 47.3, heating_curve: 0.1, heating_curve_offset: -9, fan_speed: 3 } });
    expect(outcome.status).toBe('clamped');
    expect(outcome.values).toEqual({ indoor_target_temp: 30, mode: 3, hot_water_target_temp: 47.5, heating_curve: 0.2, heating_curve_offset: -5 });
    expect(outcome.problems.join('\n')).toMatch(/indoor_target_temp must be <= 30, got 31/);
    expect(outcome.problems.join('\n')).toMatch(/fan_speed is not a settable field/);
    expect(d.heatpumpTelemetry(T + 1000)).toMatchObject({ indoor_target_temp: 30, mode: 3 });
    expect(d.settingsReport(T + 1000)).toMatchObject({ last_outbox_id: 1, last_command_result: 'clamped' });
    expect(d.handleCommand({ outbox_id: 2, settings: { indoor_target_temp: 14, mode: 0.6 } }).values).toEqual({ indoor_target_temp: 15, mode: 1 });
    // values that cannot be clamped (wrong type) are dropped; nothing left means rejected
    expect(d.handleCommand({ outbox_id: 3, settings: { eco_mode: 'on' } }).status).toBe('rejected');
    expect(d.handleCommand({ outbox_id: 4, settings: { indoor_target_temp: 20 } }).status).toBe('applied');
  });

  it('treats what is not a command as invalid without remembering its id', () => {
    const d = device();
    expect(d.handleCommand(parseCommand('not json')).status).toBe('invalid');
    expect(d.handleCommand({ settings: { mode: 2 } }).status).toBe('invalid');
    expect(d.handleCommand({ outbox_id: -1, settings: { mode: 2 } }).status).toBe('invalid');
    expect(d.handleCommand({ outbox_id: 5, device_id: 'device-001', settings: { mode: 2 } }).status).toBe('invalid');
    expect(d.settings.mode).toBe(1);
    expect(d.lastCommand).toBeUndefined();
    // the id of the misaddressed command was not used up
    expect(d.handleCommand(parseCommand(Buffer.from('{"outbox_id":5,"device_id":"device-002","settings":{"mode":2}}'))).status).toBe('applied');
  });

  it('accepts exactly the values heatpump-settings-patch accepts', () => {
    const patch = compileNamedSchema(SCHEMAS, 'heatpump-settings-patch');
    const candidates: unknown[] = [-10, -5.5, -5, -1, -0.5, 0, 0.1, 0.2, 0.25, 0.5, 1, 1.5, 2, 2.6, 3, 3.5, 3.6, 4, 5, 5.5, 14.5, 15, 15.25, 21.3, 21.5, 29.5, 30, 30.5, 34.5, 35, 47.3, 50, 65, 65.5, true, false, '21', null];
    for (const field of SETTABLE_FIELDS) {
      for (const value of candidates) {
        const bySchema = patch({ [field.name]: value });
        expect(checkField(field.name, value).ok, `${field.name}=${JSON.stringify(value)}`).toBe(bySchema);
      }
    }
    expect(checkField('fan_speed', 1).ok).toBe(patch({ fan_speed: 1 }));
  });
});
