/**
 * The settable heat-pump fields, read from schemas/heatpump-settings-patch.schema.json (the one
 * definition the API, the command payload and the simulator share), and the device-side checks of
 * a command: apply valid values, clamp or reject out-of-range ones.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PROJECT_ROOT } from '../core/paths.ts';

export const SETTINGS_PATCH_SCHEMA_FILE = pathToFileURL(join(PROJECT_ROOT, 'schemas', 'heatpump-settings-patch.schema.json'));

export interface FieldDef {
  name: string;
  type: 'number' | 'integer' | 'boolean';
  minimum?: number;
  maximum?: number;
  multipleOf?: number;
  description: string;
}

/** The reported settings of one heat pump. */
export interface HeatpumpSettings {
  indoor_target_temp: number;
  mode: number;
  hot_water_target_temp: number;
  heating_curve: number;
  heating_curve_offset: number;
  eco_mode: boolean;
}

export type SettingName = keyof HeatpumpSettings;

function loadFieldDefs(): FieldDef[] {
  const schema = JSON.parse(readFileSync(SETTINGS_PATCH_SCHEMA_FILE, 'utf8')) as { properties: Record<string, Omit<FieldDef, 'name'>> };
  return Object.entries(schema.properties).map(([name, def]) => ({ name, ...def }));
}

/** Every settable field, in schema order. */
export const SETTABLE_FIELDS: readonly FieldDef[] = loadFieldDefs();
export const SETTABLE_FIELD_NAMES: readonly string[] = SETTABLE_FIELDS.map((f) => f.name);
const BY_NAME = new Map(SETTABLE_FIELDS.map((f) => [f.name, f]));

export const DEFAULT_SETTINGS: Readonly<HeatpumpSettings> = {
  indoor_target_temp: 21,
  mode: 1,
  hot_water_target_temp: 50,
  heating_curve: 0.6,
  heating_curve_offset: 0,
  eco_mode: false,
};

const EPS = 1e-9;
const onStep = (v: number, step: number) => Math.abs(v / step - Math.round(v / step)) < EPS;
const toStep = (v: number, step: number) => Math.round(v / step) * step;

export type FieldCheck =
  | { ok: true; value: number | boolean }
  | { ok: false; reason: string; clamped?: number };

/** Check one value against its field definition; for a numeric problem also propose a clamped value. */
export function checkField(name: string, value: unknown): FieldCheck {
  const def = BY_NAME.get(name);
  if (!def) return { ok: false, reason: `${name} is not a settable field (settable: ${SETTABLE_FIELD_NAMES.join(', ')})` };
  if (def.type === 'boolean') {
    return typeof value === 'boolean' ? { ok: true, value } : { ok: false, reason: `${name} must be a boolean, got ${JSON.stringify(value)}` };
  }
  if (typeof value !== 'number' || !Number.isFinite(value)) return { ok: false, reason: `${name} must be a number, got ${JSON.stringify(value)}` };
  let clamped = value;
  const problems: string[] = [];
  if (def.type === 'integer' && !Number.isInteger(value)) {
    problems.push(`${name} must be an integer, got ${value}`);
    clamped = Math.round(clamped);
  }
  if (def.multipleOf !== undefined && !onStep(value, def.multipleOf)) {
    problems.push(`${name} must be in steps of ${def.multipleOf}, got ${value}`);
    clamped = toStep(clamped, def.multipleOf);
  }
  if (def.minimum !== undefined && value < def.minimum) problems.push(`${name} must be >= ${def.minimum}, got ${value}`);
  if (def.maximum !== undefined && value > def.maximum) problems.push(`${name} must be <= ${def.maximum}, got ${value}`);
  if (def.minimum !== undefined) clamped = Math.max(def.minimum, clamped);
  if (def.maximum !== undefined) clamped = Math.min(def.maximum, clamped);
  if (problems.length === 0) return { ok: true, value };
  return { ok: false, reason: problems.join('; '), clamped: Number(clamped.toFixed(6)) };
}

export type OutOfRangePolicy = 'reject' | 'clamp';

export interface SettingsChange {
  /** The values to set (after clamping). Empty when rejected. */
  values: Partial<HeatpumpSettings>;
  result: 'applied' | 'clamped' | 'rejected';
  /** Why values were clamped, dropped or the change rejected. */
  problems: string[];
}

/**
 * Decide what a device does with requested settings.
 * - `reject`: any invalid field (unknown, wrong type, out of range, off-step) rejects the whole change.
 * - `clamp`: numbers are moved into range and onto the step; unknown fields and wrong types are
 *   dropped (they cannot be clamped); the rest is applied. Nothing left to apply means rejected.
 */
export function decideSettings(requested: Record<string, unknown>, policy: OutOfRangePolicy): SettingsChange {
  const values: Record<string, number | boolean> = {};
  const problems: string[] = [];
  let clamped = false;
  for (const [name, value] of Object.entries(requested)) {
    const check = checkField(name, value);
    if (check.ok) {
      values[name] = check.value;
      continue;
    }
    problems.push(check.reason);
    if (policy === 'clamp' && check.clamped !== undefined) {
      values[name] = check.clamped;
      clamped = true;
    }
  }
  if (policy === 'reject' && problems.length > 0) return { values: {}, result: 'rejected', problems };
  if (Object.keys(values).length === 0) return { values: {}, result: 'rejected', problems: problems.length ? problems : ['no settings to change'] };
  return { values: values as Partial<HeatpumpSettings>, result: clamped || problems.length ? 'clamped' : 'applied', problems };
}
