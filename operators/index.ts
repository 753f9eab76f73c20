/**
 * Every operator, listed explicitly: nothing registers itself on import. A test checks that this
 * list and the files under operators/ agree.
 */
import type { AnyOperator } from '../core/operator.ts';
import { OperatorRegistry } from '../core/registry.ts';
import { drop } from './core/drop.ts';
import { filter } from './core/filter.ts';
import { generate } from './core/generate.ts';
import { httpResponse } from './http/response-output.ts';
import { httpServer } from './http/server-input.ts';
import { log } from './core/log.ts';
import { map } from './core/map.ts';
import { stdout } from './core/stdout.ts';
import { switchOutput } from './core/switch.ts';
import { websocketServer } from './websocket/server-output.ts';
import { validate } from './core/validate.ts';
import { kafka as kafkaInput } from './kafka/input.ts';
import { kafka as kafkaOutput } from './kafka/output.ts';
import { mqttInput } from './mqtt/input.ts';
import { mqttOutput } from './mqtt/output.ts';
import { postgresOutbox } from './postgres/outbox-input.ts';
import { postgres } from './postgres/output.ts';
import { postgresQuery } from './postgres/query-processor.ts';
import { schemaRegistryDecode } from './schema-registry/decode.ts';
import { schemaRegistryEncode } from './schema-registry/encode.ts';

export const operators: AnyOperator[] = [
  // inputs
  generate,
  kafkaInput,
  mqttInput,
  httpServer,
  postgresOutbox,
  // processors
  validate,
  map,
  filter,
  log,
  schemaRegistryEncode,
  schemaRegistryDecode,
  postgresQuery,
  // outputs
  stdout,
  drop,
  kafkaOutput,
  mqttOutput,
  postgres,
  switchOutput,
  httpResponse,
  websocketServer,
];

export const registry = new OperatorRegistry(operators);
