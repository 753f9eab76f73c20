import { describe, expect, it } from 'vitest';
import { OrderedAcks } from '../../../../operators/mqtt/acks.ts';

function tracker() {
  const sent: string[] = [];
  const acks = new OrderedAcks((id, qos) => sent.push(`${qos === 1 ? 'puback' : 'pubrec'}:${id}`));
  return { acks, sent };
}

describe('mqtt inbound acknowledgements', () => {
  it('sends nothing until a message is done, then its PUBACK (QoS 1) or PUBREC (QoS 2)', () => {
    const { acks, sent } = tracker();
    const a = acks.received(1, 1, false);
    const b = acks.received(2, 2, false);
    expect(a.fresh && b.fresh).toBe(true);
    expect(sent).toEqual([]);
    acks.settle(a.delivery, true);
    acks.settle(b.delivery, true);
    expect(sent).toEqual(['puback:1', 'pubrec:2']);
    expect(acks.unacknowledged).toBe(0);
    expect(acks.tracked).toBe(0);
  });

  it('keeps the order messages came in: a later message done first waits for the earlier one', () => {
    const { acks, sent } = tracker();
    const [a, b, c] = [1, 2, 3].map((id) => acks.received(id, 1, false).delivery);
    expect(acks.settle(c!, true)).toBe(0);
    expect(acks.settle(b!, true)).toBe(0);
    expect(sent).toEqual([]);
    expect(acks.settle(a!, true)).toBe(3);
    expect(sent).toEqual(['puback:1', 'puback:2', 'puback:3']);
  });

  it('never acknowledges a failed message, and it blocks the ones after it on this connection', () => {
    const { acks, sent } = tracker();
    const a = acks.received(1, 1, false).delivery;
    const b = acks.received(2, 1, false).delivery;
    const c = acks.received(3, 1, false).delivery;
    acks.settle(a, true);
    acks.settle(b, false);
    acks.settle(c, true);
    expect(sent).toEqual(['puback:1']);
    expect(acks.blocked).toBe(true);
  });

  it('after a reconnect, a resend (DUP, same id) of a message still in progress is not handed out again and is acknowledged when it is done', () => {
    const { acks, sent } = tracker();
    const a = acks.received(7, 1, false).delivery;
    acks.connectionLost();
    const again = acks.received(7, 1, true);
    expect(again.fresh).toBe(false);
    expect(again.delivery).toBe(a);
    acks.settle(a, true);
    expect(sent).toEqual(['puback:7']);
  });

  it('after a reconnect, a resend of a message done but not acknowledged is acknowledged at once', () => {
    const { acks, sent } = tracker();
    const a = acks.received(1, 1, false).delivery;
    const b = acks.received(2, 1, false).delivery;
    acks.settle(b, true); // held back behind 1
    acks.connectionLost();
    expect(sent).toEqual([]);
    const r1 = acks.received(1, 1, true);
    const r2 = acks.received(2, 1, true);
    expect([r1.fresh, r2.fresh]).toEqual([false, false]);
    expect(sent).toEqual([]); // 1 still in progress, 2 waits behind it
    acks.settle(a, true);
    expect(sent).toEqual(['puback:1', 'puback:2']);
  });

  it('hands a failed message out again when the broker resends it', () => {
    const { acks, sent } = tracker();
    const a = acks.received(1, 1, false).delivery;
    acks.settle(a, false);
    acks.connectionLost();
    const again = acks.received(1, 1, true);
    expect(again.fresh).toBe(true);
    acks.settle(again.delivery, true);
    expect(sent).toEqual(['puback:1']);
  });

  it('treats a PUBLISH without DUP, or any PUBLISH after the session was lost, as a new message', () => {
    const { acks } = tracker();
    acks.received(1, 1, false);
    acks.connectionLost();
    expect(acks.received(1, 1, false).fresh).toBe(true);

    const other = tracker();
    other.acks.received(1, 1, false);
    other.acks.connectionLost();
    other.acks.sessionLost();
    expect(other.acks.received(1, 1, true).fresh).toBe(true);
  });

  it('sends nothing for the acknowledgements a lost connection still owed', () => {
    const { acks, sent } = tracker();
    const a = acks.received(1, 1, false).delivery;
    acks.connectionLost();
    acks.settle(a, true);
    expect(sent).toEqual([]);
    expect(acks.tracked).toBe(1); // acknowledged when the broker sends it again
  });

  it('never acknowledges an entry replaced by a new PUBLISH with the same id on the same connection', () => {
    const { acks, sent } = tracker();
    const first = acks.received(5, 1, false).delivery;
    const second = acks.received(5, 1, false).delivery;
    expect(second).not.toBe(first);
    acks.settle(first, true);
    expect(sent).toEqual([]);
    acks.settle(second, true);
    expect(sent).toEqual(['puback:5']);
  });
});
