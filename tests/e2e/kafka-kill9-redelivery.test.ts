/**
 * `kill -9` of a running `runner start` after it produced messages but before it committed their
 * offsets: after a restart every message is in the output topic at least once (duplicates are
 * expected and are the proof that the kill fell between produce and commit), and a graceful stop
 * then commits everything.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import kafkajs from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTopicsReady } from '../helpers/kafka.ts';

const { Kafka, logLevel } = kafkajs;
const brokers = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
const N = 3000;
const id = randomUUID().slice(0, 8);
const src = `e2e-kill9-src-${id}`;
const dst = `e2e-kill9-dst-${id}`;
const dlq = `e2e-kill9-dlq-${id}`;
const group = `e2e-kill9-${id}`;
const kafka = new Kafka({ clientId: 'e2e-kill9', brokers, logLevel: logLevel.NOTHING });
const admin = kafka.admin();
const root = new URL('../..', import.meta.url).pathname;

function startRunner(file: string): ChildProcess {
  const child = spawn(process.execPath, [join(root, 'bin/runner.mjs'), 'start', file], {
    env: { ...process.env, RUNNER_HTTP_PORT: '0', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr?.on('data', (d) => process.stderr.write(d));
  return child;
}
const exited = (child: ChildProcess) => new Promise<number | null>((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));

describe('kafka -> runner -> kafka under kill -9', () => {
  let file = '';
  beforeAll(async () => {
    await admin.connect();
    await createTopicsReady(admin, [
      { topic: src, numPartitions: 3 },
      { topic: dst, numPartitions: 3 },
      { topic: dlq, numPartitions: 1 },
    ]);
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    for (let start = 0; start < N; start += 500) {
      await producer.send({
        topic: src,
        acks: -1,
        messages: Array.from({ length: 500 }, (_, i) => ({ key: `device-${(start + i) % 7}`, value: JSON.stringify({ seq: start + i }) })),
      });
    }
    await producer.disconnect();
    const dir = mkdtempSync(join(tmpdir(), 'runner-e2e-'));
    file = join(dir, 'kill9.yaml');
    writeFileSync(
      file,
      `name: kill9
input:
  kafka:
    brokers: [${brokers.join(', ')}]
    topics: [${src}]
    consumer_group: ${group}
    start_from: earliest
    commit_period: 1h   # no periodic commit: the kill always falls between produce and commit
pipeline:
  - map:
      expression: '$merge([$, {"relayed": true}])'
output:
  kafka:
    brokers: [${brokers.join(', ')}]
    topic: ${dst}
    key: '$key'
dead_letter:
  kafka:
    brokers: [${brokers.join(', ')}]
    topic: ${dlq}
`,
    );
  });
  afterAll(async () => {
    await admin.deleteTopics({ topics: [src, dst, dlq] }).catch(() => undefined);
    await admin.disconnect();
  });

  it('delivers every message at least once after kill -9 and restart, then commits on a graceful stop', async () => {
    // Count what reaches the output topic.
    const seen = new Map<number, number>();
    let total = 0;
    const waiters: { n: number; distinct: boolean; resolve: () => void }[] = [];
    const check = () => {
      for (const w of [...waiters]) {
        if ((w.distinct ? seen.size : total) >= w.n) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    };
    const until = (n: number, distinct: boolean) => new Promise<void>((resolve) => {
      waiters.push({ n, distinct, resolve });
      check();
    });
    const consumer = kafka.consumer({ groupId: `${group}-check` });
    await consumer.connect();
    await consumer.subscribe({ topic: dst, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const v = JSON.parse(message.value!.toString());
        expect(v.relayed).toBe(true);
        seen.set(v.seq, (seen.get(v.seq) ?? 0) + 1);
        total++;
        check();
      },
    });

    const first = startRunner(file);
    const firstExit = exited(first);
    await until(N / 3, false);
    first.kill('SIGKILL');
    expect(await firstExit).toBe(-1);
    const producedBeforeKill = total;

    // Nothing was committed: commit_period is an hour and the process never stopped gracefully.
    const committed = await admin.fetchOffsets({ groupId: group, topics: [src] });
    expect(committed[0]!.partitions.every((p) => p.offset === '-1')).toBe(true);

    const second = startRunner(file);
    const secondExit = exited(second);
    // Nothing was committed, so the restart delivers everything again: the messages produced
    // before the kill twice, all the others at least once.
    await until(N + producedBeforeKill, false);
    await until(N, true);
    second.kill('SIGTERM');
    expect(await secondExit).toBe(0);
    await consumer.disconnect();

    // Every message at least once; the ones produced before the kill came again.
    expect(seen.size).toBe(N);
    for (let s = 0; s < N; s++) expect(seen.has(s)).toBe(true);
    expect(producedBeforeKill).toBeGreaterThan(0);
    expect([...seen.values()].filter((n) => n > 1).length).toBeGreaterThan(0);

    // The graceful stop committed every offset of the source topic.
    const after = await admin.fetchOffsets({ groupId: group, topics: [src] });
    const ends = await admin.fetchTopicOffsets(src);
    for (const p of after[0]!.partitions) {
      expect(p.offset).toBe(ends.find((e) => e.partition === p.partition)!.high);
    }
    // Nothing was dead-lettered.
    const dlqEnds = await admin.fetchTopicOffsets(dlq);
    expect(dlqEnds.every((e) => e.high === '0')).toBe(true);
  });
});
