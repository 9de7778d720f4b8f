/**
 * Injected time source. Engine code never calls Date.now() or setTimeout directly, so tests can run
 * swarms, choker rounds and timeouts in virtual time.
 */
export interface Timer {
  unref?(): unknown;
}

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): Timer;
  clearTimeout(t: Timer | undefined): void;
  setInterval(fn: () => void, ms: number): Timer;
  clearInterval(t: Timer | undefined): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t as NodeJS.Timeout | undefined),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (t) => clearInterval(t as NodeJS.Timeout | undefined),
};

/** A manually advanced clock for tests and simulations. Timers fire in time order during advance(). */
export class VirtualClock implements Clock {
  private t: number;
  private seq = 0;
  private timers = new Map<number, { at: number; fn: () => void; every?: number }>();
  constructor(start = 0) {
    this.t = start;
  }
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): Timer {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return { id } as Timer;
  }
  setInterval(fn: () => void, ms: number): Timer {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(1, ms), fn, every: Math.max(1, ms) });
    return { id } as Timer;
  }
  clearTimeout(t: Timer | undefined): void {
    if (t) this.timers.delete((t as { id: number }).id);
  }
  clearInterval(t: Timer | undefined): void {
    this.clearTimeout(t);
  }
  /** Advance time by ms, firing due timers in order (including ones scheduled while advancing). */
  advance(ms: number): void {
    const end = this.t + ms;
    for (let guard = 0; guard < 10_000_000; guard++) {
      let nextId = -1;
      let next: { at: number; fn: () => void; every?: number } | undefined;
      for (const [id, tm] of this.timers) if (tm.at <= end && (!next || tm.at < next.at || (tm.at === next.at && id < nextId))) { next = tm; nextId = id; }
      if (!next) break;
      this.t = next.at;
      if (next.every) next.at += next.every;
      else this.timers.delete(nextId);
      next.fn();
    }
    this.t = end;
  }
}

/**
 * Sliding-window byte-rate meter (bytes/s), cheap enough to call per block. A meter younger than its window divides
 * by its age instead (at least a fifth of a bucket): dividing a connection's first 100 ms of bytes by the whole 5 s
 * window read 50× low, and the request pipeline, sized from this rate, then grew slowly for the first half second.
 */
export class RateMeter {
  private buckets: Float64Array;
  private bucketMs: number;
  private head = 0;
  private headTime = 0;
  private readonly startedAt: number;
  total = 0;
  constructor(private clock: Pick<Clock, 'now'>, windowMs = 5000, buckets = 10) {
    this.buckets = new Float64Array(buckets);
    this.bucketMs = windowMs / buckets;
    this.startedAt = clock.now();
    this.headTime = Math.floor(this.startedAt / this.bucketMs);
  }
  private roll(): void {
    const nowB = Math.floor(this.clock.now() / this.bucketMs);
    const steps = Math.min(nowB - this.headTime, this.buckets.length);
    for (let i = 0; i < steps; i++) {
      this.head = (this.head + 1) % this.buckets.length;
      this.buckets[this.head] = 0;
    }
    if (nowB > this.headTime) this.headTime = nowB;
  }
  add(bytes: number): void {
    this.roll();
    this.buckets[this.head] += bytes;
    this.total += bytes;
  }
  /** Bytes per second over the window (over the meter's age while that is shorter). */
  rate(): number {
    this.roll();
    let sum = 0;
    for (let i = 0; i < this.buckets.length; i++) sum += this.buckets[i];
    const windowMs = this.bucketMs * this.buckets.length;
    const spanMs = Math.min(windowMs, Math.max(this.clock.now() - this.startedAt, this.bucketMs / 5));
    return (sum * 1000) / spanMs;
  }
}
