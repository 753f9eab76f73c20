/**
 * `migrations: <folder>`: the sink is not ready and writes nothing while that folder's migrations
 * are pending in its database, says to run `runner migrate`, and becomes ready once they are applied.
 */
import { Subject, lastValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createMsg, type Msg } from '../../../core/message.ts';
import { migrateDatabase } from '../../../operators/postgres/migrate.ts';
import { postgres } from '../../../operators/postgres/output.ts';
import { testContext } from '../../helpers/context.ts';
import { createTestDatabase, type TestDatabase } from '../../helpers/postgres.ts';
import { outputConfig } from './harness.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase('sink_migrations');
});
afterAll(async () => {
  await db.drop();
});

describe('postgres output with migrations: telemetry', () => {
  it('is not ready while migrations are pending, naming them, and writes once migrate ran', async () => {
    const ctx = testContext();
    const cfg = outputConfig({
      url: db.url,
      table: 'temperature',
      migrations: 'telemetry',
      columns: { time: '$fromMillis(timestamp * 1000)', sensor_id: 'sensor_id', temperature: 'temperature' },
      batching: { count: 1, byte_size: 0, period: 0 },
    });
    const source = new Subject<Msg>();
    const done = lastValueFrom(source.pipe(postgres.create(cfg, ctx), toArray()));
    source.next(createMsg({ sensor_id: 'sensor-001', timestamp: 1698765432, temperature: 21.5 }));
    await vi.waitFor(() => expect(ctx.ready.reason).toMatch(/is not migrated: 3 pending migration\(s\): 0001_telemetry_tables\.sql.*run `runner migrate --database telemetry`/));
    expect(ctx.ready.ready).toBe(false);

    await migrateDatabase({ database: 'telemetry', url: db.url, mode: 'plain' });
    await vi.waitFor(() => expect(ctx.ready.ready).toBe(true), { timeout: 60_000 });
    source.complete();
    expect(await done).toHaveLength(1);
    expect((await db.query('SELECT sensor_id, temperature FROM temperature')).rows).toEqual([{ sensor_id: 'sensor-001', temperature: 21.5 }]);
    await ctx.close();
  });
});
