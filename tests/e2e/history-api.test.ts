/**
 * End-to-end tests of pipelines/history-api.yaml as it is: `runner start` as a child process
 * against a fresh database migrated with migrations/telemetry (plain mode), rows inserted by the
 * test, listening on a free port (HISTORY_API_PORT=0, read from the `http_server listening` line).
 *
 * Device hp-a has one reading a minute from 10:00 to 11:59 UTC with outdoor_temp = the minute's
 * number (0..119), so every bucket's average is known: 5 m bucket k -> 5k + 2, hour h -> 60h + 29.5.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestDatabase } from '../helpers/postgres.ts';
import { ROOT, RunnerProcess, within } from './mqtt-bridge-harness.ts';
import { migratedDatabase } from './sink-harness.ts';

const PATH = '/api/v1/heatpump/history';
const T0 = Date.parse('2026-01-15T10:00:00Z');
const iso = (minutes: number) => new Date(T0 + minutes * 60_000).toISOString();

let db: TestDatabase;
let runner: RunnerProcess;
let base: string;

async function history(query: Record<string, string | string[]>, headers: Record<string, string> = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) for (const one of [v].flat()) q.append(k, one);
  const res = await fetch(`${base}${PATH}?${q}`, { headers });
  return { status: res.status, headers: res.headers, body: (await res.json()) as any };
}

beforeAll(async () => {
  db = await migratedDatabase('telemetry');
  await db.query(
    `INSERT INTO heatpump (time, device_id, outdoor_temp, supply_temp, return_temp, indoor_temp, power_input, heat_output, compressor_on, indoor_target_temp)
     SELECT $1::timestamptz + i * INTERVAL '1 minute', 'hp-a', i, 40, 35, 21, 1000, 4000, i % 2, 21.5 FROM generate_series(0, 119) AS i`,
    [iso(0)],
  );
  await db.query(`INSERT INTO heatpump (time, device_id, outdoor_temp) SELECT $1::timestamptz + i * INTERVAL '1 minute', 'hp-b', -50 FROM generate_series(0, 119) AS i`, [iso(0)]);
  runner = new RunnerProcess(`${ROOT}pipelines/history-api.yaml`, 'history-api', {
    TELEMETRY_DATABASE_URL: db.url,
    HISTORY_API_PORT: '0',
    HISTORY_API_ADDRESS: '127.0.0.1',
    DASHBOARD_ORIGINS: 'http://dashboard.test:8090, http://127.0.0.1:*',
  });
  const line = await within(30_000, () => `no http_server listening line; exited: ${!runner.running}`, runner.logged((l) => l.msg === 'http_server listening'));
  await within(30_000, () => 'the postgres processors did not get ready', Promise.all(['history', 'history_hourly'].map((c) => runner.logged((l) => l.msg === 'postgres processor ready' && l.component === c))));
  base = `http://${String(line.address)}`;
});

afterAll(async () => {
  await runner?.stop();
  await db?.drop();
});

describe('pipelines/history-api.yaml', () => {
  it('without a bucket: the readings of the device in [start, end), oldest first, with every field', async () => {
    const res = await history({ device_id: 'hp-a', start: iso(10), end: iso(13) });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    expect(res.body).toMatchObject({ device_id: 'hp-a', start: '2026-01-15T10:10:00.000Z', end: '2026-01-15T10:13:00.000Z', bucket: null, source: 'heatpump', truncated: false });
    expect(res.body.points).toEqual([10, 11, 12].map((i) => ({
      time: iso(i),
      samples: 1,
      outdoor_temp: i,
      indoor_temp: 21,
      hot_water_temp: null,
      supply_temp: 40,
      return_temp: 35,
      power_input: 1000,
      heat_output: 4000,
      compressor_on: i % 2,
      indoor_target_temp: 21.5,
    })));
  });

  it('with a bucket: averages per bucket aligned to UTC, samples counted; a partial first bucket has fewer samples', async () => {
    const five = await history({ device_id: 'hp-a', start: iso(0), end: iso(30), bucket: '5m' });
    expect(five.status).toBe(200);
    expect(five.body.bucket).toBe('5m');
    expect(five.body.points.map((p: any) => [p.time, p.samples, p.outdoor_temp, p.supply_temp, p.compressor_on])).toEqual(
      [0, 1, 2, 3, 4, 5].map((k) => [iso(5 * k), 5, 5 * k + 2, 40, k % 2 === 0 ? 0.4 : 0.6]),
    );

    const hour = await history({ device_id: 'hp-a', start: iso(0), end: iso(120), bucket: '1h' });
    expect(hour.body.source).toBe('heatpump');
    expect(hour.body.points.map((p: any) => [p.time, p.samples, p.outdoor_temp])).toEqual([
      [iso(0), 60, 29.5],
      [iso(60), 60, 89.5],
    ]);

    // Start at 10:07: the 10:05 bucket holds 10:07-10:09 only.
    const partial = await history({ device_id: 'hp-a', start: iso(7), end: iso(15), bucket: '5m' });
    expect(partial.body.points.map((p: any) => [p.time, p.samples, p.outdoor_temp])).toEqual([
      [iso(5), 3, 8],
      [iso(10), 5, 12],
    ]);

    const day = await history({ device_id: 'hp-a', start: '2026-01-15T00:00:00Z', end: '2026-01-16T00:00:00Z', bucket: '1d' });
    expect(day.body.points).toEqual([expect.objectContaining({ time: '2026-01-15T00:00:00.000Z', samples: 120, outdoor_temp: 59.5 })]);
  });

  it('a device or range without readings answers an empty list; time zones in start/end are honoured', async () => {
    expect((await history({ device_id: 'nobody', start: iso(0), end: iso(60) })).body.points).toEqual([]);
    // 11:00+01:00 is 10:00Z.
    const res = await history({ device_id: 'hp-a', start: '2026-01-15T11:00:00+01:00', end: '2026-01-15T11:02:00+01:00' });
    expect(res.body.start).toBe(iso(0));
    expect(res.body.points.map((p: any) => p.outdoor_temp)).toEqual([0, 1]);
  });

  it('400 with every problem of the parameters', async () => {
    const missing = await history({});
    expect(missing.status).toBe(400);
    expect(missing.body.error).toBe('invalid query parameters');
    expect(missing.body.request_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(missing.body.problems).toEqual(
      expect.arrayContaining(["/ must have required property 'device_id'", "/ must have required property 'start'", "/ must have required property 'end'"]),
    );

    const bad = await history({ device_id: 'hp a', start: 'yesterday', end: '2026-01-15T10:00:00', bucket: '2m', limit: '5' });
    expect(bad.status).toBe(400);
    expect(bad.body.problems.sort()).toEqual(
      [
        '/ must NOT have additional properties (limit)',
        '/device_id must match pattern "^[A-Za-z0-9_.:-]{1,64}$"',
        '/start must match format "date-time"',
        '/end must match format "date-time"',
        '/bucket must be equal to one of the allowed values',
      ].sort(),
    );

    const repeated = await history({ device_id: ['hp-a', 'hp-b'], start: iso(0), end: iso(1) });
    expect(repeated.status).toBe(400);
    expect(repeated.body.problems).toEqual(['/device_id must be string']);
  });

  it('400 when end is not after start, the range is over 31 days, or the bucket gives more than 10000 points', async () => {
    const backwards = await history({ device_id: 'hp-a', start: iso(10), end: iso(10) });
    expect(backwards.status).toBe(400);
    expect(backwards.body).toMatchObject({ error: 'invalid query parameters', problems: ['end must be after start'] });

    const long = await history({ device_id: 'hp-a', start: '2026-01-01T00:00:00Z', end: '2026-02-01T00:00:01Z', bucket: '1h' });
    expect(long.status).toBe(400);
    expect(long.body.problems).toEqual(['the range from start to end must not be longer than 31 days']);
    // Exactly 31 days is allowed.
    expect((await history({ device_id: 'hp-a', start: '2026-01-01T00:00:00Z', end: '2026-02-01T00:00:00Z', bucket: '1h' })).status).toBe(200);

    const fine = await history({ device_id: 'hp-a', start: '2026-01-01T00:00:00Z', end: '2026-01-08T00:00:00Z', bucket: '1m' });
    expect(fine.status).toBe(400);
    expect(fine.body.problems).toEqual(['bucket 1m over this range gives 10080 points, more than 10000 (choose a larger bucket or a shorter range)']);
  });

  it('without a bucket at most 10000 readings, the oldest, with truncated: true', async () => {
    await db.query(`INSERT INTO heatpump (time, device_id, outdoor_temp) SELECT $1::timestamptz + i * INTERVAL '1 second', 'hp-many', i FROM generate_series(0, 10004) AS i`, [iso(0)]);
    const res = await history({ device_id: 'hp-many', start: iso(0), end: iso(1000) });
    expect(res.status).toBe(200);
    expect(res.body.truncated).toBe(true);
    expect(res.body.points).toHaveLength(10000);
    expect(res.body.points.at(-1)).toMatchObject({ outdoor_temp: 9999 });
    const all = await history({ device_id: 'hp-many', start: iso(0), end: iso(1000), bucket: '1d' });
    expect(all.body).toMatchObject({ truncated: false, points: [expect.objectContaining({ samples: 10005 })] });
  });

  it('CORS: an allowed origin gets a preflight answer and Access-Control-Allow-Origin; another origin does not', async () => {
    const pre = await fetch(`${base}${PATH}`, { method: 'OPTIONS', headers: { origin: 'http://dashboard.test:8090', 'access-control-request-method': 'GET' } });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('http://dashboard.test:8090');
    expect(pre.headers.get('access-control-allow-methods')).toBe('GET');
    const res = await history({ device_id: 'hp-a', start: iso(0), end: iso(1) }, { origin: 'http://127.0.0.1:5555' });
    expect(res.headers.get('access-control-allow-origin')).toBe('http://127.0.0.1:5555');
    const other = await history({ device_id: 'hp-a', start: iso(0), end: iso(1) }, { origin: 'http://elsewhere.test' });
    expect(other.status).toBe(200);
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    expect((await fetch(`${base}${PATH}`, { method: 'OPTIONS', headers: { origin: 'http://elsewhere.test', 'access-control-request-method': 'GET' } })).status).toBe(403);
    expect((await fetch(`${base}${PATH}`, { method: 'POST' })).status).toBe(405);
  });

  it('reads heatpump_hourly for buckets of whole hours once it exists (TimescaleDB), averages weighted by samples', async () => {
    // Plain PostgreSQL here: a view with the continuous aggregate's name and columns
    // (migrations/telemetry/0003) stands in for it; its averages are marked (+1000) so the answer
    // shows which source was read.
    await db.query(`
      CREATE VIEW heatpump_hourly AS
      SELECT date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket, device_id, count(*) AS samples,
             avg(outdoor_temp) + 1000 AS outdoor_temp_avg, avg(indoor_temp) AS indoor_temp_avg, avg(hot_water_temp) AS hot_water_temp_avg,
             avg(supply_temp) AS supply_temp_avg, avg(return_temp) AS return_temp_avg, avg(compressor_on) AS compressor_on_ratio,
             avg(power_input) AS power_input_avg, avg(heat_output) AS heat_output_avg, avg(indoor_target_temp) AS indoor_target_temp_avg
        FROM heatpump GROUP BY 1, 2`);
    try {
      const hour = await history({ device_id: 'hp-a', start: iso(0), end: iso(120), bucket: '1h' });
      expect(hour.status, JSON.stringify(hour.body)).toBe(200);
      expect(hour.body.source).toBe('heatpump_hourly');
      expect(hour.body.points.map((p: any) => [p.time, p.samples, p.outdoor_temp, p.supply_temp])).toEqual([
        [iso(0), 60, 1029.5, 40],
        [iso(60), 60, 1089.5, 40],
      ]);
      // 6 h and 1 d roll the hours up, weighted by their samples.
      const day = await history({ device_id: 'hp-a', start: '2026-01-15T00:00:00Z', end: '2026-01-16T00:00:00Z', bucket: '1d' });
      expect(day.body).toMatchObject({ source: 'heatpump_hourly', points: [expect.objectContaining({ time: '2026-01-15T00:00:00.000Z', samples: 120, outdoor_temp: 1059.5 })] });
      // Smaller buckets and raw readings still come from the table.
      const five = await history({ device_id: 'hp-a', start: iso(0), end: iso(5), bucket: '5m' });
      expect(five.body).toMatchObject({ source: 'heatpump', points: [expect.objectContaining({ outdoor_temp: 2 })] });
    } finally {
      await db.query('DROP VIEW heatpump_hourly');
    }
  });
});
