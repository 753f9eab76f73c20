/**
 * End-to-end tests of pipelines/settings-api.yaml as it is: `runner start` as a child process
 * against a fresh database migrated with migrations/heatpump_settings (plain mode), listening on a
 * free port (SETTINGS_API_PORT=0, the bound port read from the `http_server listening` log line).
 *
 * Waits are on events (log lines, responses) or on database state (a backend waiting for a lock);
 * the timeout path holds a row lock so that the PATCH cannot finish before the 504.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { compileNamedSchema } from '../../operators/core/validate.ts';
import { migrateDatabase } from '../../operators/postgres/migrate.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.ts';
import { ROOT, RunnerProcess, within } from './mqtt-bridge-harness.ts';

const PIPELINE = join(ROOT, 'pipelines/settings-api.yaml');
const SETTINGS_PATH = '/api/v1/heatpump/settings';
const SETTINGS_KEYS = ['device_id', 'indoor_target_temp', 'mode', 'hot_water_target_temp', 'heating_curve', 'heating_curve_offset', 'eco_mode', 'reported_at', 'updated_at'];

let db: TestDatabase;
const runners: RunnerProcess[] = [];

async function startApi(env: Record<string, string> = {}): Promise<{ runner: RunnerProcess; base: string }> {
  const runner = new RunnerProcess(PIPELINE, `settings-api-${runners.length}`, {
    HEATPUMP_SETTINGS_DATABASE_URL: db.url,
    SETTINGS_API_PORT: '0',
    SETTINGS_API_ADDRESS: '127.0.0.1',
    ...env,
  });
  runners.push(runner);
  const line = await within(30_000, () => `no http_server listening line; exited: ${!runner.running}`, runner.logged((l) => l.msg === 'http_server listening'));
  await within(
    30_000,
    () => 'the postgres processors did not get ready',
    Promise.all(['patch_settings', 'get_settings', 'get_outbox'].map((c) => runner.logged((l) => l.msg === 'postgres processor ready' && l.component === c))),
  );
  return { runner, base: `http://${String(line.address)}` };
}

async function call(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: any = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    /* not JSON: keep the text */
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

const patch = (base: string, device: string, body: unknown, headers?: Record<string, string>) => call(base, 'PATCH', `${SETTINGS_PATH}/${device}`, body, headers);

async function addDevice(id: string, values: Record<string, unknown> = { indoor_target_temp: 20, mode: 1 }) {
  const cols = Object.keys(values);
  await db.query(`INSERT INTO settings (device_id, ${cols.join(', ')}) VALUES ($1, ${cols.map((_, i) => `$${i + 2}`).join(', ')})`, [id, ...Object.values(values)]);
}

const outboxOf = async (device: string) => (await db.query('SELECT id::int AS id, aggregate_id, payload, status FROM outbox WHERE aggregate_id = $1 ORDER BY id', [device])).rows;
const settingsOf = async (device: string) => (await db.query('SELECT indoor_target_temp::float8 AS indoor_target_temp, mode, eco_mode, updated_at FROM settings WHERE device_id = $1', [device])).rows[0];

/** Resolves once some backend of the test database waits for a lock (the PATCH is blocked). */
async function someoneWaitsForALock(): Promise<void> {
  await vi.waitFor(
    async () => {
      const { rows } = await db.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", [db.name]);
      expect(rows[0].n).toBeGreaterThan(0);
    },
    { timeout: 20_000 },
  );
}

/** A connection holding `SELECT ... FOR UPDATE` on a settings row until released. */
async function lockDevice(device: string): Promise<{ release(): Promise<void> }> {
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  await c.query('BEGIN');
  await c.query('SELECT 1 FROM settings WHERE device_id = $1 FOR UPDATE', [device]);
  return {
    async release() {
      await c.query('COMMIT');
      await c.end();
    },
  };
}

beforeAll(async () => {
  db = await createTestDatabase('e2e_settings_api');
  await migrateDatabase({ database: 'heatpump_settings', url: db.url, mode: 'plain' });
});

afterAll(async () => {
  for (const r of runners) await r.stop();
  await db?.drop();
});

describe('pipelines/settings-api.yaml', () => {
  let base: string;
  beforeAll(async () => {
    ({ base } = await startApi());
  });

  it('PATCH answers 202 with the settings, outbox_id and outbox_status pending; settings and outbox row are written', async () => {
    await addDevice('dev-patch', { indoor_target_temp: 20, mode: 1, hot_water_target_temp: 50 });
    const res = await patch(base, 'dev-patch', { indoor_target_temp: 21.5, eco_mode: true });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(Object.keys(res.body).sort()).toEqual([...SETTINGS_KEYS, 'outbox_id', 'outbox_status'].sort());
    expect(res.body).toMatchObject({ device_id: 'dev-patch', indoor_target_temp: 21.5, eco_mode: true, mode: 1, hot_water_target_temp: 50, heating_curve: null, outbox_status: 'pending' });
    expect(Number.isInteger(res.body.outbox_id)).toBe(true);

    expect(await settingsOf('dev-patch')).toMatchObject({ indoor_target_temp: 21.5, eco_mode: true, mode: 1 });
    const outbox = await outboxOf('dev-patch');
    expect(outbox).toEqual([{ id: res.body.outbox_id, aggregate_id: 'dev-patch', status: 'pending', payload: { outbox_id: res.body.outbox_id, device_id: 'dev-patch', settings: { indoor_target_temp: 21.5, eco_mode: true } } }]);
    // The payload is the command the dispatcher sends as it is.
    const command = compileNamedSchema(join(ROOT, 'schemas'), 'heatpump-command');
    expect(command(outbox[0]!.payload), JSON.stringify(command.errors)).toBe(true);
  });

  it('PATCH with application/merge-patch+json is accepted too', async () => {
    await addDevice('dev-merge');
    const res = await patch(base, 'dev-merge', { mode: 3 }, { 'content-type': 'application/merge-patch+json' });
    expect(res.status).toBe(202);
    expect(res.body.mode).toBe(3);
  });

  it('400 lists every problem of the body (15.3 and mode 7 both), and nothing is written', async () => {
    await addDevice('dev-invalid');
    const before = await settingsOf('dev-invalid');
    const res = await patch(base, 'dev-invalid', { indoor_target_temp: 15.3, mode: 7, hot_water_target_temp: 80 });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid request body');
    expect(res.body.problems).toEqual(expect.arrayContaining(['/indoor_target_temp must be multiple of 0.5', '/mode must be <= 3', '/hot_water_target_temp must be <= 65']));
    expect(res.body.problems).toHaveLength(3);
    expect(res.body.request_id).toBe(res.headers.get('x-request-id'));
    expect(await settingsOf('dev-invalid')).toEqual(before);
    expect(await outboxOf('dev-invalid')).toEqual([]);
  });

  it('400 for an unknown field, an empty object, and a wrong type, each named', async () => {
    await addDevice('dev-unknown');
    const unknown = await patch(base, 'dev-unknown', { indoor_target_temp: 21, turbo: true });
    expect(unknown.status).toBe(400);
    expect(unknown.body.problems).toEqual(['/ must NOT have additional properties (turbo)']);
    const empty = await patch(base, 'dev-unknown', {});
    expect(empty.status).toBe(400);
    expect(empty.body.problems).toEqual(['/ must NOT have fewer than 1 properties']);
    const wrongType = await patch(base, 'dev-unknown', { eco_mode: 'yes', mode: 1.5 });
    expect(wrongType.status).toBe(400);
    expect(wrongType.body.problems).toEqual(expect.arrayContaining(['/eco_mode must be boolean', '/mode must be integer']));
    expect(await outboxOf('dev-unknown')).toEqual([]);
  });

  it('404 for an unknown device (PATCH and GET); nothing is queued', async () => {
    const p = await patch(base, 'no-such-device', { mode: 2 });
    expect(p.status).toBe(404);
    expect(p.body.error).toBe('device no-such-device not found');
    const g = await call(base, 'GET', `${SETTINGS_PATH}/no-such-device`);
    expect(g.status).toBe(404);
    expect(await outboxOf('no-such-device')).toEqual([]);
  });

  it('GET settings answers the row; GET outbox/{id} answers the entry; unknown or non-numeric ids 404', async () => {
    await addDevice('dev-get', { indoor_target_temp: 22, mode: 2, heating_curve: 0.6, heating_curve_offset: -1.5, eco_mode: false });
    const g = await call(base, 'GET', `${SETTINGS_PATH}/dev-get`);
    expect(g.status).toBe(200);
    expect(Object.keys(g.body)).toEqual(SETTINGS_KEYS);
    expect(g.body).toMatchObject({ device_id: 'dev-get', indoor_target_temp: 22, mode: 2, heating_curve: 0.6, heating_curve_offset: -1.5, eco_mode: false, hot_water_target_temp: null, reported_at: null });
    expect(Number.isNaN(Date.parse(g.body.updated_at))).toBe(false);

    const p = await patch(base, 'dev-get', { heating_curve: 0.8 });
    expect(p.status).toBe(202);
    const o = await call(base, 'GET', `${SETTINGS_PATH}/outbox/${p.body.outbox_id}`);
    expect(o.status).toBe(200);
    expect(Object.keys(o.body)).toEqual(['id', 'status', 'created_at', 'published_at', 'confirmed_at', 'error_message', 'retry_count']);
    expect(o.body).toMatchObject({ id: p.body.outbox_id, status: 'pending', published_at: null, confirmed_at: null, error_message: null, retry_count: 0 });
    expect(Number.isNaN(Date.parse(o.body.created_at))).toBe(false);

    expect((await call(base, 'GET', `${SETTINGS_PATH}/outbox/999999999`)).status).toBe(404);
    const nonNumeric = await call(base, 'GET', `${SETTINGS_PATH}/outbox/abc`);
    expect(nonNumeric.status).toBe(404);
    expect(nonNumeric.body.error).toBe('outbox entry abc not found');
  });

  it('a malformed JSON body answers 400 without entering the pipeline; other content types 415; unknown paths 404; other methods 405', async () => {
    await addDevice('dev-malformed');
    const bad = await patch(base, 'dev-malformed', '{"mode": ');
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatch(/not valid JSON/);
    expect((await patch(base, 'dev-malformed', 'mode=1', { 'content-type': 'text/plain' })).status).toBe(415);
    expect(await outboxOf('dev-malformed')).toEqual([]);

    expect((await call(base, 'GET', '/api/v1/heatpump/nothing-here')).status).toBe(404);
    const del = await call(base, 'DELETE', `${SETTINGS_PATH}/dev-malformed`);
    expect(del.status).toBe(405);
    expect(del.headers.get('allow')).toBe('PATCH, GET');
  });

  it('serves the checked-in OpenAPI document', async () => {
    const res = await call(base, 'GET', '/api/v1/openapi.json');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.body).toEqual(JSON.parse(readFileSync(join(ROOT, 'schemas/settings-api.openapi.json'), 'utf8')));
  });

  it('a refused outbox INSERT (inside settings_patch) leaves neither the settings change nor an outbox row', async () => {
    await addDevice('dev-atomic', { indoor_target_temp: 20, mode: 1 });
    const before = await settingsOf('dev-atomic');
    // The settings UPDATE succeeds, then the database refuses the outbox row of this device.
    await db.query("ALTER TABLE outbox ADD CONSTRAINT test_refuse_dev_atomic CHECK (aggregate_id <> 'dev-atomic')");
    try {
      const res = await patch(base, 'dev-atomic', { indoor_target_temp: 25 });
      expect(res.status).toBe(422);
      expect(res.body.error).toMatch(/test_refuse_dev_atomic/);
    } finally {
      await db.query('ALTER TABLE outbox DROP CONSTRAINT test_refuse_dev_atomic');
    }
    expect(await settingsOf('dev-atomic')).toEqual(before);
    expect(await outboxOf('dev-atomic')).toEqual([]);
  });

  it('concurrent PATCHes of one setting: every one is queued, only the newest stays pending, the row holds its value', async () => {
    await addDevice('dev-race');
    const temps = [18, 18.5, 19, 19.5, 20, 20.5, 21, 21.5];
    const answers = await Promise.all(temps.map((t) => patch(base, 'dev-race', { indoor_target_temp: t })));
    expect(answers.map((a) => a.status)).toEqual(temps.map(() => 202));
    const ids = answers.map((a) => a.body.outbox_id as number);
    expect(new Set(ids).size).toBe(temps.length);

    const rows = await outboxOf('dev-race');
    expect(rows.map((r) => r.id).sort((a, b) => a - b)).toEqual([...ids].sort((a, b) => a - b));
    const newest = rows[rows.length - 1]!;
    expect(rows.filter((r) => r.status === 'pending').map((r) => r.id)).toEqual([newest.id]);
    expect(rows.filter((r) => r.status === 'superseded')).toHaveLength(temps.length - 1);
    // The transactions ran one after another (row lock): the row holds the newest command's value.
    expect((await settingsOf('dev-race')).indoor_target_temp).toBe(newest.payload.settings.indoor_target_temp);

    // A command for another setting does not supersede the pending one.
    const mode = await patch(base, 'dev-race', { mode: 0 });
    expect(mode.status).toBe(202);
    const after = await outboxOf('dev-race');
    expect(after.filter((r) => r.status === 'pending').map((r) => r.id)).toEqual([newest.id, mode.body.outbox_id]);
    // One covering both fields supersedes both.
    const both = await patch(base, 'dev-race', { mode: 1, indoor_target_temp: 22 });
    const last = await outboxOf('dev-race');
    expect(last.filter((r) => r.status === 'pending').map((r) => r.id)).toEqual([both.body.outbox_id]);
  });
});

describe('pipelines/settings-api.yaml: Idempotency-Key', () => {
  let base: string;
  beforeAll(async () => {
    ({ base } = await startApi());
  });
  const keyRow = async (key: string) => (await db.query('SELECT request, outbox_id::int AS outbox_id, expires_at > now() + interval \'23 hours\' AS ttl_ok FROM settings_idempotency_keys WHERE key = $1', [key])).rows[0];

  it('the same key with the same body answers the original 202 (same outbox_id) without a second command', async () => {
    await addDevice('dev-idem');
    const first = await patch(base, 'dev-idem', { indoor_target_temp: 22 }, { 'idempotency-key': 'idem-1' });
    expect(first.status).toBe(202);
    // A change in between (another key) does not change what the repeat answers.
    const other = await patch(base, 'dev-idem', { mode: 2 }, { 'idempotency-key': 'idem-2' });
    expect(other.status).toBe(202);
    const repeat = await patch(base, 'dev-idem', { indoor_target_temp: 22 }, { 'idempotency-key': 'idem-1' });
    expect(repeat.status).toBe(202);
    expect(repeat.body).toEqual(first.body);
    // Same JSON written differently (key order, 22 vs 22.0) is the same request.
    const reordered = await patch(base, 'dev-idem', '{"indoor_target_temp": 22.0}', { 'idempotency-key': 'idem-1' });
    expect(reordered.body.outbox_id).toBe(first.body.outbox_id);
    expect((await outboxOf('dev-idem')).map((r) => r.id)).toEqual([first.body.outbox_id, other.body.outbox_id]);
    expect(await keyRow('idem-1')).toEqual({ request: { device_id: 'dev-idem', settings: { indoor_target_temp: 22 } }, outbox_id: first.body.outbox_id, ttl_ok: true });
    // Without a key every PATCH is a new command.
    const a = await patch(base, 'dev-idem', { indoor_target_temp: 22 });
    const b = await patch(base, 'dev-idem', { indoor_target_temp: 22 });
    expect(a.body.outbox_id).not.toBe(b.body.outbox_id);
  });

  it('the same key with another body or another device answers 422 and changes nothing', async () => {
    await addDevice('dev-idem-a');
    await addDevice('dev-idem-b');
    const first = await patch(base, 'dev-idem-a', { mode: 2 }, { 'idempotency-key': 'idem-3' });
    expect(first.status).toBe(202);
    const before = { a: await settingsOf('dev-idem-a'), b: await settingsOf('dev-idem-b') };
    const otherBody = await patch(base, 'dev-idem-a', { mode: 3 }, { 'idempotency-key': 'idem-3' });
    expect(otherBody.status).toBe(422);
    expect(otherBody.body.error).toMatch(/Idempotency-Key idem-3 was already used for another request/);
    const otherDevice = await patch(base, 'dev-idem-b', { mode: 2 }, { 'idempotency-key': 'idem-3' });
    expect(otherDevice.status).toBe(422);
    expect({ a: await settingsOf('dev-idem-a'), b: await settingsOf('dev-idem-b') }).toEqual(before);
    expect((await outboxOf('dev-idem-a')).map((r) => r.id)).toEqual([first.body.outbox_id]);
    expect(await outboxOf('dev-idem-b')).toEqual([]);
    // A key longer than 255 characters is refused too.
    const long = await patch(base, 'dev-idem-b', { mode: 2 }, { 'idempotency-key': 'k'.repeat(256) });
    expect(long.status).toBe(422);
    expect(await outboxOf('dev-idem-b')).toEqual([]);
  });

  it('concurrent requests with one key: all answer the same command, one row', async () => {
    await addDevice('dev-idem-race');
    const answers = await Promise.all(Array.from({ length: 8 }, () => patch(base, 'dev-idem-race', { hot_water_target_temp: 55 }, { 'idempotency-key': 'idem-race' })));
    expect(answers.map((a) => a.status)).toEqual(answers.map(() => 202));
    expect(new Set(answers.map((a) => a.body.outbox_id)).size).toBe(1);
    expect((await outboxOf('dev-idem-race')).map((r) => r.id)).toEqual([answers[0]!.body.outbox_id]);
  });

  it('a rejected request (unknown device) keeps no key: the same key works once the device exists', async () => {
    const missing = await patch(base, 'dev-idem-late', { mode: 1 }, { 'idempotency-key': 'idem-late' });
    expect(missing.status).toBe(404);
    expect(await keyRow('idem-late')).toBeUndefined();
    await addDevice('dev-idem-late');
    const ok = await patch(base, 'dev-idem-late', { mode: 1 }, { 'idempotency-key': 'idem-late' });
    expect(ok.status).toBe(202);
  });

  it('an expired key is a new key; later keyed PATCHes delete expired ones', async () => {
    await addDevice('dev-idem-old');
    const first = await patch(base, 'dev-idem-old', { mode: 1 }, { 'idempotency-key': 'idem-old' });
    await db.query("UPDATE settings_idempotency_keys SET expires_at = now() - interval '1 s' WHERE key = $1", ['idem-old']);
    const again = await patch(base, 'dev-idem-old', { mode: 1 }, { 'idempotency-key': 'idem-old' });
    expect(again.status).toBe(202);
    expect(again.body.outbox_id).not.toBe(first.body.outbox_id);
    expect((await keyRow('idem-old')).outbox_id).toBe(again.body.outbox_id);

    await db.query("INSERT INTO settings_idempotency_keys (key, request, expires_at) SELECT 'gone-' || g, '{}', now() - interval '1 h' FROM generate_series(1, 3) g");
    await patch(base, 'dev-idem-old', { mode: 2 }, { 'idempotency-key': 'idem-cleanup' });
    expect((await db.query("SELECT count(*)::int AS n FROM settings_idempotency_keys WHERE key LIKE 'gone-%'")).rows[0].n).toBe(0);
  });
});

describe('settings_patch_batch (the PATCH step with batch_size)', () => {
  it('SETTINGS_API_PATCH_BATCH=1 (one PATCH per transaction) answers as the batched default does', async () => {
    const { base } = await startApi({ SETTINGS_API_PATCH_BATCH: '1' });
    await addDevice('dev-batch-one');
    const res = await patch(base, 'dev-batch-one', { mode: 3 }, { 'idempotency-key': 'one-per-tx' });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    expect((await patch(base, 'dev-batch-one', { mode: 3 }, { 'idempotency-key': 'one-per-tx' })).body).toEqual(res.body);
    expect((await patch(base, 'no-such-device', { mode: 3 })).status).toBe(404);
    expect((await outboxOf('dev-batch-one')).map((r) => r.id)).toEqual([res.body.outbox_id]);
  });

  it('one call for several requests: refused ones (unknown device, reused key) leave nothing, the others commit; same device twice in order', async () => {
    await addDevice('dev-batch-a');
    await addDevice('dev-batch-b');
    await db.query("SELECT settings_patch('dev-batch-b', '{\"mode\": 2}', 'batch-used')");
    const { rows } = await db.query(
      `SELECT batch_index, answer, error_code, error FROM settings_patch_batch($1::text[], $2::jsonb[], $3::text[]) ORDER BY batch_index`,
      [
        ['dev-batch-a', 'no-such-device', 'dev-batch-b', 'dev-batch-a'],
        [{ indoor_target_temp: 21 }, { mode: 1 }, { mode: 3 }, { indoor_target_temp: 22 }].map((b) => JSON.stringify(b)),
        [null, 'batch-k2', 'batch-used', 'batch-k4'],
      ],
    );
    expect(rows.map((r) => [r.batch_index, r.error_code])).toEqual([[1, null], [2, 'NOT_FOUND'], [3, 'WRITE_REJECTED'], [4, null]]);
    expect(rows[1].error).toBe('device no-such-device not found');
    expect(rows[2].error).toMatch(/Idempotency-Key batch-used was already used for another request/);
    const a = await outboxOf('dev-batch-a');
    expect(a.map((r) => [r.id, r.status])).toEqual([[rows[0].answer.outbox_id, 'superseded'], [rows[3].answer.outbox_id, 'pending']]);
    expect((await settingsOf('dev-batch-a')).indoor_target_temp).toBe(22);
    expect((await outboxOf('dev-batch-b')).map((r) => r.payload.settings)).toEqual([{ mode: 2 }]);
    const keys = (await db.query("SELECT key FROM settings_idempotency_keys WHERE key LIKE 'batch-%' ORDER BY key")).rows.map((r) => r.key);
    expect(keys).toEqual(['batch-k4', 'batch-used']);
  });

  it('two calls with the same devices in opposite order queue behind each other instead of deadlocking', async () => {
    // Two batches in flight at once (the step's connections) can hold requests for the same devices
    // in any order. A holds dev-order-x; B (y then x) must wait for x without holding y, so that A
    // can still take y. Taken in arrival order, B would hold y: a deadlock, found only after
    // deadlock_timeout, one batch aborted.
    await addDevice('dev-order-x');
    await addDevice('dev-order-y');
    const a = new pg.Client({ connectionString: db.url });
    const b = new pg.Client({ connectionString: db.url });
    await a.connect();
    await b.connect();
    try {
      await a.query('BEGIN');
      await a.query(`SELECT * FROM settings_patch_batch(ARRAY['dev-order-x'], ARRAY['{"mode": 1}'::jsonb], ARRAY[NULL::text])`);
      const bCall = b.query(`SELECT batch_index, error_code FROM settings_patch_batch(ARRAY['dev-order-y', 'dev-order-x'], ARRAY['{"mode": 2}'::jsonb, '{"mode": 2}'::jsonb], ARRAY[NULL::text, NULL::text]) ORDER BY batch_index`);
      await someoneWaitsForALock();
      // A takes y: free, because B waits for x before it touches y.
      const second = await a.query(`SELECT batch_index, error_code FROM settings_patch_batch(ARRAY['dev-order-y'], ARRAY['{"mode": 3}'::jsonb], ARRAY[NULL::text])`);
      expect(second.rows).toEqual([{ batch_index: 1, error_code: null }]);
      await a.query('COMMIT');
      expect((await bCall).rows).toEqual([{ batch_index: 1, error_code: null }, { batch_index: 2, error_code: null }]);
    } finally {
      await a.end();
      await b.end();
    }
    // B ran after A: its values are the last ones.
    expect((await outboxOf('dev-order-y')).map((r) => r.payload.settings)).toEqual([{ mode: 3 }, { mode: 2 }]);
    expect((await settingsOf('dev-order-x')).mode).toBe(2);
    expect((await settingsOf('dev-order-y')).mode).toBe(2);
  });
});

describe('pipelines/settings-api.yaml: timeout and shutdown', () => {
  it('504 when the PATCH does not commit within its deadline, and it never takes effect later', async () => {
    const { base } = await startApi({ SETTINGS_API_DEADLINE: '300ms' });
    await addDevice('dev-slow', { indoor_target_temp: 20, mode: 1 });
    const before = await settingsOf('dev-slow');
    const lock = await lockDevice('dev-slow');
    let res;
    try {
      // settings_patch waits for the row lock, held until the answer has arrived.
      res = await patch(base, 'dev-slow', { indoor_target_temp: 23 }, { 'idempotency-key': 'slow-1' });
      // The statement was cancelled, not left waiting: nobody of the API waits for the lock now.
      const { rows } = await db.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", [db.name]);
      expect(rows[0].n).toBe(0);
    } finally {
      await lock.release();
    }
    expect(res.status).toBe(504);
    expect(res.body).toMatchObject({ outcome: 'rolled_back', request_id: res.headers.get('x-request-id') });
    expect(res.body.error).toMatch(/rolled back; nothing was changed/);
    // The lock is free now: nothing of the PATCH is there, and nothing retries it.
    expect(await settingsOf('dev-slow')).toEqual(before);
    expect(await outboxOf('dev-slow')).toEqual([]);
    expect((await db.query('SELECT count(*)::int AS n FROM settings_idempotency_keys WHERE key = $1', ['slow-1'])).rows[0].n).toBe(0);
    // The same request (same key) again, now unblocked, is carried out once.
    const again = await patch(base, 'dev-slow', { indoor_target_temp: 23 }, { 'idempotency-key': 'slow-1' });
    expect(again.status).toBe(202);
    expect((await outboxOf('dev-slow')).map((r) => r.id)).toEqual([again.body.outbox_id]);
  });

  it('the server timeout (a backstop, longer than the deadline) answers 202 with outcome unknown, not 504: the change may still land', async () => {
    const { runner, base } = await startApi({ SETTINGS_API_TIMEOUT: '300ms', SETTINGS_API_DEADLINE: '60s' });
    await addDevice('dev-backstop', { indoor_target_temp: 20, mode: 1 });
    const lock = await lockDevice('dev-backstop');
    let res;
    try {
      res = await patch(base, 'dev-backstop', { indoor_target_temp: 24 });
    } finally {
      await lock.release();
    }
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ outcome: 'unknown' });
    expect(res.body.outbox_id).toBeUndefined();
    await within(20_000, () => 'the late answer was not logged', runner.logged((l) => String(l.msg).includes('no longer waiting')));
    expect((await settingsOf('dev-backstop')).indoor_target_temp).toBe(24);
    expect((await outboxOf('dev-backstop')).map((r) => r.status)).toEqual(['pending']);
  });

  it('on SIGTERM stops accepting, answers the request in progress (Connection: close) and exits 0', async () => {
    const { runner, base } = await startApi();
    await addDevice('dev-stop', { indoor_target_temp: 20, mode: 1 });
    const lock = await lockDevice('dev-stop');
    const inFlight = patch(base, 'dev-stop', { indoor_target_temp: 24 });
    try {
      await someoneWaitsForALock();
      runner.child.kill('SIGTERM');
      await within(20_000, () => 'no stopping line', runner.logged((l) => l.msg.startsWith('http_server stopping')));
      // No new requests: the listener is closed (connection refused) or the server says 503.
      const late = await fetch(`${base}${SETTINGS_PATH}/dev-stop`).then(
        (r) => r.status,
        () => 'refused',
      );
      expect([503, 'refused']).toContain(late);
    } finally {
      await lock.release();
    }
    const res = await inFlight;
    expect(res.status).toBe(202);
    expect(res.body.indoor_target_temp).toBe(24);
    expect(res.headers.get('connection')).toBe('close');
    expect((await runner.exited).code).toBe(0);
  });
});
