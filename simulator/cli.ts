/**
 * `runner simulate`: simulated heat pumps, energy meters and room sensors publishing over MQTT.
 *
 *   runner simulate --devices 10 --rate 100 --duration 5m
 *
 * Prints a line per second to stderr (published, acked, in flight, rate) and a final summary;
 * stops cleanly on SIGINT/SIGTERM (a second signal exits at once).
 * Exit codes: 0 done and every publish acknowledged; 2 bad options or the broker could not be
 * reached (nothing was published); 3 publishes failed or were not acknowledged in time.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { KINDS, type Kind } from './heatpump.ts';
import { DEFAULT_MQTT_URL, safeUrl, startFleet, type FleetOptions, type FleetStats } from './fleet.ts';

export const SIMULATE_EXIT = { OK: 0, USAGE: 2, RUNTIME: 3 } as const;

/** "90" (seconds), "500ms", "30s", "5m", "1h" -> milliseconds. */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!m) throw new InvalidArgumentError(`expected a duration such as 30s, 5m, 1h, 500ms or a number of seconds, got "${text}"`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit]!;
}

const intArg = (min: number) => (text: string) => {
  const n = Number(text);
  if (!/^\s*-?\d+\s*$/.test(text) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}, got "${text}"`);
  return n;
};

const numArg = (min: number) => (text: string) => {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n < min) throw new InvalidArgumentError(`expected a number >= ${min}, got "${text}"`);
  return n;
};

export function parseKinds(text: string): Kind[] {
  const kinds = text.split(',').map((k) => k.trim()).filter(Boolean);
  const unknown = kinds.filter((k) => !KINDS.includes(k as Kind));
  if (unknown.length || kinds.length === 0) throw new InvalidArgumentError(`expected a comma-separated list of ${KINDS.join(', ')}, got "${text}"`);
  return [...new Set(kinds)] as Kind[];
}

export interface SimulateFlags {
  devices: number;
  rate: number;
  count?: number;
  duration?: number;
  qos: number;
  url: string;
  username?: string;
  password?: string;
  kinds?: Kind[];
  seed?: string;
  payloadBytes?: number;
  detail: 'full' | 'compact';
  topicPrefix?: string;
  firstDevice: number;
  connections: number;
  maxInFlight: number;
  clientId?: string;
  mqttVersion: string;
  outOfRange: 'reject' | 'clamp';
  respond: boolean;
  respondDelay: number;
  report: boolean;
  seq?: boolean;
  timestampMs?: boolean;
  drainTimeout: number;
  connectTimeout: number;
  json?: boolean;
}

/** Commander flags -> fleet options. */
export function fleetOptionsFromFlags(f: SimulateFlags): FleetOptions {
  const seed = f.seed === undefined ? undefined : /^\d+$/.test(f.seed) ? Number(f.seed) : f.seed;
  return {
    url: f.url,
    username: f.username,
    password: f.password,
    client_id: f.clientId,
    connections: f.connections,
    protocol_version: f.mqttVersion === '5' ? 5 : 4,
    connect_timeout_ms: f.connectTimeout,
    devices: f.devices,
    first_index: f.firstDevice,
    rate: f.rate,
    qos: f.qos as 0 | 1 | 2,
    max_in_flight: f.maxInFlight,
    count: f.count,
    duration_ms: f.duration,
    kinds: f.kinds,
    seed,
    payload_bytes: f.payloadBytes,
    detail: f.detail,
    timestamp_precision: f.timestampMs ? 'ms' : 's',
    seq: f.seq ?? false,
    topic_prefix: f.topicPrefix,
    respond: f.respond,
    respond_delay_ms: f.respondDelay,
    report_on_command: f.report,
    out_of_range: f.outOfRange,
    drain_timeout_ms: f.drainTimeout,
  };
}

const fmtRate = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));

export function summaryLine(s: FleetStats): string {
  const unacked = s.published - s.acked - s.failed;
  const c = s.commands;
  const commands = c.received
    ? `; commands: ${c.received} received, ${c.applied} applied, ${c.clamped} clamped, ${c.rejected} rejected, ${c.duplicate} duplicate, ${c.invalid} invalid, ${c.ignored} ignored`
    : '';
  const kinds = (Object.entries(s.by_kind) as [Kind, number][]).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ');
  return `simulate: ${s.finished ? 'done' : 'stopped'} after ${s.elapsed_s.toFixed(1)} s: ${s.published} published (${kinds || 'none'}), ${s.acked} acked, ${s.failed} failed, ${unacked} unacknowledged, ${fmtRate(s.rate)} msg/s, ${s.bytes} bytes, seed ${s.seed}${commands}${s.last_error ? `; last error: ${s.last_error}` : ''}`;
}

export interface SimulateIo {
  stderr: (line: string) => void;
  stdout: (line: string) => void;
  /** Where SIGINT/SIGTERM come from (default process). */
  signals?: NodeJS.EventEmitter;
}

/** Run a simulation to its end (count, duration or a signal); returns the exit code. */
export async function runSimulate(flags: SimulateFlags, io: SimulateIo): Promise<number> {
  let opts: FleetOptions;
  try {
    opts = fleetOptionsFromFlags(flags);
  } catch (err) {
    io.stderr(`simulate: ${(err as Error).message}`);
    return SIMULATE_EXIT.USAGE;
  }
  const signals = io.signals ?? process;
  let stopRequested: (() => void) | undefined;
  let signalCount = 0;
  const onSignal = (sig: string) => {
    signalCount += 1;
    if (signalCount > 1) {
      io.stderr(`simulate: second ${sig}, exiting without waiting for acknowledgements`);
      process.exit(SIMULATE_EXIT.RUNTIME);
    }
    io.stderr(`simulate: ${sig}, stopping (waiting up to ${flags.drainTimeout} ms for acknowledgements)`);
    stopRequested?.();
  };
  const onInt = () => onSignal('SIGINT');
  const onTerm = () => onSignal('SIGTERM');
  signals.on('SIGINT', onInt);
  signals.on('SIGTERM', onTerm);
  const stopped = new Promise<void>((resolve) => (stopRequested = resolve));

  try {
    const limit = [flags.count !== undefined ? `${flags.count} messages` : '', flags.duration !== undefined ? `${flags.duration / 1000} s` : ''].filter(Boolean).join(' or ') || 'until stopped';
    io.stderr(`simulate: ${flags.devices} device(s) -> ${safeUrl(flags.url)}, ${flags.rate > 0 ? `${flags.rate} msg/s` : 'as fast as possible'}, QoS ${flags.qos}, ${limit}`);
    let fleet;
    try {
      fleet = await startFleet({ ...opts });
    } catch (err) {
      io.stderr(`simulate: ${(err as Error).message}`);
      return SIMULATE_EXIT.USAGE;
    }
    fleet.on('connection', (m) => io.stderr(`simulate: ${m}`));
    fleet.on('command', (e) => {
      const o = e.outcome;
      const what = o.status === 'applied' || o.status === 'clamped' ? JSON.stringify(o.values) : o.problems.join('; ');
      io.stderr(`simulate: command for ${e.device_id}${'outbox_id' in o && o.outbox_id !== undefined ? ` (outbox_id ${o.outbox_id})` : ''}: ${o.status} ${what}`);
    });
    let last = fleet.stats();
    let lastAt = performance.now();
    const ticker = setInterval(() => {
      const s = fleet.stats();
      const now = performance.now();
      const rate = ((s.acked - last.acked) * 1000) / (now - lastAt);
      io.stderr(`simulate: ${Math.round(s.elapsed_s)}s published=${s.published} acked=${s.acked} in_flight=${s.in_flight} failed=${s.failed} rate=${fmtRate(rate)} msg/s${s.connected < fleet.options.connections ? ` connected=${s.connected}/${fleet.options.connections}` : ''}`);
      last = s;
      lastAt = now;
    }, 1000);
    await Promise.race([fleet.done, stopped]);
    const s = await fleet.stop();
    clearInterval(ticker);
    io.stderr(summaryLine(s));
    if (flags.json) io.stdout(JSON.stringify(s));
    return s.failed === 0 && s.published === s.acked ? SIMULATE_EXIT.OK : SIMULATE_EXIT.RUNTIME;
  } finally {
    signals.off('SIGINT', onInt);
    signals.off('SIGTERM', onTerm);
  }
}

/** Add `simulate` to a commander program (the runner's CLI: `simulateCommand(program)`). */
export function simulateCommand(program: Command): Command {
  const cmd = program
    .command('simulate')
    .description('Simulated heat pumps (device-001, ...) with their energy meters and room sensors publishing telemetry and settings over MQTT, answering commands on heatpump/{device_id}/command.')
    .addOption(new Option('--devices <n>', 'number of installations (heat pump + meter + sensor)').argParser(intArg(1)).default(3))
    .addOption(new Option('--rate <msgs>', 'total messages per second over all devices and kinds (0 = as fast as possible)').argParser(numArg(0)).default(10))
    .addOption(new Option('--count <n>', 'stop after this many messages').argParser(intArg(0)))
    .addOption(new Option('--duration <time>', 'stop after this long: 30s, 5m, 1h, 500ms, or seconds').argParser(parseDuration))
    .addOption(new Option('--qos <qos>', 'MQTT QoS of the publishes').choices(['0', '1', '2']).default('1'))
    .addOption(new Option('--url <url>', 'MQTT broker URL').env('MQTT_URL').default(DEFAULT_MQTT_URL))
    .addOption(new Option('--username <user>', 'MQTT username').env('MQTT_USERNAME'))
    .addOption(new Option('--password <password>', 'MQTT password (prefer the environment variable)').env('MQTT_PASSWORD'))
    .addOption(new Option('--kinds <list>', `kinds of messages, comma-separated: ${KINDS.join(',')} (default all)`).argParser(parseKinds))
    .addOption(new Option('--seed <seed>', 'seed of every value (default random; printed in the summary)'))
    .addOption(new Option('--payload-bytes <n>', 'pad each payload to exactly this many bytes (for benchmarks)').argParser(intArg(1)))
    .addOption(new Option('--detail <level>', 'full payloads, or compact ones with the fields of the examples only').choices(['full', 'compact']).default('full'))
    .addOption(new Option('--topic-prefix <prefix>', 'prepended to every topic, commands included'))
    .addOption(new Option('--first-device <n>', 'number of the first device (device-NNN)').argParser(intArg(0)).default(1))
    .addOption(new Option('--connections <n>', 'MQTT connections to spread the devices over').argParser(intArg(1)).default(1))
    .addOption(new Option('--max-in-flight <n>', 'publishes waiting for their PUBACK at most').argParser(intArg(1)).default(256))
    .addOption(new Option('--client-id <id>', 'MQTT client id (prefix when several connections)'))
    .addOption(new Option('--mqtt-version <v>', 'MQTT protocol: 4 (3.1.1) or 5').choices(['4', '5']).default('4'))
    .addOption(new Option('--out-of-range <policy>', 'a command with an invalid value is rejected, or clamped into range').choices(['reject', 'clamp']).default('reject'))
    .addOption(new Option('--no-respond', 'devices ignore commands (to test command timeouts)'))
    .addOption(new Option('--respond-delay <ms>', 'devices apply a command this many ms after receiving it').argParser(intArg(0)).default(0))
    .addOption(new Option('--no-report', 'do not publish settings and telemetry right after a command (the change shows in the next periodic messages)'))
    .addOption(new Option('--seq', 'add a per-device, per-kind counter `seq` to every payload'))
    .addOption(new Option('--timestamp-ms', 'timestamps with millisecond fractions (default whole seconds)'))
    .addOption(new Option('--drain-timeout <ms>', 'how long to wait for outstanding acknowledgements when stopping').argParser(intArg(0)).default(10_000))
    .addOption(new Option('--connect-timeout <ms>', 'give up when the broker is not reachable within this long').argParser(intArg(1)).default(10_000))
    .addOption(new Option('--json', 'print the final statistics as JSON on stdout'))
    .addHelpText('after', `\nTopics: heatpump/{device_id}/telemetry, heatpump/{device_id}/settings, energy/{device_serial}/telemetry, temperature/{sensor_id}/telemetry; commands on heatpump/{device_id}/command.\nExit codes: 0 every publish acknowledged, 2 bad options or broker unreachable, 3 publishes failed or unacknowledged.`)
    .action(async (raw: Omit<SimulateFlags, 'qos'> & { qos: string }) => {
      const code = await runSimulate(
        { ...raw, qos: Number(raw.qos) },
        { stderr: (l) => process.stderr.write(`${l}\n`), stdout: (l) => process.stdout.write(`${l}\n`) },
      );
      process.exit(code);
    });
  return cmd;
}

/** Run `simulate` with these arguments (those after the word `simulate`), outside the runner's CLI. */
export async function runSimulateCommand(argv: string[]): Promise<void> {
  const program = new Command('runner').exitOverride((err) => {
    process.exit(err.exitCode === 0 ? SIMULATE_EXIT.OK : SIMULATE_EXIT.USAGE);
  });
  simulateCommand(program);
  await program.parseAsync(['simulate', ...argv], { from: 'user' });
}
