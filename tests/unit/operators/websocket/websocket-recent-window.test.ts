/**
 * The websocket_server output's recent window: the newest messages within the window and caps,
 * oldest first, filtered by topic and device; values kept as their JSON bytes in slabs that are
 * released once every message in them has left.
 */
import { describe, expect, it } from 'vitest';
import { RECENT_ENTRY_OVERHEAD, RecentWindow } from '../../../../operators/websocket/recent-window.ts';

const HOUR = 3_600_000;
const values = (w: RecentWindow, topic?: string, device?: string) => w.pick(topic, device).data.map((b) => JSON.parse(b.toString('utf8')) as { i: number });

describe('RecentWindow', () => {
  it('answers the messages of the window oldest first, by topic and device, as their JSON bytes', () => {
    const w = new RecentWindow({ windowMs: HOUR, maxMessages: 100, maxBytes: 1 << 20 });
    const now = Date.now();
    w.push('hp', 'device-001', now - 2 * HOUR, '{"i":0}', now);
    w.push('hp', 'device-001', now - 30_000, Buffer.from('{"i":1}'), now);
    w.push('energy', undefined, now - 20_000, '{"i":2}', now);
    w.push('hp', 'device-002', now - 10_000, '{"i":3,"s":"äö"}', now);
    expect(values(w).map((v) => v.i)).toEqual([1, 2, 3]);
    expect(values(w, 'hp').map((v) => v.i)).toEqual([1, 3]);
    expect(values(w, 'hp', 'device-002')).toEqual([{ i: 3, s: 'äö' }]);
    expect(values(w, 'nope')).toEqual([]);
    const all = w.pick();
    expect(all.topics).toEqual(['hp', 'energy', 'hp']);
    expect(all.devices).toEqual(['device-001', undefined, 'device-002']);
    expect([...all.times]).toEqual([now - 30_000, now - 20_000, now - 10_000]);
  });

  it('keeps the newest within max_messages and max_bytes and counts what it evicted inside the window', () => {
    const now = Date.now();
    const byCount = new RecentWindow({ windowMs: HOUR, maxMessages: 10, maxBytes: 1 << 30 });
    let evicted = 0;
    for (let i = 0; i < 5000; i++) evicted += byCount.push('hp', `device-${i % 7}`, now, JSON.stringify({ i }), now);
    expect(values(byCount).map((v) => v.i)).toEqual(Array.from({ length: 10 }, (_, k) => 4990 + k));
    expect(evicted).toBe(4990);

    const pad = 'x'.repeat(1000);
    const byBytes = new RecentWindow({ windowMs: HOUR, maxMessages: 100_000, maxBytes: 100 * 1024 });
    evicted = 0;
    for (let i = 0; i < 1000; i++) evicted += byBytes.push('hp', 'd', now, JSON.stringify({ i, pad }), now);
    const kept = values(byBytes);
    expect(kept.length).toBeGreaterThan(90);
    expect(byBytes.bytes).toBeLessThanOrEqual(100 * 1024);
    expect(byBytes.bytes).toBe(kept.reduce((a, v) => a + JSON.stringify(v).length + 1 + RECENT_ENTRY_OVERHEAD, 0));
    expect(kept.map((v) => v.i)).toEqual(Array.from({ length: kept.length }, (_, k) => 1000 - kept.length + k));
    expect(evicted).toBe(1000 - kept.length);
    // The slabs held are what is kept, plus at most the oldest one partly expired.
    expect(byBytes.slabBytes).toBeLessThanOrEqual(100 * 1024 + 2 * 16 * 1024);
  });

  it('drops messages older than the window as time passes, and releases every slab once empty', () => {
    const w = new RecentWindow({ windowMs: 1000, maxMessages: 1000, maxBytes: 1 << 20 });
    const t0 = 1_000_000;
    for (let i = 0; i < 300; i++) w.push('hp', 'd', t0 + i, JSON.stringify({ i, pad: 'y'.repeat(200) }), t0 + i);
    expect(w.size).toBe(300);
    expect(w.trim(t0 + 1100)).toBe(0);
    expect(values(w).map((v) => v.i)).toEqual(Array.from({ length: 200 }, (_, k) => 100 + k));
    w.trim(t0 + 5000);
    expect(w.size).toBe(0);
    expect(w.bytes).toBe(0);
    expect(w.slabBytes).toBe(0);
    // And fills again from nothing.
    w.push('hp', 'd', t0 + 5000, '{"i":7}', t0 + 5000);
    expect(values(w)).toEqual([{ i: 7 }]);
  });

  it('keeps a value larger than a slab whole, and an answer stays valid while the window moves on', () => {
    const w = new RecentWindow({ windowMs: HOUR, maxMessages: 3, maxBytes: 1 << 30 });
    const now = Date.now();
    const big = JSON.stringify({ i: 0, pad: 'z'.repeat(3 << 20) });
    w.push('hp', 'd', now, big, now);
    w.push('hp', 'd', now, '{"i":1}', now);
    const before = w.pick();
    for (let i = 2; i < 50; i++) w.push('hp', 'd', now, JSON.stringify({ i }), now);
    expect(before.data.map((b) => b.toString('utf8'))).toEqual([big, '{"i":1}']);
    expect(values(w).map((v) => v.i)).toEqual([47, 48, 49]);
  });
});
