/**
 * Per-key token bucket with bounded memory: two generations of buckets; when the young generation fills up
 * the old one is dropped wholesale, so a flood of distinct source addresses costs at most `maxKeys` entries.
 */
export class RateLimiter {
  private young = new Map<string, Float64Array>();
  private old = new Map<string, Float64Array>();

  constructor(
    readonly perSecond: number,
    readonly burst: number,
    private readonly now: () => number = Date.now,
    readonly maxKeys = 100_000,
  ) {
    if (!(perSecond > 0) || !(burst >= 1)) throw new Error('rate limit needs perSecond > 0 and burst >= 1');
  }

  get size(): number {
    return this.young.size + this.old.size;
  }

  /** Take one token for `key`; false if its bucket is empty. */
  take(key: string): boolean {
    const t = this.now();
    let b = this.young.get(key);
    if (b === undefined) {
      b = this.old.get(key);
      if (b !== undefined) this.old.delete(key);
      else {
        b = new Float64Array(2);
        b[0] = this.burst;
        b[1] = t;
      }
      if (this.young.size >= this.maxKeys / 2) {
        this.old = this.young;
        this.young = new Map();
      }
      this.young.set(key, b);
    }
    const tokens = Math.min(this.burst, b[0] + ((t - b[1]) / 1000) * this.perSecond);
    b[1] = t;
    if (tokens < 1) {
      b[0] = tokens;
      return false;
    }
    b[0] = tokens - 1;
    return true;
  }
}
