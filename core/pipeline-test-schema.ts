/**
 * The format of a pipeline test file (`pipelines/<name>.test.yaml`, run by `runner test`): one
 * TypeBox schema that validates the file (with positions), types the loaded data, and is written
 * to schemas/pipeline-test.schema.json for editors (`runner docs`; a test checks it is fresh).
 *
 * The shape follows Redpanda Connect's config unit tests (`tests:` of cases with an input batch and
 * conditions on what comes out, `mocks:` for steps that need external systems), in this runner's
 * terms: messages have value, key, headers and metadata; what comes out is output messages, dead
 * letters (with the reason) and dropped messages.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { ERROR_CODES } from './errors.ts';
import { Obj } from './schema.ts';

const Env = () =>
  Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }), Type.Union([Type.String(), Type.Number(), Type.Boolean()]), {
    additionalProperties: false,
    description: 'Environment variables for `${VAR}` in the pipeline file, over the environment `runner test` runs in (numbers and booleans are taken as text).',
  });

const Mocks = () =>
  Type.Record(
    Type.String({ minLength: 1 }),
    Type.Object({}, {
      additionalProperties: true,
      minProperties: 1,
      description:
        'A processor that replaces the step in tests, written like a step of `pipeline:` (`map: {...}`, `filter: {...}`, ...), or `mock:` with `check`, `value` and `reject` (a rejection with an error code, e.g. NOT_FOUND).',
    }),
    {
      description:
        'Steps replaced in tests, keyed by the step\'s label (`patch_settings`), its path (`pipeline.1.postgres`) or its position (`pipeline.1`). Steps that talk to external systems (postgres, schema_registry_*) must be mocked: a test never reaches a server.',
    },
  );

const Headers = (what: string) => Type.Record(Type.String({ minLength: 1 }), Type.String(), { description: what });

const InputMessage = Obj(
  {
    value: Type.Optional(Type.Unknown({ description: 'The message value as the input would give it (parsed JSON: an object, array, string, number, boolean or null). Absent: null.' })),
    key: Type.Optional(Type.Union([Type.String(), Type.Null()], { description: 'The message key (Kafka record key, outbox aggregate id). Absent: null.' })),
    headers: Type.Optional(Headers('Message headers (Kafka record headers, MQTT 5 user properties, outbox headers).')),
    metadata: Type.Optional(
      Type.Record(Type.String({ minLength: 1 }), Type.Unknown(), {
        description: 'Metadata as the pipeline\'s input would set it: `mqtt_topic`, `mqtt_topic_<name>`, `kafka_topic`, `kafka_partition`, `http_method`, `event_type`, ... (see the input\'s docs).',
      }),
    ),
  },
  { description: 'One message fed to the pipeline\'s processors in place of its input.' },
);

const messageConditions = {
  value: Type.Optional(Type.Unknown({ description: 'The value must equal this (JSON equality: every field, nothing more).' })),
  value_contains: Type.Optional(
    Type.Unknown({ description: 'The value must contain this: objects the listed fields (recursively), arrays the same number of items each containing the listed one, other values equal.' }),
  ),
  value_matches: Type.Optional(Type.String({ minLength: 1, description: 'A regular expression the value must match: a string as it is, any other value as JSON text.' })),
  key: Type.Optional(Type.Union([Type.String(), Type.Null()], { description: 'The key must be this (null: no key).' })),
  headers: Type.Optional(Headers('These headers must have exactly these values; other headers are not looked at.')),
  headers_match: Type.Optional(Headers('These headers must be present and match these regular expressions, e.g. `received_at: ^\\d{4}-`.')),
  metadata: Type.Optional(Type.Record(Type.String({ minLength: 1 }), Type.Unknown(), { description: 'These metadata fields must have these values (JSON equality); other fields are not looked at.' })),
  output: Type.Optional(
    Type.String({
      minLength: 1,
      description: 'The output that took the message, by its label or path: with a `switch` output the case\'s nested output (`heatpump-table`, `output.switch.cases.1.output.postgres`), otherwise the output itself (`output.kafka`).',
    }),
  ),
  fields: Type.Optional(
    Type.Record(Type.String({ minLength: 1 }), Type.Unknown(), {
      description:
        'Fields of the output\'s config (of the output that took the message), by dotted path, with what they give for this message: expressions and templates are evaluated (`topic: homelab-heatpump-telemetry`, `key: device-001`, `columns.time: "2024-01-01T00:00:00.000Z"`, `status: 400`), other fields are taken as configured.',
    }),
  ),
  check: Type.Optional(Type.String({ minLength: 1, description: 'A JSONata condition that must be true for the message (`$meta`, `$headers`, `$key` bound), like Connect\'s `bloblang` condition.' })),
};

const ExpectedOutput = Obj(messageConditions, { description: 'Conditions on one message that reached the output, in the order messages arrived. Every condition given must hold.' });

const ExpectedDeadLetter = Obj(
  {
    reason: Type.Optional(Type.String({ minLength: 1, description: 'Text the rejection reason (the `dlq_error` header) must contain.' })),
    reason_matches: Type.Optional(Type.String({ minLength: 1, description: 'A regular expression the rejection reason must match.' })),
    code: Type.Optional(
      Type.Union(
        Object.keys(ERROR_CODES).map((c) => Type.Literal(c)),
        { description: 'The error code of the rejection (the `dlq_error_code` header): MESSAGE_INVALID, EXPRESSION_FAILED, NOT_FOUND, ...' },
      ),
    ),
    component: Type.Optional(Type.String({ minLength: 1, description: 'The step that rejected the message (the `dlq_operator` header): its label or path, e.g. `pipeline.1.validate`.' })),
    ...messageConditions,
  },
  {
    description:
      'Conditions on one message that reached the dead-letter output, in the order they arrived: the original value, key and metadata, the headers with the `dlq_*` headers added; `output` and `fields` refer to the dead_letter output.',
  },
);

export const TestCaseSchema = Obj(
  {
    name: Type.String({ minLength: 1, description: 'What the case shows; printed in the report.' }),
    environment: Type.Optional(Env()),
    mocks: Type.Optional(Mocks()),
    input: Type.Array(InputMessage, { minItems: 1, description: 'Messages fed, in order, to the pipeline\'s processors in place of its input.' }),
    output: Type.Optional(
      Type.Array(ExpectedOutput, { description: 'The messages that must reach the output, in order; exactly these (absent: none may).' }),
    ),
    dead_letter: Type.Optional(
      Type.Array(ExpectedDeadLetter, { description: 'The messages that must reach the dead-letter output, in order; exactly these (absent: none may).' }),
    ),
    dropped: Type.Optional(
      Type.Integer({ minimum: 0, description: 'How many input messages must be dropped on purpose (by a filter, `on_invalid: drop`): done without reaching an output. Absent: 0.' }),
    ),
  },
  { description: 'One test case: input messages and what must come out of the pipeline for them. Each case runs on its own, with a fresh pipeline.' },
);

export const TestFileSchema = Obj(
  {
    $schema: Type.Optional(Type.String({ description: 'Path or URL of this JSON Schema, for editors.' })),
    pipeline: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'The pipeline file under test, relative to this file. Absent: this file\'s name without `.test` (`mqtt-bridge.test.yaml` tests `mqtt-bridge.yaml`).',
      }),
    ),
    environment: Type.Optional(Env()),
    mocks: Type.Optional(Mocks()),
    tests: Type.Array(TestCaseSchema, { minItems: 1, description: 'The test cases.' }),
  },
  {
    title: 'Pipeline tests',
    description:
      'Unit tests of a pipeline, run by `runner test`: each case feeds messages to the pipeline\'s processors (built from its real config) instead of its input, and checks what reaches the output and the dead-letter output (in memory: nothing is written anywhere).',
  },
);

export type TestFileData = Static<typeof TestFileSchema>;
export type TestCaseData = Static<typeof TestCaseSchema>;
export type InputMessageData = Static<typeof InputMessage>;
export type ExpectedOutputData = Static<typeof ExpectedOutput>;
export type ExpectedDeadLetterData = Static<typeof ExpectedDeadLetter>;

/** schemas/pipeline-test.schema.json: the schema as editors use it. */
export function renderPipelineTestSchema(): string {
  const plain = JSON.parse(JSON.stringify(TestFileSchema as TSchema));
  const schema = { $schema: 'http://json-schema.org/draft-07/schema#', $id: 'https://runner.local/schemas/pipeline-test.schema.json', ...plain };
  return `${JSON.stringify(schema, null, 2)}\n`;
}
