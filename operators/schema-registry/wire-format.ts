/**
 * The Confluent wire format, without a registry: one magic byte 0, the schema id as a 4-byte
 * big-endian signed integer, then the serialised payload (Avro binary, or JSON text for JSON
 * Schema). https://docs.confluent.io/platform/current/schema-registry/fundamentals/serdes-develop/index.html#wire-format
 */
import { RunnerError } from '../../core/errors.ts';

export const MAGIC_BYTE = 0;
/** Magic byte + schema id. */
export const HEADER_SIZE = 5;
const MAX_SCHEMA_ID = 2 ** 31 - 1;

export interface Framed {
  schemaId: number;
  /** A view into the framed buffer, not a copy. */
  payload: Buffer;
}

/** Prefix a serialised payload with the magic byte and the schema id. */
export function frame(schemaId: number, payload: Buffer): Buffer {
  if (!Number.isInteger(schemaId) || schemaId < 0 || schemaId > MAX_SCHEMA_ID) {
    throw new RunnerError('INTERNAL', `schema id ${schemaId} does not fit the wire format (an integer from 0 to ${MAX_SCHEMA_ID})`);
  }
  const out = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  out.writeUInt8(MAGIC_BYTE, 0);
  out.writeInt32BE(schemaId, 1);
  payload.copy(out, HEADER_SIZE);
  return out;
}

/** Whether bytes start like a framed value (magic byte 0 and a whole header). */
export function isFramed(buf: Uint8Array): boolean {
  return buf.length >= HEADER_SIZE && buf[0] === MAGIC_BYTE;
}

/**
 * Split a framed value into schema id and payload. Bytes that are not in the wire format (too
 * short, another magic byte, a negative id) throw a non-retryable MESSAGE_INVALID that says why.
 */
export function unframe(buf: Uint8Array): Framed {
  const bytes = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (bytes.length < HEADER_SIZE) {
    throw new RunnerError('MESSAGE_INVALID', `not in the Confluent wire format: ${bytes.length} bytes, expected at least ${HEADER_SIZE} (magic byte 0 and a 4-byte schema id)`);
  }
  if (bytes[0] !== MAGIC_BYTE) {
    const hint = bytes[0] === 0x7b || bytes[0] === 0x5b ? ' (it looks like plain JSON)' : '';
    throw new RunnerError('MESSAGE_INVALID', `not in the Confluent wire format: first byte is 0x${bytes[0]!.toString(16).padStart(2, '0')}, expected the magic byte 0x00${hint}`);
  }
  const schemaId = bytes.readInt32BE(1);
  if (schemaId < 0) throw new RunnerError('MESSAGE_INVALID', `not in the Confluent wire format: schema id ${schemaId} is negative`);
  return { schemaId, payload: bytes.subarray(HEADER_SIZE) };
}
