/**
 * A fleet of simulated installations publishing over MQTT (mqtt.js), paced by a token bucket,
 * with a bounded number of publishes waiting for their PUBACK, and answering settings commands on
 * heatpump/{device_id}/command.
 *
 *   const fleet = await startFleet({ devices: 3, rate: 30, count: 300 });
 *   const summary = await fleet.done;   // count reached and every publish acknowledged
 *   await fleet.stop();
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import {
  HeatpumpDevice,
  KINDS,
  commandTopic,
  encodePayload,
  parseCommand,
  topicOf,
  type CommandOutcome,
  type DeviceOptions,
  type Kind,
} from './heatpump.ts';
import type { HeatpumpSettings, OutOfRangePolicy } from './settings.ts';
import { TokenBucket } from './token-bucket.ts';

export const DEFAULT_MQTT_URL = 'mqtt://127.0.0.1:1883';

export interface FleetOptions {
  /** Broker URL (default: $MQTT_URL, else mqtt://127.0.0.1:1883). Credentials in the URL are never printed. */
  url?: string;
  username?: string;
  password?: string;
  /** Client id prefix; connection k is `<client_id>-<k>` (default sim-<random>). */
  client_id?: string;
  /** MQTT connections the devices are spread over, round-robin (default 1). */
  connections?: number;
  /** 4 = MQTT 3.1.1 (default), 5 = MQTT 5. */
  protocol_version?: 4 | 5;
  /** Clean session (default true). */
  clean?: boolean;
  /** Give up starting when a connection is not up after this long (default 10 000 ms). */
  connect_timeout_ms?: number;
  /** Installations: device-NNN with meter-NNN and sensor-NNN (default 3). */
  devices?: number;
  /** Number of the first device (default 1: device-001). */
  first_index?: number;
  /** Total messages per second over all devices and kinds (default 10); 0 or Infinity: as fast as max_in_flight allows. */
  rate?: number;
  /** Token bucket capacity: messages that may go out at once after a late timer (default rate/10, at least 1). */
  burst?: number;
  /** QoS of every publish (default 1). */
  qos?: 0 | 1 | 2;
  /** Publishes waiting for their PUBACK (or, at QoS 0, their write) at most (default 256). */
  max_in_flight?: number;
  /** Stop the periodic messages after this many (default: no limit). */
  count?: number;
  /** Stop the periodic messages after this long (default: no limit). */
  duration_ms?: number;
  /** Kinds of periodic messages (default all): heatpump, energy, temperature, settings. */
  kinds?: readonly Kind[];
  /** Seed of every value (default: random; printed in stats so that a run can be repeated). */
  seed?: number | string;
  /** Pad each payload with a `pad` field to exactly this many bytes (longer payloads are sent as they are). */
  payload_bytes?: number;
  /** `full` (default) or `compact` payloads (the few fields of DOMAIN.md's examples; ~80-170 bytes). */
  detail?: 'full' | 'compact';
  /** `s` (default): timestamps in whole seconds; `ms`: seconds with three decimals. */
  timestamp_precision?: 's' | 'ms';
  /** Add `seq`, a counter per device and kind starting at 1. */
  seq?: boolean;
  /** Heat-pump telemetry carries the settings the device runs with (default true). */
  settings_in_telemetry?: boolean;
  /** Prepended to every topic, commands included (for tests: `test-1234/`). */
  topic_prefix?: string;
  /** Devices act on commands (default true); false: commands are received and ignored, nothing is reported. */
  respond?: boolean;
  /** Devices apply a command this long after receiving it (default 0). */
  respond_delay_ms?: number;
  /** After acting on a command, publish a settings message and a heat-pump telemetry at once (default true); false: the change shows in the next periodic messages. */
  report_on_command?: boolean;
  /** Commands with an invalid value: `reject` the command (default) or `clamp` values into range. */
  out_of_range?: OutOfRangePolicy;
  /** Settings every device starts with. */
  initial_settings?: Partial<HeatpumpSettings>;
  /** Clock for the timestamps and the model, in ms (default Date.now). Pacing uses real time. */
  clock?: () => number;
  /** How long stop() waits for outstanding acknowledgements (default 10 000 ms). */
  drain_timeout_ms?: number;
}

export interface CommandStats {
  received: number;
  applied: number;
  clamped: number;
  rejected: number;
  duplicate: number;
  invalid: number;
  /** Received while `respond: false`. */
  ignored: number;
}

export interface FleetStats {
  /** Publishes handed to the client (periodic and command reports). */
  published: number;
  /** Publishes acknowledged by the broker (PUBACK/PUBCOMP; at QoS 0: written to the socket). */
  acked: number;
  /** Publishes that failed (client closed before the acknowledgement). */
  failed: number;
  in_flight: number;
  /** Of the published: settings and telemetry sent in answer to commands. */
  reports: number;
  /** Of the published, per kind. */
  by_kind: Record<Kind, number>;
  bytes: number;
  commands: CommandStats;
  /** Seconds since publishing started. */
  elapsed_s: number;
  /** Acknowledged per second since publishing started. */
  rate: number;
  /** Connections currently up. */
  connected: number;
  /** The periodic messages reached their count or duration. */
  finished: boolean;
  seed: number | string;
  last_error?: string;
}

export interface CommandEvent {
  device_id: string;
  topic: string;
  /** `ignored` when the fleet does not respond. */
  outcome: CommandOutcome | { status: 'ignored'; values: Record<string, never>; problems: string[] };
}

export interface AppliedEvent {
  device_id: string;
  outcome: CommandOutcome;
  /** The device's heat-pump telemetry counter when the command took effect: telemetry after this one reports it. */
  heatpump_seq: number;
  settings: HeatpumpSettings;
}

export interface Fleet {
  readonly devices: readonly HeatpumpDevice[];
  /** The fleet's options with defaults filled in. */
  readonly options: Readonly<ResolvedOptions>;
  stats(): FleetStats;
  /** Resolves when the count or duration is reached and nothing is in flight any more (or after stop()). */
  readonly done: Promise<FleetStats>;
  /** Stop publishing, wait for outstanding acknowledgements (up to drain_timeout_ms), disconnect. */
  stop(): Promise<FleetStats>;
  /** `command` (CommandEvent) on every command received; `applied` (AppliedEvent) when one takes effect; `connection` (text) on connection changes. */
  on(event: 'command', listener: (e: CommandEvent) => void): this;
  on(event: 'applied', listener: (e: AppliedEvent) => void): this;
  on(event: 'connection', listener: (message: string) => void): this;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  off(event: string, listener: (...args: any[]) => void): this;
  once(event: 'applied', listener: (e: AppliedEvent) => void): this;
  once(event: 'command', listener: (e: CommandEvent) => void): this;
}

type ResolvedOptions = Required<Omit<FleetOptions, 'username' | 'password' | 'count' | 'duration_ms' | 'initial_settings' | 'payload_bytes' | 'burst'>> &
  Pick<FleetOptions, 'username' | 'password' | 'count' | 'duration_ms' | 'initial_settings' | 'payload_bytes' | 'burst'>;

/** The URL without user and password, for messages. */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.username || u.password) {
      u.username = '';
      u.password = '';
    }
    return u.toString().replace(/\/$/, '');
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//');
  }
}

export function resolveOptions(opts: FleetOptions = {}): ResolvedOptions {
  const o: ResolvedOptions = {
    url: opts.url ?? process.env.MQTT_URL ?? DEFAULT_MQTT_URL,
    username: opts.username,
    password: opts.password,
    client_id: opts.client_id ?? `sim-${randomBytes(4).toString('hex')}`,
    connections: opts.connections ?? 1,
    protocol_version: opts.protocol_version ?? 4,
    clean: opts.clean ?? true,
    connect_timeout_ms: opts.connect_timeout_ms ?? 10_000,
    devices: opts.devices ?? 3,
    first_index: opts.first_index ?? 1,
    rate: opts.rate ?? 10,
    burst: opts.burst,
    qos: opts.qos ?? 1,
    max_in_flight: opts.max_in_flight ?? 256,
    count: opts.count,
    duration_ms: opts.duration_ms,
    kinds: opts.kinds ?? KINDS,
    seed: opts.seed ?? randomBytes(4).readUInt32BE(0),
    payload_bytes: opts.payload_bytes,
    detail: opts.detail ?? 'full',
    timestamp_precision: opts.timestamp_precision ?? 's',
    seq: opts.seq ?? false,
    settings_in_telemetry: opts.settings_in_telemetry ?? true,
    topic_prefix: opts.topic_prefix ?? '',
    respond: opts.respond ?? true,
    respond_delay_ms: opts.respond_delay_ms ?? 0,
    report_on_command: opts.report_on_command ?? true,
    out_of_range: opts.out_of_range ?? 'reject',
    initial_settings: opts.initial_settings,
    clock: opts.clock ?? Date.now,
    drain_timeout_ms: opts.drain_timeout_ms ?? 10_000,
  };
  const problems: string[] = [];
  const int = (name: keyof FleetOptions, v: number | undefined, min: number) => {
    if (v !== undefined && !(Number.isInteger(v) && v >= min)) problems.push(`${name} must be an integer >= ${min}, got ${v}`);
  };
  int('devices', o.devices, 1);
  int('first_index', o.first_index, 0);
  int('connections', o.connections, 1);
  int('max_in_flight', o.max_in_flight, 1);
  int('count', o.count, 0);
  int('payload_bytes', o.payload_bytes, 1);
  if (!(o.rate >= 0)) problems.push(`rate must be a number >= 0 (0 = unlimited), got ${o.rate}`);
  if (o.burst !== undefined && !(o.burst >= 1)) problems.push(`burst must be >= 1, got ${o.burst}`);
  if (![0, 1, 2].includes(o.qos)) problems.push(`qos must be 0, 1 or 2, got ${o.qos}`);
  if (o.duration_ms !== undefined && !(o.duration_ms >= 0)) problems.push(`duration_ms must be >= 0, got ${o.duration_ms}`);
  if (!(o.respond_delay_ms >= 0)) problems.push(`respond_delay_ms must be >= 0, got ${o.respond_delay_ms}`);
  if (o.kinds.length === 0) problems.push(`kinds must name at least one of ${KINDS.join(', ')}`);
  for (const k of o.kinds) if (!KINDS.includes(k)) problems.push(`unknown kind "${k}"; kinds are ${KINDS.join(', ')}`);
  if (!['reject', 'clamp'].includes(o.out_of_range)) problems.push(`out_of_range must be reject or clamp, got ${o.out_of_range}`);
  if (/[+#]/.test(o.topic_prefix)) problems.push(`topic_prefix must not contain MQTT wildcards + or #, got "${o.topic_prefix}"`);
  if (problems.length) throw new Error(`invalid simulator options: ${problems.join('; ')}`);
  return o;
}

/** Create the devices of a fleet without connecting (for tests and for payload inspection). */
export function createDevices(o: Pick<ResolvedOptions, 'devices' | 'first_index' | 'seed' | 'clock' | 'detail' | 'settings_in_telemetry' | 'out_of_range' | 'timestamp_precision' | 'seq'> & { initial_settings?: Partial<HeatpumpSettings> }): HeatpumpDevice[] {
  const start = o.clock();
  return Array.from({ length: o.devices }, (_, i) => {
    const d: DeviceOptions = {
      index: o.first_index + i,
      seed: o.seed,
      start_ms: start,
      detail: o.detail,
      settings_in_telemetry: o.settings_in_telemetry,
      out_of_range: o.out_of_range,
      timestamp_precision: o.timestamp_precision,
      seq: o.seq,
      initial_settings: o.initial_settings,
    };
    return new HeatpumpDevice(d);
  });
}

const AUTH_CODES = new Set([4, 5, 134, 135, 138]);

function connectOne(url: string, options: IClientOptions, timeoutMs: number, onStatus: (m: string) => void): Promise<MqttClient> {
  const where = safeUrl(url);
  const client = connect(url, options);
  return new Promise((resolve, reject) => {
    let lastError: Error | undefined;
    let settled = false;
    const fail = (why: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.end(true);
      reject(new Error(why));
    };
    const timer = setTimeout(() => fail(`cannot connect to MQTT broker ${where} within ${timeoutMs} ms${lastError ? `: ${lastError.message}` : ''}`), timeoutMs);
    client.on('error', (err: Error & { code?: number | string }) => {
      lastError = err;
      if (!settled) {
        if (typeof err.code === 'number' && AUTH_CODES.has(err.code)) fail(`MQTT broker ${where} refused the connection: ${err.message} (check the username and password)`);
        else if (typeof err.code === 'number') fail(`MQTT broker ${where} refused the connection: ${err.message}`);
        else onStatus(`cannot reach MQTT broker ${where} (${err.message}); retrying`);
      } else {
        onStatus(`MQTT ${options.clientId}: ${err.message}`);
      }
    });
    client.once('connect', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(client);
    });
  });
}

class FleetImpl extends EventEmitter implements Fleet {
  readonly devices: HeatpumpDevice[];
  readonly options: ResolvedOptions;
  readonly done: Promise<FleetStats>;
  private clients: MqttClient[] = [];
  private readonly deviceByCommandTopic = new Map<string, HeatpumpDevice>();
  private readonly clientOf = new Map<HeatpumpDevice, MqttClient>();
  private readonly s: Omit<FleetStats, 'in_flight' | 'elapsed_s' | 'rate' | 'connected' | 'finished' | 'seed'>;
  private inFlight = 0;
  private startedAt = 0;
  private endedAt = 0;
  private finished = false;
  private stopping = false;
  private stopPromise: Promise<FleetStats> | undefined;
  private wake: (() => void) | undefined;
  private waitingForSlot = false;
  private readonly drainWaiters = new Set<() => void>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private resolveDone!: (s: FleetStats) => void;
  private slot = 0;
  private periodic = 0;

  constructor(options: ResolvedOptions) {
    super();
    this.options = options;
    this.devices = createDevices(options);
    this.s = {
      published: 0,
      acked: 0,
      failed: 0,
      reports: 0,
      bytes: 0,
      by_kind: { heatpump: 0, energy: 0, temperature: 0, settings: 0 },
      commands: { received: 0, applied: 0, clamped: 0, rejected: 0, duplicate: 0, invalid: 0, ignored: 0 },
    };
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
  }

  async connect(): Promise<void> {
    const o = this.options;
    const status = (m: string) => this.emit('connection', m);
    const n = Math.min(o.connections, this.devices.length);
    const settled = await Promise.allSettled(
      Array.from({ length: n }, (_, k) =>
        connectOne(
          o.url,
          {
            clientId: n === 1 ? o.client_id : `${o.client_id}-${k + 1}`,
            username: o.username,
            password: o.password,
            protocolVersion: o.protocol_version,
            clean: o.clean,
            reconnectPeriod: 1000,
            connectTimeout: Math.min(o.connect_timeout_ms, 30_000),
          },
          o.connect_timeout_ms,
          status,
        ),
      ),
    );
    this.clients = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await Promise.all(this.clients.map((c) => c.endAsync(true)));
      throw failed.reason;
    }
    this.devices.forEach((d, i) => {
      const client = this.clients[i % this.clients.length];
      this.clientOf.set(d, client);
      this.deviceByCommandTopic.set(commandTopic(d.id, o.topic_prefix), d);
    });
    await Promise.all(
      this.clients.map(async (client) => {
        client.on('message', (topic, payload) => this.onCommand(topic, payload));
        client.on('offline', () => status(`MQTT ${client.options.clientId} offline; reconnecting`));
        client.on('reconnect', () => status(`MQTT ${client.options.clientId} reconnecting to ${safeUrl(o.url)}`));
        client.on('connect', () => status(`MQTT ${client.options.clientId} connected`));
        const topics = this.devices.filter((d) => this.clientOf.get(d) === client).map((d) => commandTopic(d.id, o.topic_prefix));
        const granted = await client.subscribeAsync(topics, { qos: 1 });
        const refused = granted.filter((g) => g.qos === 128 || g.qos > 2);
        if (refused.length) throw new Error(`MQTT broker ${safeUrl(o.url)} refused the subscription to ${refused.map((g) => g.topic).join(', ')}`);
      }),
    ).catch(async (err) => {
      await Promise.all(this.clients.map((c) => c.endAsync(true)));
      throw err;
    });
  }

  stats(): FleetStats {
    const elapsed = this.startedAt ? ((this.endedAt || performance.now()) - this.startedAt) / 1000 : 0;
    return {
      ...this.s,
      by_kind: { ...this.s.by_kind },
      commands: { ...this.s.commands },
      in_flight: this.inFlight,
      elapsed_s: elapsed,
      rate: elapsed > 0 ? this.s.acked / elapsed : 0,
      connected: this.clients.filter((c) => c.connected).length,
      finished: this.finished,
      seed: this.options.seed,
    };
  }

  private publish(device: HeatpumpDevice, kind: Kind, report: boolean): void {
    const o = this.options;
    const payload = device.payload(kind, o.clock());
    const body = encodePayload(payload, o.payload_bytes);
    const topic = topicOf(kind, device.idOf(kind), o.topic_prefix);
    const client = this.clientOf.get(device)!;
    this.inFlight += 1;
    this.s.published += 1;
    this.s.by_kind[kind] += 1;
    this.s.bytes += body.length;
    if (report) this.s.reports += 1;
    client.publish(topic, body, { qos: o.qos }, (err) => {
      this.inFlight -= 1;
      if (err) {
        this.s.failed += 1;
        this.s.last_error = err.message;
      } else {
        this.s.acked += 1;
      }
      if (this.waitingForSlot) this.wake?.();
      if (this.inFlight === 0) for (const w of [...this.drainWaiters]) w();
    });
  }

  private limitReached(): boolean {
    const o = this.options;
    if (o.count !== undefined && this.periodic >= o.count) return true;
    if (o.duration_ms !== undefined && performance.now() - this.startedAt >= o.duration_ms) return true;
    return false;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = undefined;
        resolve();
      };
    });
  }

  private drained(timeoutMs: number): Promise<boolean> {
    if (this.inFlight === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        if (t) clearTimeout(t);
        this.drainWaiters.delete(waiter);
        resolve(ok);
      };
      const waiter = () => done(true);
      const t = Number.isFinite(timeoutMs) ? setTimeout(() => done(false), timeoutMs) : undefined;
      this.drainWaiters.add(waiter);
    });
  }

  /** The publishing loop: round-robin over (device, kind), paced by the bucket, bounded in flight. */
  async run(): Promise<void> {
    const o = this.options;
    const bucket = new TokenBucket(o.rate, o.burst);
    const kinds = o.kinds;
    this.startedAt = performance.now();
    let sinceYield = 0;
    while (!this.stopping && !this.limitReached()) {
      if (this.inFlight >= o.max_in_flight) {
        this.waitingForSlot = true;
        await this.sleep(1000); // woken by the next acknowledgement
        this.waitingForSlot = false;
        continue;
      }
      const wait = bucket.take();
      if (wait > 0) {
        const left = o.duration_ms !== undefined ? o.duration_ms - (performance.now() - this.startedAt) : Infinity;
        await this.sleep(Math.max(0, Math.min(wait, left)));
        sinceYield = 0;
        continue;
      }
      const i = this.slot++;
      const device = this.devices[Math.floor(i / kinds.length) % this.devices.length];
      this.publish(device, kinds[i % kinds.length], false);
      this.periodic += 1;
      if (++sinceYield >= 200) {
        sinceYield = 0;
        await new Promise<void>((resolve) => setImmediate(resolve)); // let acknowledgements in
      }
    }
    this.finished = !this.stopping;
    if (this.finished) {
      await this.drained(Infinity);
      this.endedAt ||= performance.now();
    }
    this.resolveDone(this.stats());
  }

  private onCommand(topic: string, payload: Buffer): void {
    const device = this.deviceByCommandTopic.get(topic);
    if (!device) return;
    const o = this.options;
    this.s.commands.received += 1;
    if (!o.respond || this.stopping) {
      this.s.commands.ignored += 1;
      this.emit('command', { device_id: device.id, topic, outcome: { status: 'ignored', values: {}, problems: [this.stopping ? 'the fleet is stopping' : 'respond is off'] } } satisfies CommandEvent);
      return;
    }
    const outcome = device.receiveCommand(parseCommand(payload));
    this.s.commands[outcome.status] += 1;
    this.emit('command', { device_id: device.id, topic, outcome } satisfies CommandEvent);
    if (outcome.status === 'duplicate' || outcome.status === 'invalid') return;
    const apply = () => {
      if (this.stopping) return;
      device.applyCommand(outcome);
      this.emit('applied', { device_id: device.id, outcome, heatpump_seq: device.seq.heatpump, settings: { ...device.settings } } satisfies AppliedEvent);
      if (o.report_on_command) {
        this.publish(device, 'settings', true);
        this.publish(device, 'heatpump', true);
      }
    };
    if (o.respond_delay_ms > 0) {
      const t = setTimeout(() => {
        this.timers.delete(t);
        apply();
      }, o.respond_delay_ms);
      this.timers.add(t);
    } else {
      apply();
    }
  }

  stop(): Promise<FleetStats> {
    this.stopPromise ??= (async () => {
      this.stopping = true;
      this.wake?.();
      for (const t of this.timers) clearTimeout(t);
      this.timers.clear();
      const drained = await this.drained(this.options.drain_timeout_ms);
      this.endedAt ||= performance.now();
      await Promise.all(this.clients.map((c) => c.endAsync(!drained)));
      const stats = this.stats();
      this.resolveDone(stats);
      return stats;
    })();
    return this.stopPromise;
  }
}

/**
 * Connect (every connection up and subscribed to its devices' command topics, or an error naming
 * the broker) and start publishing.
 */
export async function startFleet(opts: FleetOptions = {}): Promise<Fleet> {
  const fleet = new FleetImpl(resolveOptions(opts));
  await fleet.connect();
  void fleet.run();
  return fleet;
}
