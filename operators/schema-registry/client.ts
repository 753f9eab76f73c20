/**
 * What schema_registry_encode and schema_registry_decode share: the connection config (URL, basic
 * auth, request timeout), one client per registry and credentials per process (its schema cache
 * by id is shared by every component that talks to that registry), and turning registry failures
 * into RunnerErrors that say whether a retry can help.
 *
 * @kafkajs/confluent-schema-registry does the reads (schema by id, with its cache and one request
 * per id in flight; subject versions) and builds the Avro (avsc) and JSON Schema (ajv) types.
 * Registering and "is this schema registered under the subject?" are plain HTTP calls to the
 * Confluent API: the library's register() also compares and sets the subject's compatibility
 * level, which is the registry owner's business, not a pipeline's.
 */
import { createHash } from 'node:crypto';
import srPkg from '@kafkajs/confluent-schema-registry';
import { Type, type Static } from '@sinclair/typebox';
import { Ajv, type ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsImport from 'ajv-formats';
import { parseDuration } from '../../core/duration.ts';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import type { LintIssue } from '../../core/operator.ts';
import { Duration, Obj, Secret } from '../../core/schema.ts';

const { SchemaRegistry } = srPkg;
type Library = InstanceType<typeof SchemaRegistry>;
type LibraryArgs = ConstructorParameters<typeof SchemaRegistry>[0];
type LibraryMiddleware = NonNullable<LibraryArgs['middlewares']>[number];
/** A schema the library built: `toBuffer`, `fromBuffer`, `isValid` (avsc Type or ajv-backed JSON Schema). */
export type SchemaInstance = Awaited<ReturnType<Library['getSchema']>>;

const addFormats = addFormatsImport as unknown as (ajv: Ajv) => Ajv;

/** The connection fields, spread into each schema registry operator's config object. */
export const connectionFields = {
  url: Type.String({
    minLength: 1,
    pattern: '^https?://',
    description:
      'Base URL of the Confluent-compatible API: e.g. `http://127.0.0.1:8081` for Confluent Schema Registry, Karapace or Redpanda, `http://127.0.0.1:8080/apis/ccompat/v7` for Apicurio Registry. Credentials go into `basic_auth`, not into the URL.',
  }),
  basic_auth: Type.Union(
    [
      Type.Null(),
      Obj(
        {
          username: Type.String({ minLength: 1, description: 'User name for HTTP basic authentication.' }),
          password: Secret('Password for HTTP basic authentication; take it from the environment (`${SCHEMA_REGISTRY_PASSWORD}`), never write it into the YAML.'),
        },
        { description: 'HTTP basic authentication credentials.' },
      ),
    ],
    {
      default: null,
      description: 'HTTP basic authentication: an object with `username` and `password` (from the environment); `null` (the default) sends no credentials.',
    },
  ),
  timeout: Duration('How long one request to the registry may take; a request that takes longer counts as the registry being unreachable and is retried.', '10s'),
};

const connectionSchema = Obj(connectionFields);
export type RegistryConnection = Static<typeof connectionSchema>;

/** For log lines, readiness reasons and errors: the URL without credentials, query or fragment. */
export function describeRegistry(cfg: Pick<RegistryConnection, 'url'>): string {
  try {
    const u = new URL(cfg.url);
    return `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}`;
  } catch {
    return 'the schema registry (invalid URL)';
  }
}

/** Cross-field rules of the connection fields. */
export function lintConnection(cfg: Pick<RegistryConnection, 'url'>): LintIssue[] {
  let u: URL;
  try {
    u = new URL(cfg.url);
  } catch {
    return [{ path: ['url'], message: `not a URL: ${JSON.stringify(cfg.url)}` }];
  }
  if (u.username || u.password) return [{ path: ['url'], message: 'put credentials in basic_auth (password from the environment), not into the URL' }];
  return [];
}

export type SchemaKind = 'AVRO' | 'JSON' | 'PROTOBUF';

export interface LoadedSchema {
  id: number;
  type: SchemaKind;
  schema: SchemaInstance;
}

/** A registry answered with an HTTP error (status > 0), or could not be reached (status 0). */
export class RegistryHttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'RegistryHttpError';
  }
}

const CLIENT_ID = 'runner';

export class RegistryClient {
  readonly where: string;
  private readonly lib: Library;
  private readonly base: string;
  private readonly headers: Record<string, string>;
  private readonly timeoutMs: number;

  constructor(cfg: RegistryConnection) {
    this.where = `schema registry at ${describeRegistry(cfg)}`;
    this.base = cfg.url.replace(/\/+$/, '');
    this.timeoutMs = parseDuration(cfg.timeout);
    this.headers = { 'content-type': 'application/vnd.schemaregistry.v1+json', accept: 'application/vnd.schemaregistry.v1+json, application/json' };
    if (cfg.basic_auth) this.headers.authorization = `Basic ${Buffer.from(`${cfg.basic_auth.username}:${cfg.basic_auth.password}`).toString('base64')}`;
    const timeoutMs = this.timeoutMs;
    const timeout: LibraryMiddleware = () => ({ request: (req) => req.enhance({ timeout: timeoutMs }) });
    this.lib = new SchemaRegistry(
      {
        host: this.base,
        clientId: CLIENT_ID,
        auth: cfg.basic_auth ? { username: cfg.basic_auth.username, password: cfg.basic_auth.password } : undefined,
        // No `retry` here: the library merges it into a module-wide default (every client in the
        // process would get it). Its default (3 quick retries of GETs, under a second) stays; the
        // operators' own loops then back off and retry for as long as it takes.
        middlewares: [timeout],
      },
      { JSON: { ajvInstance: jsonSchemaCompiler() as unknown as Ajv, detailedErrorPaths: true } },
    );
  }

  /** The schema with this id: asked once per id and process, then served from the library's cache. */
  async schema(id: number): Promise<LoadedSchema> {
    try {
      await this.lib.getSchema(id);
    } catch (err) {
      const e = registryError(err, `schema id ${id} from the ${this.where}`);
      if (e.code === 'SCHEMA_NOT_FOUND' && (err as { status?: unknown }).status === 404) {
        throw new RunnerError('SCHEMA_NOT_FOUND', `schema id ${id} is not in the ${this.where} (${cleanMessage(err)})`, { cause: err });
      }
      throw e;
    }
    const entry = this.lib.cache.getSchema(id) as { type: string; schema: SchemaInstance } | undefined;
    if (!entry) throw new RunnerError('INTERNAL', `schema id ${id} was fetched but is not in the cache`);
    const type = entry.type as SchemaKind;
    return { id, type, schema: entry.schema };
  }

  /** The id of a version of a subject (`latest` or a number); never cached here. */
  async versionId(subject: string, version: number | 'latest'): Promise<number> {
    try {
      return await this.lib.getRegistryId(subject, version);
    } catch (err) {
      throw registryError(err, `version ${version} of subject ${subject} from the ${this.where}`);
    }
  }

  /**
   * Register a schema under a subject (idempotent: the same schema gives the same id). The
   * registry applies the subject's compatibility rule; an incompatible or invalid schema is refused.
   */
  async register(subject: string, type: 'AVRO' | 'JSON', schema: string): Promise<number> {
    const res = await this.post(`/subjects/${encodeURIComponent(subject)}/versions`, body(type, schema), `registering the ${type} schema under subject ${subject} at the ${this.where}`);
    return idOf(res, 'register');
  }

  /** The id of this exact schema under the subject; SCHEMA_NOT_FOUND when it is not registered there. */
  async lookup(subject: string, type: 'AVRO' | 'JSON', schema: string): Promise<number> {
    const res = await this.post(`/subjects/${encodeURIComponent(subject)}`, body(type, schema), `looking up the ${type} schema under subject ${subject} at the ${this.where}`);
    return idOf(res, 'lookup');
  }

  private async post(path: string, payload: unknown, what: string): Promise<unknown> {
    let text: string;
    let status: number;
    try {
      const res = await fetch(`${this.base}${path}`, { method: 'POST', headers: this.headers, body: JSON.stringify(payload), signal: AbortSignal.timeout(this.timeoutMs) });
      status = res.status;
      text = await res.text();
    } catch (err) {
      const e = err as { name?: string; cause?: unknown };
      const reason = e.name === 'TimeoutError' ? `no answer within ${this.timeoutMs} ms` : errorMessage(e.cause ?? err);
      throw registryError(new RegistryHttpError(0, reason), what);
    }
    if (status < 200 || status > 299) {
      let message = text.trim() || `HTTP ${status}`;
      try {
        message = (JSON.parse(text) as { message?: string }).message ?? message;
      } catch {
        /* not JSON: keep the text */
      }
      throw registryError(new RegistryHttpError(status, `HTTP ${status}: ${message}`), what);
    }
    try {
      return JSON.parse(text);
    } catch {
      throw registryError(new RegistryHttpError(status, `the answer is not JSON: ${text.slice(0, 200)}`), what);
    }
  }
}

const body = (type: 'AVRO' | 'JSON', schema: string) => (type === 'AVRO' ? { schema } : { schemaType: type, schema });

function idOf(res: unknown, what: string): number {
  const id = (res as { id?: unknown } | null)?.id;
  if (typeof id !== 'number') throw new RunnerError('CONNECTION_FAILED', `the registry's ${what} answer has no schema id`, { retryable: true });
  return id;
}

/**
 * An ajv for the library's JSON Schema support: draft-07 or 2020-12 by the schema's $schema, formats
 * known, unknown keywords allowed (schemas carry annotations), every error collected. A fresh ajv
 * per schema, so schemas with the same $id from different subjects do not collide.
 */
function jsonSchemaCompiler() {
  let pending: [object, string | undefined][] = [];
  return {
    addSchema(schema: object, key?: string) {
      pending.push([schema, key]);
      return this;
    },
    compile(schema: unknown): ValidateFunction {
      const draft2020 = String((schema as { $schema?: unknown })?.$schema ?? '').includes('2020-12');
      const ajv = draft2020 ? new Ajv2020({ allErrors: true, strict: false }) : new Ajv({ allErrors: true, strict: false });
      addFormats(ajv as unknown as Ajv);
      for (const [s, k] of pending) ajv.addSchema(s, k);
      pending = [];
      return ajv.compile(schema as object);
    },
  };
}

const clients = new Map<string, RegistryClient>();

/** One client per URL, credentials and timeout per process: they share the schema cache. */
export function registryClient(cfg: RegistryConnection): RegistryClient {
  const secret = cfg.basic_auth ? createHash('sha256').update(`${cfg.basic_auth.username}\0${cfg.basic_auth.password}`).digest('hex') : '';
  const key = `${cfg.url.replace(/\/+$/, '')}\0${parseDuration(cfg.timeout)}\0${secret}`;
  let client = clients.get(key);
  if (!client) {
    client = new RegistryClient(cfg);
    clients.set(key, client);
  }
  return client;
}

/** The library prefixes its messages with the client id; network failures come as status 400. */
function cleanMessage(err: unknown): string {
  return errorMessage(err)
    .replace(new RegExp(`^${CLIENT_ID} - `), '')
    .replace(/^Error, status 400: /, '');
}

/**
 * A registry failure as a RunnerError:
 * - 404 (no such schema id, subject or version; schema not registered under the subject):
 *   SCHEMA_NOT_FOUND, not retryable;
 * - 409 (incompatible with the subject's versions) and 422 (invalid schema or version):
 *   WRITE_REJECTED, not retryable;
 * - a stored schema that cannot be compiled here: SCHEMA_NOT_FOUND, not retryable;
 * - 401 / 403: AUTH_FAILED, retryable (never a reason to dead-letter data; someone fixes the
 *   credentials and the component recovers);
 * - everything else (connection refused, timeout, 5xx, and anything unexpected): CONNECTION_FAILED,
 *   retryable. The library reports network errors as status 400, so 400 is retried too.
 */
export function registryError(err: unknown, what: string): RunnerError {
  if (err instanceof RunnerError) return err;
  const name = (err as { name?: string } | null)?.name;
  const status = (err as { status?: unknown } | null)?.status;
  const text = `${what}: ${cleanMessage(err)}`;
  if (name === 'ConfluentSchemaRegistryArgumentError' || name === 'ConfluentSchemaRegistryInvalidSchemaError') {
    return new RunnerError('SCHEMA_NOT_FOUND', `${what}: the schema cannot be used: ${cleanMessage(err)}`, { cause: err });
  }
  if (status === 404) return new RunnerError('SCHEMA_NOT_FOUND', text, { cause: err });
  if (status === 409 || status === 422) return new RunnerError('WRITE_REJECTED', text, { cause: err });
  if (status === 401 || status === 403) return new RunnerError('AUTH_FAILED', text, { cause: err, retryable: true });
  return new RunnerError('CONNECTION_FAILED', text, { cause: err, retryable: true });
}
