/**
 * The Confluent wire format without a registry: magic byte 0, the schema id as 4 big-endian bytes,
 * then the payload. Framing round-trips; bytes that are not in the format are rejected with a
 * non-retryable MESSAGE_INVALID that says why.
 */
import { describe, expect, it } from 'vitest';
import { RunnerError } from '../../../../core/errors.ts';
import { HEADER_SIZE, MAGIC_BYTE, frame, isFramed, unframe } from '../../../../operators/schema-registry/wire-format.ts';

function rejection(fn: () => unknown): RunnerError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(RunnerError);
    return err as RunnerError;
  }
  throw new Error('expected an error');
}

describe('Confluent wire format', () => {
  it('puts the magic byte 0 and the schema id big-endian before the payload', () => {
    const payload = Buffer.from('{"device_id":"device-001"}');
    const framed = frame(0x01020304, payload);
    expect(framed.length).toBe(HEADER_SIZE + payload.length);
    expect([...framed.subarray(0, HEADER_SIZE)]).toEqual([MAGIC_BYTE, 0x01, 0x02, 0x03, 0x04]);
    expect(framed.subarray(HEADER_SIZE).equals(payload)).toBe(true);
    // the layout the Java serialisers write: ByteBuffer.putInt is big-endian
    expect(framed.readInt32BE(1)).toBe(0x01020304);
  });

  it.each([0, 1, 42, 65_536, 2 ** 31 - 1])('round-trips schema id %i with its payload', (id) => {
    const payload = Buffer.from([0x02, 0x61, 0x00, 0xff]);
    const framed = frame(id, payload);
    expect(isFramed(framed)).toBe(true);
    const { schemaId, payload: back } = unframe(framed);
    expect(schemaId).toBe(id);
    expect(back.equals(payload)).toBe(true);
  });

  it('round-trips an empty payload (a header alone is a valid frame)', () => {
    const { schemaId, payload } = unframe(frame(7, Buffer.alloc(0)));
    expect(schemaId).toBe(7);
    expect(payload.length).toBe(0);
  });

  it('reads a Uint8Array that is a view into a larger buffer', () => {
    const backing = new Uint8Array([9, 9, 0, 0, 0, 0, 5, 0xaa, 0xbb, 9]);
    const view = backing.subarray(2, 9);
    const { schemaId, payload } = unframe(view);
    expect(schemaId).toBe(5);
    expect([...payload]).toEqual([0xaa, 0xbb]);
  });

  it('rejects bytes shorter than the header', () => {
    for (const bytes of [Buffer.alloc(0), Buffer.from([0]), Buffer.from([0, 0, 0, 1])]) {
      const err = rejection(() => unframe(bytes));
      expect(err.code).toBe('MESSAGE_INVALID');
      expect(err.retryable).toBe(false);
      expect(err.message).toMatch(new RegExp(`${bytes.length} bytes, expected at least 5`));
      expect(isFramed(bytes)).toBe(false);
    }
  });

  it('rejects another magic byte, and says when the value looks like plain JSON', () => {
    const json = Buffer.from('{"device_id":"device-001"}');
    expect(isFramed(json)).toBe(false);
    expect(rejection(() => unframe(json)).message).toBe('not in the Confluent wire format: first byte is 0x7b, expected the magic byte 0x00 (it looks like plain JSON)');
    const err = rejection(() => unframe(Buffer.from([1, 0, 0, 0, 1, 0x02])));
    expect(err.code).toBe('MESSAGE_INVALID');
    expect(err.message).toBe('not in the Confluent wire format: first byte is 0x01, expected the magic byte 0x00');
  });

  it('rejects a negative schema id', () => {
    const err = rejection(() => unframe(Buffer.from([0, 0xff, 0xff, 0xff, 0xff, 1])));
    expect(err.code).toBe('MESSAGE_INVALID');
    expect(err.message).toMatch(/schema id -1 is negative/);
  });

  it('refuses to frame a schema id that does not fit 4 signed bytes', () => {
    for (const id of [-1, 2 ** 31, 1.5, Number.NaN]) expect(() => frame(id, Buffer.alloc(1))).toThrow(/does not fit the wire format/);
  });
});
