/**
 * Values to and from the Confluent wire format with a schema from the registry: serialise with
 * the schema (Avro binary or JSON text validated against the JSON Schema) and frame it; unframe,
 * look up the schema by the id in the bytes and deserialise. A value or payload that does not
 * fit its schema is a non-retryable MESSAGE_INVALID that lists every reason.
 */
import { RunnerError, errorMessage } from '../../core/errors.ts';
import type { LoadedSchema, RegistryClient } from './client.ts';
import { frame, unframe } from './wire-format.ts';

/** The type of a value as an error message should name it. */
export const describeType = (v: unknown): string =>
  v === null ? 'null' : Buffer.isBuffer(v) || v instanceof Uint8Array ? 'bytes' : Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'an object' : `a ${typeof v}`;

/** Serialise a JSON value with a schema and frame it. */
export function encodeWith(loaded: LoadedSchema, value: unknown): Buffer {
  unsupported(loaded);
  let payload: Buffer;
  try {
    payload = loaded.schema.toBuffer(value as object);
  } catch (err) {
    throw new RunnerError('MESSAGE_INVALID', `does not match ${label(loaded)}: ${reasons(loaded, value, err).join('; ')}`, { cause: err });
  }
  return frame(loaded.id, payload);
}

/** Deserialise a payload (the bytes after the wire-format header) with its writer's schema. */
export function decodeWith(loaded: LoadedSchema, payload: Buffer): unknown {
  unsupported(loaded);
  let value: unknown;
  try {
    value = loaded.schema.fromBuffer(payload);
  } catch (err) {
    const why = loaded.type === 'JSON' && isValidationError(err) ? reasons(loaded, undefined, err).join('; ') : errorMessage(err);
    throw new RunnerError('MESSAGE_INVALID', `payload does not decode with ${label(loaded)}: ${why}`, { cause: err });
  }
  return loaded.type === 'AVRO' ? plain(value) : value;
}

/**
 * Decode a value in the wire format: bytes only (a string or parsed JSON means the input decoded
 * the bytes already; read them with `value_format: bytes`). Registry errors come from
 * `client.schema` (retryable when the registry is away); everything else is MESSAGE_INVALID.
 */
export async function decodeWire(client: RegistryClient, value: unknown): Promise<{ value: unknown; schemaId: number; schemaType: 'avro' | 'json' }> {
  if (!Buffer.isBuffer(value) && !(value instanceof Uint8Array)) {
    throw new RunnerError(
      'MESSAGE_INVALID',
      `value is ${describeType(value)}, not bytes: wire-format values must arrive as bytes (read the topic with value_format: bytes)`,
    );
  }
  const { schemaId, payload } = unframe(value);
  const loaded = await client.schema(schemaId);
  return { value: decodeWith(loaded, payload), schemaId, schemaType: loaded.type === 'AVRO' ? 'avro' : 'json' };
}

function unsupported(loaded: LoadedSchema) {
  if (loaded.type !== 'AVRO' && loaded.type !== 'JSON') {
    throw new RunnerError('MESSAGE_INVALID', `schema id ${loaded.id} is a ${loaded.type} schema; only AVRO and JSON schemas are supported`);
  }
}

const label = (loaded: LoadedSchema) => `${loaded.type === 'AVRO' ? 'Avro' : 'JSON'} schema id ${loaded.id}`;

const isValidationError = (err: unknown) => (err as { name?: string } | null)?.name === 'ConfluentSchemaRegistryValidationError';

/** Every reason a value does not fit: ajv's errors for JSON Schema, each mismatching field for Avro. */
function reasons(loaded: LoadedSchema, value: unknown, err: unknown): string[] {
  const out: string[] = [];
  if (loaded.type === 'JSON') {
    // detailedErrorPaths: [{ path: [instancePath], message }]
    for (const p of ((err as { paths?: unknown[] }).paths ?? []) as ({ path?: string[]; message?: string } | string[])[]) {
      if (Array.isArray(p)) out.push(`${p[0] || '/'} is invalid`);
      else out.push(`${p.path?.[0] || '/'} ${p.message ?? 'is invalid'}`);
    }
  } else {
    loaded.schema.isValid(value as object, {
      errorHook: (path: string[], v: unknown, type: unknown) => {
        out.push(`${path.length ? path.join('.') : '/'}: ${v === undefined ? 'missing' : JSON.stringify(v) ?? String(v)}, expected ${avroTypeName(type)}`);
      },
    });
  }
  return out.length ? [...new Set(out)] : [errorMessage(err)];
}

function avroTypeName(type: unknown): string {
  const t = type as { types?: unknown[]; name?: string; typeName?: string } | null;
  if (!t) return 'a value of the schema';
  if (Array.isArray(t.types)) return t.types.map(avroTypeName).join(' | ');
  return t.name ?? t.typeName ?? 'a value of the schema';
}

/** avsc decodes records into class instances; make plain JSON-like values (bytes stay Buffers). */
function plain(v: unknown): unknown {
  if (v === null || typeof v !== 'object') return v;
  if (Buffer.isBuffer(v)) return v;
  if (Array.isArray(v)) return v.map(plain);
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v)) out[k] = plain((v as Record<string, unknown>)[k]);
  return out;
}
