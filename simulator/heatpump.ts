/**
 * One simulated installation: an air-to-water heat pump (`device-001`), its house's three-phase
 * energy meter (`meter-001`) and a room temperature sensor (`sensor-001`), all driven by one small
 * physical model so that the readings agree with each other (the meter sees the compressor start,
 * the sensor sees the room warm up).
 *
 * Pure and deterministic: no I/O, no timers, no Math.random. Time is passed in (ms since the
 * epoch); the same seed and the same sequence of calls give the same payloads. The MQTT side is
 * in fleet.ts.
 */
import { Rng, hash32, round } from './rng.ts';
import { DEFAULT_SETTINGS, decideSettings, type HeatpumpSettings, type OutOfRangePolicy } from './settings.ts';

export type Kind = 'heatpump' | 'energy' | 'temperature' | 'settings';
export const KINDS: readonly Kind[] = ['heatpump', 'energy', 'temperature', 'settings'];

/** JSON Schema (schemas/<name>.schema.json) of each kind's payload. */
export const SCHEMA_OF_KIND: Readonly<Record<Kind, string>> = {
  heatpump: 'heatpump-telemetry',
  energy: 'energy-telemetry',
  temperature: 'temperature-telemetry',
  settings: 'heatpump-settings',
};

const pad3 = (n: number) => String(n).padStart(3, '0');
export const deviceId = (index: number) => `device-${pad3(index)}`;
export const meterSerial = (index: number) => `meter-${pad3(index)}`;
export const sensorId = (index: number) => `sensor-${pad3(index)}`;

/** MQTT topic of a payload kind, for the id that kind is keyed by. */
export function topicOf(kind: Kind, id: string, prefix = ''): string {
  switch (kind) {
    case 'heatpump':
      return `${prefix}heatpump/${id}/telemetry`;
    case 'energy':
      return `${prefix}energy/${id}/telemetry`;
    case 'temperature':
      return `${prefix}temperature/${id}/telemetry`;
    case 'settings':
      return `${prefix}heatpump/${id}/settings`;
  }
}
export const commandTopic = (deviceIdValue: string, prefix = '') => `${prefix}heatpump/${deviceIdValue}/command`;

export interface DeviceOptions {
  /** 1-based number: device-001 is index 1. */
  index: number;
  /** Seed of the fleet; each device derives its own stream from it and its index. */
  seed: number | string;
  /** Model time to start from (ms since the epoch); the model warms up for 2 h before it. */
  start_ms: number;
  /** `full` (default): every register and meter field; `compact`: the few fields of DOMAIN.md's examples. */
  detail?: 'full' | 'compact';
  /** Include the settings (indoor_target_temp, mode, ...) in heat-pump telemetry (default true). */
  settings_in_telemetry?: boolean;
  /** What a command with an invalid value does: `reject` the whole command (default) or `clamp` into range. */
  out_of_range?: OutOfRangePolicy;
  /** `s` (default): whole seconds, like the gateways; `ms`: seconds with three decimals. */
  timestamp_precision?: 's' | 'ms';
  /** Add `seq`, a counter per device and kind starting at 1 (to check for loss and order). */
  seq?: boolean;
  /** Settings at start (defaults: DEFAULT_SETTINGS). */
  initial_settings?: Partial<HeatpumpSettings>;
}

export type CommandStatus = 'applied' | 'clamped' | 'rejected' | 'duplicate' | 'invalid';

export interface CommandOutcome {
  status: CommandStatus;
  outbox_id?: number | string;
  /** Values the device sets (after clamping); empty unless applied or clamped. */
  values: Partial<HeatpumpSettings>;
  problems: string[];
}

const LOCATIONS = ['living-room', 'kitchen', 'bedroom', 'office', 'hallway', 'basement'];
const SEEN_OUTBOX_IDS = 10_000;
const HOUR = 3600;
const WATER_J_PER_L_K = 4186;

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));
const relax = (value: number, target: number, dt: number, tau: number) => value + (target - value) * (1 - Math.exp(-dt / tau));

export class HeatpumpDevice {
  readonly index: number;
  readonly id: string;
  readonly meterSerial: string;
  readonly sensorId: string;
  readonly location: string;
  /** The settings the device runs with (what it reports). */
  settings: HeatpumpSettings;
  /** The last command acted on (applied, clamped or rejected). */
  lastCommand: { outbox_id: number | string; result: 'applied' | 'clamped' | 'rejected'; problems: string[] } | undefined;
  /** Messages built so far, per kind (the `seq` of the last one). */
  readonly seq: Record<Kind, number> = { heatpump: 0, energy: 0, temperature: 0, settings: 0 };

  private readonly opts: Required<Omit<DeviceOptions, 'initial_settings'>>;
  private readonly rng: Rng;
  private readonly seen = new Set<string>();
  // model state
  private tMs: number;
  private readonly climateOffset: number;
  private weather = 0; // slow weather deviation from the climate curve, K
  private room: number;
  private tank: number;
  private supply: number;
  private compressorOn = false;
  private freq = 0;
  private state = 0; // d10
  private dhwActive = false;
  private defrostLeft = 0; // s
  private runSinceDefrost = 0; // s
  private starts: number;
  private heatOut = 0; // W, signed (cooling negative)
  private elec = 0; // W
  private flow = 0; // l/min
  private pumpSpeed = 0; // %
  // house and meter
  private baseNoise = 0;
  private applianceW = 0;
  private appliancePhase = 0;
  private applianceLeft = 0;
  private importKwh: number;
  private readonly exportKwh: number;
  // sensor
  private humidityDev = 0;
  private readonly sensorOffset: number;
  private readonly batteryStart: number;
  private readonly startMs: number;

  constructor(options: DeviceOptions) {
    this.opts = {
      detail: 'full',
      settings_in_telemetry: true,
      out_of_range: 'reject',
      timestamp_precision: 's',
      seq: false,
      ...options,
    };
    this.index = options.index;
    this.id = deviceId(options.index);
    this.meterSerial = meterSerial(options.index);
    this.sensorId = sensorId(options.index);
    this.location = LOCATIONS[(options.index - 1) % LOCATIONS.length];
    this.rng = new Rng(hash32(`${options.seed}:${options.index}`));
    this.settings = { ...DEFAULT_SETTINGS, ...options.initial_settings };
    const r = this.rng;
    this.climateOffset = r.normal(1);
    this.weather = r.normal(1.5);
    this.room = this.settings.indoor_target_temp + r.normal(0.3);
    this.tank = this.settings.hot_water_target_temp - r.range(0, 4);
    this.supply = this.room + 5;
    this.starts = Math.floor(r.range(500, 20_000));
    this.importKwh = round(r.range(2_000, 40_000), 3);
    this.exportKwh = round(r.range(0, 500), 3);
    this.sensorOffset = r.normal(0.2);
    this.batteryStart = r.range(60, 100);
    this.startMs = options.start_ms;
    // warm up so that the first readings come from a settled state
    this.tMs = options.start_ms - 2 * HOUR * 1000;
    this.advance(options.start_ms);
  }

  /** Move the model forward to `nowMs` (steps of at most 60 s; at most 6 h are simulated). */
  advance(nowMs: number): void {
    let dt = (nowMs - this.tMs) / 1000;
    if (dt <= 0) return;
    if (dt > 6 * HOUR) dt = 6 * HOUR;
    const t0 = nowMs - dt * 1000;
    let done = 0;
    while (done < dt) {
      const step = Math.min(60, dt - done);
      done += step;
      this.step(t0 + done * 1000, step);
    }
    this.tMs = nowMs;
  }

  /** Outdoor temperature from the climate curve (season + time of day, CET) and the weather. */
  outdoor(tMs: number): number {
    const days = tMs / 86_400_000;
    const year = (days % 365.2425) / 365.2425; // 0 = Jan 1
    const hour = (((tMs / 3_600_000 + 1) % 24) + 24) % 24;
    const seasonal = -Math.cos(2 * Math.PI * (year - 0.05)); // -1 mid-January, +1 mid-July
    const mean = 9.5 + 9 * seasonal;
    const amplitude = 4 + 1.5 * seasonal;
    return mean + amplitude * Math.cos((2 * Math.PI * (hour - 15)) / 24) + this.climateOffset + this.weather;
  }

  private step(tMs: number, dt: number): void {
    const r = this.rng;
    const s = this.settings;
    // weather: Ornstein-Uhlenbeck, tau 4 h, sd 2.5 K
    const a = Math.exp(-dt / (4 * HOUR));
    this.weather = this.weather * a + 2.5 * Math.sqrt(1 - a * a) * r.normal();
    const out = this.outdoor(tMs);
    const target = s.indoor_target_temp - (s.eco_mode ? 0.5 : 0);
    // heating stops above the heating limit (17 degC outdoor) in heating and auto mode; auto also cools above 24 degC
    const wantHeat = (s.mode === 1 || s.mode === 3) && out < 17;
    const wantCool = s.mode === 2 || (s.mode === 3 && out > 24);
    const load = clamp((target - out) / (target + 12), 0, 1.2);

    // hot water: the tank cools and is drawn from; below set point - 5 K it is reheated first
    this.tank = relax(this.tank, 20, dt, 60 * HOUR);
    if (r.chance(dt / (8 * HOUR))) this.tank -= r.range(3, 10);
    if (s.mode !== 0 && !this.dhwActive && this.tank < s.hot_water_target_temp - 5) this.dhwActive = true;
    if (this.dhwActive && (this.tank >= s.hot_water_target_temp || s.mode === 0)) this.dhwActive = false;

    const wasOn = this.compressorOn;
    let supplyTarget: number;
    let toRoom = 0;
    if (this.defrostLeft > 0) {
      this.defrostLeft -= dt;
      this.state = 4;
      this.compressorOn = true;
      this.freq = 60;
      supplyTarget = 18;
    } else if (this.dhwActive) {
      this.state = 3;
      this.compressorOn = true;
      this.freq = 70;
      supplyTarget = Math.min(s.hot_water_target_temp + 6, 70);
      this.tank += (dt * 12) / HOUR;
    } else if (wantHeat) {
      if (this.compressorOn && this.room > target + 0.5 && load < 0.5) this.compressorOn = false;
      else if (!this.compressorOn && this.room < target - 0.3) this.compressorOn = true;
      this.freq = this.compressorOn ? clamp(22 + 68 * load - 25 * (this.room - target), 20, 90) : 0;
      this.state = this.compressorOn ? 1 : 0;
      supplyTarget = this.compressorOn
        ? clamp(target + s.heating_curve_offset + s.heating_curve * Math.max(0, target - out) - (s.eco_mode ? 2 : 0), 22, 60)
        : this.room + 1;
    } else if (wantCool) {
      if (this.compressorOn && this.room < target - 0.3) this.compressorOn = false;
      else if (!this.compressorOn && this.room > target + 0.5) this.compressorOn = true;
      this.freq = this.compressorOn ? clamp(25 + 8 * Math.max(0, out - 24) + 25 * (this.room - target), 20, 80) : 0;
      this.state = this.compressorOn ? 2 : 0;
      supplyTarget = this.compressorOn ? clamp(18 - 0.3 * (out - 24), 7, 18) : this.room;
    } else {
      this.compressorOn = false;
      this.freq = 0;
      this.state = 0;
      supplyTarget = this.room;
    }
    if (this.compressorOn && !wasOn) this.starts += 1;

    const pumpOn = this.compressorOn || wantHeat;
    this.flow = pumpOn ? 9 + (9 * this.freq) / 90 : 0;
    this.pumpSpeed = pumpOn ? 35 + (55 * this.freq) / 90 : 0;
    this.supply = relax(this.supply, supplyTarget, dt, this.compressorOn ? 300 : 1800);
    this.elec = this.compressorOn ? 120 + 28 * this.freq : pumpOn ? 45 : 12;
    const compressorW = Math.max(0, this.elec - 45);
    if (this.state === 4) {
      this.heatOut = -1500;
    } else if (this.state === 2) {
      const eer = clamp((0.4 * (this.supply + 273.15)) / Math.max(8, out - this.supply + 8), 2, 5);
      this.heatOut = -compressorW * eer;
      toRoom = this.heatOut;
    } else if (this.compressorOn) {
      const cop = clamp((0.45 * (this.supply + 273.15)) / Math.max(8, this.supply - out + 8), 1.4, 6.5);
      this.heatOut = compressorW * cop;
      if (this.state === 1) toRoom = this.heatOut;
    } else {
      this.heatOut = 0;
    }
    // defrost cycles in cold, humid weather
    if (this.state === 1 && out < 6) {
      this.runSinceDefrost += dt;
      if (this.runSinceDefrost > 50 * 60) {
        this.runSinceDefrost = 0;
        this.defrostLeft = 300;
      }
    }
    // the house: 180 W/K losses, 40 h time constant, 400 W internal gains
    const ua = 180;
    const capacity = ua * 40 * HOUR;
    this.room += ((toRoom + 400 - ua * (this.room - out)) * dt) / capacity;

    // the rest of the house on the meter: a daily pattern, noise and appliances
    const b = Math.exp(-dt / 600);
    this.baseNoise = this.baseNoise * b + 60 * Math.sqrt(1 - b * b) * r.normal();
    if (this.applianceLeft > 0) this.applianceLeft -= dt;
    else if (r.chance(dt / (1.5 * HOUR))) {
      this.applianceW = r.range(800, 2500);
      this.applianceLeft = r.range(120, 1500);
      this.appliancePhase = Math.floor(r.range(0, 3));
    }
    this.importKwh += ((this.baseLoad(tMs) + (this.applianceLeft > 0 ? this.applianceW : 0) + this.elec) * dt) / HOUR / 1000;
    const h = Math.exp(-dt / (2 * HOUR));
    this.humidityDev = this.humidityDev * h + 4 * Math.sqrt(1 - h * h) * r.normal();
  }

  private baseLoad(tMs: number): number {
    const hour = (((tMs / 3_600_000 + 1) % 24) + 24) % 24;
    const pattern = 180 + 350 * Math.exp(-((hour - 7.5) ** 2)) + 600 * Math.exp(-((hour - 19) ** 2) / 3);
    return Math.max(80, pattern + this.baseNoise);
  }

  private lastStampMs = -Infinity;

  /**
   * The payload timestamp. With millisecond precision it strictly increases per device (a burst
   * after a pause never gives two readings of one device the same time): (device, time) is the key
   * of the telemetry tables.
   */
  private stamp(nowMs: number): number {
    if (this.opts.timestamp_precision !== 'ms') return Math.floor(nowMs / 1000);
    this.lastStampMs = Math.max(Math.round(nowMs), this.lastStampMs + 1);
    return this.lastStampMs / 1000;
  }

  private withSeq<T extends object>(kind: Kind, payload: T): T {
    this.seq[kind] += 1;
    return this.opts.seq ? { ...payload, seq: this.seq[kind] } : payload;
  }

  /** Heat-pump telemetry: registers d0-d12 (see docs/payloads.md) and the settings it runs with. */
  heatpumpTelemetry(nowMs: number): Record<string, unknown> {
    this.advance(nowMs);
    const r = this.rng;
    const out = this.outdoor(nowMs) + r.normal(0.1);
    const supply = this.supply + r.normal(0.05);
    const ret = this.returnTemp() + r.normal(0.05);
    const base = { device_id: this.id, timestamp: this.stamp(nowMs) };
    const compact = this.opts.detail === 'compact';
    const registers = compact
      ? { d0: round(out), d4: this.compressorOn ? 1 : 0, d5: round(supply), d6: round(ret) }
      : {
          d0: round(out),
          d1: round(this.room + r.normal(0.05)),
          d2: round(this.tank + r.normal(0.05)),
          d3: round(this.freq),
          d4: this.compressorOn ? 1 : 0,
          d5: round(supply),
          d6: round(ret),
          d7: round(this.flow > 0 ? this.flow + r.normal(0.1) : 0),
          d8: Math.round(this.elec + r.normal(5)),
          d9: Math.round(this.heatOut),
          d10: this.state,
          d11: Math.round(this.pumpSpeed),
          d12: this.starts,
        };
    const settings = !this.opts.settings_in_telemetry
      ? {}
      : compact
        ? { indoor_target_temp: this.settings.indoor_target_temp, mode: this.settings.mode }
        : { ...this.settings };
    return this.withSeq('heatpump', { ...base, ...registers, ...settings });
  }

  /** Return temperature: supply minus the heat carried by the water flow. */
  private returnTemp(): number {
    if (this.flow <= 0) return this.supply - 0.2;
    const delta = Math.abs(this.heatOut) / ((this.flow / 60) * WATER_J_PER_L_K);
    if (this.state === 2) return this.supply + Math.min(delta, Math.max(0.5, this.room - this.supply));
    // heating, hot water, defrost: the water comes back cooler, but not below the room
    return this.supply - Math.min(delta, Math.max(0.5, this.supply - this.room));
  }

  /** Energy meter of the house: the heat pump on three phases plus the household. */
  energyTelemetry(nowMs: number): Record<string, unknown> {
    this.advance(nowMs);
    const r = this.rng;
    // per phase: the heat pump (3-phase compressor, pf 0.97), the household (pf 0.88), an appliance (resistive)
    const hp = this.elec / 3;
    const base = this.baseLoad(nowMs);
    const share = [0.6, 0.25, 0.15];
    const q = (p: number, pf: number) => p * Math.tan(Math.acos(pf));
    const phases = share.map((f, i) => {
      const appliance = this.applianceLeft > 0 && this.appliancePhase === i ? this.applianceW : 0;
      const p = hp + base * f + appliance;
      return { p, q: q(hp, 0.97) + q(base * f, 0.88) + q(appliance, 0.99) };
    });
    const volts = phases.map((ph) => 230 + r.normal(1.2) - ph.p / 2000);
    const amps = phases.map((ph, i) => Math.hypot(ph.p, ph.q) / volts[i]);
    const power = phases.reduce((sum, ph) => sum + ph.p, 0);
    const reactive = phases.reduce((sum, ph) => sum + ph.q, 0);
    const apparent = Math.hypot(power, reactive);
    const compact = this.opts.detail === 'compact';
    const payload: Record<string, unknown> = {
      device_serial: this.meterSerial,
      timestamp: this.stamp(nowMs),
      active_power_total: Math.round(power),
      active_power_l1: Math.round(phases[0].p),
      active_power_l2: Math.round(phases[1].p),
      active_power_l3: Math.round(phases[2].p),
    };
    if (!compact) {
      Object.assign(payload, {
        reactive_power_total: Math.round(reactive),
        apparent_power_total: Math.round(apparent),
        power_factor: round(power / Math.max(apparent, 1), 3),
        voltage_l1: round(volts[0]),
        voltage_l2: round(volts[1]),
        voltage_l3: round(volts[2]),
        current_l1: round(amps[0], 2),
        current_l2: round(amps[1], 2),
        current_l3: round(amps[2], 2),
        frequency: round(50 + r.normal(0.015), 2),
      });
    }
    payload.energy_import_total = round(this.importKwh, 3);
    if (!compact) payload.energy_export_total = this.exportKwh;
    return this.withSeq('energy', payload);
  }

  /** Room sensor: the room temperature the model heats, relative humidity, battery. */
  temperatureTelemetry(nowMs: number): Record<string, unknown> {
    this.advance(nowMs);
    const r = this.rng;
    const year = ((nowMs / 86_400_000) % 365.2425) / 365.2425;
    const humidity = clamp(47 - 8 * Math.cos(2 * Math.PI * (year - 0.05)) + this.humidityDev + r.normal(0.3), 15, 95);
    const payload: Record<string, unknown> = {
      sensor_id: this.sensorId,
      timestamp: this.stamp(nowMs),
      temperature: round(this.room + this.sensorOffset + r.normal(0.05)),
      humidity: round(humidity),
    };
    if (this.opts.detail !== 'compact') {
      payload.battery = Math.round(clamp(this.batteryStart - (nowMs - this.startMs) / (3 * 86_400_000), 5, 100));
      payload.location = this.location;
    }
    return this.withSeq('temperature', payload);
  }

  /** The settings the device runs with, and what it did with the last command. */
  settingsReport(nowMs: number): Record<string, unknown> {
    this.advance(nowMs);
    const payload: Record<string, unknown> = { device_id: this.id, timestamp: this.stamp(nowMs) };
    if (this.opts.detail === 'compact') Object.assign(payload, { indoor_target_temp: this.settings.indoor_target_temp, mode: this.settings.mode });
    else Object.assign(payload, this.settings);
    if (this.lastCommand) {
      payload.last_outbox_id = this.lastCommand.outbox_id;
      payload.last_command_result = this.lastCommand.result;
    }
    return this.withSeq('settings', payload);
  }

  /** The payload of one kind at `nowMs`. */
  payload(kind: Kind, nowMs: number): Record<string, unknown> {
    switch (kind) {
      case 'heatpump':
        return this.heatpumpTelemetry(nowMs);
      case 'energy':
        return this.energyTelemetry(nowMs);
      case 'temperature':
        return this.temperatureTelemetry(nowMs);
      case 'settings':
        return this.settingsReport(nowMs);
    }
  }

  /** The id a kind's payload is keyed by (device id, meter serial or sensor id). */
  idOf(kind: Kind): string {
    return kind === 'energy' ? this.meterSerial : kind === 'temperature' ? this.sensorId : this.id;
  }

  /**
   * Look at a command (parsed JSON, or undefined when it was not JSON) and decide what to do,
   * without changing the settings yet: `invalid` (not a command), `duplicate` (outbox_id seen
   * before: ignored), or the result of the settings check (applied, clamped, rejected).
   * Records the outbox_id so that a redelivery is ignored.
   */
  receiveCommand(command: unknown): CommandOutcome {
    const invalid = (problem: string): CommandOutcome => ({ status: 'invalid', values: {}, problems: [problem] });
    if (typeof command !== 'object' || command === null || Array.isArray(command)) return invalid('a command must be a JSON object');
    const c = command as Record<string, unknown>;
    const outboxId = c.outbox_id;
    const idOk = (typeof outboxId === 'number' && Number.isInteger(outboxId) && outboxId >= 0) || (typeof outboxId === 'string' && outboxId.length > 0);
    if (!idOk) return invalid('outbox_id must be a non-negative integer or a non-empty string');
    const id = outboxId as number | string;
    if (c.device_id !== undefined && c.device_id !== this.id) return { ...invalid(`command for ${String(c.device_id)} received by ${this.id}`), outbox_id: id };
    const key = String(id); // 42 and "42" are the same outbox row (pg sends bigint as text)
    if (this.seen.has(key)) return { status: 'duplicate', outbox_id: id, values: {}, problems: [`outbox_id ${id} was already received`] };
    this.seen.add(key);
    if (this.seen.size > SEEN_OUTBOX_IDS) this.seen.delete(this.seen.values().next().value as string);
    if (typeof c.settings !== 'object' || c.settings === null || Array.isArray(c.settings)) {
      return { status: 'rejected', outbox_id: id, values: {}, problems: ['settings must be a JSON object'] };
    }
    const change = decideSettings(c.settings as Record<string, unknown>, this.opts.out_of_range);
    return { status: change.result, outbox_id: id, values: change.values, problems: change.problems };
  }

  /** Act on an outcome of receiveCommand: set the values and remember the command. */
  applyCommand(outcome: CommandOutcome): void {
    if (outcome.status === 'duplicate' || outcome.status === 'invalid' || outcome.outbox_id === undefined) return;
    Object.assign(this.settings, outcome.values);
    this.lastCommand = { outbox_id: outcome.outbox_id, result: outcome.status, problems: outcome.problems };
  }

  /** receiveCommand and applyCommand at once. */
  handleCommand(command: unknown): CommandOutcome {
    const outcome = this.receiveCommand(command);
    this.applyCommand(outcome);
    return outcome;
  }
}

/** Parse the bytes of a command; undefined when they are not JSON. */
export function parseCommand(payload: Uint8Array | string): unknown {
  try {
    return JSON.parse(typeof payload === 'string' ? payload : Buffer.from(payload).toString('utf8'));
  } catch {
    return undefined;
  }
}

/**
 * Serialise a payload; with `padTo`, add a `pad` field of "x" so that the JSON is exactly that
 * many bytes (payloads already that long are sent as they are).
 */
export function encodePayload(payload: Record<string, unknown>, padTo?: number): Buffer {
  const json = JSON.stringify(payload);
  if (!padTo || Buffer.byteLength(json) >= padTo) return Buffer.from(json);
  const empty = Buffer.byteLength(JSON.stringify({ ...payload, pad: '' }));
  if (empty > padTo) return Buffer.from(json);
  return Buffer.from(JSON.stringify({ ...payload, pad: 'x'.repeat(padTo - empty) }));
}
