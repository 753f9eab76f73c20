import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const ROOT = new URL('../..', import.meta.url).pathname;

describe('runner echo', () => {
  it('prints the pipeline with defaults filled, variables resolved and URL passwords redacted', () => {
    const res = spawnSync(process.execPath, [join(ROOT, 'bin/runner.mjs'), 'echo', 'tests/fixtures/pipelines/with-secrets.yaml'], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, MQTT_PASSWORD: 'topsecret-from-env' },
      timeout: 60_000,
    });
    expect(res.status, res.stderr).toBe(0);
    expect(res.stdout).not.toContain('topsecret-from-env');
    expect(res.stdout).not.toContain('s3cret-pw');
    const printed = parse(res.stdout);
    expect(printed.description).toBe('bridges mqtt://bridge:[REDACTED]@127.0.0.1:1883 to Kafka');
    expect(printed.input.generate).toMatchObject({ count: 1, interval: '1s', max_in_flight: 1000, expression: '{"dsn": "postgres://app:[REDACTED]@db:5432/homelab"}' });
    expect(printed.shutdown_timeout).toBe('20s');
  }, 60_000);
});
