/** A test subscriber on the real broker: collects messages and lets a test wait for a condition. */
import { randomBytes } from 'node:crypto';
import { connectAsync, type MqttClient } from 'mqtt';

export const MQTT_URL = process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883';

export interface Received {
  topic: string;
  json: Record<string, unknown>;
  bytes: number;
}

export class Collector {
  readonly messages: Received[] = [];
  private waiters: { check: () => boolean; resolve: () => void }[] = [];

  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload) => {
      this.messages.push({ topic, json: JSON.parse(payload.toString()), bytes: payload.length });
      this.waiters = this.waiters.filter((w) => (w.check() ? (w.resolve(), false) : true));
    });
  }

  /** Connect and subscribe (QoS 1); resolves after the SUBACK, so nothing published later is missed. */
  static async start(filters: string[]): Promise<Collector> {
    const client = await connectAsync(MQTT_URL, { clientId: `test-collector-${randomBytes(4).toString('hex')}`, reconnectPeriod: 0, connectTimeout: 5000 }).catch((err: Error) => {
      throw new Error(`no MQTT broker at ${MQTT_URL} (${err.message}); start it with: bash scripts/stack up && eval "$(bash scripts/stack env)"`);
    });
    await client.subscribeAsync(filters, { qos: 1 });
    return new Collector(client);
  }

  /** Resolves as soon as `check()` holds, evaluated on every message (the test timeout bounds it). */
  until(check: () => boolean): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ check, resolve }));
  }

  on(topic: string): Received[] {
    return this.messages.filter((m) => m.topic === topic);
  }

  async publish(topic: string, payload: unknown): Promise<void> {
    await this.client.publishAsync(topic, typeof payload === 'string' ? payload : JSON.stringify(payload), { qos: 1 });
  }

  async close(): Promise<void> {
    await this.client.endAsync();
  }
}

export const uniquePrefix = (name: string) => `test-${name}-${randomBytes(4).toString('hex')}/`;
