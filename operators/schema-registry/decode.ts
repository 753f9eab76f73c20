import { withValue } from '../../core/message.ts';
import { defineProcessor } from '../../core/operator.ts';
import { Obj, OnInvalid } from '../../core/schema.ts';
import { connectionFields, lintConnection, registryClient } from './client.ts';
import { decodeWire } from './codec.ts';
import { perMessageRetrying, readiness } from './step.ts';

const config = Obj({
  ...connectionFields,
  on_invalid: OnInvalid(),
});

export const schemaRegistryDecode = defineProcessor({
  spec: {
    name: 'schema_registry_decode',
    kind: 'processor',
    summary: 'Decodes values in the Confluent wire format (Avro or JSON Schema) back to JSON, with the writer\'s schema from a Confluent-compatible schema registry.',
    description: [
      'The value must be bytes in the Confluent wire format: the magic byte 0, a 4-byte big-endian schema id, then the payload. The kafka input hands out bytes only with `value_format: bytes` (with `json`, the default, it dead-letters such records as not JSON before they reach this processor). The schema is fetched by the id in the bytes, once per id for the life of the process (shared by every component using the same registry), and the payload is decoded with it: Avro into a JSON object (bytes and fixed fields stay bytes), JSON Schema payloads parsed and checked against their schema. The new value is that JSON; metadata `schema_id` and `schema_type` (`avro` or `json`) are added, headers are left alone.',
      '',
      'Rejected with the reason (dead_letter, or drop with `on_invalid: drop`): a value that is not bytes, bytes not in the wire format (too short, another first byte: e.g. plain JSON), a schema id the registry does not know, a Protobuf schema (not supported), a payload that does not decode with its schema. An unreachable registry (connection refused, timeout, 5xx) or refused credentials are retried with exponential backoff for as long as it takes, holding back the messages behind (order is kept); the component is not ready meanwhile and says why.',
    ].join('\n'),
    config,
    examples: [
      {
        title: 'Decode what the kafka input read as bytes',
        config: 'url: ${SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081}',
      },
      {
        title: 'Registry with basic auth and a short timeout',
        config: 'url: ${SCHEMA_REGISTRY_URL:-https://registry.example.net}\nbasic_auth:\n  username: runner\n  password: ${SCHEMA_REGISTRY_PASSWORD:-}\ntimeout: 2s',
      },
    ],
    delivery:
      'One message in, one message out, same ack. Never drops silently: a value that cannot be decoded is dead-lettered with the reason (or dropped, logged and counted, with `on_invalid: drop`). Registry outages are retried without end and hold the messages behind in order; nothing is dropped or duplicated by this processor.',
    rejects: true,
    lint(cfg) {
      return lintConnection(cfg);
    },
  },
  create(cfg, ctx) {
    const client = registryClient(cfg);
    const setReady = readiness(ctx);
    return perMessageRetrying(
      ctx,
      async (msg) => {
        const { value, schemaId, schemaType } = await decodeWire(client, msg.value);
        return withValue(msg, value, { meta: { ...msg.meta, schema_id: schemaId, schema_type: schemaType } });
      },
      { setReady },
    );
  },
});
