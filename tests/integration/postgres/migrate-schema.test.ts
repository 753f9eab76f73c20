/**
 * The project's migrations/ bring empty databases to the schema of DOMAIN.md and issues 4-6, in
 * plain mode (TimescaleDB is not installable here): tables, columns and types, keys, indexes,
 * defaults and checks, read back from information_schema and pg_indexes. Each database is a
 * throwaway one (createTestDatabase), dropped afterwards.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_MIGRATIONS_DIR, assertMigrated, detectMode, migrateDatabase, migrationStatus } from '../../../operators/postgres/migrate.ts';
import { createTestDatabase, type TestDatabase } from '../../helpers/postgres.ts';

type Columns = Record<string, string>;

async function columns(db: TestDatabase, schema: string, table: string): Promise<Columns> {
  const { rows } = await db.query<{ column_name: string; data_type: string; is_nullable: string }>(
    'SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position',
    [schema, table],
  );
  return Object.fromEntries(rows.map((r) => [r.column_name, `${r.data_type}${r.is_nullable === 'NO' ? ' not null' : ''}`]));
}

async function primaryKey(db: TestDatabase, schema: string, table: string): Promise<string[]> {
  const { rows } = await db.query<{ column_name: string }>(
    `SELECT k.column_name FROM information_schema.table_constraints c
       JOIN information_schema.key_column_usage k ON k.constraint_name = c.constraint_name AND k.table_schema = c.table_schema AND k.table_name = c.table_name
      WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = $1 AND c.table_name = $2 ORDER BY k.ordinal_position`,
    [schema, table],
  );
  return rows.map((r) => r.column_name);
}

async function indexes(db: TestDatabase, schema: string, table: string): Promise<Record<string, string>> {
  const { rows } = await db.query<{ indexname: string; indexdef: string }>('SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2', [schema, table]);
  return Object.fromEntries(rows.map((r) => [r.indexname, r.indexdef]));
}

async function sqlState(db: TestDatabase, sql: string, values?: unknown[]): Promise<string | undefined> {
  try {
    await db.query(sql, values);
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
}

const dbs: TestDatabase[] = [];
const fresh = async () => {
  const db = await createTestDatabase();
  dbs.push(db);
  return db;
};
afterAll(async () => {
  for (const db of dbs) await db.drop();
});

describe('migrations/telemetry on an empty database', () => {
  let db: TestDatabase;
  let first: Awaited<ReturnType<typeof migrateDatabase>>;
  beforeAll(async () => {
    db = await fresh();
    first = await migrateDatabase({ database: 'telemetry', url: db.url });
  });

  it('runs in plain mode here and says so; the timescaledb-only files are recorded as skipped', async () => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      expect(await detectMode(c)).toBe('plain');
    } finally {
      await c.end();
    }
    expect(first.mode).toBe('plain');
    expect(first.files.map((f) => [f.name, f.action])).toEqual([
      ['0001_telemetry_tables.sql', 'applied'],
      ['0002_timescaledb_hypertables.sql', 'skipped'],
      ['0003_timescaledb_hourly_aggregates.sql', 'skipped'],
    ]);
    const { rows } = await db.query('SELECT version, name, mode, transactional, skipped, length(checksum) AS len FROM schema_migrations ORDER BY version');
    expect(rows).toEqual([
      { version: 1, name: '0001_telemetry_tables.sql', mode: 'plain', transactional: true, skipped: false, len: 64 },
      { version: 2, name: '0002_timescaledb_hypertables.sql', mode: 'plain', transactional: true, skipped: true, len: 64 },
      { version: 3, name: '0003_timescaledb_hourly_aggregates.sql', mode: 'plain', transactional: false, skipped: true, len: 64 },
    ]);
    const { rows: ext } = await db.query("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'");
    expect(ext).toEqual([]);
  });

  it('creates heatpump with a column per register, the reported settings and raw jsonb', async () => {
    expect(await columns(db, 'public', 'heatpump')).toEqual({
      time: 'timestamp with time zone not null',
      device_id: 'text not null',
      outdoor_temp: 'double precision',
      indoor_temp: 'double precision',
      hot_water_temp: 'double precision',
      compressor_freq: 'double precision',
      compressor_on: 'double precision',
      supply_temp: 'double precision',
      return_temp: 'double precision',
      flow_rate: 'double precision',
      power_input: 'double precision',
      heat_output: 'double precision',
      operating_state: 'double precision',
      pump_speed: 'double precision',
      compressor_starts: 'double precision',
      indoor_target_temp: 'double precision',
      mode: 'smallint',
      hot_water_target_temp: 'double precision',
      heating_curve: 'double precision',
      heating_curve_offset: 'double precision',
      eco_mode: 'boolean',
      raw: 'jsonb',
    });
    const { rows } = await db.query("SELECT col_description('heatpump'::regclass, attnum) AS d FROM pg_attribute WHERE attrelid = 'heatpump'::regclass AND attname = 'outdoor_temp'");
    expect(rows[0].d).toMatch(/^d0: outdoor air temperature/);
  });

  it('creates energy_consumption with every meter field and temperature with the sensor fields', async () => {
    const energy = await columns(db, 'public', 'energy_consumption');
    expect(Object.keys(energy)).toEqual([
      'time', 'device_serial', 'active_power_total', 'active_power_l1', 'active_power_l2', 'active_power_l3',
      'reactive_power_total', 'apparent_power_total', 'power_factor', 'voltage_l1', 'voltage_l2', 'voltage_l3',
      'current_l1', 'current_l2', 'current_l3', 'frequency', 'energy_import_total', 'energy_export_total', 'raw',
    ]);
    expect(energy.active_power_total).toBe('double precision not null');
    expect(energy.raw).toBe('jsonb');
    expect(await columns(db, 'public', 'temperature')).toEqual({
      time: 'timestamp with time zone not null',
      sensor_id: 'text not null',
      temperature: 'double precision not null',
      humidity: 'double precision',
      battery: 'double precision',
      location: 'text',
      raw: 'jsonb',
    });
  });

  it('keys each table on (device, time) with a time index, and the key answers "device, newest first"', async () => {
    expect(await primaryKey(db, 'public', 'heatpump')).toEqual(['device_id', 'time']);
    expect(await primaryKey(db, 'public', 'energy_consumption')).toEqual(['device_serial', 'time']);
    expect(await primaryKey(db, 'public', 'temperature')).toEqual(['sensor_id', 'time']);
    for (const t of ['heatpump', 'energy_consumption', 'temperature']) {
      expect((await indexes(db, 'public', t))[`${t}_time_idx`]).toMatch(/\("time" DESC\)/);
    }
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      // Empty table: tell the planner to avoid the alternatives, to see that the key can serve the order.
      await c.query('SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_sort = off');
      const { rows } = await c.query("EXPLAIN SELECT * FROM heatpump WHERE device_id = 'device-001' ORDER BY time DESC LIMIT 10");
      expect(rows.map((r) => r['QUERY PLAN']).join('\n')).toMatch(/Index Scan Backward using heatpump_pkey/);
    } finally {
      await c.end();
    }
  });

  it('takes a row per (device, time) once: a repeat is a conflict the sink can ignore', async () => {
    const insert = "INSERT INTO heatpump (time, device_id, outdoor_temp, supply_temp, return_temp, raw) VALUES (to_timestamp(1698765432), 'device-001', 5.2, 35, 30.5, $1) ON CONFLICT DO NOTHING";
    const payload = { device_id: 'device-001', timestamp: 1698765432, d0: 5.2, d5: 35.0, d6: 30.5 };
    expect((await db.query(insert, [payload])).rowCount).toBe(1);
    expect((await db.query(insert, [payload])).rowCount).toBe(0);
    const { rows } = await db.query("SELECT raw->>'d5' AS d5 FROM heatpump");
    expect(rows).toEqual([{ d5: '35' }]);
  });

  it('a second run applies nothing, and the database counts as migrated', async () => {
    const again = await migrateDatabase({ database: 'telemetry', url: db.url });
    expect(again.files).toEqual([]);
    expect(again.alreadyApplied).toBe(3);
    await expect(assertMigrated(db.url, 'telemetry')).resolves.toBeUndefined();
    const status = await migrationStatus({ database: 'telemetry', url: db.url });
    expect(status.entries.map((e) => e.state)).toEqual(['applied', 'skipped', 'skipped']);
  });
});

describe('migrations/heatpump_settings on an empty database', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await fresh();
    const r = await migrateDatabase({ database: 'heatpump_settings', url: db.url });
    // Every file of the folder (later issues add their own), each applied.
    expect(r.files.map((f) => f.name)).toEqual(readdirSync(join(DEFAULT_MIGRATIONS_DIR, 'heatpump_settings')).sort());
    expect(new Set(r.files.map((f) => f.action))).toEqual(new Set(['applied']));
  });

  it('creates settings with every settable field, reported_at and updated_at', async () => {
    expect(await columns(db, 'public', 'settings')).toEqual({
      device_id: 'text not null',
      indoor_target_temp: 'numeric',
      mode: 'smallint',
      hot_water_target_temp: 'numeric',
      heating_curve: 'numeric',
      heating_curve_offset: 'numeric',
      eco_mode: 'boolean',
      reported_at: 'timestamp with time zone',
      updated_at: 'timestamp with time zone not null',
    });
    const { rows } = await db.query("SELECT numeric_precision, numeric_scale FROM information_schema.columns WHERE table_name = 'settings' AND column_name = 'indoor_target_temp'");
    expect(rows[0]).toEqual({ numeric_precision: 3, numeric_scale: 1 });
    expect(await primaryKey(db, 'public', 'settings')).toEqual(['device_id']);
  });

  it('checks the ranges of the PATCH schema', async () => {
    const ins = (cols: Record<string, unknown>) => {
      const names = Object.keys(cols);
      return sqlState(db, `INSERT INTO settings (${names.join(', ')}) VALUES (${names.map((_, i) => `$${i + 1}`).join(', ')})`, Object.values(cols));
    };
    expect(await ins({ device_id: 'device-001', indoor_target_temp: 21.5, mode: 3, hot_water_target_temp: 50, heating_curve: 0.6, heating_curve_offset: -1.5, eco_mode: false })).toBeUndefined();
    expect(await ins({ device_id: 'device-002', indoor_target_temp: 30.5 })).toBe('23514');
    expect(await ins({ device_id: 'device-003', indoor_target_temp: 14.5 })).toBe('23514');
    expect(await ins({ device_id: 'device-004', indoor_target_temp: 21.3 })).toBe('23514');
    expect(await ins({ device_id: 'device-005', mode: 4 })).toBe('23514');
    expect(await ins({ device_id: 'device-006', hot_water_target_temp: 66 })).toBe('23514');
    expect(await ins({ device_id: 'device-007', heating_curve: 3.6 })).toBe('23514');
    expect(await ins({ device_id: 'device-008', heating_curve_offset: 0.3 })).toBe('23514');
    expect(await ins({ device_id: 'bad/device' })).toBe('23514');
    const { rows } = await db.query('SELECT device_id, indoor_target_temp::text AS t, updated_at IS NOT NULL AS has_updated FROM settings');
    expect(rows).toEqual([{ device_id: 'device-001', t: '21.5', has_updated: true }]);
  });

  it('creates outbox with status, retries and next_attempt_at, and a partial index for the dispatcher', async () => {
    expect(await columns(db, 'public', 'outbox')).toEqual({
      id: 'bigint not null',
      aggregate_id: 'text not null',
      // 0002: what the postgres_outbox input reads
      aggregate_type: 'text not null',
      event_type: 'text not null',
      payload: 'jsonb not null',
      status: 'text not null',
      created_at: 'timestamp with time zone not null',
      published_at: 'timestamp with time zone',
      confirmed_at: 'timestamp with time zone',
      error_message: 'text',
      retry_count: 'integer not null',
      next_attempt_at: 'timestamp with time zone not null',
    });
    const { rows } = await db.query("INSERT INTO outbox (aggregate_id, payload) VALUES ('device-001', '{\"indoor_target_temp\": 21.5}') RETURNING id, status, retry_count, next_attempt_at <= now() AS due");
    expect(rows[0]).toMatchObject({ status: 'pending', retry_count: 0, due: true });
    for (const s of ['published', 'confirmed', 'failed', 'timed_out', 'superseded']) {
      expect(await sqlState(db, 'UPDATE outbox SET status = $1 WHERE id = $2', [s, rows[0].id]), s).toBeUndefined();
    }
    expect(await sqlState(db, "UPDATE outbox SET status = 'sent'")).toBe('23514');
    const idx = await indexes(db, 'public', 'outbox');
    expect(idx.outbox_dispatch_idx).toMatch(/\(next_attempt_at, id\) WHERE \(status = 'pending'::text\)/);
    expect(idx.outbox_published_idx).toMatch(/\(aggregate_id, published_at DESC\) WHERE \(status = 'published'::text\)/);
  });
});

describe('migrations/services on an empty database', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await fresh();
    const r = await migrateDatabase({ database: 'services', url: db.url });
    expect(r.files.map((f) => f.name)).toEqual(readdirSync(join(DEFAULT_MIGRATIONS_DIR, 'services')).sort());
    expect(new Set(r.files.map((f) => f.action))).toEqual(new Set(['applied']));
  });

  const common = {
    id: 'uuid not null',
    aggregate_id: 'text not null',
    aggregate_type: 'text not null',
    event_type: 'text not null',
    payload: 'jsonb not null',
    created_at: 'timestamp with time zone not null',
  };
  const sources = [
    { schema: 'whatsapp_handler', table: 'outbox_events', marker: { published_at: 'timestamp with time zone' }, correlation: true, where: 'published_at IS NULL' },
    { schema: 'darwin_ingestor', table: 'outbox_events', marker: { published_at: 'timestamp with time zone' }, correlation: false, where: 'published_at IS NULL' },
    { schema: 'journey_matcher', table: 'outbox', marker: { processed_at: 'timestamp with time zone' }, correlation: true, where: 'processed_at IS NULL' },
    { schema: 'data_retention', table: 'outbox', marker: { published: 'boolean not null' }, correlation: false, where: 'NOT published' },
  ];

  for (const s of sources) {
    it(`${s.schema}.${s.table}: the outbox columns, its marker, correlation_id ${s.correlation ? 'present' : 'absent'}, an index on unpublished rows`, async () => {
      expect(await columns(db, s.schema, s.table)).toEqual({ ...common, ...(s.correlation ? { correlation_id: 'text' } : {}), ...s.marker });
      expect(await primaryKey(db, s.schema, s.table)).toEqual(['id']);
      // Unpublished rows: oldest first (0001), and per aggregate oldest first (0003, the relay's claim).
      const idx = Object.values(await indexes(db, s.schema, s.table)).filter((d) => / WHERE /.test(d)).sort();
      expect(idx).toHaveLength(2);
      expect(idx.some((d) => / \(created_at, id\) WHERE/.test(d))).toBe(true);
      expect(idx.some((d) => /\(aggregate_id, created_at, id\) WHERE/.test(d))).toBe(true);
      // Defaults: id, created_at and the marker; a new row is unpublished.
      const { rows } = await db.query(
        `INSERT INTO ${s.schema}.${s.table} (aggregate_id, aggregate_type, event_type, payload) VALUES ('agg-1', 'journey', 'journey.created', '{}') RETURNING id, created_at`,
      );
      expect(rows[0].id).toMatch(/^[0-9a-f-]{36}$/);
      const { rows: unpublished } = await db.query(`SELECT count(*)::int AS n FROM ${s.schema}.${s.table} WHERE ${s.where}`);
      expect(unpublished[0].n).toBe(1);
    });
  }

  it('relay_state keeps per source the last poll, the total published and the last error', async () => {
    expect(await columns(db, 'public', 'relay_state')).toEqual({
      source: 'text not null',
      last_poll_at: 'timestamp with time zone',
      published_total: 'bigint not null',
      last_error: 'text',
      updated_at: 'timestamp with time zone not null',
    });
    expect(await primaryKey(db, 'public', 'relay_state')).toEqual(['source']);
  });
});
