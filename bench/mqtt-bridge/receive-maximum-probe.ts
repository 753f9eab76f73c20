/**
 * Does the broker honour an MQTT 5 subscriber's receive maximum once PUBACKs flow?
 *
 *   node --import tsx bench/mqtt-bridge/receive-maximum-probe.ts [--url mqtt://127.0.0.1:1883] [--receive-maximum 1000]
 *
 * A subscriber (MQTT 5, persistent session, receive maximum R) acknowledges 100 messages every 50 ms
 * (2,000/s), in order, while a publisher sends 30,000 QoS 1 messages as fast as it can. A broker that
 * honours the receive maximum never has more than R unacknowledged messages out to the subscriber.
 * The runner's mqtt input relies on that with MQTT 5 (it keeps reading the socket whatever is in
 * flight), so a broker that does not honour it can flood the runner.
 *
 * Exit code 0 when the broker kept within R, 1 when it did not.
 */
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';

const { values } = parseArgs({
  options: { url: { type: 'string', default: process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883' }, 'receive-maximum': { type: 'string', default: '1000' }, count: { type: 'string', default: '30000' } },
});
const url = values.url!;
const receiveMaximum = Number(values['receive-maximum']);
const count = Number(values.count);
const id = `rm-probe-${Date.now().toString(36)}`;
const topic = `${id}/x`;

const sub = mqtt.connect(url, { protocolVersion: 5, clientId: `${id}-sub`, clean: false, properties: { receiveMaximum, sessionExpiryInterval: 60 } });
type SendPacket = (packet: { cmd: string; messageId?: number; reasonCode?: number }, cb?: () => void, ...rest: unknown[]) => void;
const internals = sub as unknown as { _sendPacket: SendPacket };
const send = internals._sendPacket.bind(sub);
// Swallow mqtt.js's automatic PUBACK; acknowledge on our own schedule instead.
internals._sendPacket = (packet, cb, ...rest) => (packet.cmd === 'puback' ? cb?.() : send(packet, cb, ...rest));

const pending: number[] = [];
let received = 0;
let acked = 0;
let maxOutstanding = 0;
sub.on('packetreceive', (p) => {
  if (p.cmd !== 'publish') return;
  received++;
  pending.push((p as { messageId: number }).messageId);
  maxOutstanding = Math.max(maxOutstanding, received - acked);
});
const acker = setInterval(() => {
  for (let i = 0; i < 100 && pending.length; i++) {
    send({ cmd: 'puback', messageId: pending.shift()!, reasonCode: 0 });
    acked++;
  }
}, 50);

sub.once('connect', (connack) => {
  const brokerRm = connack.properties?.receiveMaximum;
  sub.subscribe(topic, { qos: 1 }, () => {
    const pub = mqtt.connect(url, { clientId: `${id}-pub` });
    pub.once('connect', async () => {
      for (let i = 0; i < count; i++) {
        pub.publish(topic, 'x'.repeat(200), { qos: 1 });
        if (i % 500 === 0) await new Promise((r) => setImmediate(r));
      }
      setTimeout(async () => {
        clearInterval(acker);
        const ok = maxOutstanding <= receiveMaximum;
        process.stdout.write(
          `${url}: subscriber receive maximum ${receiveMaximum} (broker's own for incoming: ${brokerRm ?? 'not sent'}); ${count} published, ${received} received, ${acked} acknowledged; ` +
            `at most ${maxOutstanding} unacknowledged messages were out to the subscriber: ${ok ? 'the broker honours the receive maximum' : 'the broker does NOT honour the receive maximum'}\n`,
        );
        await pub.endAsync();
        // Drop the session.
        await sub.endAsync(true);
        const cleaner = mqtt.connect(url, { clientId: `${id}-sub`, clean: true, protocolVersion: 4 });
        cleaner.once('connect', () => void cleaner.endAsync().then(() => process.exit(ok ? 0 : 1)));
      }, 3000);
    });
  });
});
