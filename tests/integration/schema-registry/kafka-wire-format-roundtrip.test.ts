/**
 * End to end through real Kafka: schema_registry_encode (Avro and JSON Schema) -> the kafka output
 * writes the wire-format bytes; the kafka input with value_format: bytes -> schema_registry_decode
 * reads the same JSON back, in order. A plain JSON record in the same topic is rejected by the
 * decoder with the reason. KAFKA_BROKERS (default 127.0.0.1:9092) and SCHEMA_REGISTRY_URL.
 */
import { Value } from '@sinclair/typebox/value';
import kafkajs from 'kafkajs';
import { firstValueFrom, from, take, tap, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import type { RunnerError } from '../../../core/errors.ts';
import { createMsg, type Msg } from '../../../core/message.ts';
import { kafka as kafkaInput } from '../../../operators/kafka/input.ts';
import { kafka as kafkaOutput } from '../../../operators/kafka/output.ts';
import { schemaRegistryDecode } from '../../../operators/schema-registry/decode.ts';
import { schemaRegistryEncode } from '../../../operators/schema-registry/encode.ts';
import { testContext } from '../../helpers/context.ts';
import { decodeConfig, encodeConfig, runId, subjectName, test, url } from './harness.ts';
import { createTopicsReady } from '../../helpers/kafka.ts';

const { Kafka, logLevel } = kafkajs;
const brokers = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
const admin = new Kafka({ clientId: 'schema-registry-it', brokers, logLevel: logLevel.NOTHING }).admin();
const topics: string[] = [];

type OutputConfig = Parameters<typeof kafkaOutput.create>[0];
type InputConfig = Parameters<typeof kafkaInput.create>[0];
const outputConfig = (c: Partial<OutputConfig>): OutputConfig => Value.Default(kafkaOutput.spec.config, { brokers, ...c }) as OutputConfig;
const inputConfig = (c: Partial<InputConfig>): InputConfig => Value.Default(kafkaInput.spec.config, { brokers, commit_period: '100ms', ...c }) as InputConfig;

beforeAll(async () => {
  if (url) await admin.connect();
});
afterAll(async () => {
  if (!url) return;
  if (topics.length) await admin.deleteTopics({ topics }).catch(() => undefined);
  await admin.disconnect();
});

describe('kafka output -> kafka input through the wire format', () => {
  test('Avro and JSON Schema values written as wire-format bytes come back as the same JSON, in order', async () => {
    const topic = `it-sr-${runId}-telemetry`;
    await createTopicsReady(admin, [{ topic, numPartitions: 1 }]);
    topics.push(topic);

    const avroValues = [1, 2, 3].map((i) => ({ device_id: `device-00${i}`, timestamp: 1698765432 + i, d0: 5 + i, d5: 35 }));
    const jsonValues = [4, 5].map((i) => ({ device_id: `device-00${i}`, timestamp: 1698765432 + i, d0: 5 + i }));

    const ectx = testContext({ component: 'encode' });
    const avro = schemaRegistryEncode.create(encodeConfig({ schema_type: 'avro', subject: subjectName('e2e-avro'), schema_file: 'avro/heatpump-telemetry.avsc', auto_register: true }), ectx);
    const json = schemaRegistryEncode.create(encodeConfig({ schema_type: 'json', subject: subjectName('e2e-json'), schema_file: 'heatpump-telemetry', auto_register: true }), ectx);
    // Keys are set before encoding: after it the value is bytes, so `key: device_id` would find nothing.
    const encode = async (step: typeof avro, values: { device_id: string }[]) => firstValueFrom(from(values.map((v) => createMsg(v, { key: v.device_id }))).pipe(step, toArray()));
    const plain = createMsg(Buffer.from(JSON.stringify({ device_id: 'device-009', timestamp: 1 })), { key: 'device-009' });
    const toWrite = [...(await encode(avro, avroValues)), plain, ...(await encode(json, jsonValues))];
    expect(ectx.rejected.map((r) => String(r.err))).toEqual([]);
    expect(toWrite).toHaveLength(6);

    const octx = testContext({ component: 'kafka-out' });
    const written = await firstValueFrom(from(toWrite).pipe(kafkaOutput.create(outputConfig({ topic }), octx), toArray()));
    await octx.close();
    expect(octx.rejected.map((r) => String(r.err))).toEqual([]);
    expect(written).toHaveLength(6);
    expect(octx.rejected).toEqual([]);

    const ictx = testContext({ component: 'kafka-in' });
    const dctx = testContext({ component: 'decode' });
    const raw: Buffer[] = [];
    const read = kafkaInput.create(inputConfig({ topics: [topic], consumer_group: `it-sr-${runId}`, value_format: 'bytes' }), ictx);
    // 5 decoded; the plain JSON record is rejected by the decoder (and done once dead-lettered).
    const decoded: Msg[] = await firstValueFrom(
      read.pipe(
        tap((m) => raw.push(m.value as Buffer)),
        schemaRegistryDecode.create(decodeConfig(), dctx),
        tap((m) => m.ack.done()),
        take(5),
        toArray(),
      ),
    );
    ictx.stopSubject.next();
    await ictx.close();

    expect(raw.slice(0, 6).map((b) => [Buffer.isBuffer(b), b[0]])).toEqual([
      [true, 0],
      [true, 0],
      [true, 0],
      [true, 0x7b],
      [true, 0],
      [true, 0],
    ]);
    expect(raw[0]!.readInt32BE(1)).toBe(toWrite[0]!.meta.schema_id);
    expect(raw[4]!.readInt32BE(1)).toBe(toWrite[4]!.meta.schema_id);

    const nulls = Object.fromEntries(Array.from({ length: 13 }, (_, i) => [`d${i}`, null]));
    expect(decoded.map((m) => m.value)).toEqual([...avroValues.map((v) => ({ ...nulls, ...v })), ...jsonValues]);
    expect(decoded.map((m) => [m.key, m.meta.schema_type])).toEqual([
      ['device-001', 'avro'],
      ['device-002', 'avro'],
      ['device-003', 'avro'],
      ['device-004', 'json'],
      ['device-005', 'json'],
    ]);
    expect(dctx.rejected.map((r) => [r.msg.meta.kafka_offset, (r.err as RunnerError).message])).toEqual([
      [3, 'not in the Confluent wire format: first byte is 0x7b, expected the magic byte 0x00 (it looks like plain JSON)'],
    ]);

    // The same records decoded on read by the kafka input itself (value_format: schema_registry).
    const rctx = testContext({ component: 'kafka-in-decoding' });
    const onRead: Msg[] = await firstValueFrom(
      kafkaInput
        .create(inputConfig({ topics: [topic], consumer_group: `it-sr-onread-${runId}`, value_format: 'schema_registry', schema_registry: { url: url!, basic_auth: null, timeout: '10s' } }), rctx)
        .pipe(
          tap((m) => m.ack.done()),
          take(5),
          toArray(),
        ),
    );
    rctx.stopSubject.next();
    await rctx.close();
    expect(onRead.map((m) => m.value)).toEqual([...avroValues.map((v) => ({ ...nulls, ...v })), ...jsonValues]);
    expect(onRead.map((m) => m.meta.schema_type)).toEqual(['avro', 'avro', 'avro', 'json', 'json']);
    expect(rctx.rejected.map((r) => r.msg.meta.kafka_offset)).toEqual([3]);
  });
});
