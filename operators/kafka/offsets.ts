/**
 * Offset tracking for the kafka input, without Kafka: which offset may be committed per partition.
 *
 * Messages of a partition are tracked in delivery order. The committable offset is the one after
 * the last message of the unbroken run of done messages at the head: a message that is not done
 * holds the position, however many later ones are done. A failed message (nack) holds the
 * position too and is redelivered: `fail` drops it and every later entry (the input seeks back
 * to it; later acks of the dropped entries are ignored, their messages come again).
 *
 * On a rebalance `assign` keeps the trackers of partitions that stay assigned and forgets the
 * others: nothing is ever committed for a partition this member no longer owns, and acks of its
 * messages that arrive later are ignored.
 *
 * Offsets are numbers: Kafka offsets are int64, but a partition would need 2^53 messages to
 * leave the safe range.
 */

export interface TopicPartition {
  topic: string;
  partition: number;
}

export interface CommitEntry extends TopicPartition {
  /** The offset to commit: the next message to read after a restart. */
  offset: number;
}

export const partitionKey = (topic: string, partition: number) => `${topic}\u0000${partition}`;

/** A tracked message; it is its own token (one object per message, not two). */
class Entry implements OffsetToken {
  done = false;
  /** Dropped by a fail or a revoke: its ack means nothing any more. */
  dead = false;
  constructor(
    readonly offset: number,
    readonly tracker: PartitionTracker,
  ) {}
  get topic(): string {
    return this.tracker.topic;
  }
  get partition(): number {
    return this.tracker.partition;
  }
}

/** A message's place in its partition's tracker; `done` / `fail` settle it. */
export interface OffsetToken {
  readonly offset: number;
  readonly topic: string;
  readonly partition: number;
}

export class PartitionTracker {
  /** Entries not yet passed by the position, in offset order. */
  private entries: Entry[] = [];
  private head = 0;
  /** Everything below this offset is done (or was never ours); the offset to commit. */
  private position: number | null = null;
  private committedOffset: number | null = null;
  /** The first offset tracked: where reading started (the committed offset, or a reset). */
  private start: number | null = null;
  private lastTracked = -1;
  private pending = 0;
  private alive = true;

  constructor(
    readonly topic: string,
    readonly partition: number,
  ) {}

  /** Messages handed out and neither done nor dropped. */
  get inFlight(): number {
    return this.pending;
  }

  get isAlive(): boolean {
    return this.alive;
  }

  /**
   * Track a message about to be handed out. Returns null for an offset at or below one already
   * tracked (a duplicate from a re-fetch): it is in flight or done already and must not be
   * handed out again.
   */
  track(offset: number): OffsetToken | null {
    if (!this.alive || offset <= this.lastTracked) return null;
    const entry = new Entry(offset, this);
    this.entries.push(entry);
    this.lastTracked = offset;
    this.pending++;
    if (this.position === null) this.position = this.start = offset;
    return entry;
  }

  /** @internal */
  settle(entry: Entry, ok: boolean): number | null {
    if (entry.dead || entry.done || entry.tracker !== this || !this.alive) return null;
    if (ok) {
      entry.done = true;
      this.pending--;
      this.advance();
      return null;
    }
    // Nack: drop this entry and all later ones; the input redelivers from here.
    const at = this.entries.indexOf(entry, this.head);
    for (let i = at; i < this.entries.length; i++) {
      const e = this.entries[i]!;
      if (!e.done) this.pending--;
      e.dead = true;
    }
    this.entries.length = at;
    this.lastTracked = at > this.head ? this.entries[at - 1]!.offset : (this.position ?? entry.offset) - 1;
    this.advance();
    return entry.offset;
  }

  private advance() {
    while (this.head < this.entries.length && this.entries[this.head]!.done) {
      this.position = this.entries[this.head]!.offset + 1;
      this.head++;
    }
    if (this.head === this.entries.length) {
      this.entries = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  /** The offset to commit now, or null when nothing new is done since the last commit. */
  committable(): number | null {
    if (!this.alive || this.position === null || this.start === null) return null;
    // Nothing done yet: the position is still where reading started, which is committed already.
    if (this.position <= this.start) return null;
    if (this.committedOffset !== null && this.position <= this.committedOffset) return null;
    return this.position;
  }

  /** Record that `offset` was committed (it is not offered again). */
  committed(offset: number): void {
    if (this.committedOffset === null || offset > this.committedOffset) this.committedOffset = offset;
  }

  /** Forget everything: the partition was revoked. Later acks of its messages are ignored. */
  revoke(): void {
    this.alive = false;
    for (let i = this.head; i < this.entries.length; i++) this.entries[i]!.dead = true;
    this.entries = [];
    this.head = 0;
    this.pending = 0;
  }
}


/** Every partition's tracker; what the input uses. */
export class OffsetTracker {
  private readonly trackers = new Map<string, PartitionTracker>();

  /** The tracker of a partition, created on first use. */
  partition(topic: string, partition: number): PartitionTracker {
    const key = partitionKey(topic, partition);
    let t = this.trackers.get(key);
    if (!t) {
      t = new PartitionTracker(topic, partition);
      this.trackers.set(key, t);
    }
    return t;
  }

  has(topic: string, partition: number): boolean {
    return this.trackers.has(partitionKey(topic, partition));
  }

  track(topic: string, partition: number, offset: number): OffsetToken | null {
    return this.partition(topic, partition).track(offset);
  }

  /** The message is done. Returns nothing; ignored for revoked partitions and dropped entries. */
  done(token: OffsetToken): void {
    const entry = token as Entry;
    entry.tracker.settle(entry, true);
  }

  /**
   * The message failed: returns the offset to redeliver from (seek there), or null when the
   * token no longer counts (its partition was revoked, or an earlier failure already dropped it).
   */
  fail(token: OffsetToken): number | null {
    const entry = token as Entry;
    return entry.tracker.settle(entry, false);
  }

  /**
   * A new assignment (after a rebalance): trackers of partitions still assigned stay, the others
   * are revoked and forgotten. Returns the partitions that were revoked.
   */
  assign(assigned: TopicPartition[]): TopicPartition[] {
    const keep = new Set(assigned.map((tp) => partitionKey(tp.topic, tp.partition)));
    const revoked: TopicPartition[] = [];
    for (const [key, t] of this.trackers) {
      if (keep.has(key)) continue;
      t.revoke();
      this.trackers.delete(key);
      revoked.push({ topic: t.topic, partition: t.partition });
    }
    return revoked;
  }

  /** Forget every partition (the consumer left the group). */
  revokeAll(): void {
    this.assign([]);
  }

  /** Offsets to commit now, one per partition with progress. */
  committable(): CommitEntry[] {
    const out: CommitEntry[] = [];
    for (const t of this.trackers.values()) {
      const offset = t.committable();
      if (offset !== null) out.push({ topic: t.topic, partition: t.partition, offset });
    }
    return out;
  }

  /** Record a successful commit; ignored for partitions revoked meanwhile. */
  committed(entries: CommitEntry[]): void {
    for (const e of entries) this.trackers.get(partitionKey(e.topic, e.partition))?.committed(e.offset);
  }

  /** Unfinished messages of a partition (for backpressure). */
  inFlight(topic: string, partition: number): number {
    return this.inFlightOf(partitionKey(topic, partition));
  }

  /** `inFlight` by the partition's key (`partitionKey`), for callers that have it already. */
  inFlightOf(key: string): number {
    return this.trackers.get(key)?.inFlight ?? 0;
  }

  partitions(): TopicPartition[] {
    return [...this.trackers.values()].map((t) => ({ topic: t.topic, partition: t.partition }));
  }
}
