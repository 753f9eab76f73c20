/**
 * schema_registry_encode and schema_registry_decode against the real registry of the local stack
 * (Apicurio Registry, Confluent-compatible API): JSON Schema and Avro values go into the wire
 * format (magic byte 0, the schema id) and come back equal; auto_register registers the project's
 * schema under the subject; values that do not match, unknown ids, unregistered schemas and a
 * schema of the other type are rejected with the reason; `latest` is cached for refresh_interval.
 */
import { readFileSync } from 'node:fs';
import { describe, expect } from 'vitest';
import { RunnerError } from '../../../core/errors.ts';
import { schemaRegistryDecode } from '../../../operators/schema-registry/decode.ts';
import { schemaRegistryEncode } from '../../../operators/schema-registry/encode.ts';
import { frame } from '../../../operators/schema-registry/wire-format.ts';
import { testContext } from '../../helpers/context.ts';
import { decodeConfig, encodeConfig, readiness, registerRaw, registryGet, subjectName, test, through, url } from './harness.ts';

const ROOT = new URL('../../..', import.meta.url).pathname;
const avsc = JSON.parse(readFileSync(`${ROOT}schemas/avro/heatpump-telemetry.avsc`, 'utf8'));
const telemetryJsonSchema = JSON.parse(readFileSync(`${ROOT}schemas/heatpump-telemetry.schema.json`, 'utf8'));

const reading = { device_id: 'device-001', timestamp: 1698765432.25, d0: 5.2, d5: 35, d6: 30.5 };
const reasonOf = (err: unknown) => (err as RunnerError).message;

describe('schema_registry_encode / schema_registry_decode against the registry', () => {
  test('JSON Schema: encodes to 0 + the subject\'s id + JSON text, decodes back to the same value, rejects a value that does not match', async () => {
    const subject = subjectName('json');
    const id = await registerRaw(subject, 'JSON', telemetryJsonSchema);
    const ectx = testContext({ component: 'encode' });
    const encoded = await through(schemaRegistryEncode.create(encodeConfig({ schema_type: 'json', subject }), ectx), [reading, { device_id: 'device 1', d0: 'warm' }]);

    expect(encoded).toHaveLength(1);
    const bytes = encoded[0]!.value as Buffer;
    expect(Buffer.isBuffer(bytes)).toBe(true);
    expect(bytes[0]).toBe(0);
    expect(bytes.readInt32BE(1)).toBe(id);
    expect(JSON.parse(bytes.subarray(5).toString('utf8'))).toEqual(reading);
    expect(encoded[0]!.meta).toMatchObject({ schema_id: id, schema_subject: subject });

    expect(ectx.rejected).toHaveLength(1);
    const err = ectx.rejected[0]!.err as RunnerError;
    expect(err.code).toBe('MESSAGE_INVALID');
    expect(err.retryable).toBe(false);
    expect(reasonOf(err)).toBe(`does not match JSON schema id ${id}: / must have required property 'timestamp'; /device_id must match pattern "^[A-Za-z0-9_.:-]+$"; /d0 must be number,null`);

    const dctx = testContext({ component: 'decode' });
    const decoded = await through(schemaRegistryDecode.create(decodeConfig(), dctx), [bytes]);
    expect(decoded.map((m) => m.value)).toEqual([reading]);
    expect(decoded[0]!.meta).toMatchObject({ schema_id: id, schema_type: 'json' });
    expect(dctx.rejected).toEqual([]);
  });

  test('Avro: encodes to 0 + the subject\'s id + Avro binary, decodes back to the same value, rejects a value that does not match', async () => {
    const subject = subjectName('avro');
    const id = await registerRaw(subject, 'AVRO', avsc);
    const ectx = testContext({ component: 'encode' });
    const encoded = await through(schemaRegistryEncode.create(encodeConfig({ schema_type: 'avro', subject }), ectx), [
      reading,
      { device_id: 7, timestamp: 'now' },
      { ...reading, extra_register: 1 },
    ]);

    expect(encoded).toHaveLength(2);
    const bytes = encoded[0]!.value as Buffer;
    expect(bytes[0]).toBe(0);
    expect(bytes.readInt32BE(1)).toBe(id);
    // Avro binary, not JSON text: the string device-001 is length-prefixed (zigzag 10 = 0x14)
    expect(bytes.subarray(5, 7)).toEqual(Buffer.from([0x14, 0x64]));

    expect(ectx.rejected.map((r) => reasonOf(r.err))).toEqual([`does not match Avro schema id ${id}: device_id: 7, expected string; timestamp: "now", expected double`]);

    const dctx = testContext({ component: 'decode' });
    const decoded = await through(schemaRegistryDecode.create(decodeConfig(), dctx), encoded.map((m) => m.value));
    const nulls = Object.fromEntries(Array.from({ length: 13 }, (_, i) => [`d${i}`, null]));
    // Avro carries every field of the record (missing ones with their default) and only those
    expect(decoded.map((m) => m.value)).toEqual([
      { ...nulls, ...reading },
      { ...nulls, ...reading },
    ]);
    expect(Object.getPrototypeOf(decoded[0]!.value)).toBe(Object.prototype);
    expect(decoded[0]!.meta).toMatchObject({ schema_id: id, schema_type: 'avro' });
    expect(dctx.rejected).toEqual([]);
  });

  test('auto_register registers schemas/avro/heatpump-telemetry.avsc under the subject at startup and encodes with its id', async () => {
    const subject = subjectName('auto');
    expect((await registryGet(`/subjects/${subject}/versions/latest`)).status).toBe(404);
    const ctx = testContext();
    const ready = readiness(ctx);
    const step = schemaRegistryEncode.create(encodeConfig({ schema_type: 'avro', subject, schema_file: 'avro/heatpump-telemetry.avsc', auto_register: true }), ctx);
    await ready.next((r) => r.ready);

    const latest = await registryGet(`/subjects/${subject}/versions/latest`);
    expect(latest.status).toBe(200);
    expect(JSON.parse(latest.body.schema)).toEqual(avsc);
    const encoded = await through(step, [reading]);
    expect((encoded[0]!.value as Buffer).readInt32BE(1)).toBe(latest.body.id);

    // a second processor (a restart) finds the same registration: same id, no new version
    const again = await through(
      schemaRegistryEncode.create(encodeConfig({ schema_type: 'avro', subject, schema_file: 'avro/heatpump-telemetry.avsc', auto_register: true }), testContext()),
      [reading],
    );
    expect((again[0]!.value as Buffer).readInt32BE(1)).toBe(latest.body.id);
    expect((await registryGet(`/subjects/${subject}/versions`)).body).toEqual([1]);
    await ctx.close();
  });

  test('processors auto-registering the same schema under a new subject at the same moment (instances starting together) all get its id', async () => {
    const subject = subjectName('auto-race');
    const cfg = encodeConfig({ schema_type: 'avro', subject, schema_file: 'avro/heatpump-telemetry.avsc', auto_register: true });
    const ctxs = Array.from({ length: 4 }, () => testContext());
    const results = await Promise.all(ctxs.map((ctx) => through(schemaRegistryEncode.create(cfg, ctx), [reading])));
    const latest = await registryGet(`/subjects/${subject}/versions/latest`);
    expect(results.map((out) => (out[0]?.value as Buffer | undefined)?.readInt32BE(1))).toEqual([latest.body.id, latest.body.id, latest.body.id, latest.body.id]);
    expect(ctxs.flatMap((c) => c.rejected)).toEqual([]);
    for (const c of ctxs) await c.close();
  });

  test('auto_register of a schema the subject\'s compatibility rule refuses is not ready and rejects messages with the registry\'s reason', async () => {
    const subject = subjectName('incompatible');
    await registerRaw(subject, 'AVRO', { type: 'record', name: 'HeatpumpTelemetry', namespace: 'homelab.heatpump', fields: [{ name: 'device_id', type: 'int' }] });
    const res = await fetch(`${url}/config/${subject}`, { method: 'PUT', headers: { 'content-type': 'application/vnd.schemaregistry.v1+json' }, body: JSON.stringify({ compatibility: 'BACKWARD' }) });
    expect(res.status).toBe(200);

    const ctx = testContext();
    const ready = readiness(ctx);
    const step = schemaRegistryEncode.create(encodeConfig({ schema_type: 'avro', subject, schema_file: 'avro/heatpump-telemetry.avsc', auto_register: true }), ctx);
    const notReady = await ready.next((r) => !r.ready && /HTTP 409/.test(r.reason ?? ''));
    expect(notReady.reason).toMatch(new RegExp(`^registering the AVRO schema under subject ${subject} at the schema registry at .*: HTTP 409: .*[Ii]ncompatible`));

    expect(await through(step, [reading])).toEqual([]);
    expect(ctx.rejected.map((r) => [(r.err as RunnerError).code, (r.err as RunnerError).retryable])).toEqual([['WRITE_REJECTED', false]]);
    expect((await registryGet(`/subjects/${subject}/versions`)).body).toEqual([1]);
    await ctx.close();
  });

  test('a schema_file not registered under the subject (auto_register off) makes the processor not ready and rejects messages with the reason', async () => {
    const subject = subjectName('unregistered');
    const ctx = testContext();
    const ready = readiness(ctx);
    const step = schemaRegistryEncode.create(encodeConfig({ schema_type: 'json', subject, schema_file: 'heatpump-telemetry' }), ctx);
    const notReady = await ready.next((r) => !r.ready && /not registered/.test(r.reason ?? ''));
    expect(notReady.reason).toMatch(new RegExp(`^schemas/heatpump-telemetry\\.schema\\.json is not registered under subject ${subject} at the schema registry at .*: register it, or set auto_register: true`));

    expect(await through(step, [reading])).toEqual([]);
    const err = ctx.rejected[0]!.err as RunnerError;
    expect(err.code).toBe('SCHEMA_NOT_FOUND');
    expect(err.retryable).toBe(false);
    expect((await registryGet(`/subjects/${subject}/versions`)).status).toBe(404);
    await ctx.close();
  });

  test('decode rejects an unknown schema id, bytes not in the wire format, a value that is not bytes, and a payload its schema refuses', async () => {
    const jsonId = await registerRaw(subjectName('decode-bad'), 'JSON', { type: 'object', properties: { device_id: { type: 'string' } }, required: ['device_id'] });
    const ctx = testContext();
    const unknownId = 2_000_000_000;
    const out = await through(schemaRegistryDecode.create(decodeConfig(), ctx), [
      frame(unknownId, Buffer.from('{}')),
      Buffer.from(JSON.stringify(reading)),
      JSON.stringify(reading),
      frame(jsonId, Buffer.from('{"device_id": 5}')),
      frame(jsonId, Buffer.from('{"device_id": "device-001"')),
    ]);
    expect(out).toEqual([]);
    expect(ctx.rejected.map((r) => [(r.err as RunnerError).code, (r.err as RunnerError).retryable, reasonOf(r.err)])).toEqual([
      ['SCHEMA_NOT_FOUND', false, expect.stringMatching(new RegExp(`^schema id ${unknownId} is not in the schema registry at `))],
      ['MESSAGE_INVALID', false, 'not in the Confluent wire format: first byte is 0x7b, expected the magic byte 0x00 (it looks like plain JSON)'],
      ['MESSAGE_INVALID', false, 'value is a string, not bytes: wire-format values must arrive as bytes (read the topic with value_format: bytes)'],
      ['MESSAGE_INVALID', false, `payload does not decode with JSON schema id ${jsonId}: /device_id must be string`],
      ['MESSAGE_INVALID', false, expect.stringMatching(new RegExp(`^payload does not decode with JSON schema id ${jsonId}: .*JSON`))],
    ]);
  });

  test('encode with an unknown schema_id, or a schema of the other type, is not ready and rejects with the reason', async () => {
    const avroId = await registerRaw(subjectName('type-mismatch'), 'AVRO', avsc);

    const unknown = testContext();
    const unknownReady = readiness(unknown);
    const step = schemaRegistryEncode.create(encodeConfig({ schema_type: 'json', schema_id: 2_000_000_001 }), unknown);
    expect((await unknownReady.next((r) => !r.ready && /is not in the schema registry/.test(r.reason ?? ''))).reason).toMatch(/^schema id 2000000001 is not in/);
    await through(step, [reading]);
    expect((unknown.rejected[0]!.err as RunnerError).code).toBe('SCHEMA_NOT_FOUND');

    const mismatch = testContext();
    const out = await through(schemaRegistryEncode.create(encodeConfig({ schema_type: 'json', schema_id: avroId }), mismatch), [reading]);
    expect(out).toEqual([]);
    expect(reasonOf(mismatch.rejected[0]!.err)).toMatch(new RegExp(`^schema id ${avroId} at the schema registry at .* is a AVRO schema, but schema_type is json$`));
    expect(mismatch.ready.ready).toBe(false);
    await unknown.close();
    await mismatch.close();
  });

  test('the subject\'s latest id is cached for refresh_interval; with 0 a new version is used at once', async () => {
    const subject = subjectName('refresh');
    const v1 = { type: 'object', properties: { device_id: { type: 'string' } } };
    const v2 = { type: 'object', properties: { device_id: { type: 'string' }, d0: { type: ['number', 'null'] } } };
    const id1 = await registerRaw(subject, 'JSON', v1);
    const cached = schemaRegistryEncode.create(encodeConfig({ schema_type: 'json', subject, refresh_interval: '10m' }), testContext());
    const fresh = schemaRegistryEncode.create(encodeConfig({ schema_type: 'json', subject, refresh_interval: 0 }), testContext());
    const idOf = async (step: typeof cached) => ((await through(step, [reading]))[0]!.value as Buffer).readInt32BE(1);
    expect(await idOf(cached)).toBe(id1);
    expect(await idOf(fresh)).toBe(id1);

    const id2 = await registerRaw(subject, 'JSON', v2);
    expect(id2).not.toBe(id1);
    expect(await idOf(cached)).toBe(id1);
    expect(await idOf(fresh)).toBe(id2);
  });

  test('a subject template picks the schema per message; a pinned version stays', async () => {
    const energy = subjectName('tmpl-energy');
    const temp = subjectName('tmpl-temperature');
    const draft7 = 'http://json-schema.org/draft-07/schema#';
    const idEnergy = await registerRaw(energy, 'JSON', { $schema: draft7, type: 'object', properties: { kwh: { type: 'number' } }, required: ['kwh'] });
    const idTemp1 = await registerRaw(temp, 'JSON', { $schema: draft7, type: 'object', properties: { c: { type: 'number' } }, required: ['c'] });
    await registerRaw(temp, 'JSON', { $schema: draft7, type: 'object', properties: { c: { type: 'number' }, room: { type: 'string' } }, required: ['c', 'room'] });
    const ctx = testContext();
    const prefix = energy.replace(/tmpl-energy-value$/, 'tmpl-');
    const step = schemaRegistryEncode.create(encodeConfig({ schema_type: 'json', subject: `${prefix}\${! kind }-value`, version: 1 }), ctx);
    const out = await through(step, [
      { kind: 'energy', kwh: 1.5 },
      { kind: 'temperature', c: 21 },
      { kind: 'energy', c: 21 },
    ]);
    expect(out.map((m) => [(m.value as Buffer).readInt32BE(1), m.meta.schema_subject])).toEqual([
      [idEnergy, energy],
      [idTemp1, temp],
    ]);
    expect(reasonOf(ctx.rejected[0]!.err)).toBe(`does not match JSON schema id ${idEnergy}: / must have required property 'kwh'`);
    // a rejected message of one subject does not make the whole processor unready
    expect(ctx.ready.ready).toBe(true);
  });
});
