/**
 * The kafka input's offset tracking, without Kafka: a partition's offset is committed only over
 * an unbroken run of done messages, a nack holds the position and asks for redelivery, and
 * revoked partitions are forgotten.
 */
import { describe, expect, it } from 'vitest';
import { OffsetTracker, type OffsetToken } from '../../../../operators/kafka/offsets.ts';

function trackRange(t: OffsetTracker, topic: string, partition: number, from: number, to: number): OffsetToken[] {
  const out: OffsetToken[] = [];
  for (let o = from; o <= to; o++) out.push(t.track(topic, partition, o)!);
  return out;
}

describe('kafka offset tracker', () => {
  it('commits nothing before any message is done', () => {
    const t = new OffsetTracker();
    trackRange(t, 'a', 0, 10, 14);
    expect(t.committable()).toEqual([]);
  });

  it('commits only over an unbroken run of done offsets', () => {
    const t = new OffsetTracker();
    const m = trackRange(t, 'a', 0, 0, 4);
    t.done(m[0]!);
    t.done(m[1]!);
    t.done(m[3]!); // 2 is not done: 3 must not be committed
    expect(t.committable()).toEqual([{ topic: 'a', partition: 0, offset: 2 }]);
    t.done(m[2]!);
    expect(t.committable()).toEqual([{ topic: 'a', partition: 0, offset: 4 }]);
    t.done(m[4]!);
    expect(t.committable()).toEqual([{ topic: 'a', partition: 0, offset: 5 }]);
  });

  it('handles acks in any order and offers each commit once', () => {
    const t = new OffsetTracker();
    const m = trackRange(t, 'a', 0, 100, 109);
    for (const i of [9, 7, 5, 3, 1, 8, 6, 4, 2]) t.done(m[i]!);
    expect(t.committable()).toEqual([]);
    t.done(m[0]!);
    const c = t.committable();
    expect(c).toEqual([{ topic: 'a', partition: 0, offset: 110 }]);
    t.committed(c);
    expect(t.committable()).toEqual([]);
    expect(t.inFlight('a', 0)).toBe(0);
  });

  it('skips offset gaps (compaction, transaction markers): only delivered messages count', () => {
    const t = new OffsetTracker();
    const a = t.track('a', 0, 3)!;
    const b = t.track('a', 0, 7)!;
    const c = t.track('a', 0, 12)!;
    t.done(a);
    t.done(b);
    expect(t.committable()).toEqual([{ topic: 'a', partition: 0, offset: 8 }]);
    t.done(c);
    expect(t.committable()).toEqual([{ topic: 'a', partition: 0, offset: 13 }]);
  });

  it('keeps partitions apart', () => {
    const t = new OffsetTracker();
    const p0 = trackRange(t, 'a', 0, 0, 2);
    const p1 = trackRange(t, 'a', 1, 50, 52);
    const q0 = trackRange(t, 'b', 0, 7, 8);
    p0.forEach((x) => t.done(x));
    t.done(p1[1]!);
    t.done(q0[0]!);
    expect(t.committable()).toEqual([
      { topic: 'a', partition: 0, offset: 3 },
      { topic: 'b', partition: 0, offset: 8 },
    ]);
  });

  it('a nack holds the position, asks to redeliver from it, and ignores acks of the dropped later messages', () => {
    const t = new OffsetTracker();
    const m = trackRange(t, 'a', 0, 0, 5);
    t.done(m[0]!);
    t.done(m[1]!);
    expect(t.fail(m[2]!)).toBe(2);
    // 3..5 were dropped with it: their acks do not move the position and they are not in flight.
    t.done(m[3]!);
    t.done(m[4]!);
    t.done(m[5]!);
    expect(t.committable()).toEqual([{ topic: 'a', partition: 0, offset: 2 }]);
    expect(t.inFlight('a', 0)).toBe(0);
    // A nack of an entry that was already dropped asks for nothing.
    expect(t.fail(m[4]!)).toBeNull();
    // The redelivery from 2 is tracked again and moves the position.
    const again = trackRange(t, 'a', 0, 2, 5);
    again.forEach((x) => t.done(x));
    expect(t.committable()).toEqual([{ topic: 'a', partition: 0, offset: 6 }]);
  });

  it('a nack of the first message holds the position where reading started', () => {
    const t = new OffsetTracker();
    const m = trackRange(t, 'a', 0, 40, 42);
    t.done(m[1]!);
    expect(t.fail(m[0]!)).toBe(40);
    expect(t.committable()).toEqual([]);
    const again = trackRange(t, 'a', 0, 40, 42);
    t.done(again[0]!);
    expect(t.committable()).toEqual([{ topic: 'a', partition: 0, offset: 41 }]);
  });

  it('refuses duplicates of offsets already tracked (a re-fetch after a rebalance)', () => {
    const t = new OffsetTracker();
    const m = trackRange(t, 'a', 0, 0, 3);
    t.done(m[0]!);
    expect(t.track('a', 0, 0)).toBeNull();
    expect(t.track('a', 0, 3)).toBeNull();
    expect(t.track('a', 0, 4)).not.toBeNull();
    expect(t.inFlight('a', 0)).toBe(4);
  });

  it('forgets revoked partitions: no commit for them, later acks ignored, a new assignment starts fresh', () => {
    const t = new OffsetTracker();
    const p0 = trackRange(t, 'a', 0, 0, 2);
    const p1 = trackRange(t, 'a', 1, 0, 2);
    t.done(p0[0]!);
    t.done(p1[0]!);
    const revoked = t.assign([{ topic: 'a', partition: 0 }]);
    expect(revoked).toEqual([{ topic: 'a', partition: 1 }]);
    // Acks of the revoked partition's messages arrive late: nothing to commit for it.
    t.done(p1[1]!);
    t.done(p1[2]!);
    expect(t.committable()).toEqual([{ topic: 'a', partition: 0, offset: 1 }]);
    expect(t.has('a', 1)).toBe(false);
    expect(t.fail(p1[1]!)).toBeNull();
    // The partition that stayed keeps its state.
    t.done(p0[1]!);
    t.done(p0[2]!);
    expect(t.committable()).toEqual([{ topic: 'a', partition: 0, offset: 3 }]);
    // Assigned again later: a fresh tracker, the old tokens still mean nothing.
    const back = trackRange(t, 'a', 1, 10, 11);
    t.done(p1[0]!);
    expect(t.committable().find((c) => c.partition === 1)).toBeUndefined();
    t.done(back[0]!);
    expect(t.committable().find((c) => c.partition === 1)).toEqual({ topic: 'a', partition: 1, offset: 11 });
  });

  it('counts unfinished messages per partition for backpressure', () => {
    const t = new OffsetTracker();
    const m = trackRange(t, 'a', 0, 0, 9);
    expect(t.inFlight('a', 0)).toBe(10);
    t.done(m[5]!);
    t.done(m[0]!);
    expect(t.inFlight('a', 0)).toBe(8);
    t.fail(m[7]!);
    expect(t.inFlight('a', 0)).toBe(5); // 7, 8, 9 dropped for redelivery: 1-4 and 6 remain
    expect(t.inFlight('a', 1)).toBe(0);
  });

  it('keeps working over many messages (the done head is trimmed)', () => {
    const t = new OffsetTracker();
    let last = 0;
    for (let round = 0; round < 5; round++) {
      const m = trackRange(t, 'a', 0, last, last + 2999);
      for (let i = m.length - 1; i >= 0; i--) t.done(m[i]!);
      last += 3000;
      const c = t.committable();
      expect(c).toEqual([{ topic: 'a', partition: 0, offset: last }]);
      t.committed(c);
    }
    expect(t.inFlight('a', 0)).toBe(0);
  });
});
