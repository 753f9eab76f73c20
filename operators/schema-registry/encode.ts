import { sleeper } from '../../core/timers.ts';
import { join } from 'node:path';
import { Type } from '@sinclair/typebox';
import { parseDuration } from '../../core/duration.ts';
import { RunnerError, errorMessage, isRetryable } from '../../core/errors.ts';
import { compileTemplate } from '../../core/expression.ts';
import { withValue } from '../../core/message.ts';
import { defineProcessor, type LintIssue } from '../../core/operator.ts';
import { DEFAULT_BACKOFF, backoffDelay } from '../../core/retry.ts';
import { Duration, Obj, OnInvalid, Template } from '../../core/schema.ts';
import { connectionFields, lintConnection, registryClient, type LoadedSchema, type SchemaKind } from './client.ts';
import { encodeWith } from './codec.ts';
import { checkLocalSchema, readLocalSchema, type LocalSchema } from './local-schema.ts';
import { perMessageRetrying, readiness } from './step.ts';

const SUBJECT_DESCRIPTION =
  'Subject whose schema encodes the messages: literal text such as `homelab-heatpump-telemetry-value` (the Confluent TopicNameStrategy name for the value of topic homelab-heatpump-telemetry: `<topic>-value`), or a template such as `homelab-${! type }-value`. Used with `version`, or with `schema_file`; `null` (the default) when `schema_id` names the schema.';

const config = Obj({
  ...connectionFields,
  schema_type: Type.Union([Type.Literal('avro'), Type.Literal('json')], {
    description:
      'Format of the schema and of the encoded payload: `avro` (Avro binary) or `json` (JSON text validated against a JSON Schema). A registry schema of the other type is an error.',
  }),
  subject: Type.Union([Template(SUBJECT_DESCRIPTION), Type.Null()], { default: null, description: SUBJECT_DESCRIPTION }),
  version: Type.Union([Type.Literal('latest'), Type.Integer({ minimum: 1 })], {
    default: 'latest',
    description:
      'Which version of `subject` to use: `latest` (looked up again every `refresh_interval`, so a newly registered version is picked up) or a version number (looked up once).',
  }),
  schema_id: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], {
    default: null,
    description: 'A registry schema id to encode every message with, instead of `subject`; `null` (the default) looks the schema up by `subject`.',
  }),
  schema_file: Type.Union([Type.String({ minLength: 1, pattern: '^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$' }), Type.Null()], {
    default: null,
    description:
      'A schema of this project to encode with, instead of the subject\'s latest version: a JSON Schema named as for `validate` (`heatpump-telemetry` = schemas/heatpump-telemetry.schema.json), or an Avro schema file under schemas/ (`avro/heatpump-telemetry.avsc`). Its id is looked up under `subject` (the schema must be registered there), or registered there with `auto_register`. `null` (the default): no file.',
  }),
  auto_register: Type.Boolean({
    default: false,
    description:
      'Register `schema_file` under `subject` (at startup when the subject is literal text, else the first time a subject is seen). Registering is idempotent; the registry applies the subject\'s compatibility rule and refuses an incompatible schema. `false` (the default): the schema must already be registered.',
  }),
  refresh_interval: Duration(
    'How long the id of a subject\'s `latest` version is cached before it is looked up again; `0` looks it up for every message. While the registry is unreachable the cached id stays in use. Schemas themselves are cached by id for the life of the process.',
    '10m',
  ),
  on_invalid: OnInvalid(),
});

type Config = typeof config.static;

/** Which schema a config names; the rules lint reports and create enforces. */
function configIssues(cfg: Config, schemasDir: string): LintIssue[] {
  const issues: LintIssue[] = [...lintConnection(cfg)];
  if (cfg.schema_id !== null) {
    if (cfg.subject !== null) issues.push({ path: ['subject'], message: 'subject and schema_id exclude each other: schema_id names the schema directly' });
    if (cfg.schema_file !== null) issues.push({ path: ['schema_file'], message: 'schema_file and schema_id exclude each other: schema_id names the schema directly' });
    if (cfg.version !== 'latest') issues.push({ path: ['version'], message: 'version selects a version of subject; with schema_id it has no meaning' });
  } else if (cfg.subject === null) {
    issues.push({ path: [], message: 'say which schema to encode with: schema_id, or subject (with version, or with schema_file)' });
  }
  if (cfg.schema_file !== null) {
    if (cfg.version !== 'latest') issues.push({ path: ['version'], message: 'version and schema_file exclude each other: the schema is the file, its id is looked up or registered under subject' });
    for (const message of checkLocalSchema(schemasDir, cfg.schema_file, cfg.schema_type)) issues.push({ path: ['schema_file'], message });
  } else if (cfg.auto_register) {
    issues.push({ path: ['auto_register'], message: 'auto_register needs schema_file: the schema to register' });
  }
  return issues;
}

/** The value to encode: parsed JSON; bytes are parsed as JSON text first. */
function jsonValue(value: unknown): unknown {
  if (!Buffer.isBuffer(value) && !(value instanceof Uint8Array)) return value;
  try {
    return JSON.parse(Buffer.from(value).toString('utf8'));
  } catch (err) {
    throw new RunnerError('MESSAGE_INVALID', `value is bytes that are not JSON text, so it cannot be encoded with a schema: ${errorMessage(err)}`);
  }
}

export const schemaRegistryEncode = defineProcessor({
  spec: {
    name: 'schema_registry_encode',
    kind: 'processor',
    summary: 'Encodes each message value with a schema from a Confluent-compatible schema registry (Avro or JSON Schema) into the Confluent wire format.',
    description: [
      'The message value (parsed JSON; bytes are parsed as JSON text first) is serialised with the schema, Avro binary or JSON text checked against the JSON Schema, and framed in the Confluent wire format: the magic byte 0, the schema id as 4 big-endian bytes, then the payload. The new value is those bytes (the kafka output writes them as they are). Metadata `schema_id` (and `schema_subject` when a subject was used) is added; headers are left alone: the schema id travels in the value, which is where Confluent-compatible consumers look for it, so no `content-type` header is added. Expressions in later steps see bytes, not fields: set the key before this step (`map` with `key: device_id`) and let the kafka output keep it (its default `key: $key`).',
      '',
      'The schema is named one of three ways: `schema_id`; `subject` with `version` (`latest` by default, looked up again every `refresh_interval`); or `subject` with `schema_file`, a schema of this project whose id is looked up under the subject, or registered there with `auto_register: true`. Schemas are fetched once per id and cached for the life of the process, shared by every component using the same registry. With a literal subject or a schema id the schema is looked up at startup, and the component is not ready until that worked.',
      '',
      'A value that does not match the schema is rejected with every reason (dead_letter, or drop with `on_invalid: drop`). Avro encodes only the fields of the record: extra fields of the value are left out, missing fields with a default get the default. A schema that cannot be found (unknown id, subject or version, `schema_file` not registered under the subject), a schema the registry refuses to register (incompatible, invalid) or a registry schema of the other `schema_type` rejects the message too, and makes the component not ready with the reason. An unreachable registry (connection refused, timeout, 5xx) or refused credentials are retried with exponential backoff for as long as it takes, holding back the messages behind (order is kept); the component is not ready meanwhile.',
      '',
      'Plain JSON stays the default on the topics so that `rpk topic consume` shows readable values: use this processor where consumers expect the wire format.',
    ].join('\n'),
    config,
    examples: [
      {
        title: 'JSON Schema: the latest version of the topic\'s value subject',
        config: 'url: ${SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081}\nschema_type: json\nsubject: homelab-heatpump-telemetry-value',
      },
      {
        title: 'Avro: register the project\'s schema at startup',
        config:
          'url: ${SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081}\nschema_type: avro\nsubject: homelab-heatpump-telemetry-value\nschema_file: avro/heatpump-telemetry.avsc\nauto_register: true',
      },
      {
        title: 'A fixed schema id, with basic auth',
        config: 'url: ${SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081}\nbasic_auth:\n  username: runner\n  password: ${SCHEMA_REGISTRY_PASSWORD:-}\nschema_type: avro\nschema_id: 42',
      },
      {
        title: 'Subject per message type, pinned version',
        config: "url: ${SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081}\nschema_type: json\nsubject: 'homelab-${! type }-value'\nversion: 3",
      },
    ],
    delivery:
      'One message in, one message out, same ack. Never drops silently: a value the schema does not accept, or a schema that cannot be found or registered, is dead-lettered with the reason (or dropped, logged and counted, with `on_invalid: drop`). Registry outages are retried without end and hold the messages behind in order; nothing is dropped or duplicated by this processor.',
    rejects: true,
    lint(cfg, lctx) {
      return configIssues(cfg, lctx.schemasDir);
    },
  },
  create(cfg, ctx) {
    const schemasDir = join(ctx.rootDir, 'schemas');
    const issues = configIssues(cfg, schemasDir);
    if (issues.length) throw new RunnerError('CONFIG_INVALID', `schema_registry_encode: ${issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ')}`);
    const client = registryClient(cfg);
    const log = ctx.logger;
    const setReady = readiness(ctx);
    const expected: SchemaKind = cfg.schema_type === 'avro' ? 'AVRO' : 'JSON';
    const subjectT = cfg.subject === null ? null : compileTemplate(cfg.subject);
    const local: LocalSchema | null = cfg.schema_file === null ? null : readLocalSchema(schemasDir, cfg.schema_file, cfg.schema_type);
    const refreshMs = parseDuration(cfg.refresh_interval);
    /** Subject -> schema id, until expiresAt (scheduler time). */
    const ids = new Map<string, { id: number; expiresAt: number }>();

    const lookupLocal = async (l: LocalSchema, subject: string): Promise<number> => {
      if (cfg.auto_register) {
        const id = await registerOrFind(l, subject);
        log.info({ subject, schema_id: id, schema_file: l.file }, 'schema registered');
        return id;
      }
      try {
        return await client.lookup(subject, l.type, l.text);
      } catch (err) {
        if (err instanceof RunnerError && err.code === 'SCHEMA_NOT_FOUND') {
          throw new RunnerError('SCHEMA_NOT_FOUND', `${l.file} is not registered under subject ${subject} at the ${client.where}: register it, or set auto_register: true (${err.message})`, { cause: err });
        }
        throw err;
      }
    };

    /**
     * Register; on a refusal, look the schema up: processes registering the same schema under a
     * new subject at the same moment get a 409 from some registries (Apicurio: "already exists").
     * Found: use it. Not found: register once more (the other registration may not have been
     * visible yet); a second refusal is a real one (incompatible, invalid) and is passed on.
     */
    const registerOrFind = async (l: LocalSchema, subject: string): Promise<number> => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await client.register(subject, l.type, l.text);
        } catch (err) {
          if (attempt > 1 || !(err instanceof RunnerError && err.code === 'WRITE_REJECTED')) throw err;
          try {
            return await client.lookup(subject, l.type, l.text);
          } catch (lookupErr) {
            if (!(lookupErr instanceof RunnerError && lookupErr.code === 'SCHEMA_NOT_FOUND')) throw lookupErr;
          }
        }
      }
    };

    /** Lookups under way, per subject: the startup lookup and the first message share one. */
    const pending = new Map<string, Promise<number>>();
    const idFor = async (subject: string | null): Promise<number> => {
      if (cfg.schema_id !== null) return cfg.schema_id;
      const s = subject!;
      const cached = ids.get(s);
      if (cached && cached.expiresAt > ctx.scheduler.now()) return cached.id;
      let p = pending.get(s);
      if (!p) {
        p = resolveId(s).finally(() => pending.delete(s));
        pending.set(s, p);
      }
      return p;
    };
    const resolveId = async (s: string): Promise<number> => {
      const now = ctx.scheduler.now();
      const cached = ids.get(s);
      let id: number;
      try {
        id = local ? await lookupLocal(local, s) : await client.versionId(s, cfg.version);
      } catch (err) {
        if (cached && isRetryable(err)) {
          // Known id, registry away: keep encoding with it and ask again a little later.
          ids.set(s, { id: cached.id, expiresAt: now + Math.min(refreshMs, 30_000) });
          log.warn({ subject: s, schema_id: cached.id, err: errorMessage(err) }, 'cannot refresh the subject\'s schema id; using the cached one');
          return cached.id;
        }
        throw err;
      }
      if (cached && cached.id !== id) log.info({ subject: s, schema_id: id, previous: cached.id }, 'subject has a new schema');
      ids.set(s, { id, expiresAt: local || cfg.version !== 'latest' ? Infinity : now + refreshMs });
      return id;
    };

    const schemaFor = async (id: number): Promise<LoadedSchema> => {
      const loaded = await client.schema(id);
      if (loaded.type !== expected) {
        throw new RunnerError('CONFIG_INVALID', `schema id ${id} at the ${client.where} is a ${loaded.type} schema, but schema_type is ${cfg.schema_type}`);
      }
      return loaded;
    };

    // A schema id or a literal subject: look the schema up now, so readiness tells the truth
    // before the first message. Retryable failures are retried with backoff.
    const staticSubject = subjectT?.isStatic ? cfg.subject : null;
    let closed = false;
    const { sleep, cancelAll: cancelSleeps } = sleeper(ctx.scheduler);
    if (cfg.schema_id !== null || staticSubject !== null) {
      const what = cfg.schema_id !== null ? `schema id ${cfg.schema_id}` : `the schema of subject ${staticSubject}`;
      setReady(false, `looking up ${what} at the ${client.where}`);
      void (async () => {
        for (let attempt = 1; !closed; attempt++) {
          try {
            const id = await idFor(staticSubject);
            await schemaFor(id);
            if (closed) return;
            log.info({ schema_id: id, subject: staticSubject ?? undefined }, 'schema found');
            setReady(true);
            return;
          } catch (err) {
            if (closed) return;
            const reason = errorMessage(err);
            setReady(false, reason);
            if (!isRetryable(err)) {
              log.error({ err: reason }, 'schema cannot be used; messages are rejected until it can');
              return;
            }
            const ms = backoffDelay(DEFAULT_BACKOFF, attempt);
            log.warn({ err: reason, retryInMs: ms }, 'schema registry unavailable; retrying');
            await sleep(ms);
          }
        }
      })();
    }
    ctx.onClose(() => {
      closed = true;
      cancelSleeps();
    });

    return perMessageRetrying(
      ctx,
      async (msg) => {
        const subject = subjectT ? await subjectT.evaluate(msg) : null;
        let loaded: LoadedSchema;
        try {
          loaded = await schemaFor(await idFor(subject));
        } catch (err) {
          // A literal subject or schema id that cannot be used is the configuration's problem.
          if (!isRetryable(err) && (subjectT === null || subjectT.isStatic)) setReady(false, errorMessage(err));
          throw err;
        }
        const value = jsonValue(msg.value);
        if (value === undefined) throw new RunnerError('MESSAGE_INVALID', 'the message has no value to encode');
        const encoded = encodeWith(loaded, value);
        return withValue(msg, encoded, { meta: { ...msg.meta, schema_id: loaded.id, ...(subject === null ? {} : { schema_subject: subject }) } });
      },
      { setReady },
    );
  },
});
