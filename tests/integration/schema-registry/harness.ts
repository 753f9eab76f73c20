/**
 * Shared by the schema registry integration tests: the registry of the local stack
 * (SCHEMA_REGISTRY_URL from scripts/stack env; the tests are skipped with the reason when it is
 * unset), configs with defaults filled in, running messages through a processor, readiness and
 * log lines as streams (to wait for events instead of sleeping), and raw REST calls.
 */
import { randomUUID } from 'node:crypto';
import { Value } from '@sinclair/typebox/value';
import pino from 'pino';
import { ReplaySubject, filter, firstValueFrom, from, toArray, type OperatorFunction } from 'rxjs';
import { expect, it } from 'vitest';
import { createMsg, type Msg } from '../../../core/message.ts';
import { schemaRegistryDecode } from '../../../operators/schema-registry/decode.ts';
import { schemaRegistryEncode } from '../../../operators/schema-registry/encode.ts';
import type { TestContext } from '../../helpers/context.ts';

export const url = process.env.SCHEMA_REGISTRY_URL;
const skipReason = 'SCHEMA_REGISTRY_URL is unset: no schema registry is running (eval "$(bash scripts/stack env)" sets it when scripts/stack up started one)';
if (!url) console.warn(`schema registry integration tests skipped: ${skipReason}`);
/** `it`, or `it.skip` when there is no registry. */
export const test = url ? it : it.skip;

export const runId = randomUUID().slice(0, 8);
export const subjectName = (what: string) => `it-sr-${runId}-${what}-value`;

export type EncodeConfig = Parameters<typeof schemaRegistryEncode.create>[0];
export type DecodeConfig = Parameters<typeof schemaRegistryDecode.create>[0];
export const encodeConfig = (c: Partial<EncodeConfig> & Pick<EncodeConfig, 'schema_type'>): EncodeConfig => Value.Default(schemaRegistryEncode.spec.config, { url, ...c }) as EncodeConfig;
export const decodeConfig = (c: Partial<DecodeConfig> = {}): DecodeConfig => Value.Default(schemaRegistryDecode.spec.config, { url, ...c }) as DecodeConfig;

/** Messages through a processor; resolves with what came out (rejections are in ctx.rejected). */
export const through = (step: OperatorFunction<Msg, Msg>, values: unknown[]): Promise<Msg[]> => firstValueFrom(from(values.map((v) => createMsg(v))).pipe(step, toArray()));

/** Every readiness change of a context, as a stream (the test context keeps only the last one). */
export function readiness(ctx: TestContext) {
  const changes$ = new ReplaySubject<{ ready: boolean; reason?: string }>();
  const set = ctx.setReady;
  ctx.setReady = (ready, reason) => {
    set(ready, reason);
    changes$.next({ ready, reason });
  };
  return {
    changes$,
    next: (pred: (r: { ready: boolean; reason?: string }) => boolean) => firstValueFrom(changes$.pipe(filter(pred))),
  };
}

/** The component's log lines (warn and up), as a stream; set before create(). */
export function logLines(ctx: TestContext) {
  const lines$ = new ReplaySubject<{ msg: string; [k: string]: unknown }>();
  ctx.logger = pino({ level: 'warn' }, { write: (line: string) => lines$.next(JSON.parse(line)) });
  return {
    lines$,
    /** Resolves when `n` lines with this message were logged. */
    count: (msg: string, n: number) => {
      let seen = 0;
      return firstValueFrom(lines$.pipe(filter((l) => l.msg === msg && ++seen >= n)));
    },
  };
}

/** GET on the registry's Confluent API. */
export async function registryGet(path: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${url}${path}`, { headers: { accept: 'application/vnd.schemaregistry.v1+json' } });
  return { status: res.status, body: await res.json().catch(() => null) };
}

/** Register a schema with a plain POST (as another producer or an operator would). */
export async function registerRaw(subject: string, schemaType: 'AVRO' | 'JSON', schema: object): Promise<number> {
  const res = await fetch(`${url}/subjects/${encodeURIComponent(subject)}/versions`, {
    method: 'POST',
    headers: { 'content-type': 'application/vnd.schemaregistry.v1+json' },
    body: JSON.stringify(schemaType === 'AVRO' ? { schema: JSON.stringify(schema) } : { schemaType, schema: JSON.stringify(schema) }),
  });
  const body = (await res.json()) as { id: number };
  expect(res.status, JSON.stringify(body)).toBe(200);
  return body.id;
}
