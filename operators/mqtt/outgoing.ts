/**
 * Withdrawing a publish from mqtt.js (the mqtt output's `publish_timeout`).
 *
 * mqtt.js keeps every QoS 1/2 publish that has no acknowledgement yet: in `client.outgoing`
 * (message id -> callback) and in its outgoing store, and sends the stored ones again after every
 * reconnect, forever. A publish made while the broker is away goes into the store at once and is
 * sent when the broker is back, however late that is. To give up on a publish for good, it has to
 * leave every place mqtt.js may hold it, depending on how far it got:
 *
 *   1. `_storeProcessingQueue`: publishes made while the client replays its store after a reconnect
 *      (or when no message id was free) wait there as closures, without a message id yet;
 *   2. `client.queue`: QoS 0 publishes while disconnected (with `queueQoSZero`, the default);
 *   3. `client.outgoing` + the outgoing store: QoS 1/2 publishes with a message id, sent or not.
 *      `client.removeOutgoingMessage(id)` (public API) removes both and frees the id.
 *
 * One gap remains in mqtt.js for 3.: while it replays its store after a reconnect it reads from a
 * snapshot taken at CONNACK (one packet per acknowledgement), so a packet removed after the
 * snapshot would still be sent. `OutgoingStore` (given to the client as `outgoingStore`) closes it:
 * its replay stream skips packets that are no longer in the store.
 *
 * `_storeProcessingQueue` is private in mqtt.js 5 (checked against 5.16): `trackedPublish` finds the
 * publish there by its callback and fails loudly if the field ever disappears, rather than sending
 * a withdrawn message.
 */
import { Readable } from 'node:stream';
import type { IClientPublishOptions, IStore, MqttClient, Packet } from 'mqtt';

type Callback = (err?: Error) => void;

/** An outgoing store whose replay stream skips packets deleted after the stream was created. */
export class OutgoingStore implements IStore {
  private packets = new Map<number, Packet>();

  put(packet: Packet, cb?: (err?: Error) => void): this {
    this.packets.set((packet as { messageId: number }).messageId, packet);
    cb?.();
    return this;
  }

  /** mqtt.js types it as readable-stream's Readable; it uses read(), 'readable', 'end', 'error' and destroy(), which node's has. */
  createStream(): ReturnType<IStore['createStream']> {
    const snapshot = [...this.packets.values()];
    let i = 0;
    const stream = new Readable({
      objectMode: true,
      read: () => {
        while (i < snapshot.length) {
          const p = snapshot[i++]!;
          // Still stored, and not replaced by a new publish that got the same (freed) id.
          if (this.packets.get((p as { messageId: number }).messageId) === p) {
            stream.push(p);
            return;
          }
        }
        stream.push(null);
      },
    });
    return stream as unknown as ReturnType<IStore['createStream']>;
  }

  del(packet: Pick<Packet, 'messageId'>, cb?: (err?: Error, packet?: Packet) => void): this {
    const id = packet.messageId as number;
    const p = this.packets.get(id);
    if (p) {
      this.packets.delete(id);
      cb?.(undefined, p);
    } else cb?.(new Error('missing packet'));
    return this;
  }

  get(packet: Pick<Packet, 'messageId'>, cb: (err?: Error, packet?: Packet) => void): this {
    const p = this.packets.get(packet.messageId as number);
    if (p) cb(undefined, p);
    else cb(new Error('missing packet'));
    return this;
  }

  /** The stored packet of a message id (a `publish`, or a `pubrel` once a QoS 2 publish got its PUBREC). */
  peek(messageId: number): Packet | undefined {
    return this.packets.get(messageId);
  }

  get size(): number {
    return this.packets.size;
  }

  close(cb?: (err?: Error) => void): void {
    this.packets.clear();
    cb?.();
  }
}

/** What `withdraw` found. */
export type WithdrawOutcome =
  /** It was still held by mqtt.js and is gone now: it will never be sent (again). */
  | 'withdrawn'
  /** Its callback had already been called: mqtt.js holds nothing of it. */
  | 'settled'
  /** It cannot be taken back: a QoS 2 publish the broker has (PUBREC received), or a QoS 0 publish being written. The callback follows. */
  | 'committed';

export interface TrackedPublish {
  withdraw(): WithdrawOutcome;
  /** The message id mqtt.js gave it (QoS 1/2), once it has one. */
  readonly messageId: number | undefined;
}

interface Internals {
  outgoing: MqttClient['outgoing'];
  queue: { packet: Packet; cb?: unknown }[];
  _storeProcessingQueue?: { invoke: () => boolean; callback?: unknown }[];
  getLastMessageId(): number;
}

/** Whether this mqtt.js client has the internals `trackedPublish` relies on. */
export function canWithdraw(client: MqttClient): boolean {
  const c = client as unknown as Internals;
  return Array.isArray(c._storeProcessingQueue) && Array.isArray(c.queue) && typeof c.outgoing === 'object' && typeof client.removeOutgoingMessage === 'function';
}

/**
 * `client.publish` whose callback is called at most once, and that can be withdrawn until then.
 * `store` must be the client's outgoing store.
 */
export function trackedPublish(client: MqttClient, store: OutgoingStore, topic: string, payload: Buffer, opts: IClientPublishOptions, done: Callback): TrackedPublish {
  const c = client as unknown as Internals;
  if (!Array.isArray(c._storeProcessingQueue)) {
    throw new Error('mqtt.js has no _storeProcessingQueue: this version cannot withdraw publishes; publish_timeout needs mqtt 5.x (checked with 5.16)');
  }
  let settled = false;
  let messageId: number | undefined;
  const cb: Callback = (err) => {
    if (settled) return;
    settled = true;
    done(err);
  };
  const findId = (): number | undefined => {
    const last = c.getLastMessageId();
    if (c.outgoing[last]?.cb === cb) return last;
    for (const [id, entry] of Object.entries(c.outgoing)) if (entry.cb === cb) return Number(id);
    return undefined;
  };

  client.publish(topic, payload, opts, cb);

  const waiting = c._storeProcessingQueue.find((e) => e.callback === cb);
  if (waiting) {
    // Not published yet (no message id): learn the id when mqtt.js gets to it.
    const invoke = waiting.invoke;
    waiting.invoke = () => {
      const ok = invoke();
      if (ok) messageId = findId();
      return ok;
    };
  } else if ((opts.qos ?? 0) > 0 && !settled) messageId = findId();

  return {
    get messageId() {
      return messageId;
    },
    withdraw(): WithdrawOutcome {
      if (settled) return 'settled';
      const spq = c._storeProcessingQueue!;
      const wi = spq.findIndex((e) => e.callback === cb);
      if (wi >= 0) {
        spq.splice(wi, 1);
        settled = true;
        return 'withdrawn';
      }
      const qi = c.queue.findIndex((e) => e.cb === cb);
      if (qi >= 0) {
        c.queue.splice(qi, 1);
        settled = true;
        return 'withdrawn';
      }
      if (messageId !== undefined && c.outgoing[messageId]) {
        if (store.peek(messageId)?.cmd === 'pubrel') return 'committed';
        settled = true; // removeOutgoingMessage calls the callback with "Message removed": not ours to report
        client.removeOutgoingMessage(messageId);
        return 'withdrawn';
      }
      // QoS 0 being written to the socket: its callback comes when the write is done.
      return 'committed';
    },
  };
}
