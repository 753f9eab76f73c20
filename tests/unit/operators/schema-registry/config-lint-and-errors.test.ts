/**
 * The schema registry processors' configs: every field documented with a default, the examples
 * load, lint reports which-schema mistakes and bad schema files at their lines, and registry
 * failures become RunnerErrors that say whether a retry helps. (Also covered by the registry-wide
 * tests once the operators are listed in operators/index.ts; these run either way.)
 */
import { describe, expect, it } from 'vitest';
import { formatProblem, loadPipeline } from '../../../../core/config.ts';
import { OperatorRegistry } from '../../../../core/registry.ts';
import { operators } from '../../../../operators/index.ts';
import { RegistryHttpError, describeRegistry, registryError } from '../../../../operators/schema-registry/client.ts';
import { schemaRegistryDecode } from '../../../../operators/schema-registry/decode.ts';
import { schemaRegistryEncode } from '../../../../operators/schema-registry/encode.ts';

const ROOT = new URL('../../../..', import.meta.url).pathname;
const mine = [schemaRegistryEncode, schemaRegistryDecode];
const registry = new OperatorRegistry([...operators.filter((op) => !mine.includes(op as never)), ...mine]);

const indent = (text: string, n: number) =>
  text
    .split('\n')
    .map((l) => (l.trim() === '' ? l : ' '.repeat(n) + l))
    .join('\n');
const pipeline = (name: string, cfg: string) => `name: p\ninput:\n  generate: {count: 1}\npipeline:\n  - ${name}:\n${indent(cfg, 6)}\noutput:\n  drop: {}\ndead_letter:\n  drop: {}\n`;

function lint(name: string, cfg: string): string[] {
  const res = loadPipeline('p.yaml', { registry, rootDir: ROOT, text: pipeline(name, cfg), env: {} });
  return res.ok ? [] : res.problems.map(formatProblem);
}
const encodeLint = (cfg: string) => lint('schema_registry_encode', `url: http://127.0.0.1:8081\n${cfg}`);

/** Fields without a description, optional fields without a default, open objects. */
function findings(schema: any, path = ''): string[] {
  const out: string[] = [];
  if (schema?.type === 'object') {
    if (schema.additionalProperties !== false) out.push(`${path || '(config)'}: open`);
    const required = new Set<string>(schema.required ?? []);
    for (const [k, sub] of Object.entries<any>(schema.properties ?? {})) {
      const p = path ? `${path}.${k}` : k;
      if (!sub.description) out.push(`${p}: no description`);
      if (!required.has(k) && sub.default === undefined) out.push(`${p}: no default`);
      out.push(...findings(sub, p));
    }
  }
  if (schema?.type === 'array') out.push(...findings(schema.items, `${path}[]`));
  for (const b of [...(schema?.anyOf ?? []), ...(schema?.oneOf ?? [])]) out.push(...findings(b, path));
  return out;
}

describe('schema registry operator specs', () => {
  it.each(mine)('$spec.name: closed config, every field described, optional fields with defaults, rejects', (op) => {
    expect(findings(op.spec.config)).toEqual([]);
    expect(op.spec.rejects).toBe(true);
    expect(op.spec.delivery).toMatch(/Never drops silently/);
  });

  it.each(mine.flatMap((op) => op.spec.examples.map((ex) => [`${op.spec.name}: ${ex.title}`, op, ex] as const)))('example "%s" loads', (_t, op, ex) => {
    expect(lint(op.spec.name, ex.config)).toEqual([]);
  });

  it('marks the basic auth password as a secret', () => {
    const res = loadPipeline('p.yaml', {
      registry,
      rootDir: ROOT,
      text: pipeline('schema_registry_decode', 'url: http://127.0.0.1:8081\nbasic_auth: {username: u, password: "${PW}"}'),
      env: { PW: 'hunter2' },
    });
    expect(res.ok).toBe(true);
    if (res.ok) expect([...res.pipeline.secretPaths]).toEqual(['pipeline.0.schema_registry_decode.basic_auth.password']);
  });
});

describe('schema_registry_encode lint', () => {
  it('wants a schema: schema_id, or subject', () => {
    expect(encodeLint('schema_type: json')).toEqual([expect.stringMatching(/^p\.yaml:6:7: say which schema to encode with: schema_id, or subject/)]);
  });

  it('reports schema_id together with subject or schema_file, and version without a subject lookup', () => {
    expect(encodeLint('schema_type: avro\nschema_id: 3\nsubject: s-value\nversion: 2')).toEqual([
      expect.stringMatching(/^p\.yaml:9:16: subject and schema_id exclude each other/),
      expect.stringMatching(/^p\.yaml:10:16: version selects a version of subject; with schema_id it has no meaning/),
    ]);
    expect(encodeLint('schema_type: json\nsubject: s-value\nschema_file: heatpump-telemetry\nversion: 2')).toEqual([
      expect.stringMatching(/^p\.yaml:10:16: version and schema_file exclude each other/),
    ]);
  });

  it('reports auto_register without a schema_file', () => {
    expect(encodeLint('schema_type: json\nsubject: s-value\nauto_register: true')).toEqual([expect.stringMatching(/^p\.yaml:9:22: auto_register needs schema_file/)]);
  });

  it('reports a schema_file that is missing, of the other type, or outside schemas/', () => {
    expect(encodeLint('schema_type: json\nsubject: s-value\nschema_file: no-such-schema')).toEqual([
      expect.stringMatching(/schema file schemas\/no-such-schema\.schema\.json not found/),
    ]);
    expect(encodeLint('schema_type: json\nsubject: s-value\nschema_file: avro/heatpump-telemetry.avsc')).toEqual([expect.stringMatching(/schema_type is json: schema_file must name a JSON Schema/)]);
    expect(encodeLint('schema_type: avro\nsubject: s-value\nschema_file: heatpump-telemetry')).toEqual([expect.stringMatching(/schema_type is avro: schema_file must be an Avro schema file ending in \.avsc/)]);
    expect(encodeLint('schema_type: avro\nsubject: s-value\nschema_file: avro/../../secret.avsc')).toEqual([expect.stringMatching(/must stay inside schemas\//)]);
  });

  it('accepts the project\'s Avro and JSON schema files', () => {
    expect(encodeLint('schema_type: avro\nsubject: s-value\nschema_file: avro/heatpump-telemetry.avsc\nauto_register: true')).toEqual([]);
    expect(encodeLint('schema_type: json\nsubject: s-value\nschema_file: heatpump-telemetry')).toEqual([]);
  });

  it('reports a syntax error in a subject template at its column, and credentials in the URL', () => {
    expect(encodeLint("schema_type: json\nsubject: 'homelab-${! type ( }-value'")).toEqual([expect.stringMatching(/^p\.yaml:8:34: invalid expression/)]);
    expect(lint('schema_registry_decode', 'url: http://user:pw@127.0.0.1:8081')).toEqual([expect.stringMatching(/^p\.yaml:6:\d+: put credentials in basic_auth/)]);
  });

  it('refuses to create a processor from a config that lint rejects', () => {
    const ctx = { rootDir: ROOT } as Parameters<typeof schemaRegistryEncode.create>[1];
    const cfg = { url: 'http://127.0.0.1:8081', basic_auth: null, timeout: '1s', schema_type: 'json', subject: null, version: 'latest', schema_id: null, schema_file: null, auto_register: true, refresh_interval: '1m', on_invalid: 'dead_letter' } as const;
    expect(() => schemaRegistryEncode.create(cfg, ctx)).toThrow(/CONFIG_INVALID|say which schema|auto_register needs schema_file/);
  });
});

describe('registry errors', () => {
  const what = 'schema id 7 from the schema registry at http://r';
  it.each([
    [404, 'SCHEMA_NOT_FOUND', false],
    [409, 'WRITE_REJECTED', false],
    [422, 'WRITE_REJECTED', false],
    [401, 'AUTH_FAILED', true],
    [403, 'AUTH_FAILED', true],
    [500, 'CONNECTION_FAILED', true],
    [503, 'CONNECTION_FAILED', true],
    [400, 'CONNECTION_FAILED', true],
    [0, 'CONNECTION_FAILED', true],
  ])('HTTP %i becomes %s (retryable: %s)', (status, code, retryable) => {
    const e = registryError(new RegistryHttpError(status, `HTTP ${status}: something`), what);
    expect(e.code).toBe(code);
    expect(e.retryable).toBe(retryable);
    expect(e.message).toBe(`${what}: HTTP ${status}: something`);
  });

  it('reads the library\'s errors: status on its ResponseError, network failures reported as status 400', () => {
    const notFound = Object.assign(new Error("runner - No content with id/hash 'contentId-7' was found."), { name: 'ResponseError', status: 404 });
    expect(registryError(notFound, what)).toMatchObject({ code: 'SCHEMA_NOT_FOUND', retryable: false, message: `${what}: No content with id/hash 'contentId-7' was found.` });
    const refused = Object.assign(new Error('runner - Error, status 400: connect ECONNREFUSED 127.0.0.1:8081'), { name: 'ResponseError', status: 400 });
    expect(registryError(refused, what)).toMatchObject({ code: 'CONNECTION_FAILED', retryable: true, message: `${what}: connect ECONNREFUSED 127.0.0.1:8081` });
    const uncompilable = Object.assign(new Error('unknown type: nope'), { name: 'ConfluentSchemaRegistryArgumentError' });
    expect(registryError(uncompilable, what)).toMatchObject({ code: 'SCHEMA_NOT_FOUND', retryable: false, message: `${what}: the schema cannot be used: unknown type: nope` });
  });

  it('treats an unexpected error as retryable: never dead-letter data on a guess', () => {
    expect(registryError(new TypeError('boom'), what)).toMatchObject({ code: 'CONNECTION_FAILED', retryable: true });
  });

  it('names the registry without credentials, query or trailing slash', () => {
    expect(describeRegistry({ url: 'https://u:p@registry.example.net:8443/apis/ccompat/v7/?x=1' })).toBe('https://registry.example.net:8443/apis/ccompat/v7');
  });
});
