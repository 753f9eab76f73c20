import { describe, expect, it } from 'vitest';
import { InboundKeepalive } from '../../../../operators/mqtt/keepalive.ts';

/** A keepalive of 30 s on a clock the test moves; what the helper asked the client to do. */
function setup(intervalMs = 30_000) {
  let now = 0;
  const calls: string[] = [];
  const ka = new InboundKeepalive(intervalMs, () => now, {
    proveAlive: () => calls.push(`alive@${now}`),
    ping: () => calls.push(`ping@${now}`),
  });
  /** Move the clock to `t`, calling tick() every tickEveryMs on the way, as the input's timer does. */
  const runTo = (t: number, each?: (at: number) => void) => {
    while (now + ka.tickEveryMs <= t) {
      now += ka.tickEveryMs;
      each?.(now);
      ka.tick();
    }
    now = t;
  };
  return { ka, calls, runTo };
}

describe('mqtt input keepalive while it reads behind a backlog', () => {
  it('messages handled keep proving the connection alive, at most once a second', () => {
    const { ka, calls, runTo } = setup();
    // 100 messages a second for 60 s, acknowledgements going out all the time.
    let t = 0;
    while (t < 60_000) {
      t += 10;
      runTo(t);
      ka.received();
      ka.sent();
    }
    const alive = calls.filter((c) => c.startsWith('alive'));
    // 60 s of traffic: proven alive about once a second (so the client's 45 s timeout never runs out), no ping needed.
    expect(alive.length).toBeGreaterThanOrEqual(59);
    expect(alive.length).toBeLessThanOrEqual(61);
    expect(calls.some((c) => c.startsWith('ping'))).toBe(false);
  });

  it('pings when messages arrive but nothing was sent for half an interval (acknowledgements held back)', () => {
    const { ka, calls, runTo } = setup();
    // Messages keep coming; none finishes, so no PUBACK goes out for 40 s.
    runTo(40_000, () => ka.received());
    const pings = calls.filter((c) => c.startsWith('ping')).map((c) => Number(c.split('@')[1]));
    expect(pings.length).toBeGreaterThan(0);
    // The broker hears from the client at least every 22.5 s (half an interval plus a tick), well inside its 45 s.
    let last = 0;
    for (const p of pings) {
      expect(p - last).toBeLessThanOrEqual(22_500);
      last = p;
    }
  });

  it('nothing handled: it neither proves anything nor stands in for the broker (the client times out as before)', () => {
    const { calls, runTo, ka } = setup();
    ka.sent();
    runTo(45_000);
    expect(calls.filter((c) => c.startsWith('alive'))).toEqual([]);
    // It still pings (the client would too): a ping is not a proof of life.
    expect(calls.every((c) => c.startsWith('ping'))).toBe(true);
  });

  it('a new connection owes the broker nothing and proves itself again at once', () => {
    const { ka, calls, runTo } = setup();
    ka.received();
    runTo(500);
    ka.connected();
    ka.received();
    expect(calls).toEqual(['alive@0', 'alive@500']);
  });
});
