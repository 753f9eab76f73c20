/**
 * schemas/settings-api.openapi.json: a well-formed OpenAPI 3.1 document (checked against the
 * structure of the specification for the objects it uses, without fetching the official schema),
 * every $ref resolves, every schema and example in it compiles and validates, its paths are exactly
 * the routes of pipelines/settings-api.yaml, and the PATCH request schema IS
 * schemas/heatpump-settings-patch.schema.json.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsImport from 'ajv-formats';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { formatProblem, loadPipeline } from '../../../core/config.ts';
import { registry } from '../../../operators/index.ts';

const addFormats = addFormatsImport as unknown as (ajv: Ajv) => Ajv;
const ROOT = new URL('../../..', import.meta.url).pathname;
const doc = JSON.parse(readFileSync(join(ROOT, 'schemas/settings-api.openapi.json'), 'utf8'));
const patchSchema = JSON.parse(readFileSync(join(ROOT, 'schemas/heatpump-settings-patch.schema.json'), 'utf8'));

/** The OpenAPI 3.1 objects this document uses (OAS 3.1.0, sections 4.8.x), strict where the spec is. */
const refOr = (def: string) => ({ oneOf: [{ $ref: '#/$defs/reference' }, { $ref: `#/$defs/${def}` }] });
const OAS_31 = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  type: 'object',
  required: ['openapi', 'info', 'paths'],
  additionalProperties: false,
  patternProperties: { '^x-': true },
  properties: {
    openapi: { type: 'string', pattern: '^3\\.1\\.\\d+$' },
    info: {
      type: 'object',
      required: ['title', 'version'],
      properties: { title: { type: 'string', minLength: 1 }, version: { type: 'string', minLength: 1 }, description: { type: 'string' }, summary: { type: 'string' } },
      additionalProperties: false,
    },
    servers: { type: 'array', items: { type: 'object', required: ['url'], properties: { url: { type: 'string' }, description: { type: 'string' } }, additionalProperties: false } },
    paths: { type: 'object', propertyNames: { pattern: '^/' }, additionalProperties: { $ref: '#/$defs/pathItem' } },
    components: {
      type: 'object',
      additionalProperties: false,
      properties: {
        schemas: { type: 'object', additionalProperties: { type: ['object', 'boolean'] } },
        responses: { type: 'object', additionalProperties: refOr('response') },
        headers: { type: 'object', additionalProperties: refOr('header') },
        parameters: { type: 'object', additionalProperties: refOr('parameter') },
      },
    },
  },
  $defs: {
    reference: { type: 'object', required: ['$ref'], properties: { $ref: { type: 'string' }, summary: { type: 'string' }, description: { type: 'string' } }, additionalProperties: false },
    pathItem: {
      type: 'object',
      additionalProperties: false,
      properties: {
        summary: { type: 'string' },
        description: { type: 'string' },
        parameters: { type: 'array', items: refOr('parameter') },
        ...Object.fromEntries(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'].map((m) => [m, { $ref: '#/$defs/operation' }])),
      },
    },
    operation: {
      type: 'object',
      required: ['responses'],
      additionalProperties: false,
      properties: {
        operationId: { type: 'string' },
        summary: { type: 'string' },
        description: { type: 'string' },
        tags: { type: 'array', items: { type: 'string' } },
        parameters: { type: 'array', items: refOr('parameter') },
        requestBody: refOr('requestBody'),
        responses: { type: 'object', minProperties: 1, propertyNames: { pattern: '^([1-5](\\d\\d|XX)|default)$' }, additionalProperties: refOr('response') },
      },
    },
    parameter: {
      type: 'object',
      required: ['name', 'in'],
      additionalProperties: false,
      properties: {
        name: { type: 'string' },
        in: { enum: ['query', 'header', 'path', 'cookie'] },
        description: { type: 'string' },
        required: { type: 'boolean' },
        schema: { type: ['object', 'boolean'] },
      },
      // Path parameters must be required (OAS 4.8.12.1).
      if: { properties: { in: { const: 'path' } } },
      then: { required: ['required'], properties: { required: { const: true } } },
    },
    requestBody: { type: 'object', required: ['content'], additionalProperties: false, properties: { description: { type: 'string' }, required: { type: 'boolean' }, content: { $ref: '#/$defs/content' } } },
    content: { type: 'object', propertyNames: { pattern: '^[a-z]+/[a-z0-9.+-]+$' }, additionalProperties: { $ref: '#/$defs/mediaType' } },
    mediaType: {
      type: 'object',
      additionalProperties: false,
      properties: {
        schema: { type: ['object', 'boolean'] },
        example: true,
        examples: { type: 'object', additionalProperties: { type: 'object', properties: { value: true, summary: { type: 'string' } }, additionalProperties: false } },
      },
    },
    response: {
      type: 'object',
      required: ['description'],
      additionalProperties: false,
      properties: { description: { type: 'string' }, headers: { type: 'object', additionalProperties: refOr('header') }, content: { $ref: '#/$defs/content' } },
    },
    header: { type: 'object', additionalProperties: false, properties: { description: { type: 'string' }, required: { type: 'boolean' }, schema: { type: ['object', 'boolean'] } } },
  },
};

/** Resolve a local `#/a/b` reference. */
const resolve = (ref: string): unknown => ref.slice(2).split('/').reduce<any>((node, key) => node?.[key.replace(/~1/g, '/').replace(/~0/g, '~')], doc);

function refsIn(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) node.forEach((n) => refsIn(n, out));
  else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string') out.push(v);
      else refsIn(v, out);
    }
  }
  return out;
}

/** A validator for a schema of the document, with the document's components reachable by $ref. */
function schemaValidator(schema: object): ValidateFunction {
  const draft07 = String((schema as { $schema?: string }).$schema ?? '').includes('draft-07');
  const ajv = draft07 ? new Ajv({ allErrors: true, strict: false }) : new Ajv2020({ allErrors: true, strict: false });
  addFormats(ajv as unknown as Ajv);
  // Component schemas by their $ref, with $schema/$id dropped so one dialect compiles them all.
  for (const [name, s] of Object.entries<object>(doc.components.schemas)) {
    const { $schema: _s, $id: _i, ...rest } = s as Record<string, unknown>;
    ajv.addSchema(rest, `#/components/schemas/${name}`);
  }
  const { $id: _id, ...body } = schema as Record<string, unknown>;
  const text = JSON.stringify(body).replace(/"\$ref":"#\/components\/schemas\/([^"]+)"/g, '"$ref":"#/components/schemas/$1#"');
  return ajv.compile(JSON.parse(text));
}

describe('schemas/settings-api.openapi.json', () => {
  it('has the structure of an OpenAPI 3.1 document', () => {
    const ajv = new Ajv2020({ allErrors: true, strict: false });
    const check = ajv.compile(OAS_31);
    expect(check(doc) ? [] : check.errors).toEqual([]);
  });

  it('resolves every $ref, has unique operationIds, and declares exactly the path parameters of each path', () => {
    const unresolved = refsIn(doc).filter((r) => !r.startsWith('#/') || resolve(r) === undefined);
    expect(unresolved).toEqual([]);
    const ids: string[] = [];
    for (const [path, item] of Object.entries<any>(doc.paths)) {
      const inPath = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort();
      for (const [method, op] of Object.entries<any>(item)) {
        if (method === 'parameters') continue;
        ids.push(op.operationId);
        const params = [...(item.parameters ?? []), ...(op.parameters ?? [])].filter((p: any) => p.in === 'path').map((p: any) => p.name).sort();
        expect(params, `${method.toUpperCase()} ${path}`).toEqual(inPath);
      }
    }
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('is the document pipelines/settings-api.yaml serves, and that pipeline lints clean', () => {
    const res = loadPipeline(join(ROOT, 'pipelines/settings-api.yaml'), { registry, rootDir: ROOT, env: {} });
    expect(res.ok ? [] : res.problems.map(formatProblem)).toEqual([]);
  });

  it('describes exactly the routes of pipelines/settings-api.yaml and the path it is served at', () => {
    const pipeline = parse(readFileSync(join(ROOT, 'pipelines/settings-api.yaml'), 'utf8'));
    const server = pipeline.input.http_server;
    const routes = server.routes.map((r: { method: string; path: string }) => `${r.method} ${r.path}`).concat(`GET ${server.openapi.path}`);
    const documented = Object.entries<any>(doc.paths).flatMap(([path, item]) => Object.keys(item).filter((k) => k !== 'parameters').map((m) => `${m.toUpperCase()} ${path}`));
    expect(documented.sort()).toEqual(routes.sort());
    expect(server.openapi.file).toBe('schemas/settings-api.openapi.json');
  });

  it('takes for the PATCH body exactly schemas/heatpump-settings-patch.schema.json', () => {
    const body = doc.paths['/api/v1/heatpump/settings/{device_id}'].patch.requestBody;
    expect(body.required).toBe(true);
    for (const media of Object.values<any>(body.content)) expect(resolve(media.schema.$ref)).toEqual(patchSchema);
  });

  it('compiles every schema, and every example in it is valid against its schema', () => {
    for (const [name, schema] of Object.entries<object>(doc.components.schemas)) {
      const v = schemaValidator(schema);
      for (const ex of (schema as { examples?: unknown[] }).examples ?? []) expect(v(ex), `${name}: ${JSON.stringify(ex)} ${JSON.stringify(v.errors)}`).toBe(true);
    }
    const media: { where: string; m: any }[] = [];
    for (const [path, item] of Object.entries<any>(doc.paths)) {
      for (const [method, op] of Object.entries<any>(item)) {
        if (method === 'parameters') continue;
        for (const [t, m] of Object.entries<any>(op.requestBody?.content ?? {})) media.push({ where: `${method} ${path} request ${t}`, m });
        for (const [code, r] of Object.entries<any>(op.responses)) for (const [t, m] of Object.entries<any>((r.$ref ? resolve(r.$ref) : r).content ?? {})) media.push({ where: `${method} ${path} ${code} ${t}`, m });
      }
    }
    for (const { where, m } of media) {
      const v = schemaValidator(m.schema);
      for (const [name, ex] of Object.entries<any>(m.examples ?? {})) expect(v(ex.value), `${where} example ${name}: ${JSON.stringify(v.errors)}`).toBe(true);
    }
  });

  it('accepts the answers the API gives (shapes of docs/settings-api.md)', () => {
    const accepted = schemaValidator({ $ref: '#/components/schemas/SettingsAccepted' });
    const answer = {
      device_id: 'device-001',
      indoor_target_temp: 21.5,
      mode: 1,
      hot_water_target_temp: null,
      heating_curve: 0.6,
      heating_curve_offset: null,
      eco_mode: false,
      reported_at: null,
      updated_at: '2026-01-15T10:00:00.123456+00:00',
      outbox_id: 42,
      outbox_status: 'pending',
    };
    expect(accepted(answer), JSON.stringify(accepted.errors)).toBe(true);
    expect(accepted({ ...answer, outbox_status: 'published' })).toBe(false);
    expect(accepted({ ...answer, extra: 1 })).toBe(false);
    const { outbox_id: _id, outbox_status: _st, ...row } = answer;
    const settings = schemaValidator({ $ref: '#/components/schemas/Settings' });
    expect(settings(row), JSON.stringify(settings.errors)).toBe(true);
    expect(settings(answer)).toBe(false);
    const entry = schemaValidator({ $ref: '#/components/schemas/OutboxEntry' });
    const ok = { id: 42, status: 'superseded', created_at: '2026-01-15T10:00:00+00:00', published_at: null, confirmed_at: null, error_message: null, retry_count: 0 };
    expect(entry(ok), JSON.stringify(entry.errors)).toBe(true);
    expect(entry({ ...ok, status: 'lost' })).toBe(false);
  });
});
