/**
 * Acknowledging inbound QoS 1/2 messages only when they are done, in the order they came.
 *
 * The MQTT spec (3.1.1 and 5.0, section 4.6, [MQTT-4.6.0-2] and [MQTT-4.6.0-3]) says a client MUST
 * send PUBACK (QoS 1) and PUBREC (QoS 2) in the order the PUBLISH packets were received. Messages
 * finish downstream in any order, so each PUBLISH of the current connection gets an entry in a
 * queue, and acknowledgements go out over the unbroken run of done entries at its head.
 *
 * Packet ids belong to the session, not to the connection: when a connection drops, the broker
 * sends every unacknowledged PUBLISH again on the next connection, with its original packet id and
 * the DUP flag, and it cannot reuse that id for another message before it is acknowledged. So a
 * DUP PUBLISH whose id belongs to a message of an earlier connection that is still unacknowledged
 * is that message again: it is not handed out a second time; its acknowledgement follows the
 * original's outcome. When the broker says the session is gone (CONNACK without session present)
 * that bookkeeping is dropped.
 *
 * A failed message (ack.fail) is never acknowledged: it blocks the queue, and the input reconnects
 * so that the broker sends it (and everything after it that was not acknowledged) again.
 */

export type DeliveryState = 'pending' | 'done' | 'failed';

export interface Delivery {
  readonly messageId: number;
  readonly qos: 1 | 2;
  state: DeliveryState;
  /** The connection the delivery was last received on. */
  connection: number;
}

interface Entry {
  messageId: number;
  qos: 1 | 2;
  delivery: Delivery;
  /** A later PUBLISH with the same id on the same connection replaced this one: never acknowledge it. */
  stale: boolean;
}

/** Sends PUBACK (qos 1) or PUBREC (qos 2) for a packet id on the current connection. */
export type AckSender = (messageId: number, qos: 1 | 2) => void;

export class OrderedAcks {
  private readonly byId = new Map<number, Delivery>();
  private queue: Entry[] = [];
  private connection = 0;

  constructor(private readonly send: AckSender) {}

  /**
   * A PUBLISH with QoS 1 or 2 arrived on the current connection. `fresh` says whether it must be
   * handed out; a resend of a message still being processed (or already done) is not.
   */
  received(messageId: number, qos: 1 | 2, dup: boolean): { delivery: Delivery; fresh: boolean } {
    const known = this.byId.get(messageId);
    let delivery: Delivery;
    let fresh: boolean;
    if (known && this.isResend(messageId, dup)) {
      delivery = known;
      delivery.connection = this.connection;
      fresh = false;
    } else {
      if (known && known.connection === this.connection) {
        for (const e of this.queue) if (e.messageId === messageId) e.stale = true;
      }
      delivery = { messageId, qos, state: 'pending', connection: this.connection };
      this.byId.set(messageId, delivery);
      fresh = true;
    }
    this.queue.push({ messageId, qos, delivery, stale: false });
    this.flush();
    return { delivery, fresh };
  }

  /** Whether a PUBLISH would be taken as the resend of a message handed out before (see `received`). */
  isResend(messageId: number, dup: boolean): boolean {
    const known = this.byId.get(messageId);
    return Boolean(known && dup && known.connection < this.connection && known.state !== 'failed');
  }

  /** The message finished (`ok`) or failed. Returns the acknowledgements sent. */
  settle(delivery: Delivery, ok: boolean): number {
    if (delivery.state !== 'pending') return 0;
    delivery.state = ok ? 'done' : 'failed';
    return this.flush();
  }

  /** Send acknowledgements over the done run at the head of the queue. */
  flush(): number {
    let sent = 0;
    while (this.queue.length) {
      const head = this.queue[0]!;
      if (head.stale) {
        this.queue.shift();
        continue;
      }
      if (head.delivery.state !== 'done') break;
      this.queue.shift();
      this.send(head.messageId, head.qos);
      sent++;
      if (this.byId.get(head.messageId) === head.delivery) this.byId.delete(head.messageId);
    }
    return sent;
  }

  /** The connection closed: its unsent acknowledgements can no longer be sent. */
  connectionLost(): void {
    this.queue = [];
    this.connection++;
  }

  /** The broker has no session for us: nothing it sends again belongs to an earlier message. */
  sessionLost(): void {
    this.byId.clear();
  }

  /** Whether a failed message blocks the queue of this connection. */
  get blocked(): boolean {
    return this.queue.some((e) => !e.stale && e.delivery.state === 'failed');
  }

  /** Entries of this connection not acknowledged yet (what the broker counts against its window). */
  get unacknowledged(): number {
    return this.queue.length;
  }

  /** Messages known by packet id whose acknowledgement has not been sent yet, on any connection. */
  get tracked(): number {
    return this.byId.size;
  }
}
