/** Token bucket pacing on a fake clock: the rate holds, late timers are caught up, bursts are capped. */
import { describe, expect, it } from 'vitest';
import { TokenBucket } from '../../../simulator/token-bucket.ts';

describe('TokenBucket', () => {
  it('hands out `rate` tokens per second', () => {
    let now = 0;
    const bucket = new TokenBucket(250, undefined, () => now);
    let taken = 0;
    while (now < 10_000) {
      const wait = bucket.take();
      if (wait === 0) taken += 1;
      else now += wait;
    }
    expect(taken).toBeGreaterThanOrEqual(2500);
    expect(taken).toBeLessThanOrEqual(2501);
  });

  it('catches up after a late timer, but saves up at most `capacity` tokens', () => {
    let now = 0;
    const bucket = new TokenBucket(100, 5, () => now);
    expect(bucket.take()).toBe(0); // starts with one token, not a burst
    expect(bucket.take()).toBeCloseTo(10);
    now += 35; // a timer 35 ms late: 3.5 tokens
    expect([bucket.take(), bucket.take(), bucket.take(), bucket.take()].map((w) => w === 0)).toEqual([true, true, true, false]);
    now += 10_000; // a 10 s stall: only 5 go out at once
    let burst = 0;
    while (bucket.take() === 0) burst += 1;
    expect(burst).toBe(5);
  });

  it('never waits when the rate is 0 or Infinity (unlimited)', () => {
    for (const rate of [0, Infinity]) {
      const bucket = new TokenBucket(rate, 1, () => 0);
      for (let i = 0; i < 1000; i++) expect(bucket.take()).toBe(0);
    }
  });
});
