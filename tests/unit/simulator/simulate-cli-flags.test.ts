/** `runner simulate` flags: parsing, validation, and the fleet options they become. */
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { fleetOptionsFromFlags, parseDuration, parseKinds, simulateCommand, summaryLine, type SimulateFlags } from '../../../simulator/cli.ts';
import { resolveOptions, safeUrl } from '../../../simulator/fleet.ts';

function parse(argv: string[]): SimulateFlags {
  const program = new Command('runner').exitOverride().configureOutput({ writeErr: () => {} });
  let flags: SimulateFlags | undefined;
  const cmd = simulateCommand(program);
  cmd.action((raw) => {
    flags = { ...raw, qos: Number(raw.qos) };
  });
  program.parse(['simulate', ...argv], { from: 'user' });
  return flags!;
}

describe('runner simulate flags', () => {
  it('have defaults for a small local run', () => {
    const prev = process.env.MQTT_URL;
    delete process.env.MQTT_URL;
    try {
      const o = fleetOptionsFromFlags(parse([]));
      expect(o).toMatchObject({ devices: 3, rate: 10, qos: 1, url: 'mqtt://127.0.0.1:1883', respond: true, report_on_command: true, out_of_range: 'reject', detail: 'full', max_in_flight: 256, connections: 1, first_index: 1 });
      expect(o.count).toBeUndefined();
      expect(o.duration_ms).toBeUndefined();
      expect(o.kinds).toBeUndefined();
    } finally {
      if (prev !== undefined) process.env.MQTT_URL = prev;
    }
  });

  it('map onto the fleet options', () => {
    const o = fleetOptionsFromFlags(
      parse(['--devices', '50', '--rate', '2000', '--count', '10000', '--duration', '5m', '--qos', '0', '--url', 'mqtt://broker:1883', '--kinds', 'heatpump,energy', '--seed', '42', '--payload-bytes', '200', '--detail', 'compact', '--topic-prefix', 'bench/', '--no-respond', '--no-report', '--respond-delay', '1500', '--out-of-range', 'clamp', '--seq', '--timestamp-ms', '--connections', '4', '--mqtt-version', '5']),
    );
    expect(o).toMatchObject({
      devices: 50,
      rate: 2000,
      count: 10_000,
      duration_ms: 300_000,
      qos: 0,
      url: 'mqtt://broker:1883',
      kinds: ['heatpump', 'energy'],
      seed: 42,
      payload_bytes: 200,
      detail: 'compact',
      topic_prefix: 'bench/',
      respond: false,
      report_on_command: false,
      respond_delay_ms: 1500,
      out_of_range: 'clamp',
      seq: true,
      timestamp_precision: 'ms',
      connections: 4,
      protocol_version: 5,
    });
    expect(fleetOptionsFromFlags(parse(['--seed', 'lab-1'])).seed).toBe('lab-1');
  });

  it('reject bad values with a message naming the flag', () => {
    for (const argv of [['--devices', '0'], ['--rate', '-1'], ['--qos', '3'], ['--kinds', 'heatpump,solar'], ['--duration', 'soon'], ['--count', '1.5'], ['--out-of-range', 'ignore']]) {
      expect(() => parse(argv), argv.join(' ')).toThrow(/invalid|Allowed choices/);
    }
  });

  it('parse durations and kinds', () => {
    expect([parseDuration('90'), parseDuration('500ms'), parseDuration('30s'), parseDuration('5m'), parseDuration('1.5h')]).toEqual([90_000, 500, 30_000, 300_000, 5_400_000]);
    expect(parseKinds('energy, heatpump,energy')).toEqual(['energy', 'heatpump']);
  });

  it('are checked again by the fleet, which names every problem', () => {
    expect(() => resolveOptions({ devices: 0, qos: 3 as 1, topic_prefix: 'a/#/', kinds: [] })).toThrow(
      /devices must be an integer >= 1, got 0; qos must be 0, 1 or 2, got 3; kinds must name at least one of .*; topic_prefix must not contain MQTT wildcards/,
    );
  });

  it('never print credentials of the broker URL', () => {
    expect(safeUrl('mqtt://user:s3cret@broker.example:8883')).toBe('mqtt://broker.example:8883');
    expect(
      summaryLine({
        published: 10,
        acked: 9,
        failed: 0,
        in_flight: 1,
        reports: 0,
        by_kind: { heatpump: 10, energy: 0, temperature: 0, settings: 0 },
        bytes: 2000,
        commands: { received: 1, applied: 1, clamped: 0, rejected: 0, duplicate: 0, invalid: 0, ignored: 0 },
        elapsed_s: 1,
        rate: 9,
        connected: 1,
        finished: false,
        seed: 5,
      }),
    ).toBe('simulate: stopped after 1.0 s: 10 published (heatpump 10), 9 acked, 0 failed, 1 unacknowledged, 9.0 msg/s, 2000 bytes, seed 5; commands: 1 received, 1 applied, 0 clamped, 0 rejected, 0 duplicate, 0 invalid, 0 ignored');
  });
});
