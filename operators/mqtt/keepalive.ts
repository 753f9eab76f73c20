/**
 * Keepalive for a subscriber that reads behind a backlog.
 *
 * mqtt.js counts a connection as dead when no PINGRESP (or acknowledgement of something it sent)
 * has been handled within 1.5 keepalive intervals; a received PUBLISH does not count. The mqtt
 * input handles packets strictly in order and stops handling them while `max_in_flight` messages
 * are in progress, so under load the PINGRESP waits behind every PUBLISH the broker has already
 * written into the socket (Mosquitto keeps it full): at a few hundred messages a second that is
 * longer than 15 s, and the connection was closed and made again every ~46 s although the broker
 * answered every ping (soak, docs/benchmarks.md). Each reconnect makes the broker send the
 * unacknowledged messages again (duplicates) and can leave a SUBSCRIBE without its SUBACK.
 *
 * So a handled PUBLISH proves the connection alive too (`received`, at most every `proofEveryMs`,
 * which restarts mqtt.js's keepalive clock), and since mqtt.js then no longer sends PINGREQ while
 * messages flow, the broker's side of the keepalive (it wants a packet from the client within 1.5
 * intervals) is kept by `tick`: a PINGREQ when nothing was sent for half an interval. When
 * nothing is handled at all (the pipeline holds `max_in_flight` messages and nothing finishes),
 * mqtt.js's own timeout applies as before.
 */
export interface KeepaliveActions {
  /** Restart the client's keepalive clock: the connection was just seen alive. */
  proveAlive(): void;
  /** Send a PINGREQ. */
  ping(): void;
}

export class InboundKeepalive {
  private lastSent: number;
  private lastProof = Number.NEGATIVE_INFINITY;
  /** How often `tick` should be called. */
  readonly tickEveryMs: number;
  private readonly proofEveryMs: number;

  constructor(
    private readonly intervalMs: number,
    private readonly now: () => number,
    private readonly actions: KeepaliveActions,
  ) {
    this.lastSent = now();
    this.tickEveryMs = Math.max(1, Math.floor(intervalMs / 4));
    this.proofEveryMs = Math.max(1, Math.min(1_000, Math.floor(intervalMs / 4)));
  }

  /** A packet went to the broker. */
  sent(): void {
    this.lastSent = this.now();
  }

  /** A packet from the broker was handled. */
  received(): void {
    const t = this.now();
    if (t - this.lastProof < this.proofEveryMs) return;
    this.lastProof = t;
    this.actions.proveAlive();
  }

  /** Called every `tickEveryMs` while connected: ping when nothing was sent for half an interval. */
  tick(): void {
    if (this.now() - this.lastSent < this.intervalMs / 2) return;
    this.lastSent = this.now();
    this.actions.ping();
  }

  /** A new connection: nothing is owed to the broker yet. */
  connected(): void {
    this.lastSent = this.now();
    this.lastProof = Number.NEGATIVE_INFINITY;
  }
}
