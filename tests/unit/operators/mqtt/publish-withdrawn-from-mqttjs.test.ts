/**
 * operators/mqtt/outgoing.ts against the real mqtt.js client code, without a broker (a client that
 * is never connected): a withdrawn publish leaves every place mqtt.js keeps it (offline store with
 * its message id, QoS 0 offline queue, the queue of publishes made while the store is being
 * replayed), its callback is not called, and the store's replay stream skips packets removed after
 * it was created. These also tell when an mqtt.js upgrade moves the internals the output relies on.
 */
import mqtt, { type MqttClient, type Packet } from 'mqtt';
import { describe, expect, it } from 'vitest';
import { OutgoingStore, canWithdraw, trackedPublish } from '../../../../operators/mqtt/outgoing.ts';

/** A client that never connects (manualConnect): it holds no socket or timer, nothing to close. */
const offlineClient = (store: OutgoingStore): MqttClient => mqtt.connect({ manualConnect: true, host: '127.0.0.1', port: 1, reconnectPeriod: 0, outgoingStore: store });

const internals = (c: MqttClient) => c as unknown as { _storeProcessing: boolean; _storeProcessingQueue: unknown[]; _invokeAllStoreProcessingQueue(): void; queue: unknown[] };
const publish = (id: number, cmd: 'publish' | 'pubrel' = 'publish') => ({ cmd, messageId: id, topic: 't', payload: Buffer.from(String(id)), qos: 1, retain: false, dup: false }) as unknown as Packet;

function readAll(store: OutgoingStore, between?: () => void): Promise<number[]> {
  const stream = store.createStream() as unknown as NodeJS.ReadableStream & { read(n: number): Packet | null };
  between?.();
  const ids: number[] = [];
  return new Promise((resolve) => {
    stream.on('data', (p: Packet) => ids.push(p.messageId as number));
    stream.on('end', () => resolve(ids));
  });
}

describe('OutgoingStore', () => {
  it('replays what is stored, skipping packets deleted (or replaced under the same id) after the stream was created', async () => {
    const store = new OutgoingStore();
    for (const id of [1, 2, 3, 4]) store.put(publish(id));
    expect(await readAll(store)).toEqual([1, 2, 3, 4]);
    const ids = await readAll(store, () => {
      store.del({ messageId: 2 });
      store.del({ messageId: 4 });
      store.put(publish(4)); // a new publish that got the freed id: not part of this replay
    });
    expect(ids).toEqual([1, 3]);
    expect(store.size).toBe(3);
  });

  it('get, del and peek answer like mqtt.js\'s store; a pubrel replaces its publish', () => {
    const store = new OutgoingStore();
    store.put(publish(7));
    store.put(publish(7, 'pubrel'));
    expect(store.peek(7)?.cmd).toBe('pubrel');
    let got: unknown;
    store.get({ messageId: 7 }, (_err, p) => (got = p?.cmd));
    expect(got).toBe('pubrel');
    let err: Error | undefined;
    store.del({ messageId: 8 }, (e) => (err = e));
    expect(err?.message).toBe('missing packet');
  });
});

describe('trackedPublish on a client that is not connected', () => {
  it('QoS 1: stored offline with a message id; withdrawn: out of the store and client.outgoing, callback not called', () => {
    const store = new OutgoingStore();
    const client = offlineClient(store);
    expect(canWithdraw(client)).toBe(true);
    const calls: unknown[] = [];
    const p = trackedPublish(client, store, 'a/b', Buffer.from('x'), { qos: 1 }, (err) => calls.push(err ?? 'ok'));
    expect(p.messageId).toBeGreaterThan(0);
    expect(store.size).toBe(1);
    expect(Object.keys(client.outgoing)).toEqual([String(p.messageId)]);
    expect(p.withdraw()).toBe('withdrawn');
    expect(store.size).toBe(0);
    expect(client.outgoing).toEqual({});
    expect(calls).toEqual([]);
    expect(p.withdraw()).toBe('settled');
  });

  it('QoS 2 after PUBREC (a pubrel stored under its id): cannot be withdrawn', () => {
    const store = new OutgoingStore();
    const client = offlineClient(store);
    const p = trackedPublish(client, store, 'a/b', Buffer.from('x'), { qos: 2 }, () => undefined);
    store.put(publish(p.messageId!, 'pubrel'));
    expect(p.withdraw()).toBe('committed');
    expect(store.size).toBe(1);
  });

  it('QoS 0: in the offline queue; withdrawn: out of it', () => {
    const store = new OutgoingStore();
    const client = offlineClient(store);
    const p = trackedPublish(client, store, 'a/b', Buffer.from('x'), { qos: 0 }, () => undefined);
    expect(internals(client).queue).toHaveLength(1);
    expect(p.withdraw()).toBe('withdrawn');
    expect(internals(client).queue).toHaveLength(0);
  });

  it('made while mqtt.js replays its store: waits without a message id; withdrawn from that queue it is never published, one left there gets its id when mqtt.js gets to it', () => {
    const store = new OutgoingStore();
    const client = offlineClient(store);
    internals(client)._storeProcessing = true; // as between CONNACK and the end of the replay
    const gone = trackedPublish(client, store, 'a/b', Buffer.from('gone'), { qos: 1 }, () => undefined);
    const kept = trackedPublish(client, store, 'a/b', Buffer.from('kept'), { qos: 1 }, () => undefined);
    expect(internals(client)._storeProcessingQueue).toHaveLength(2);
    expect(gone.messageId).toBeUndefined();
    expect(gone.withdraw()).toBe('withdrawn');
    expect(internals(client)._storeProcessingQueue).toHaveLength(1);
    internals(client)._storeProcessing = false;
    internals(client)._invokeAllStoreProcessingQueue();
    expect(store.size).toBe(1);
    expect(kept.messageId).toBeGreaterThan(0);
    expect((store.peek(kept.messageId!) as { payload: Buffer }).payload.toString()).toBe('kept');
    expect(kept.withdraw()).toBe('withdrawn');
    expect(store.size).toBe(0);
  });
});
