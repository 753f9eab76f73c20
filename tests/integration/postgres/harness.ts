/** Shared helpers for the postgres output tests: a client on runner_test, unique tables, one run. */
import { Value } from '@sinclair/typebox/value';
import pg from 'pg';
import { from, lastValueFrom, toArray } from 'rxjs';
import { createMsg, type Msg } from '../../../core/message.ts';
import { postgres } from '../../../operators/postgres/output.ts';
import { testContext, type TestContext } from '../../helpers/context.ts';

export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/runner_test';

export type PgOutputConfig = typeof postgres.spec.config.static;
export const outputConfig = (c: Partial<PgOutputConfig> & Pick<PgOutputConfig, 'table' | 'columns'>): PgOutputConfig =>
  Value.Default(postgres.spec.config, { url: DATABASE_URL, ...c }) as PgOutputConfig;

let n = 0;
/** A table name no other test (or earlier run) uses. */
export const uniqueTable = (prefix: string) => `${prefix}_${process.pid}_${Date.now().toString(36)}_${n++}`;

export async function connect(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  return client;
}

/** Run values through the output until its source completes; the output is closed afterwards. */
export async function writeAll(cfg: PgOutputConfig, values: unknown[], ctx: TestContext = testContext()): Promise<{ out: Msg[]; ctx: TestContext }> {
  const msgs = values.map((v) => createMsg(v));
  try {
    const out = await lastValueFrom(from(msgs).pipe(postgres.create(cfg, ctx), toArray()));
    return { out, ctx };
  } finally {
    await ctx.close();
  }
}
