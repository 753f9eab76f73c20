/**
 * Probe for the loss the soak found (docs/benchmarks.md, "Soak under faults"): does
 * pipelines/mqtt-bridge.yaml lose acknowledged messages while it drains a large backlog that
 * Mosquitto queued for its persistent session?
 *
 *   eval "$(bash <stack checkout>/scripts/stack env)"
 *   node --import tsx bench/soak/mqtt-backlog-probe.ts --messages 150000
 *
 * The bridge (isolated like the e2e tests: its own MQTT level, client id and Kafka topics) starts,
 * subscribes and stops, so that its persistent session exists while it is down. The simulator then
 * publishes --messages QoS 1 messages (every one acknowledged by Mosquitto, each with a `seq`) into
 * that session's queue; then the bridge starts again and drains the queue. The bridge's topics are
 * read until every message is there, or nothing new arrived for --stall. Printed: messages missing
 * (as runs of consecutive publishes), duplicate records, and the bridge's reconnects (keepalive
 * timeouts while it does not read because max_in_flight messages are in progress).
 *
 * --kafka-pause <s> stops Kafka for that long once the bridge has written --pause-after messages of
 * the backlog (`bash <--stack-dir>/scripts/stack stop|start kafka`, a stack of its own as for the
 * soak: bench/soak/stack.ts checks it), so that the bridge holds max_in_flight messages, stops
 * reading and its MQTT connection times out and is made again while the backlog waits.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startFleet } from '../../simulator/fleet.ts';
import { KINDS, topicOf } from '../../simulator/heatpump.ts';
import { KafkaTally, MQTT_URL, ROOT, RunnerProcess, bridgePipeline, createTopics, deleteTopics, dropMqttSession, kafkaClient, messageId, publishedIds, uniqueId, within } from '../../tests/e2e/mqtt-bridge-harness.ts';
import { openStack } from './stack.ts';

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '150000' },
    devices: { type: 'string', default: '100' },
    rate: { type: 'string', default: '0' },
    stall: { type: 'string', default: '90' },
    'kafka-pause': { type: 'string', default: '0' },
    'pause-after': { type: 'string', default: '20000' },
    'stack-dir': { type: 'string', default: ROOT },
  },
});
const PAUSE_MS = Number(args['kafka-pause']) * 1000;
const stack = PAUSE_MS > 0 ? openStack(resolve(args['stack-dir']!), { allowShared: false, fail: (m) => (console.error(m), process.exit(2)) }) : null;
const N = Number(args.messages);
const STALL_MS = Number(args.stall) * 1000;
const log = (l: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${l}\n`);

const id = uniqueId();
const setup = bridgePipeline(id);
const kafka = kafkaClient(`probe-${id}`);
const admin = kafka.admin();
await admin.connect();
await createTopics(admin, setup);
let runner: RunnerProcess | null = null;
let tally: KafkaTally | null = null;
try {
  runner = new RunnerProcess(setup.file, 'bridge#1');
  await within(60_000, () => 'the bridge did not subscribe', runner.subscribed());
  await runner.stop();
  log(`bridge subscribed and stopped: its session queues what is published now`);

  const t0 = performance.now();
  const fleet = await startFleet({ url: MQTT_URL, client_id: `probe-${id}-pub`, devices: Number(args.devices), rate: Number(args.rate), count: N, qos: 1, seq: true, timestamp_precision: 'ms', topic_prefix: setup.mqttPrefix, respond: false });
  const pub = await fleet.done;
  await fleet.stop();
  log(`published ${pub.published}, acknowledged ${pub.acked}, failed ${pub.failed} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  tally = new KafkaTally(kafka, setup);
  await tally.start();
  const t1 = performance.now();
  runner = new RunnerProcess(setup.file, 'bridge#2');
  let last = -1;
  let lastChange = Date.now();
  let paused = false;
  while (tally.distinct < N && Date.now() - lastChange < STALL_MS) {
    if (stack && !paused && tally.distinct >= Number(args['pause-after'])) {
      paused = true;
      const stop = await stack.run('stop', 'kafka');
      log(`kafka stopped (exit ${stop.code}) at ${tally.distinct} messages in Kafka; starting it again in ${PAUSE_MS / 1000} s`);
      await new Promise((r) => setTimeout(r, PAUSE_MS));
      const start = await stack.run('start', 'kafka');
      log(`kafka started (exit ${start.code})`);
      lastChange = Date.now();
    }
    await new Promise((r) => setTimeout(r, 2000));
    if (tally.distinct !== last) {
      last = tally.distinct;
      lastChange = Date.now();
    }
    if (Math.round((performance.now() - t1) / 1000) % 20 < 2) log(`  ${tally.distinct} of ${N} in Kafka, ${tally.records} records`);
  }
  const drainS = (performance.now() - t1) / 1000;
  await runner.stop();
  await within(60_000, () => 'reading the topics to their end', tally.caughtUp(admin));

  const expected = publishedIds(fleet, setup.mqttPrefix);
  // Missing messages as runs in publishing order (the fleet publishes round-robin over device and kind).
  const order: string[] = [];
  const maxSeq = Math.max(...fleet.devices.flatMap((d) => KINDS.map((k) => d.seq[k])));
  for (let s = 1; s <= maxSeq; s++) for (const d of fleet.devices) for (const k of KINDS) if (s <= d.seq[k]) order.push(messageId(topicOf(k, d.idOf(k), setup.mqttPrefix), s));
  const runs: { from: string; length: number }[] = [];
  for (let i = 0; i < order.length; i++) {
    if (tally.copies.has(order[i]!)) continue;
    const from = order[i]!;
    let j = i;
    while (j < order.length && !tally.copies.has(order[j]!)) j++;
    runs.push({ from, length: j - i });
    i = j;
  }
  const missing = runs.reduce((a, r) => a + r.length, 0);
  const reconnects = runner.count((l) => l.msg === 'mqtt reconnected');
  const keepalive = runner.count((l) => l.msg === 'mqtt connection error' && String(l.err).includes('Keepalive'));
  console.log(
    JSON.stringify(
      {
        messages: N,
        acknowledged_by_broker: pub.acked,
        expected: expected.size,
        distinct_in_kafka: tally.distinct,
        records: tally.records,
        duplicate_records: tally.duplicates,
        missing,
        missing_runs: runs.length,
        missing_run_lengths: runs.slice(0, 20).map((r) => r.length),
        first_missing: runs.slice(0, 5).map((r) => r.from),
        unexpected: tally.unexpected(expected).length,
        drain_s: +drainS.toFixed(1),
        kafka_pause_s: PAUSE_MS / 1000,
        bridge_reconnects: reconnects,
        keepalive_timeouts: keepalive,
      },
      null,
      2,
    ),
  );
} finally {
  if (runner?.running) await runner.stop();
  await tally?.stop();
  await dropMqttSession(setup.clientId).catch(() => undefined);
  await deleteTopics(admin, setup);
  await admin.disconnect();
}
