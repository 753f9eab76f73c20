import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Type } from '@sinclair/typebox';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsImport from 'ajv-formats';
import { RunnerError } from '../../core/errors.ts';
import { defineProcessor } from '../../core/operator.ts';
import { perMessage } from '../../core/processor.ts';
import { Obj, OnInvalid, Template } from '../../core/schema.ts';
import { LATER, compileTemplate } from '../../core/expression.ts';
import type { Msg } from '../../core/message.ts';

const addFormats = addFormatsImport as unknown as (ajv: Ajv) => Ajv;

const config = Obj({
  schema: Template(
    'Name of a JSON Schema in schemas/: `heatpump-telemetry` means schemas/heatpump-telemetry.schema.json. May be a template choosing the schema per message, e.g. `${! $meta.mqtt_topic_kind }-telemetry`; a static name is checked by lint, a chosen one that does not exist rejects the message.',
  ),
  on_invalid: OnInvalid(),
});

export const schemaFile = (schemasDir: string, name: string) => join(schemasDir, `${name}.schema.json`);

/** Compile a named JSON Schema from schemas/ (draft-07 or 2020-12 by its $schema). */
export function compileNamedSchema(schemasDir: string, name: string): ValidateFunction {
  const file = schemaFile(schemasDir, name);
  const schema = JSON.parse(readFileSync(file, 'utf8'));
  const ajv = String(schema.$schema ?? '').includes('2020-12') ? new Ajv2020({ allErrors: true, strict: false }) : new Ajv({ allErrors: true, strict: false });
  addFormats(ajv as unknown as Ajv);
  return ajv.compile(schema);
}

export const validate = defineProcessor({
  spec: {
    name: 'validate',
    kind: 'processor',
    summary: 'Checks each message against a JSON Schema from schemas/; invalid ones go to the dead-letter output with every reason.',
    description:
      'Validates the message value with ajv against the named schema (all errors collected). A valid message passes unchanged. An invalid one is rejected: it goes to the dead_letter output with a `dlq_error` header listing every problem, or is dropped (logged and counted) with `on_invalid: drop`.',
    config,
    examples: [{ title: 'Heat-pump telemetry', config: 'schema: heatpump-telemetry' }],
    delivery: 'Never drops silently: an invalid message is dead-lettered, or dropped with a log line and a metric when `on_invalid: drop`.',
    rejects: true,
    lint(cfg, lctx) {
      if (!compileTemplate(cfg.schema).isStatic) return [];
      if (!/^[A-Za-z0-9_.-]+$/.test(cfg.schema)) return [{ path: ['schema'], message: `schema name "${cfg.schema}" may only contain letters, digits, . _ and -` }];
      if (!existsSync(schemaFile(lctx.schemasDir, cfg.schema))) {
        return [{ path: ['schema'], message: `schema "${cfg.schema}" not found: expected the file schemas/${cfg.schema}.schema.json` }];
      }
      try {
        compileNamedSchema(lctx.schemasDir, cfg.schema);
      } catch (err) {
        return [{ path: ['schema'], message: `schema "${cfg.schema}" does not compile: ${(err as Error).message}` }];
      }
      return [];
    },
  },
  create(cfg, ctx) {
    const dir = join(ctx.rootDir, 'schemas');
    const name = compileTemplate(cfg.schema);
    const cache = new Map<string, ValidateFunction>();
    const lookup = (schema: string): ValidateFunction => {
      let fn = cache.get(schema);
      if (!fn) {
        if (!/^[A-Za-z0-9_.-]+$/.test(schema) || !existsSync(schemaFile(dir, schema))) {
          throw new RunnerError('SCHEMA_NOT_FOUND', `schema "${schema}" chosen for this message does not exist in schemas/`);
        }
        fn = compileNamedSchema(dir, schema);
        cache.set(schema, fn);
      }
      return fn;
    };
    if (name.isStatic) lookup(cfg.schema);
    const checkWith = (msg: Msg, schemaName: string) => {
      const check = lookup(schemaName);
      if (check(msg.value)) return msg;
      const reasons = (check.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}${e.keyword === 'additionalProperties' ? ` (${(e.params as { additionalProperty: string }).additionalProperty})` : ''}`);
      throw new RunnerError('MESSAGE_INVALID', `does not match schema ${schemaName}: ${[...new Set(reasons)].join('; ')}`);
    };
    return perMessage(ctx, (msg) => {
      if (name.isStatic) return checkWith(msg, cfg.schema);
      const now = name.now(msg);
      return now === LATER ? name.evaluate(msg).then((n) => checkWith(msg, n)) : checkWith(msg, now);
    });
  },
});
