/**
 * Token bucket pacing: `rate` tokens per second, at most `capacity` saved up, so a late timer is
 * caught up (the average rate holds) without an unbounded burst after a stall.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  /**
   * @param rate tokens per second; 0 or Infinity means unlimited
   * @param capacity most tokens saved up (default: a tenth of a second's worth, at least 1)
   * @param now clock in milliseconds (default performance.now)
   */
  constructor(
    readonly rate: number,
    readonly capacity = Math.max(1, rate / 10),
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = Math.min(1, this.capacity);
    this.last = now();
  }

  get unlimited(): boolean {
    return !(this.rate > 0) || this.rate === Infinity;
  }

  private refill(): void {
    const t = this.now();
    if (t > this.last) {
      this.tokens = Math.min(this.capacity, this.tokens + ((t - this.last) * this.rate) / 1000);
      this.last = t;
    }
  }

  /** Take one token: 0 when taken, else the milliseconds until one will be there (nothing taken). */
  take(): number {
    if (this.unlimited) return 0;
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return ((1 - this.tokens) * 1000) / this.rate;
  }
}
