/**
 * pipelines/telemetry-sink.yaml against the real stack, counted row by row (issue 4, "Reliability"):
 * - the runner killed with SIGKILL several times while it writes: the tables end with exactly the
 *   messages produced, no loss and no duplicates;
 * - PostgreSQL stopped mid-stream (the sink retries) and started again: the same;
 * - two sink processes in one consumer group share the partitions: the same;
 * - bad messages (no time, wrong type, a string where a number belongs, SQL in a value) go to the
 *   dead-letter topic with the reason and everything else is written.
 * Each test has its own topics (homelab-* renamed), consumer group and database.
 */
import kafkajs, { type Admin, type Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestDatabase } from '../helpers/postgres.ts';
import { RunnerProcess, kafkaClient, stackServer, uniqueId, within } from './mqtt-bridge-harness.ts';
import { caughtUp, createPipelineTopics, isolatedPipeline, migratedDatabase, poll, produceAll, telemetry, type IsolatedPipeline } from './sink-harness.ts';

const { Partitioners } = kafkajs;
const kafka = kafkaClient('e2e-telemetry-sink');
let admin: Admin;
/** One producer per test: kafkajs keeps refreshing metadata of every topic it ever sent to, and fails sends once an earlier test deleted its topics. */
let producer: Producer;

beforeAll(async () => {
  admin = kafka.admin();
  await admin.connect();
});
afterAll(async () => {
  await admin?.disconnect();
});

interface Setup {
  id: string;
  pipeline: IsolatedPipeline;
  db: TestDatabase;
  group: string;
  env: Record<string, string>;
  topics: { heatpump: string; energy: string; temperature: string; dlq: string };
}

async function setup(): Promise<Setup> {
  const id = uniqueId();
  const pipeline = isolatedPipeline('telemetry-sink', id);
  await createPipelineTopics(admin, pipeline);
  const db = await migratedDatabase('telemetry');
  const group = `e2e-telemetry-sink-${id}`;
  producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, idempotent: true });
  await producer.connect();
  return {
    id,
    pipeline,
    db,
    group,
    env: { TELEMETRY_DATABASE_URL: db.url, TELEMETRY_SINK_GROUP: group },
    topics: {
      heatpump: pipeline.topic('homelab-heatpump-telemetry'),
      energy: pipeline.topic('homelab-energy-realtime'),
      temperature: pipeline.topic('homelab-temperature'),
      dlq: pipeline.topic('homelab-dead-letter'),
    },
  };
}

async function teardown(s: Setup) {
  await producer.disconnect();
  await s.pipeline.cleanup(admin);
  await s.db.drop();
}

/** Produce messages number from..to of each kind (heat pump twice as many). */
async function produceRange(s: Setup, from: number, to: number) {
  await produceAll(producer, s.topics.heatpump, telemetry('heatpump', 2 * from, 2 * to, 20));
  await produceAll(producer, s.topics.energy, telemetry('energy', from, to));
  await produceAll(producer, s.topics.temperature, telemetry('temperature', from, to));
}
const messagesFor = (n: number) => 4 * n;

async function counts(s: Setup) {
  const { rows } = await s.db.query<{ heatpump: number; energy: number; temperature: number }>(
    'SELECT (SELECT count(*) FROM heatpump)::int AS heatpump, (SELECT count(*) FROM energy_consumption)::int AS energy, (SELECT count(*) FROM temperature)::int AS temperature',
  );
  return rows[0]!;
}
const total = (c: { heatpump: number; energy: number; temperature: number }) => c.heatpump + c.energy + c.temperature;

async function distinctCounts(s: Setup) {
  const { rows } = await s.db.query<{ n: number }>(
    "SELECT (SELECT count(DISTINCT raw->>'seq') FROM heatpump) + (SELECT count(DISTINCT raw->>'seq') FROM energy_consumption) + (SELECT count(DISTINCT raw->>'seq') FROM temperature) AS n",
  );
  return Number(rows[0]!.n);
}

const sinkTopics = (s: Setup) => [s.topics.heatpump, s.topics.energy, s.topics.temperature];

async function finished(s: Setup, expected: number) {
  let last = { heatpump: 0, energy: 0, temperature: 0 };
  await poll(
    async () => {
      last = await counts(s);
      return total(last) >= expected && (await caughtUp(admin, s.group, sinkTopics(s)));
    },
    () => `expected ${expected} rows and the group caught up; rows ${JSON.stringify(last)}`,
    180_000,
    200,
  );
}

describe('telemetry-sink counts rows exactly', () => {
  it('ends with exactly N rows after the runner was killed with SIGKILL three times while writing', { timeout: 300_000 }, async () => {
    const s = await setup();
    try {
      const per = 6000; // per phase: 12,000 heat-pump, 6,000 energy, 6,000 temperature messages
      const rowsAtKill: number[] = [];
      let produced = 0;
      for (let phase = 0; phase < 3; phase++) {
        await produceRange(s, phase * per, (phase + 1) * per);
        produced = messagesFor((phase + 1) * per);
        const before = total(await counts(s));
        const sink = new RunnerProcess(s.pipeline.file, `sink-${phase}`, s.env);
        // Kill as soon as this run has written something: it is in the middle of its backlog.
        await poll(async () => total(await counts(s)) > before, () => `run ${phase} wrote nothing`);
        await sink.kill9();
        rowsAtKill.push(total(await counts(s)));
      }
      expect(rowsAtKill.some((n) => n < produced), `every kill came after the backlog was written: ${rowsAtKill.join(', ')} of ${produced}`).toBe(true);

      const last = new RunnerProcess(s.pipeline.file, 'sink-last', s.env);
      await finished(s, produced);
      const c = await counts(s);
      expect(c).toEqual({ heatpump: 2 * 3 * per, energy: 3 * per, temperature: 3 * per });
      expect(await distinctCounts(s)).toBe(produced);
      expect(await within(60_000, () => 'the sink did not stop', last.stop())).toBe(0);
    } finally {
      await teardown(s);
    }
  });

  it('ends with exactly N rows when PostgreSQL is stopped mid-stream and started again', { timeout: 300_000 }, async () => {
    const s = await setup();
    try {
      const per = 5000;
      await produceRange(s, 0, per);
      const sink = new RunnerProcess(s.pipeline.file, 'sink-pg', s.env);
      await poll(async () => total(await counts(s)) > 0, () => 'the sink wrote nothing');
      await stackServer('stop', 'postgres');
      try {
        // More messages while the database is away: the sink must hold them and retry.
        await produceRange(s, per, 2 * per);
        await within(60_000, () => 'the sink never retried a write', sink.logged((l) => l.msg === 'postgres write failed; retrying'));
      } finally {
        await stackServer('start', 'postgres');
      }
      await finished(s, messagesFor(2 * per));
      expect(await counts(s)).toEqual({ heatpump: 4 * per, energy: 2 * per, temperature: 2 * per });
      expect(await distinctCounts(s)).toBe(messagesFor(2 * per));
      expect(await within(60_000, () => 'the sink did not stop', sink.stop())).toBe(0);
    } finally {
      await teardown(s);
    }
  });

  it('two sink processes in one consumer group end with exactly N rows', { timeout: 300_000 }, async () => {
    const s = await setup();
    try {
      const per = 8000;
      const a = new RunnerProcess(s.pipeline.file, 'sink-a', s.env);
      const b = new RunnerProcess(s.pipeline.file, 'sink-b', s.env);
      await produceRange(s, 0, per);
      await finished(s, messagesFor(per));
      expect(await counts(s)).toEqual({ heatpump: 2 * per, energy: per, temperature: per });
      expect(await distinctCounts(s)).toBe(messagesFor(per));
      // Both were members of the group (9 partitions between them).
      const members = await admin.describeGroups([s.group]);
      expect(members.groups[0]!.members).toHaveLength(2);
      expect(await within(60_000, () => 'sink a did not stop', a.stop())).toBe(0);
      expect(await within(60_000, () => 'sink b did not stop', b.stop())).toBe(0);
    } finally {
      await teardown(s);
    }
  });

  it('sends bad messages to the dead-letter topic with the reason and writes the rest', { timeout: 120_000 }, async () => {
    const s = await setup();
    try {
      const good = telemetry('temperature', 0, 50);
      const bad = [
        { key: 'sensor-001', value: JSON.stringify({ sensor_id: 'sensor-001', temperature: 21 }) },
        { key: 'sensor-002', value: JSON.stringify({ sensor_id: 'sensor-002', timestamp: 1_700_000_000, temperature: 'warm' }) },
        { key: 'sensor-003', value: JSON.stringify({ sensor_id: "x'); DROP TABLE temperature; --", timestamp: 1_700_000_001, temperature: 20 }) },
        { key: 'sensor-004', value: 'not json' },
      ];
      await produceAll(producer, s.topics.temperature, [...good.slice(0, 25), ...bad, ...good.slice(25)]);
      const sink = new RunnerProcess(s.pipeline.file, 'sink-bad', s.env);
      const dead: { reason: string; value: string }[] = [];
      const consumer = kafka.consumer({ groupId: `e2e-sink-dlq-${s.id}` });
      await consumer.connect();
      await consumer.subscribe({ topics: [s.topics.dlq], fromBeginning: true });
      await consumer.run({ eachMessage: async ({ message }) => void dead.push({ reason: message.headers?.dlq_error?.toString() ?? '', value: message.value?.toString() ?? '' }) });
      try {
        await poll(async () => dead.length >= 3 && (await caughtUp(admin, s.group, sinkTopics(s))), () => `dead-lettered ${dead.length}`);
      } finally {
        await consumer.disconnect();
      }
      const c = await counts(s);
      // The SQL-looking id fails the schema (ids are [A-Za-z0-9_.:-]): dead-lettered, the table untouched.
      expect(c.temperature).toBe(50);
      expect(dead.map((d) => d.reason).join('\n')).toMatch(/timestamp/);
      expect(dead.map((d) => d.reason).join('\n')).toMatch(/temperature must be number/);
      expect(dead.map((d) => d.reason).join('\n')).toMatch(/not JSON|JSON/i);
      expect(dead.map((d) => d.value)).toEqual(expect.arrayContaining(['not json', bad[2]!.value]));
      expect(dead).toHaveLength(4);
      expect((await s.db.query("SELECT to_regclass('temperature') IS NOT NULL AS present")).rows[0]!.present).toBe(true);
      expect(await within(60_000, () => 'the sink did not stop', sink.stop())).toBe(0);
    } finally {
      await teardown(s);
    }
  });
});
