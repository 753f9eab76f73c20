/**
 * `simulate` as a user runs it (simulator/main.ts takes the flags of `runner simulate`): publishes
 * its count and exits 0, prints a line per second and a summary, stops cleanly on SIGINT with
 * every published message delivered, and exits 2 naming the broker when it cannot connect.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Collector, MQTT_URL, uniquePrefix } from './mqtt-collector.ts';

const ROOT = new URL('../../..', import.meta.url).pathname;

interface Run {
  stderr: string;
  stdout: string;
  exit: Promise<number | null>;
  kill(signal: NodeJS.Signals): void;
  untilStderr(re: RegExp): Promise<void>;
}

function simulate(args: string[], env: Record<string, string> = {}): Run {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'simulator/main.ts'), ...args], {
    cwd: ROOT,
    env: { ...process.env, MQTT_URL, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  const run: Run = {
    stderr: '',
    stdout: '',
    exit: new Promise((resolve) => child.on('exit', (code) => resolve(code))),
    kill: (signal) => child.kill(signal),
    untilStderr: (re) => (re.test(run.stderr) ? Promise.resolve() : new Promise((resolve) => waiters.push({ re, resolve }))),
  };
  child.stdout.on('data', (d) => (run.stdout += d));
  child.stderr.on('data', (d) => {
    run.stderr += d;
    for (const w of waiters.splice(0)) (w.re.test(run.stderr) ? w.resolve : () => waiters.push(w))();
  });
  return run;
}

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0)) await fn();
});

describe('simulate (CLI)', () => {
  it('publishes --count messages at --rate, prints progress and a summary, exits 0', async () => {
    const prefix = uniquePrefix('cli');
    const sub = await Collector.start([`${prefix}#`]);
    cleanup.push(() => sub.close());
    const run = simulate(['--devices', '2', '--rate', '40', '--count', '60', '--topic-prefix', prefix, '--seq', '--seed', '5', '--json']);
    expect(await run.exit, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/^simulate: 2 device\(s\) -> mqtt:\/\/.*, 40 msg\/s, QoS 1, 60 messages$/m);
    expect(run.stderr).toMatch(/^simulate: 1s published=\d+ acked=\d+ in_flight=\d+ failed=0 rate=[\d.]+ msg\/s$/m);
    expect(run.stderr).toMatch(/^simulate: done after [\d.]+ s: 60 published \(heatpump 15, energy 15, temperature 15, settings 15\), 60 acked, 0 failed, 0 unacknowledged, [\d.]+ msg\/s, \d+ bytes, seed 5$/m);
    expect(JSON.parse(run.stdout)).toMatchObject({ published: 60, acked: 60, failed: 0, finished: true, seed: 5 });
    await sub.until(() => sub.messages.length >= 60);
    expect(new Set(sub.messages.map((m) => `${m.topic}#${m.json.seq}`)).size).toBe(60);
  });

  it('stops cleanly on SIGINT: summary printed, every published message delivered, exit 0', async () => {
    const prefix = uniquePrefix('sigint');
    const sub = await Collector.start([`${prefix}#`]);
    cleanup.push(() => sub.close());
    const run = simulate(['--devices', '3', '--rate', '200', '--duration', '60s', '--topic-prefix', prefix, '--json']);
    cleanup.push(async () => {
      run.kill('SIGKILL');
      await run.exit;
    });
    await run.untilStderr(/^simulate: 1s published=/m);
    run.kill('SIGINT');
    expect(await run.exit, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/^simulate: SIGINT, stopping/m);
    expect(run.stderr).toMatch(/^simulate: stopped after [\d.]+ s: \d+ published .*, 0 failed, 0 unacknowledged/m);
    const stats = JSON.parse(run.stdout);
    expect(stats.published).toBeGreaterThanOrEqual(200);
    expect(stats.acked).toBe(stats.published);
    await sub.until(() => sub.messages.length >= stats.published);
    expect(sub.messages.length).toBe(stats.published);
  });

  it('exits 2 naming the broker, without its password, when it cannot connect', async () => {
    const run = simulate(['--url', 'mqtt://sim:hunter2@127.0.0.1:1', '--connect-timeout', '1000', '--count', '1']);
    expect(await run.exit).toBe(2);
    expect(run.stderr).toMatch(/^simulate: cannot connect to MQTT broker mqtt:\/\/127\.0\.0\.1:1 within 1000 ms: connect ECONNREFUSED/m);
    expect(run.stderr).not.toContain('hunter2');
  });

  it('exits 2 on a bad flag', async () => {
    const run = simulate(['--kinds', 'heatpump,solar']);
    expect(await run.exit).toBe(2);
    expect(run.stderr).toContain("option '--kinds <list>' argument 'heatpump,solar' is invalid");
  });
});
