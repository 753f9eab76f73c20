/**
 * The soak's end checks: reading topics back, counting what the tables and topics hold against
 * what the load generators know they sent, and saying where something went missing.
 */
import type { Admin, Kafka, KafkaMessage } from 'kafkajs';
import pg from 'pg';
import type { Kind } from '../../simulator/heatpump.ts';
import { OUTBOX_TABLES, eventSeq } from './load.ts';
import type { PublisherResult } from './publisher.ts';

// ---------------------------------------------------------------------------------------------
// Reading topics back

/** Reads every record of `topics` up to their high watermarks at the time of the call. */
export async function readTopics(
  kafka: Kafka,
  admin: Admin,
  topics: string[],
  groupId: string,
  onRecord: (topic: string, partition: number, m: KafkaMessage) => void,
  timeoutMs = 900_000,
): Promise<{ records: number; seconds: number }> {
  const t0 = performance.now();
  const targets = new Map<string, bigint>();
  for (const t of topics) for (const p of await admin.fetchTopicOffsets(t)) if (BigInt(p.high) > BigInt(p.low)) targets.set(`${t}:${p.partition}`, BigInt(p.high));
  if (targets.size === 0) return { records: 0, seconds: 0 };
  let records = 0;
  const consumer = kafka.consumer({ groupId, maxBytesPerPartition: 8 << 20, maxBytes: 32 << 20, maxWaitTimeInMs: 200, sessionTimeout: 60_000 });
  await consumer.connect();
  await consumer.subscribe({ topics: topics.filter((t) => [...targets.keys()].some((k) => k.startsWith(`${t}:`))), fromBeginning: true });
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read back ${records} records of ${topics.join(', ')} within ${timeoutMs} ms, not all`)), timeoutMs);
    const finished = new Set<string>();
    void consumer.run({
      autoCommit: false,
      partitionsConsumedConcurrently: 3,
      eachBatch: async ({ batch }) => {
        const tp = `${batch.topic}:${batch.partition}`;
        const target = targets.get(tp);
        if (target === undefined) return;
        for (const m of batch.messages) {
          if (BigInt(m.offset) >= target) break;
          records++;
          onRecord(batch.topic, batch.partition, m);
        }
        if (BigInt(batch.lastOffset()) + 1n >= target) finished.add(tp);
        if (finished.size === targets.size) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  try {
    await done;
  } finally {
    await consumer.disconnect().catch(() => undefined);
    await admin.deleteGroups([groupId]).catch(() => undefined);
  }
  return { records, seconds: (performance.now() - t0) / 1000 };
}

/** Copies of each simulator message (MQTT topic + seq) found in some topics. */
export class MessageCopies {
  /** MQTT topic -> copies per seq (index = seq, saturating at 255). */
  readonly copies = new Map<string, Uint8Array>();
  records = 0;
  /** Records whose MQTT topic or seq is not one the simulator published. */
  unexpected = 0;
  readonly unexpectedSamples: string[] = [];
  /** Records without an mqtt_topic header or a seq. */
  unparsable = 0;

  constructor(private readonly lastSeq: Record<string, number>) {
    for (const [topic, last] of Object.entries(lastSeq)) this.copies.set(topic, new Uint8Array(last + 1));
  }

  add(m: KafkaMessage): void {
    this.records++;
    const topic = m.headers?.mqtt_topic?.toString();
    const seq = /"seq":(\d+)/.exec(m.value?.toString('latin1') ?? '')?.[1];
    if (!topic || seq === undefined) {
      this.unparsable++;
      return;
    }
    const arr = this.copies.get(topic);
    const n = Number(seq);
    if (!arr || n < 1 || n >= arr.length) {
      this.unexpected++;
      if (this.unexpectedSamples.length < 5) this.unexpectedSamples.push(`${topic}#${seq}`);
      return;
    }
    if (arr[n]! < 255) arr[n]!++;
  }

  has(topic: string, seq: number): number {
    return this.copies.get(topic)?.[seq] ?? 0;
  }

  /** Over the acknowledged messages of some topics: distinct found, missing (with samples), duplicate records. */
  summary(topics: string[], excluded: Set<string>): { expected: number; found: number; missing: number; missingSamples: string[]; duplicateRecords: number; messagesWithDuplicates: number } {
    let expected = 0;
    let found = 0;
    let missing = 0;
    let duplicateRecords = 0;
    let messagesWithDuplicates = 0;
    const missingSamples: string[] = [];
    for (const topic of topics) {
      const arr = this.copies.get(topic);
      const last = this.lastSeq[topic] ?? 0;
      for (let s = 1; s <= last; s++) {
        const c = arr?.[s] ?? 0;
        if (c > 1) {
          duplicateRecords += c - 1;
          messagesWithDuplicates++;
        }
        if (excluded.has(`${topic}#${s}`)) continue;
        expected++;
        if (c > 0) found++;
        else {
          missing++;
          if (missingSamples.length < 10) missingSamples.push(`${topic}#${s}`);
        }
      }
    }
    return { expected, found, missing, missingSamples, duplicateRecords, messagesWithDuplicates };
  }
}

// ---------------------------------------------------------------------------------------------
// Telemetry in the tables

export const TABLE_OF_KIND: Partial<Record<Kind, { table: string; idColumn: string }>> = {
  heatpump: { table: 'heatpump', idColumn: 'device_id' },
  energy: { table: 'energy_consumption', idColumn: 'device_serial' },
  temperature: { table: 'temperature', idColumn: 'sensor_id' },
};

export interface TableCheck {
  table: string;
  kind: Kind;
  /** Acknowledged messages of this kind (each must be in the table once). */
  expected: number;
  rows: number;
  /** Rows whose (id, seq) another row has too. */
  duplicateRows: number;
  missing: number;
  missingSamples: string[];
  /** Rows of messages the simulator never published (or with no seq). */
  unexpectedRows: number;
  /** Messages whose publish failed or was never acknowledged: present in the table (allowed, not required). */
  uncertain: number;
  uncertainPresent: number;
  ok: boolean;
}

/**
 * Each table against the publisher's record: per device an aggregate (rows, distinct seq, min, max);
 * only devices whose aggregate does not match are read row by row to name the missing messages.
 */
export async function checkTables(url: string, pub: PublisherResult, topicOf: (kind: Kind, id: string) => string): Promise<{ tables: TableCheck[]; missing: { topic: string; seq: number }[] }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const uncertain = new Set([...pub.failed, ...pub.unacked].map((m) => `${m.topic}#${m.seq}`));
  const allMissing: { topic: string; seq: number }[] = [];
  const tables: TableCheck[] = [];
  try {
    for (const [kind, spec] of Object.entries(TABLE_OF_KIND) as [Kind, { table: string; idColumn: string }][]) {
      const byId = new Map<string, number>();
      for (const [topic, k] of Object.entries(pub.kindOf)) if (k === kind) byId.set(topic.split('/').slice(-2, -1)[0]!, pub.lastSeq[topic] ?? 0);
      const { rows } = await client.query<{ id: string; n: number; d: number; lo: number | null; hi: number | null; noseq: number }>(
        `SELECT ${spec.idColumn} AS id, count(*)::int AS n, count(DISTINCT (raw->>'seq')::int)::int AS d,
                min((raw->>'seq')::int) AS lo, max((raw->>'seq')::int) AS hi, count(*) FILTER (WHERE raw->>'seq' IS NULL)::int AS noseq
           FROM ${spec.table} GROUP BY 1`,
      );
      const c: TableCheck = { table: spec.table, kind, expected: 0, rows: 0, duplicateRows: 0, missing: 0, missingSamples: [], unexpectedRows: 0, uncertain: 0, uncertainPresent: 0, ok: false };
      const seen = new Map(rows.map((r) => [r.id, r]));
      for (const r of rows) {
        c.rows += r.n;
        c.unexpectedRows += r.noseq;
        c.duplicateRows += r.n - r.noseq - r.d;
        if (!byId.has(r.id)) c.unexpectedRows += r.n - r.noseq;
      }
      for (const [id, last] of byId) {
        const topic = topicOf(kind, id);
        const unsure = [...uncertain].filter((u) => u.startsWith(`${topic}#`)).map((u) => Number(u.slice(topic.length + 1)));
        c.expected += last - unsure.length;
        c.uncertain += unsure.length;
        const r = seen.get(id);
        if (r && r.d === last && r.lo === 1 && r.hi === last) {
          c.uncertainPresent += unsure.length;
          continue;
        }
        // Read this device's seqs to name what is missing or extra.
        const have = new Set((await client.query<{ s: number }>(`SELECT (raw->>'seq')::int AS s FROM ${spec.table} WHERE ${spec.idColumn} = $1`, [id])).rows.map((x) => x.s));
        for (let s = 1; s <= last; s++) {
          if (unsure.includes(s)) {
            if (have.has(s)) c.uncertainPresent++;
            continue;
          }
          if (!have.has(s)) {
            c.missing++;
            allMissing.push({ topic, seq: s });
            if (c.missingSamples.length < 10) c.missingSamples.push(`${topic}#${s}`);
          }
        }
        for (const s of have) if (s === null || s < 1 || s > last) c.unexpectedRows++;
      }
      c.ok = c.missing === 0 && c.duplicateRows === 0 && c.unexpectedRows === 0;
      tables.push(c);
    }
  } finally {
    await client.end();
  }
  return { tables, missing: allMissing };
}

// ---------------------------------------------------------------------------------------------
// Outbox events

export interface OutboxCheck {
  generated: number;
  rowsInTables: number;
  unpublishedRows: number;
  perTable: { table: string; rows: number; unpublished: number }[];
  kafkaRecords: number;
  distinctInKafka: number;
  missing: number;
  missingSamples: { seq: number; table: string; markedPublished: boolean | null; failures: number }[];
  duplicateRecords: number;
  eventsWithDuplicates: number;
  wrongTopic: number;
  unexpectedRecords: number;
  deliveryErrors: number;
  ok: boolean;
}

export async function outboxRows(url: string): Promise<{ perTable: { table: string; rows: number; unpublished: number }[] }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const perTable = [];
    for (const t of OUTBOX_TABLES) {
      const { rows } = await client.query<{ n: number; u: number }>(`SELECT count(*)::int AS n, count(*) FILTER (WHERE ${t.unpublished})::int AS u FROM ${t.table}`);
      perTable.push({ table: t.table, rows: rows[0]!.n, unpublished: rows[0]!.u });
    }
    return { perTable };
  } finally {
    await client.end();
  }
}

export async function checkOutbox(
  kafka: Kafka,
  admin: Admin,
  url: string,
  prefix: string,
  generated: number,
  eventTopic: (type: string) => string,
  groupId: string,
): Promise<OutboxCheck> {
  const { perTable } = await outboxRows(url);
  const copies = new Uint8Array(generated);
  let wrongTopic = 0;
  let unexpected = 0;
  const topicOfSeq = (n: number) => {
    const t = OUTBOX_TABLES[n % OUTBOX_TABLES.length]!;
    return eventTopic(t.types[n % t.types.length]!);
  };
  const topics = [...new Set(OUTBOX_TABLES.flatMap((t) => t.types.map((e) => eventTopic(e))))];
  const read = await readTopics(kafka, admin, topics, groupId, (topic, _p, m) => {
    const id = m.headers?.event_id?.toString() ?? '';
    const n = eventSeq(prefix, id);
    if (n === null || n >= generated) {
      unexpected++;
      return;
    }
    if (topic !== topicOfSeq(n)) wrongTopic++;
    if (copies[n]! < 255) copies[n]!++;
  });
  let distinct = 0;
  let duplicateRecords = 0;
  let eventsWithDuplicates = 0;
  const missingSeqs: number[] = [];
  for (let n = 0; n < generated; n++) {
    const c = copies[n]!;
    if (c > 0) distinct++;
    else missingSeqs.push(n);
    if (c > 1) {
      duplicateRecords += c - 1;
      eventsWithDuplicates++;
    }
  }
  // What the database says about the missing ones (a few): marked published? failed attempts?
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const missingSamples: OutboxCheck['missingSamples'] = [];
  let deliveryErrors = 0;
  try {
    deliveryErrors = Number((await client.query('SELECT count(*)::int AS n FROM outbox_relay.delivery_errors')).rows[0].n);
    for (const n of missingSeqs.slice(0, 10)) {
      const t = OUTBOX_TABLES[n % OUTBOX_TABLES.length]!;
      const id = `${prefix}-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
      const r = await client.query<{ published: boolean }>(`SELECT NOT (${t.unpublished}) AS published FROM ${t.table} WHERE id = $1`, [id]);
      const f = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM outbox_relay.delivery_errors WHERE event_id::text = $1', [id]).catch(() => ({ rows: [{ n: -1 }] }));
      missingSamples.push({ seq: n, table: t.table, markedPublished: r.rows[0]?.published ?? null, failures: f.rows[0]!.n });
    }
  } finally {
    await client.end();
  }
  const rowsInTables = perTable.reduce((a, t) => a + t.rows, 0);
  const unpublishedRows = perTable.reduce((a, t) => a + t.unpublished, 0);
  return {
    generated,
    rowsInTables,
    unpublishedRows,
    perTable,
    kafkaRecords: read.records,
    distinctInKafka: distinct,
    missing: missingSeqs.length,
    missingSamples,
    duplicateRecords,
    eventsWithDuplicates,
    wrongTopic,
    unexpectedRecords: unexpected,
    deliveryErrors,
    ok: missingSeqs.length === 0 && rowsInTables === generated && wrongTopic === 0 && unexpected === 0,
  };
}

// ---------------------------------------------------------------------------------------------
// Commands

export const TERMINAL = ['confirmed', 'failed', 'timed_out', 'superseded'];

export interface CommandCheck {
  rows: number;
  byStatus: Record<string, number>;
  nonTerminal: number;
  nonTerminalSamples: Record<string, unknown>[];
  accepted: number;
  acceptedMissing: number;
  /** Outbox rows without a 202 seen by the client (answer lost: runner killed, timeout). */
  rowsWithoutAnswer: number;
  /** settings_events rows (status changes) and how many are not yet relayed. */
  statusEvents: number;
  statusEventsUnpublished: number;
  ok: boolean;
}

export async function commandStatuses(url: string): Promise<Record<string, number>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ status: string; n: number }>('SELECT status, count(*)::int AS n FROM outbox GROUP BY 1');
    return Object.fromEntries(rows.map((r) => [r.status, r.n]));
  } finally {
    await client.end();
  }
}

export async function checkCommands(url: string, accepted: number[]): Promise<CommandCheck> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const byStatus = Object.fromEntries((await client.query<{ status: string; n: number }>('SELECT status, count(*)::int AS n FROM outbox GROUP BY 1')).rows.map((r) => [r.status, r.n]));
    const rows = Object.values(byStatus).reduce((a, b) => a + b, 0);
    const nonTerminal = Object.entries(byStatus).filter(([s]) => !TERMINAL.includes(s)).reduce((a, [, n]) => a + n, 0);
    const nonTerminalSamples = (
      await client.query(
        `SELECT id, aggregate_id, status, created_at, published_at, retry_count, next_attempt_at, error_message FROM outbox WHERE status <> ALL($1::text[]) ORDER BY id LIMIT 10`,
        [TERMINAL],
      )
    ).rows;
    let present = 0;
    for (let i = 0; i < accepted.length; i += 50_000) {
      present += Number((await client.query('SELECT count(*)::int AS n FROM outbox WHERE id = ANY($1::bigint[])', [accepted.slice(i, i + 50_000)])).rows[0].n);
    }
    const ev = (await client.query<{ n: number; u: number }>('SELECT count(*)::int AS n, count(*) FILTER (WHERE published_at IS NULL)::int AS u FROM settings_events')).rows[0]!;
    return {
      rows,
      byStatus,
      nonTerminal,
      nonTerminalSamples,
      accepted: accepted.length,
      acceptedMissing: accepted.length - present,
      rowsWithoutAnswer: rows - present,
      statusEvents: ev.n,
      statusEventsUnpublished: ev.u,
      ok: nonTerminal === 0 && accepted.length === present,
    };
  } finally {
    await client.end();
  }
}
