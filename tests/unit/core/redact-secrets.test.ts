import { Type } from '@sinclair/typebox';
import { map } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { formatProblem, loadPipeline } from '../../../core/config.ts';
import { defineOutput } from '../../../core/operator.ts';
import { REDACTED, redactString, redactValue } from '../../../core/redact.ts';
import { OperatorRegistry } from '../../../core/registry.ts';
import { Obj, Secret } from '../../../core/schema.ts';
import { operators } from '../../../operators/index.ts';

const ROOT = new URL('../../..', import.meta.url).pathname;

describe('redactString', () => {
  it('hides the password of a URL and keeps the rest', () => {
    expect(redactString('postgres://app:s3cret@db:5432/homelab')).toBe(`postgres://app:${REDACTED}@db:5432/homelab`);
    expect(redactString('connect mqtt://bridge:p%40ss@broker:1883 failed')).toBe(`connect mqtt://bridge:${REDACTED}@broker:1883 failed`);
    expect(redactString('postgres://app@db/x')).toBe('postgres://app@db/x');
  });

  it('hides password= and token= pairs', () => {
    expect(redactString('host=db password=hunter2 user=app')).toBe(`host=db password=${REDACTED} user=app`);
    expect(redactString('?token=abc&x=1')).toBe(`?token=${REDACTED}&x=1`);
  });
});

describe('redactValue', () => {
  it('hides fields marked secret by path, fields named like secrets, and URL passwords', () => {
    const config = {
      output: { kafka: { sasl: { mechanism: 'plain', username: 'runner', key_material: 'abc' }, password: 'pw', brokers: ['kafka://u:pw2@k:9092'] } },
      name: 'p',
    };
    const out = redactValue(config, new Set(['output.kafka.sasl.key_material'])) as typeof config;
    expect(out.output.kafka.sasl).toEqual({ mechanism: 'plain', username: 'runner', key_material: REDACTED });
    expect(out.output.kafka.password).toBe(REDACTED);
    expect(out.output.kafka.brokers).toEqual([`kafka://u:${REDACTED}@k:9092`]);
    expect(out.name).toBe('p');
    expect(config.output.kafka.password).toBe('pw'); // a copy: the config itself is untouched
  });
});

describe('Secret fields in a loaded pipeline', () => {
  const vault = defineOutput({
    spec: {
      name: 'vault',
      kind: 'output',
      summary: 'Test output with a secret.',
      description: 'Test only.',
      config: Obj({ url: Type.String({ description: 'Where.' }), api_credential: Secret('The credential.') }),
      examples: [],
      delivery: 'Test only.',
    },
    create: () => map((m) => m),
  });

  it('are known by path after loading and redacted like `runner echo` prints them, also when they come from the environment', () => {
    const registry = new OperatorRegistry([...operators, vault]);
    const text = 'name: s\ninput:\n  generate: {count: 1}\noutput:\n  vault:\n    url: https://svc:${SVC_PASSWORD}@vault:8200\n    api_credential: ${VAULT_CREDENTIAL}\n';
    const res = loadPipeline('s.yaml', { registry, rootDir: ROOT, text, env: { SVC_PASSWORD: 'pw-from-env', VAULT_CREDENTIAL: 'cred-from-env' } });
    if (!res.ok) throw new Error(res.problems.map(formatProblem).join('\n'));
    expect(res.pipeline.secretPaths).toEqual(new Set(['output.vault.api_credential']));

    const printed = JSON.stringify(redactValue(res.pipeline.raw, res.pipeline.secretPaths));
    expect(printed).not.toContain('pw-from-env');
    expect(printed).not.toContain('cred-from-env');
    expect((redactValue(res.pipeline.raw, res.pipeline.secretPaths) as any).output.vault).toEqual({ url: `https://svc:${REDACTED}@vault:8200`, api_credential: REDACTED });
  });
});
