/**
 * The soak's load besides the simulator: the outbox writer (events into the four outbox tables of
 * the services database), the settings commands (PATCHes to the settings API), history queries and
 * WebSocket clients of the realtime fan-out. Each runs at a fixed rate until stopped and keeps
 * going while a server is away (errors are counted, not fatal).
 */
import http from 'node:http';
import pg from 'pg';
import WebSocket from 'ws';
import { EVENT_TYPES } from './pipelines.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The four outbox tables, their published marker and whether they have correlation_id (migrations/services/0001). */
export const OUTBOX_TABLES = [
  { table: 'whatsapp_handler.outbox_events', unpublished: 'published_at IS NULL', correlation: true, types: ['user.verified', 'ticket.uploaded'] },
  { table: 'darwin_ingestor.outbox_events', unpublished: 'published_at IS NULL', correlation: false, types: ['delay.detected', 'delay.updated'] },
  { table: 'journey_matcher.outbox', unpublished: 'processed_at IS NULL', correlation: true, types: ['journey.created', 'journey.matched'] },
  { table: 'data_retention.outbox', unpublished: 'NOT published', correlation: false, types: ['cleanup.completed'] },
] as const;
for (const t of OUTBOX_TABLES) for (const e of t.types) if (!(EVENT_TYPES as readonly string[]).includes(e)) throw new Error(`unknown event type ${e}`);

/**
 * Event ids carry the writer's sequence number: `<run prefix 8 hex>-0000-4000-8000-<seq, 12 hex>`,
 * so that reading Kafka back can mark each event in an array instead of a set of strings.
 */
export const eventId = (prefix: string, seq: number) => `${prefix}-0000-4000-8000-${seq.toString(16).padStart(12, '0')}`;
export function eventSeq(prefix: string, id: string): number | null {
  if (id.length !== 36 || !id.startsWith(`${prefix}-0000-4000-8000-`)) return null;
  const n = parseInt(id.slice(24), 16);
  return Number.isFinite(n) ? n : null;
}

/**
 * Inserts events at `rate` per second (every 100 ms one multi-row INSERT per table), event n into
 * table n % 4. A failed INSERT (database away) is retried with the same ids and ON CONFLICT DO
 * NOTHING until it commits, as a service retrying its transaction would: every event numbered below
 * `generated` ends in its table exactly once.
 */
export class OutboxWriter {
  /** Events numbered 0 .. generated - 1 were created (and are committed once the writer has drained). */
  generated = 0;
  /** Rows inserted, as PostgreSQL reported them. */
  committed = 0;
  failedAttempts = 0;
  lastError = '';
  private stopped = false;
  private readonly pool: pg.Pool;
  private readonly queue: { table: number; from: number[] }[] = [];
  private loop: Promise<void> | null = null;

  constructor(
    url: string,
    private readonly prefix: string,
    private readonly rate: number,
    private readonly maxInFlight = 4,
  ) {
    this.pool = new pg.Pool({ connectionString: url, max: maxInFlight, connectionTimeoutMillis: 5000 });
    this.pool.on('error', (err) => (this.lastError = err.message));
  }

  start(): void {
    this.loop = this.run();
  }

  private async insert(batch: { table: number; from: number[] }): Promise<void> {
    const t = OUTBOX_TABLES[batch.table]!;
    const rows: string[] = [];
    const values: unknown[] = [];
    for (const n of batch.from) {
      const type = t.types[n % t.types.length]!;
      const base = values.length;
      values.push(eventId(this.prefix, n), `agg-${n % 997}`, type.split('.')[0], type, JSON.stringify({ seq: n, pad: 'x'.repeat(120) }));
      const cols = [1, 2, 3, 4, 5].map((i) => `$${base + i}`);
      if (t.correlation) {
        values.push(`corr-${n}`);
        cols.push(`$${base + 6}`);
      }
      rows.push(`(${cols.join(', ')})`);
    }
    const cols = `id, aggregate_id, aggregate_type, event_type, payload${t.correlation ? ', correlation_id' : ''}`;
    const r = await this.pool.query(`INSERT INTO ${t.table} (${cols}) VALUES ${rows.join(', ')} ON CONFLICT (id) DO NOTHING`, values);
    // A retried batch whose first attempt did commit after all inserts nothing now.
    this.committed += r.rowCount ?? 0;
  }

  private async run(): Promise<void> {
    const t0 = performance.now();
    let inFlight = 0;
    let wake: (() => void) | null = null;
    const work = async () => {
      while (this.queue.length && inFlight < this.maxInFlight) {
        const batch = this.queue.shift()!;
        inFlight++;
        this.insert(batch)
          .catch((err: Error) => {
            this.failedAttempts++;
            this.lastError = err.message;
            // Back to the front, tried again after a pause (the database is probably restarting).
            this.queue.unshift(batch);
            return sleep(500);
          })
          .finally(() => {
            inFlight--;
            wake?.();
          });
      }
    };
    while (!this.stopped) {
      const due = Math.floor(((performance.now() - t0) / 1000) * this.rate);
      if (due > this.generated) {
        const per: number[][] = OUTBOX_TABLES.map(() => []);
        for (let n = this.generated; n < due; n++) per[n % OUTBOX_TABLES.length]!.push(n);
        this.generated = due;
        // At most 500 rows per statement.
        per.forEach((from, table) => {
          for (let i = 0; i < from.length; i += 500) this.queue.push({ table, from: from.slice(i, i + 500) });
        });
      }
      void work();
      await sleep(100);
    }
    // Drain: everything generated is committed (retries included) before the writer reports done.
    while (this.queue.length || inFlight) {
      void work();
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 500);
      });
    }
  }

  get backlog(): number {
    return this.queue.reduce((n, b) => n + b.from.length, 0);
  }

  /** Stop generating; resolves once every generated event is committed (or `timeoutMs` passed). */
  async stop(timeoutMs: number): Promise<boolean> {
    this.stopped = true;
    const done = await Promise.race([this.loop!.then(() => true), sleep(timeoutMs).then(() => false)]);
    await this.pool.end().catch(() => undefined);
    return done;
  }
}

interface Answer {
  status: number;
  body: string;
}

function request(agent: http.Agent, port: number, method: string, path: string, body?: unknown, timeoutMs = 10_000): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      { agent, host: '127.0.0.1', port, method, path, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.setTimeout(timeoutMs, () => req.destroy(new Error('request timeout')));
    req.end(data);
  });
}

const errorKind = (err: Error & { code?: string }) => err.code ?? (err.message.includes('timeout') ? 'timeout' : err.message.slice(0, 60));

/**
 * PATCHes of indoor_target_temp (a changed value each time) to the settings API at `rate` per
 * second, round-robin over the devices, at most `maxInFlight` open. Not retried: every answer is
 * counted by status; the outbox id of every 202 is kept for the check (a 202 with outcome unknown is only counted).
 */
export class CommandLoad {
  sent = 0;
  readonly statuses: Record<string, number> = {};
  readonly accepted: number[] = [];
  /** 202 answers of the server's backstop: `"outcome": "unknown"`, no outbox id. */
  unknown = 0;
  readonly errors: Record<string, number> = {};
  skipped = 0;
  private stopped = false;
  private inFlight = 0;
  private loop: Promise<void> | null = null;
  private readonly agent: http.Agent;

  constructor(
    private readonly port: number,
    private readonly devices: string[],
    private readonly rate: number,
    private readonly maxInFlight = 64,
  ) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets: maxInFlight });
  }

  start(): void {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    if (this.rate <= 0) return;
    const t0 = performance.now();
    let n = 0;
    while (!this.stopped) {
      const due = Math.floor(((performance.now() - t0) / 1000) * this.rate);
      for (; n < due; n++) {
        if (this.inFlight >= this.maxInFlight) {
          this.skipped++; // the API is stalled: do not pile up more
          continue;
        }
        const device = this.devices[n % this.devices.length]!;
        const j = Math.floor(n / this.devices.length);
        this.sent++;
        this.inFlight++;
        request(this.agent, this.port, 'PATCH', `/api/v1/heatpump/settings/${device}`, { indoor_target_temp: 21.5 + 0.5 * (j % 18) })
          .then((a) => {
            this.statuses[a.status] = (this.statuses[a.status] ?? 0) + 1;
            if (a.status !== 202) return;
            const body = JSON.parse(a.body) as { outbox_id?: number; outcome?: string };
            // The server's backstop timeout answers 202 {"outcome": "unknown"} without an outbox id:
            // the change may or may not have been made (docs/settings-api.md), so it is counted apart.
            if (body.outbox_id === undefined) this.unknown++;
            else this.accepted.push(body.outbox_id);
          })
          .catch((err: Error) => {
            const k = errorKind(err);
            this.errors[k] = (this.errors[k] ?? 0) + 1;
          })
          .finally(() => this.inFlight--);
      }
      await sleep(10);
    }
    while (this.inFlight > 0) await sleep(50);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
    this.agent.destroy();
  }
}

/** GET /api/v1/heatpump/history for the last 10 minutes of a device, `rate` per second. */
export class HistoryLoad {
  readonly statuses: Record<string, number> = {};
  readonly errors: Record<string, number> = {};
  private stopped = false;
  private loop: Promise<void> | null = null;
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

  constructor(
    private readonly port: number,
    private readonly devices: string[],
    private readonly rate: number,
  ) {}

  start(): void {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    if (this.rate <= 0) return;
    let n = 0;
    while (!this.stopped) {
      const end = new Date();
      const start = new Date(end.getTime() - 600_000);
      const device = this.devices[n++ % this.devices.length]!;
      const q = new URLSearchParams({ device_id: device, start: start.toISOString(), end: end.toISOString(), bucket: '1m' });
      await request(this.agent, this.port, 'GET', `/api/v1/heatpump/history?${q}`)
        .then((a) => (this.statuses[a.status] = (this.statuses[a.status] ?? 0) + 1))
        .catch((err: Error) => {
          const k = errorKind(err);
          this.errors[k] = (this.errors[k] ?? 0) + 1;
        });
      await sleep(1000 / this.rate);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
    this.agent.destroy();
  }
}

/** WebSocket clients of the realtime fan-out (all topics), reconnecting after a close. */
export class WebSocketClients {
  frames = 0;
  connects = 0;
  readonly closes: Record<string, number> = {};
  private stopped = false;
  private readonly sockets = new Set<WebSocket>();

  constructor(
    private readonly url: string,
    private readonly count: number,
  ) {}

  start(): void {
    for (let i = 0; i < this.count; i++) this.connect();
  }

  private connect(): void {
    if (this.stopped) return;
    const ws = new WebSocket(this.url, { perMessageDeflate: false });
    this.sockets.add(ws);
    ws.on('open', () => this.connects++);
    ws.on('message', () => this.frames++);
    ws.on('error', () => undefined);
    ws.on('close', (code) => {
      this.sockets.delete(ws);
      this.closes[code] = (this.closes[code] ?? 0) + 1;
      if (!this.stopped) setTimeout(() => this.connect(), 1000);
    });
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.sockets) s.terminate();
  }
}
