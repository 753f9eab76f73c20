/**
 * pipelines/mqtt-bridge.yaml run by the real CLI (`runner start`) while a broker of the shared
 * local stack restarts mid-stream (`scripts/stack restart kafka|mosquitto`): the runner is never
 * restarted, recovers by itself, and every one of N QoS 1 messages of the simulator reaches Kafka
 * at least once.
 *
 * - Kafka: the simulator keeps publishing to MQTT while Kafka is away; the kafka output retries
 *   (not ready meanwhile), the mqtt input stops reading at max_in_flight and Mosquitto queues the
 *   rest in the persistent session.
 * - Mosquitto: Mosquitto saves its persistent sessions on the way down (persistence true) and loads
 *   them on start; the runner and the simulator (clean: false) reconnect by themselves, the
 *   simulator's client re-sends every publish that had no PUBACK, and the simulator gets a PUBACK
 *   for all N. The runner is paused (SIGSTOP) just before, so that the broker goes down holding a
 *   backlog of at least BACKLOG messages for the runner's session, unacknowledged in-flight ones
 *   among them; it is resumed (SIGCONT) once the broker is back.
 *
 * Restarting a server of the shared stack disturbs other tests running against it for a few
 * seconds; the server is brought back in a finally block whatever happens.
 */
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { startFleet, type Fleet } from '../../simulator/fleet.ts';
import {
  type BridgeSetup,
  KafkaTally,
  MQTT_URL,
  RunnerProcess,
  bridgePipeline,
  createTopics,
  deleteTopics,
  dropMqttSession,
  kafkaClient,
  publishedIds,
  recordsIn,
  stackPid,
  stackServer,
  uniqueId,
  within,
} from './mqtt-bridge-harness.ts';

const N = 3000;
const RATE = 150; // messages per second: 20 s of publishing, the restart falls in the first half
/** Messages Mosquitto holds for the (paused) runner when it restarts, at least. */
const BACKLOG = 300;

interface Run {
  id: string;
  setup: BridgeSetup;
  kafka: ReturnType<typeof kafkaClient>;
  admin: ReturnType<ReturnType<typeof kafkaClient>['admin']>;
  tally: KafkaTally;
  runner: RunnerProcess | null;
  fleet: Fleet | null;
  publisherId: string;
}

let current: Run | null = null;

async function begin(name: string): Promise<Run> {
  const id = uniqueId();
  const kafka = kafkaClient(`e2e-bridge-${name}-${id}`);
  const admin = kafka.admin();
  const setup = bridgePipeline(id);
  const run: Run = { id, setup, kafka, admin, tally: new KafkaTally(kafka, setup), runner: null, fleet: null, publisherId: `e2e-bridge-${id}-pub` };
  current = run;
  await admin.connect();
  await createTopics(admin, setup);
  await run.tally.start();
  return run;
}

afterEach(async () => {
  const run = current;
  current = null;
  if (!run) return;
  if (run.runner?.running) await run.runner.stop();
  await run.fleet?.stop();
  await run.tally.stop().catch(() => undefined);
  await dropMqttSession(run.setup.clientId).catch(() => undefined);
  await dropMqttSession(run.publisherId, 4).catch(() => undefined);
  await deleteTopics(run.admin, run.setup);
  await run.admin.disconnect();
});

/** Wait for every message, stop the runner gracefully, read to the end, check the counts; returns a summary. */
async function finish(run: Run, t0: number, progress: () => string) {
  const { tally, fleet, runner, setup, admin } = run;
  const published = await within(60_000, progress, fleet!.done);
  expect(published.acked).toBe(N);
  expect(published.failed).toBe(0);
  await within(60_000, progress, tally.until(() => tally.distinct >= N));
  const deliveredMs = performance.now() - t0;
  // Never restarted: the same process recovered by itself.
  expect(runner!.running).toBe(true);
  expect(await runner!.stop()).toBe(0);
  await within(30_000, progress, tally.caughtUp(admin));

  const expected = publishedIds(fleet!, setup.mqttPrefix);
  expect(expected.size).toBe(N);
  expect(tally.missing(expected)).toEqual([]);
  expect(tally.unexpected(expected)).toEqual([]);
  expect(tally.distinct).toBe(N);
  expect(tally.problems.slice(0, 5)).toEqual([]);
  expect(await recordsIn(admin, setup.deadLetterTopic)).toBe(0);
  const dupMessages = [...tally.copies.values()].filter((c) => c > 1).length;
  return `all ${tally.distinct} delivered in ${(deliveredMs / 1000).toFixed(1)} s; ${tally.records} records, ${tally.duplicates} duplicate records (${dupMessages} messages more than once)`;
}

describe('mqtt-bridge across broker restarts (the runner is not restarted)', () => {
  it(`Kafka restarted mid-stream: the runner recovers by itself and all ${N} messages arrive`, async () => {
    const run = await begin('kafka');
    const { tally, setup } = run;
    const t0 = performance.now();
    const progress = () => `${tally.distinct}/${N} distinct in Kafka, ${tally.records} records, publisher ${JSON.stringify(run.fleet?.stats().acked)} acked`;
    const runner = (run.runner = new RunnerProcess(setup.file, 'runner'));
    await within(30_000, progress, runner.subscribed());
    await within(30_000, progress, runner.logged((l) => l.msg === 'kafka producer connected'));
    const fleet = (run.fleet = await startFleet({ url: MQTT_URL, client_id: run.publisherId, devices: 3, rate: RATE, count: N, qos: 1, seq: true, topic_prefix: setup.mqttPrefix, respond: false }));

    await within(40_000, progress, tally.until(() => tally.distinct >= N / 3));
    const before = { pid: stackPid('kafka'), distinct: tally.distinct, published: fleet.stats().published };
    // Stop, then start: the times in between tell how long Kafka was away and when it answered again.
    let stoppedAt = 0;
    let upAt = 0;
    try {
      await stackServer('stop', 'kafka');
      stoppedAt = Date.now();
      await stackServer('start', 'kafka');
      upAt = Date.now();
    } finally {
      // Whatever happened, leave Kafka running for the others.
      if (!upAt) await stackServer('start', 'kafka');
    }
    const after = { pid: stackPid('kafka'), distinct: tally.distinct, published: fleet.stats().published };
    expect(after.pid).not.toBe(before.pid);
    // The simulator kept publishing to MQTT while Kafka was away.
    expect(after.published).toBeGreaterThan(before.published);
    // Written by the runner after the restart (CreateTime later than the stop), as this consumer
    // sees once it has recovered too.
    await within(60_000, progress, tally.until(() => tally.firstWrittenAfter(stoppedAt) !== null));
    const consumerSawAt = Date.now();

    const summary = await finish(run, t0, progress);
    // The runner's first successful write after the restart (over every record, now all read).
    const firstWrite = tally.firstWrittenAfter(stoppedAt)!;
    const writeRetries = runner.count((l) => l.msg === 'kafka write failed; retrying');
    console.log(
      `[mqtt-bridge kafka restart] N=${N} rate=${RATE}/s: ${summary}; Kafka down ${((upAt - stoppedAt) / 1000).toFixed(1)} s between the end of its stop and its first answer ` +
        `(stop began at ${before.distinct} in Kafka / ${before.published} published; ${after.published - before.published} published during the restart); ` +
        `runner's first write ${firstWrite - upAt} ms after Kafka answered (seen by the test consumer after ${consumerSawAt - upAt} ms); ` +
        `${writeRetries} 'kafka write failed; retrying' warnings, ${runner.kafkaErrors} kafkajs connection errors logged`,
    );
  }, 90_000);

  it(`Mosquitto restarted mid-stream: runner and publisher reconnect by themselves, the publisher gets a PUBACK for all ${N} and all arrive`, async () => {
    const run = await begin('mosquitto');
    const { tally, setup } = run;
    const t0 = performance.now();
    const progress = () => `${tally.distinct}/${N} distinct in Kafka, ${tally.records} records, publisher ${JSON.stringify(run.fleet?.stats())}`;
    const runner = (run.runner = new RunnerProcess(setup.file, 'runner'));
    await within(30_000, progress, runner.subscribed());
    await within(30_000, progress, runner.logged((l) => l.msg === 'kafka producer connected'));
    // clean: false: the publisher's session survives too, and mqtt.js re-sends unacknowledged publishes on reconnect.
    const fleet = (run.fleet = await startFleet({
      url: MQTT_URL,
      client_id: run.publisherId,
      clean: false,
      devices: 3,
      rate: RATE,
      count: N,
      qos: 1,
      seq: true,
      topic_prefix: setup.mqttPrefix,
      respond: false,
    }));
    const reconnects: string[] = [];
    fleet.on('connection', (m) => reconnects.push(m));

    await within(40_000, progress, tally.until(() => tally.distinct >= N / 3));
    // So that Mosquitto goes down with a backlog for the runner's session (not just the few
    // messages in flight at 150/s), the runner is paused (SIGSTOP: same process, same sockets)
    // until BACKLOG more messages reached the broker, as a QoS 0 watcher on the same topics sees.
    const watcher = await mqtt.connectAsync(MQTT_URL, { clientId: `e2e-bridge-${run.id}-watch`, clean: true, reconnectPeriod: 0 });
    let seenByWatcher = 0;
    const backlogReached = new Promise<void>((resolve) =>
      watcher.on('message', () => {
        if (++seenByWatcher >= BACKLOG) resolve();
      }),
    );
    await watcher.subscribeAsync(`${setup.mqttPrefix}#`, { qos: 0 });
    runner.child.kill('SIGSTOP');
    let restartMs = 0;
    const before = { pid: stackPid('mosquitto'), distinct: 0, published: 0, acked: 0 };
    try {
      await within(30_000, progress, backlogReached);
      await watcher.endAsync();
      Object.assign(before, { distinct: tally.distinct, published: fleet.stats().published, acked: fleet.stats().acked });
      restartMs = await stackServer('restart', 'mosquitto');
    } finally {
      if (!restartMs) await stackServer('start', 'mosquitto');
      runner.child.kill('SIGCONT');
    }
    expect(stackPid('mosquitto')).not.toBe(before.pid);
    const upAtWall = Date.now();
    const reconnected = await within(30_000, progress, runner.logged((l) => l.msg === 'mqtt reconnected'));
    const summary = await finish(run, t0, progress);
    // The broker kept the runner's session (subscriptions and queued messages) across its restart.
    expect(reconnected.sessionPresent).toBe(true);
    expect(runner.count((l) => /no session for this client/.test(l.msg))).toBe(0);
    expect(reconnects.some((m) => / connected$/.test(m))).toBe(true);
    console.log(
      `[mqtt-bridge mosquitto restart] N=${N} rate=${RATE}/s: ${summary}; Mosquitto restart took ${(restartMs / 1000).toFixed(1)} s ` +
        `(at ${before.distinct} in Kafka / ${before.acked} acked by Mosquitto: ${before.acked - before.distinct} queued or in flight for the paused runner); ` +
        `runner reconnected with its session ${Date.parse(String(reconnected.time)) - upAtWall} ms after scripts/stack saw Mosquitto answer; publisher: ${reconnects.join(' | ')}`,
    );
  }, 90_000);
});
