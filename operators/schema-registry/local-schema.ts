/**
 * Schema files in schemas/ for schema_registry_encode's `schema_file`: a JSON Schema named as for
 * `validate` (`heatpump-telemetry` = schemas/heatpump-telemetry.schema.json), or an Avro schema
 * as a path ending in .avsc (`avro/heatpump-telemetry.avsc` = schemas/avro/heatpump-telemetry.avsc).
 * The text sent to the registry is the file's JSON, minified: the same file gives the same text,
 * so registering again finds the same id.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { compileNamedSchema, schemaFile } from '../core/validate.ts';

export interface LocalSchema {
  type: 'AVRO' | 'JSON';
  /** Path relative to the project, for messages. */
  file: string;
  /** Minified JSON text. */
  text: string;
}

export const isAvroFile = (name: string) => name.endsWith('.avsc');

/** The file a schema_file names, relative to schemas/. */
export function localSchemaPath(schemasDir: string, name: string): string {
  return isAvroFile(name) ? join(schemasDir, name) : schemaFile(schemasDir, name);
}

const shown = (name: string) => (isAvroFile(name) ? `schemas/${name}` : `schemas/${name}.schema.json`);

/** Problems with a schema_file, as messages (empty when it can be used). */
export function checkLocalSchema(schemasDir: string, name: string, schemaType: 'avro' | 'json'): string[] {
  if (name.split('/').some((seg) => seg === '..' || seg === '.')) return [`"${name}" must stay inside schemas/ (no . or .. segments)`];
  if (schemaType === 'avro' && !isAvroFile(name)) return [`schema_type is avro: schema_file must be an Avro schema file ending in .avsc, such as avro/heatpump-telemetry.avsc`];
  if (schemaType === 'json' && isAvroFile(name)) return [`schema_type is json: schema_file must name a JSON Schema such as heatpump-telemetry (an .avsc file is Avro)`];
  const file = localSchemaPath(schemasDir, name);
  if (!existsSync(file)) return [`schema file ${shown(name)} not found`];
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    return [`${shown(name)} is not JSON: ${(err as Error).message}`];
  }
  if (schemaType === 'json') {
    try {
      compileNamedSchema(schemasDir, name);
    } catch (err) {
      return [`${shown(name)} does not compile: ${(err as Error).message}`];
    }
    return [];
  }
  const s = parsed as { type?: unknown; name?: unknown };
  if (!s || typeof s !== 'object' || typeof s.name !== 'string' || typeof s.type !== 'string') {
    return [`${shown(name)} is not an Avro named schema (expected an object with "type" and "name", e.g. a record)`];
  }
  const why = compileAvro(JSON.stringify(parsed));
  return why ? [`${shown(name)} is not a valid Avro schema: ${why}`] : [];
}

export function readLocalSchema(schemasDir: string, name: string, schemaType: 'avro' | 'json'): LocalSchema {
  const problems = checkLocalSchema(schemasDir, name, schemaType);
  if (problems.length) throw new Error(problems.join('; '));
  const text = JSON.stringify(JSON.parse(readFileSync(localSchemaPath(schemasDir, name), 'utf8')));
  return { type: schemaType === 'avro' ? 'AVRO' : 'JSON', file: shown(name), text };
}

type Resolver = { schemaFromConfluentSchema(schema: { type: string; schema: string }, opts?: object): unknown };
let resolver: Resolver | null | undefined;

/**
 * Compile an Avro schema exactly as the registry client will (avsc through the library), so lint
 * reports a bad type with the file. The library does not export this; when its internal module
 * moves, lint only checks the shape above and the registry reports the rest at startup.
 */
function compileAvro(text: string): string | null {
  if (resolver === undefined) {
    try {
      resolver = createRequire(import.meta.url)('@kafkajs/confluent-schema-registry/dist/schemaTypeResolver') as Resolver;
    } catch {
      resolver = null;
    }
  }
  if (!resolver) return null;
  try {
    resolver.schemaFromConfluentSchema({ type: 'AVRO', schema: text }, {});
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}
