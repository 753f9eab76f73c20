/**
 * The settings API's PATCH transaction alone, straight against PostgreSQL (no runner, no HTTP):
 * how many PATCHes a second the database does for each way of writing it. Exploration for issue
 * 6 (where does the API's limit come from?); run it by hand, under the bench lock.
 *
 *   eval "$(bash scripts/stack env)"
 *   flock /tmp/runner-bench.lock node --import tsx bench/command-loop/db-patch.ts --connections 16 --duration 10
 *
 * A fresh database (random name, dropped at the end) migrated with migrations/heatpump_settings,
 * settings rows device-001 .. device-NNN. Each variant runs --duration seconds with --connections
 * connections, connection k patching devices k, k + connections, ... (no two wait for the same
 * row lock), indoor_target_temp changing every time (each PATCH supersedes the device's previous
 * pending command, as in the API throughput phase of run.ts). With --rounds N the variants take
 * turns N times (A B C A B C ...) so that a change of the machine's load hits them alike:
 *
 *   three        BEGIN; UPDATE settings; INSERT outbox; UPDATE outbox (supersede); COMMIT (5 round trips, the pipeline before session 4)
 *   fn-txn       BEGIN; SET LOCAL statement_timeout; SELECT settings_patch(...); COMMIT (3 round trips, the shipped pipeline)
 *   fn           SELECT settings_patch(...) alone (1 round trip, its own transaction)
 *   fn-key       fn with an Idempotency-Key per PATCH (the key table written too)
 *   fn-nonotify  fn with the NOTIFY triggers of outbox and settings_events disabled (what NOTIFY costs)
 */
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { migrateDatabase } from '../../operators/postgres/migrate.ts';
import { createTestDatabase } from '../../tests/helpers/postgres.ts';
import { machineInfo, uptime } from '../lib/proc.ts';

const { values: args } = parseArgs({
  options: {
    connections: { type: 'string', default: '16' },
    duration: { type: 'string', default: '10' },
    devices: { type: 'string', default: '100' },
    variants: { type: 'string', default: 'three,fn-txn,fn,fn-key,fn-nonotify' },
    rounds: { type: 'string', default: '1' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]);
  process.exit(0);
}
const CONNS = Number(args.connections);
const DURATION_MS = Number(args.duration) * 1000;
const DEVICES = Number(args.devices);
const deviceId = (i: number) => `device-${String(i + 1).padStart(3, '0')}`;
const valueFor = (j: number) => 21.5 + 0.5 * (j % 18);

const THREE = [
  `UPDATE settings AS s
      SET (indoor_target_temp, mode, hot_water_target_temp, heating_curve, heating_curve_offset, eco_mode, updated_at) =
          (SELECT p.indoor_target_temp, p.mode, p.hot_water_target_temp, p.heating_curve, p.heating_curve_offset, p.eco_mode, now()
             FROM jsonb_populate_record(s, $2::jsonb) AS p)
    WHERE s.device_id = $1
   RETURNING json_build_object('device_id', s.device_id, 'indoor_target_temp', s.indoor_target_temp, 'mode', s.mode,
     'hot_water_target_temp', s.hot_water_target_temp, 'heating_curve', s.heating_curve, 'heating_curve_offset', s.heating_curve_offset,
     'eco_mode', s.eco_mode, 'reported_at', s.reported_at, 'updated_at', s.updated_at) AS settings`,
  `INSERT INTO outbox (id, aggregate_id, payload)
   SELECT n.id, $1::text, jsonb_build_object('outbox_id', n.id, 'device_id', $1::text, 'settings', $2::jsonb)
     FROM (SELECT nextval(pg_get_serial_sequence('outbox', 'id')) AS id) AS n
   RETURNING to_jsonb(id) AS id, status`,
  `UPDATE outbox AS o SET status = 'superseded'
    WHERE o.aggregate_id = $1::text AND o.status = 'pending' AND o.id < $2::bigint
      AND ARRAY(SELECT jsonb_object_keys(o.payload -> 'settings')) <@ $3::text[]`,
];
const FN = 'SELECT settings_patch($1, $2::jsonb, $3, make_interval(secs => $4::float8)) AS answer';

async function patchOnce(c: pg.Client, variant: string, device: string, body: Record<string, unknown>, n: number): Promise<void> {
  if (variant === 'three') {
    await c.query('BEGIN');
    await c.query(THREE[0]!, [device, JSON.stringify(body)]);
    const o = await c.query(THREE[1]!, [device, JSON.stringify(body)]);
    await c.query(THREE[2]!, [device, o.rows[0].id, Object.keys(body)]);
    await c.query('COMMIT');
  } else if (variant === 'fn-txn') {
    await c.query('BEGIN; SET LOCAL statement_timeout = 4000');
    await c.query(FN, [device, JSON.stringify(body), null, 86400]);
    await c.query('COMMIT');
  } else {
    await c.query(FN, [device, JSON.stringify(body), variant === 'fn-key' ? `k-${process.pid}-${n}` : null, 86400]);
  }
}

async function run(url: string, variant: string) {
  const stop = Date.now() + DURATION_MS;
  let done = 0;
  await Promise.all(
    Array.from({ length: CONNS }, async (_, k) => {
      const c = new pg.Client({ connectionString: url });
      c.on('error', () => undefined); // a PostgreSQL restart by someone else: the query fails and says so
      await c.connect();
      let d = k % DEVICES;
      let j = 0;
      try {
        while (Date.now() < stop) {
          await patchOnce(c, variant, deviceId(d), { indoor_target_temp: valueFor(j++) }, k * 1_000_000 + j);
          d = (d + CONNS) % DEVICES;
          done++;
        }
      } finally {
        await c.end();
      }
    }),
  );
  return done / (DURATION_MS / 1000);
}

async function main() {
  const m = machineInfo();
  console.error(`machine ${m.nproc} cores (${m.cpu}), ${m.mem_gib} GiB, node ${m.node}`);
  const db = await createTestDatabase('bench_dbpatch');
  try {
    await migrateDatabase({ database: 'heatpump_settings', url: db.url, mode: 'plain' });
    await db.query('INSERT INTO settings (device_id, indoor_target_temp, mode) SELECT unnest($1::text[]), 21, 1', [Array.from({ length: DEVICES }, (_, i) => deviceId(i))]);
    const order = Array.from({ length: Number(args.rounds) }, () => args.variants!.split(',')).flat();
    const rates: Record<string, number[]> = {};
    for (const variant of order) {
      const notify = variant === 'fn-nonotify' ? 'DISABLE' : 'ENABLE';
      await db.query(`ALTER TABLE outbox ${notify} TRIGGER outbox_notify`);
      await db.query(`ALTER TABLE settings_events ${notify} TRIGGER settings_events_notify`);
      const before = uptime();
      const rate = await run(db.url, variant);
      (rates[variant] ??= []).push(Math.round(rate));
      console.log(`${variant.padEnd(12)} ${Math.round(rate)} PATCH/s (${CONNS} connections, ${DURATION_MS / 1000} s); before: ${before}; after: ${uptime()}`);
    }
    for (const [v, r] of Object.entries(rates)) console.log(`${v.padEnd(12)} ${r.join(' / ')} PATCH/s (median ${[...r].sort((a, b) => a - b)[Math.floor(r.length / 2)]})`);
  } finally {
    await db.drop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
