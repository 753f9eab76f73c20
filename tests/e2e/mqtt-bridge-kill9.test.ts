/**
 * pipelines/mqtt-bridge.yaml run by the real CLI (`runner start`), killed with SIGKILL twice while
 * simulated heat pumps publish N QoS 1 messages, and started again each time: every message is in
 * Kafka at least once. The persistent MQTT session keeps the subscription while no runner is
 * connected, Mosquitto queues what is published meanwhile and resends what was not acknowledged
 * (the input acknowledges only after Kafka has a message), so the only cost of a kill is duplicates;
 * they are counted and printed, not asserted either way.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
  uniqueId,
  within,
} from './mqtt-bridge-harness.ts';

const N = 3000;
const RATE = 400; // messages per second: publishing takes 7.5 s; the kills fall while it goes on or while the next runner drains what queued up meanwhile
const id = uniqueId();
const kafka = kafkaClient(`e2e-bridge-kill9-${id}`);
const admin = kafka.admin();

describe('mqtt-bridge under kill -9', () => {
  let setup: BridgeSetup;
  let tally: KafkaTally;
  let fleet: Fleet | null = null;
  let runner: RunnerProcess | null = null;

  beforeAll(async () => {
    setup = bridgePipeline(id);
    await admin.connect();
    await createTopics(admin, setup);
    tally = new KafkaTally(kafka, setup);
    await tally.start();
  });

  afterAll(async () => {
    if (runner?.running) await runner.stop();
    await fleet?.stop();
    await tally?.stop();
    await dropMqttSession(setup.clientId).catch(() => undefined);
    await deleteTopics(admin, setup);
    await admin.disconnect();
  });

  it(`delivers all ${N} QoS 1 messages to Kafka at least once across two SIGKILLs and restarts of the runner`, async () => {
    const t0 = performance.now();
    const progress = () => `${tally.distinct}/${N} distinct in Kafka, ${tally.records} records, publisher ${JSON.stringify(fleet?.stats().acked)} acked`;
    runner = new RunnerProcess(setup.file, 'runner#1');
    // The persistent session (and its subscriptions) exists from here on.
    await within(30_000, progress, runner.subscribed());

    fleet = await startFleet({
      url: MQTT_URL,
      client_id: `e2e-bridge-${id}-pub`,
      devices: 3,
      rate: RATE,
      count: N,
      qos: 1,
      seq: true,
      topic_prefix: setup.mqttPrefix,
      respond: false,
    });

    const kills: { distinct: number; records: number; published: number; downMs: number }[] = [];
    for (const [k, fraction] of [1 / 3, 2 / 3].entries()) {
      await within(40_000, progress, tally.until(() => tally.distinct >= N * fraction));
      const published = fleet.stats().published;
      const at = { distinct: tally.distinct, records: tally.records, published };
      const killedAt = performance.now();
      await runner.kill9();
      runner = new RunnerProcess(setup.file, `runner#${k + 2}`);
      await within(30_000, progress, runner.subscribed());
      kills.push({ ...at, downMs: Math.round(performance.now() - killedAt) });
    }

    const published = await within(60_000, progress, fleet.done);
    expect(published.acked).toBe(N);
    expect(published.failed).toBe(0);
    await within(60_000, progress, tally.until(() => tally.distinct >= N));
    const deliveredMs = performance.now() - t0;

    // A graceful stop drains and acknowledges; then read up to the topics' ends for exact counts.
    expect(await runner.stop()).toBe(0);
    await within(30_000, progress, tally.caughtUp(admin));

    const expected = publishedIds(fleet, setup.mqttPrefix);
    expect(expected.size).toBe(N);
    expect(tally.missing(expected)).toEqual([]);
    expect(tally.unexpected(expected)).toEqual([]);
    expect(tally.distinct).toBe(N);
    expect(tally.problems.slice(0, 5)).toEqual([]);
    expect(await recordsIn(admin, setup.deadLetterTopic)).toBe(0);
    // The first kill fell while the simulator was still publishing (the second one usually does too).
    expect(kills[0]!.published).toBeLessThan(N);

    const dupMessages = [...tally.copies.values()].filter((c) => c > 1).length;
    console.log(
      `[mqtt-bridge kill -9] N=${N} rate=${RATE}/s: all ${tally.distinct} delivered in ${(deliveredMs / 1000).toFixed(1)} s; ` +
        `${tally.records} records, ${tally.duplicates} duplicate records (${dupMessages} messages more than once); ` +
        `kills at ${kills.map((k) => `${k.distinct} in Kafka/${k.published} published (next runner subscribed ${k.downMs} ms after the kill)`).join(', ')}`,
    );
  }, 90_000);
});
