/**
 * The soak's telemetry source: the simulator's fleet (simulator/fleet.ts, as `runner simulate`
 * runs it) in a child process of bench/soak/run.ts, talking to it over IPC. Not run by hand.
 *
 * The fleet counts publishes, acknowledgements and failures, but does not say WHICH messages were
 * acknowledged. The soak needs exactly that (every message that got its PUBACK must end in its table),
 * so this process wraps mqtt.js's `MqttClient.prototype.publish` before the fleet connects: every
 * publish of a payload with `seq` is remembered until its callback runs; a callback with an error
 * records the message as failed (may or may not have reached the broker), and whatever is still
 * waiting when the fleet has stopped is recorded as unacknowledged. Everything else published up to
 * each device's last `seq` was acknowledged. (With QoS 1 mqtt.js keeps a publish through
 * disconnects and sends it again after reconnecting, so failures should only happen at the end.)
 *
 * Messages from the parent: {type: 'stop'}. To the parent: {type: 'started'}, {type: 'progress',
 * stats} every 5 s, {type: 'result', ...} after the stop, then the process exits.
 */
import { MqttClient } from 'mqtt';
import { startFleet, type FleetOptions, type FleetStats } from '../../simulator/fleet.ts';
import { KINDS, topicOf, type Kind } from '../../simulator/heatpump.ts';

export interface PublisherResult {
  type: 'result';
  stats: FleetStats;
  /** MQTT topic -> the last `seq` published on it (1..last were published). */
  lastSeq: Record<string, number>;
  /** MQTT topic -> kind of message. */
  kindOf: Record<string, Kind>;
  /** Publishes whose callback reported an error: `topic#seq` and the error. */
  failed: { topic: string; seq: number; error: string }[];
  /** Publishes neither acknowledged nor failed when the fleet had stopped. */
  unacked: { topic: string; seq: number }[];
  /** Acknowledged publishes counted by the wrapper (must equal stats.acked). */
  ackedSeen: number;
  /** Publishes without a parsable seq (must be 0). */
  noSeq: number;
}

const SEQ = /"seq":(\d+)/;
const waiting = new Map<string, { topic: string; seq: number }>();
const failed: PublisherResult['failed'] = [];
let ackedSeen = 0;
let noSeq = 0;

type PublishFn = (topic: string, message: string | Buffer, opts?: unknown, callback?: unknown) => MqttClient;
const original = MqttClient.prototype.publish as unknown as PublishFn;
(MqttClient.prototype as unknown as { publish: PublishFn }).publish = function (this: MqttClient, topic, message, opts, callback) {
  if (typeof opts === 'function') {
    callback = opts;
    opts = undefined;
  }
  const m = SEQ.exec(typeof message === 'string' ? message : message.toString('latin1'));
  if (!m) {
    noSeq++;
    return original.call(this, topic, message, opts, callback);
  }
  const seq = Number(m[1]);
  const key = `${topic}#${seq}`;
  waiting.set(key, { topic, seq });
  const cb = typeof callback === 'function' ? (callback as (err?: Error, packet?: unknown) => void) : undefined;
  return original.call(this, topic, message, opts, (err?: Error, packet?: unknown) => {
    waiting.delete(key);
    if (err) failed.push({ topic, seq, error: err.message });
    else ackedSeen++;
    cb?.(err, packet);
  });
};

const options = JSON.parse(process.argv[2] ?? '{}') as FleetOptions;
const send = (m: unknown) => new Promise<void>((resolve) => (process.send ? process.send(m, () => resolve()) : resolve()));

const fleet = await startFleet(options);
fleet.on('connection', (m) => process.stderr.write(`${new Date().toISOString()} ${m}\n`));
await send({ type: 'started' });
const progress = setInterval(() => void send({ type: 'progress', stats: fleet.stats() }), 5000);

let stopping = false;
process.on('message', async (m: { type?: string }) => {
  if (m?.type !== 'stop' || stopping) return;
  stopping = true;
  clearInterval(progress);
  const stats = await fleet.stop();
  const lastSeq: Record<string, number> = {};
  const kindOf: Record<string, Kind> = {};
  const prefix = fleet.options.topic_prefix;
  for (const d of fleet.devices) {
    for (const kind of KINDS) {
      const topic = topicOf(kind, d.idOf(kind), prefix);
      kindOf[topic] = kind;
      if (d.seq[kind] > 0) lastSeq[topic] = d.seq[kind];
    }
  }
  const result: PublisherResult = { type: 'result', stats, lastSeq, kindOf, failed, unacked: [...waiting.values()], ackedSeen, noSeq };
  await send(result);
  process.exit(0);
});
process.on('disconnect', () => {
  if (!stopping) process.exit(1);
});
