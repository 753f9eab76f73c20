/**
 * `runner test` as users run it: every pipeline test of the project passes (exit 0), a failing case
 * is reported with its file:line:col and what differs (exit 1), an invalid test file gives every
 * problem as file:line:col (exit 2).
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = new URL('../..', import.meta.url).pathname;
const FIXTURES = 'tests/fixtures/pipeline-tests';

function runner(args: string[]) {
  const res = spawnSync(process.execPath, [join(ROOT, 'bin/runner.mjs'), 'test', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  return { code: res.status, stdout: res.stdout, stderr: res.stderr };
}

describe('runner test', () => {
  it('runs every pipelines/*.test.yaml of the project, and all pass', () => {
    const files = readdirSync(join(ROOT, 'pipelines')).filter((f) => f.endsWith('.test.yaml'));
    // The pipelines whose steps carry logic have tests.
    for (const name of ['mqtt-bridge', 'mqtt-realtime', 'telemetry-sink', 'settings-sink', 'outbox-relay', 'command-confirm', 'command-dispatch', 'settings-api', 'history-api']) {
      expect(files).toContain(`${name}.test.yaml`);
    }
    const { code, stdout, stderr } = runner([]);
    expect(stdout.split('\n').filter((l) => l.startsWith('  FAIL')), stdout + stderr).toEqual([]);
    for (const f of files) expect(stdout).toContain(`pipelines/${f} (pipelines/${f.replace('.test.yaml', '.yaml')})`);
    expect(stdout).toMatch(/^\d+ passed, 0 failed \(\d+ file\(s\)\)$/m);
    expect(code).toBe(0);
  }, 120_000);

  it('reports a failing case with its file:line:col and the differences, and exits 1', () => {
    const { code, stdout } = runner([`${FIXTURES}/failing.test.yaml`]);
    expect(stdout).toContain('  ok    this one passes');
    expect(stdout).toContain(['  FAIL  this one expects the wrong output and value', `        ${FIXTURES}/failing.test.yaml:11:5`].join('\n'));
    expect(stdout).toContain(`output[0] (${FIXTURES}/failing.test.yaml:15:9): from input[0], at hot:`);
    expect(stdout).toContain('value/temperature: expected 30, got 31');
    expect(stdout).toContain('output: expected "normal", got "hot"');
    expect(stdout).toContain('1 passed, 2 failed (1 file(s))');
    expect(code).toBe(1);
  }, 120_000);

  it('prints every problem of an invalid test file as file:line:col, runs nothing, and exits 2', () => {
    const { code, stdout } = runner([`${FIXTURES}/invalid.test.yaml`]);
    const f = `${FIXTURES}/invalid.test.yaml`;
    expect(stdout.split('\n').filter((l) => l.startsWith(f))).toEqual([
      `${f}:3:3: no step "lookpu" in the pipeline; did you mean "lookup"?`,
      `${f}:8:9: unknown field "metdata"; did you mean "metadata"?`,
      `${f}:10:17: the pipeline has no output "cold"; its outputs: hot, normal`,
      `${f}:11:29: invalid expression: Unexpected end of expression`,
      `${f}:12:19: no field topik in the config of hot or normal; did you mean "topic"?`,
      `${f}:14:15: must be one of "CONFIG_INVALID", "ENV_MISSING", "SCHEMA_NOT_FOUND", "MESSAGE_INVALID", "EXPRESSION_FAILED", "CONNECTION_FAILED", "AUTH_FAILED", "WRITE_FAILED", "WRITE_REJECTED", "NOT_FOUND", "SHUTDOWN_TIMEOUT", "INTERNAL", got string "GONE"`,
    ]);
    expect(stdout).not.toContain('typos everywhere');
    expect(code).toBe(2);
  }, 120_000);

  it('exits 2 for a path without tests', () => {
    const { code, stdout } = runner([`${FIXTURES}/nothing-here.test.yaml`]);
    expect(stdout).toContain('nothing-here.test.yaml: no such file or folder');
    expect(code).toBe(2);
  }, 120_000);
});
