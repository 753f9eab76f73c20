/**
 * Observers of bench/command-loop/run.ts (not timed work of the runner):
 *
 * - `StageObserver`: where a command is on its way, as seen from outside the runner. An MQTT client
 *   of its own subscribes (QoS 0) to the benchmark's command topics (the dispatcher's publish, with
 *   the outbox id in the payload) and heat-pump telemetry topics (the simulator's answer); a Kafka
 *   consumer of its own reads the bridge's telemetry topic (the record's timestamp and when it was
 *   fetched). `stages()` then splits each confirmed command at every step it can find.
 * - `PgSampler`: pg_stat_activity of the benchmark's database every few ms (what the backends wait
 *   for), plus the database's commits and deadlocks and the server's WAL counters before and after.
 *
 * Every time is epoch milliseconds of this machine's clock, the one PostgreSQL uses too.
 */
import type { Kafka, Consumer } from 'kafkajs';
import mqtt from 'mqtt';
import pg from 'pg';

export const epochMs = () => performance.timeOrigin + performance.now();

interface Seen {
  at: number;
  value: number | undefined;
}
interface KafkaSeen extends Seen {
  ts: number;
}

/** Times at which each stage of a command happened; undefined where it was not seen. */
export interface CommandTimes {
  outboxId: number;
  device: string;
  value: number;
  sentAt: number;
  answeredAt?: number;
  createdAt?: number;
  publishedAt?: number;
  confirmedAt?: number;
}

export interface StageDurations {
  /** client: PATCH sent -> 202 received */
  api_answer?: number;
  /** outbox row created_at (transaction start) -> command on MQTT */
  dispatch?: number;
  /** command on MQTT -> the device's telemetry with the value on MQTT */
  device?: number;
  /** telemetry on MQTT -> Kafka record timestamp (the bridge) */
  bridge?: number;
  /** Kafka record timestamp -> confirmed_at (the confirm pipeline: fetch + transaction) */
  confirm?: number;
  /** command on MQTT -> published_at (PUBACK to the dispatcher, its mark committed) */
  mark_published?: number;
  /** created_at -> confirmed_at */
  total?: number;
}

export class StageObserver {
  private readonly commands = new Map<number, number>();
  private readonly telemetry = new Map<string, Seen[]>();
  private readonly records = new Map<string, KafkaSeen[]>();
  private constructor(
    private readonly client: mqtt.MqttClient,
    private readonly consumer: Consumer,
  ) {}

  static async start(opts: { mqttUrl: string; prefix: string; kafka: Kafka; topic: string; clientId: string }): Promise<StageObserver> {
    const client = await mqtt.connectAsync(opts.mqttUrl, { clientId: opts.clientId, clean: true, protocolVersion: 5, reconnectPeriod: 1000 });
    const consumer = opts.kafka.consumer({ groupId: `${opts.clientId}-observer`, maxWaitTimeInMs: 50 });
    const o = new StageObserver(client, consumer);
    client.on('message', (topic, payload) => {
      const at = epochMs();
      const rest = topic.slice(opts.prefix.length).split('/');
      try {
        const body = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
        if (rest[2] === 'command' && typeof body.outbox_id === 'number') {
          if (!o.commands.has(body.outbox_id)) o.commands.set(body.outbox_id, at);
        } else if (rest[2] === 'telemetry') {
          const v = typeof body.indoor_target_temp === 'number' ? body.indoor_target_temp : undefined;
          push(o.telemetry, rest[1]!, { at, value: v });
        }
      } catch {
        // not JSON: not ours to judge
      }
    });
    await client.subscribeAsync([`${opts.prefix}heatpump/+/command`, `${opts.prefix}heatpump/+/telemetry`], { qos: 0 });
    await consumer.connect();
    await consumer.subscribe({ topic: opts.topic, fromBeginning: false });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const at = epochMs();
        try {
          const body = JSON.parse(message.value?.toString('utf8') ?? 'null') as Record<string, unknown>;
          const device = typeof body.device_id === 'string' ? body.device_id : message.key?.toString('utf8');
          if (!device) return;
          push(o.records, device, { at, ts: Number(message.timestamp), value: typeof body.indoor_target_temp === 'number' ? body.indoor_target_temp : undefined });
        } catch {
          // ignore
        }
      },
    });
    return o;
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect().catch(() => undefined);
    await this.client.endAsync().catch(() => undefined);
  }

  /** The stages of one confirmed command. */
  stages(c: CommandTimes): StageDurations {
    const d: StageDurations = {};
    if (c.answeredAt !== undefined) d.api_answer = c.answeredAt - c.sentAt;
    if (c.createdAt !== undefined && c.confirmedAt !== undefined) d.total = c.confirmedAt - c.createdAt;
    const cmd = this.commands.get(c.outboxId);
    if (cmd === undefined) return d;
    if (c.createdAt !== undefined) d.dispatch = cmd - c.createdAt;
    if (c.publishedAt !== undefined) d.mark_published = c.publishedAt - cmd;
    const tel = (this.telemetry.get(c.device) ?? []).find((t) => t.at >= cmd && t.value === c.value);
    if (!tel) return d;
    d.device = tel.at - cmd;
    // The Kafka record of that telemetry: the first with the value whose timestamp is not before the MQTT message was seen (1 ms of clock granularity).
    const rec = (this.records.get(c.device) ?? []).find((r) => r.ts >= Math.floor(tel.at) - 1 && r.value === c.value);
    if (!rec) return d;
    d.bridge = rec.ts - tel.at;
    if (c.confirmedAt !== undefined) d.confirm = c.confirmedAt - rec.ts;
    return d;
  }
}

/**
 * Mosquitto's message store ($SYS/broker/store/messages/count and bytes, retained): with
 * persistence on, the broker writes all of it every autosave_interval and serves no client meanwhile,
 * so a large store shows as a stall of the whole loop once per interval. null if not answered in 3 s.
 */
export async function mosquittoStore(mqttUrl: string, clientId: string): Promise<{ messages: number; bytes: number } | null> {
  const c = await mqtt.connectAsync(mqttUrl, { clientId, clean: true, reconnectPeriod: 0, connectTimeout: 5000 });
  try {
    const got: { messages?: number; bytes?: number } = {};
    const done = new Promise<void>((resolve) => {
      c.on('message', (topic, payload) => {
        const v = Number(payload.toString('utf8'));
        if (topic.endsWith('/count')) got.messages = v;
        else if (topic.endsWith('/bytes')) got.bytes = v;
        if (got.messages !== undefined && got.bytes !== undefined) resolve();
      });
    });
    await c.subscribeAsync(['$SYS/broker/store/messages/count', '$SYS/broker/store/messages/bytes'], { qos: 0 });
    await Promise.race([done, new Promise((r) => setTimeout(r, 3000))]);
    return got.messages !== undefined && got.bytes !== undefined ? { messages: got.messages, bytes: got.bytes } : null;
  } finally {
    await c.endAsync().catch(() => undefined);
  }
}

function push<T>(m: Map<string, T[]>, k: string, v: T) {
  let a = m.get(k);
  if (!a) m.set(k, (a = []));
  a.push(v);
}

// ---------------------------------------------------------------------------------------------

interface DbCounters {
  xact_commit: number;
  deadlocks: number;
  wal_records: number;
  wal_sync: number;
  wal_write: number;
}

/**
 * Samples what the database's client backends do, every `everyMs`: `active:<wait event>` (CPU =
 * running, no wait event), `idle` (waiting for the runner: its turn is in the runner or the network),
 * `idle in transaction`. Counts are backend-samples, so shares are of the backends' time.
 * Also counts, server-wide, the backends waiting for the NOTIFY commit lock (`Lock:object` on
 * pg_database 0, taken in PreCommit_Notify and held across the commit's WAL flush).
 */
export class PgSampler {
  private readonly pool: pg.Pool;
  private readonly tally = new Map<string, number>();
  private samples = 0;
  private notifyWaiters = 0;
  private otherActive = 0;
  private stopFlag = false;
  private loop?: Promise<void>;
  private before?: DbCounters;

  constructor(
    url: string,
    private readonly database: string,
    private readonly everyMs = 20,
  ) {
    this.pool = new pg.Pool({ connectionString: url, max: 1 });
  }

  private async counters(): Promise<DbCounters> {
    const { rows } = await this.pool.query(
      `SELECT d.xact_commit::float8 AS xact_commit, d.deadlocks::float8 AS deadlocks, w.wal_records::float8 AS wal_records, w.wal_sync::float8 AS wal_sync, w.wal_write::float8 AS wal_write
         FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = $1`,
      [this.database],
    );
    return rows[0] as DbCounters;
  }

  async start(): Promise<void> {
    await this.pool.query('SELECT pg_stat_clear_snapshot()');
    this.before = await this.counters();
    this.loop = (async () => {
      while (!this.stopFlag) {
        const t = performance.now();
        const { rows } = await this.pool.query(
          `SELECT a.datname = $1 AS ours, a.state, coalesce(a.wait_event_type || ':' || a.wait_event, 'CPU') AS wait,
                  EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted AND l.locktype = 'object' AND l.classid = 'pg_database'::regclass AND l.objid = 0) AS notify_wait
             FROM pg_stat_activity a
            WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()`,
          [this.database],
        );
        this.samples++;
        for (const r of rows as { ours: boolean; state: string; wait: string; notify_wait: boolean }[]) {
          if (r.notify_wait) this.notifyWaiters++;
          if (!r.ours) {
            if (r.state === 'active') this.otherActive++;
            continue;
          }
          const key = r.state === 'active' ? `active:${r.wait}` : (r.state ?? 'unknown');
          this.tally.set(key, (this.tally.get(key) ?? 0) + 1);
        }
        const left = this.everyMs - (performance.now() - t);
        if (left > 0) await new Promise((r) => setTimeout(r, left));
      }
    })();
  }

  async stop(seconds: number) {
    this.stopFlag = true;
    await this.loop;
    // Backends flush their statistics at most once a second: wait for it.
    await new Promise((r) => setTimeout(r, 1100));
    await this.pool.query('SELECT pg_stat_clear_snapshot()');
    const after = await this.counters();
    await this.pool.end();
    const b = this.before!;
    const total = [...this.tally.values()].reduce((a, n) => a + n, 0);
    const states = Object.fromEntries([...this.tally].sort((x, y) => y[1] - x[1]).map(([k, n]) => [k, Number((n / this.samples).toFixed(2))]));
    return {
      samples: this.samples,
      /** Average number of the database's backends in each state (sum = backends open). */
      backends_by_state: states,
      backends_open: Number((total / this.samples).toFixed(2)),
      /** Average number of backends (server-wide) waiting for the NOTIFY commit lock. */
      notify_lock_waiters: Number((this.notifyWaiters / this.samples).toFixed(2)),
      /** Average number of active backends of other databases (others' work on the shared server). */
      other_databases_active: Number((this.otherActive / this.samples).toFixed(2)),
      commits_per_s: (after.xact_commit - b.xact_commit) / seconds,
      deadlocks: after.deadlocks - b.deadlocks,
      wal_syncs_per_s: (after.wal_sync - b.wal_sync) / seconds,
      wal_records_per_s: (after.wal_records - b.wal_records) / seconds,
    };
  }
}
