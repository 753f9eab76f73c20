/** The CLI as users run it: `runner lint` and `runner start` on files with problems, and on pipelines/. */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = new URL('../..', import.meta.url).pathname;
const FIXTURE = 'tests/fixtures/pipelines/many-problems.yaml';

function runner(args: string[], env: Record<string, string> = {}) {
  const res = spawnSync(process.execPath, [join(ROOT, 'bin/runner.mjs'), ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, LOG_LEVEL: 'info', RUNNER_HTTP_PORT: '0', RUNNER_HTTP_HOST: '127.0.0.1', ...env },
    timeout: 60_000,
  });
  return { code: res.status, stdout: res.stdout, stderr: res.stderr };
}

const EXPECTED = [
  `${FIXTURE}:2:7: must be text matching ^[a-z0-9][a-z0-9_-]*$, got string "Many Problems"`,
  `${FIXTURE}:4:3: unknown input "generat"; did you mean "generate"?`,
  `${FIXTURE}:7:5: validate can reject messages but the pipeline has no dead_letter output; add one, or set on_invalid: drop to drop them (logged and counted)`,
  `${FIXTURE}:9:5: map can reject messages but the pipeline has no dead_letter output; add one, or set on_invalid: drop to drop them (logged and counted)`,
  `${FIXTURE}:10:31: invalid expression: The symbol "}" cannot be used as a unary operator`,
  `${FIXTURE}:13:13: must be one of "value", "envelope", got string "xml"`,
];

describe('runner lint', () => {
  it('prints every problem as file:line:col and exits 1', () => {
    const { code, stdout, stderr } = runner(['lint', FIXTURE]);
    expect(stdout.trimEnd().split('\n')).toEqual(EXPECTED);
    expect(stderr).toContain('6 problem(s) in 1 file(s)');
    expect(code).toBe(1);
  }, 60_000);

  it("passes on every pipeline in the project's pipelines/ folder", () => {
    const files = readdirSync(join(ROOT, 'pipelines'))
      .filter((f) => /\.ya?ml$/.test(f) && !/\.test\.ya?ml$/.test(f)) // *.test.yaml: pipeline tests (runner test)
      .map((f) => `pipelines/${f}`);
    expect(files.length).toBeGreaterThan(0);
    const { code, stdout, stderr } = runner(['lint', ...files]);
    expect(stdout, stderr).toBe('');
    expect(code).toBe(0);
  }, 60_000);
});

describe('runner start', () => {
  it('prints the problems of a bad file, starts nothing, and exits 2', () => {
    const { code, stdout, stderr } = runner(['start', FIXTURE]);
    const lines = stderr.trimEnd().split('\n');
    expect(lines.slice(0, EXPECTED.length)).toEqual(EXPECTED);
    expect(lines[EXPECTED.length]).toBe('6 problem(s); nothing was started');
    expect(lines).toHaveLength(EXPECTED.length + 1);
    expect(stdout).toBe('');
    expect(code).toBe(2);
  }, 60_000);
});
