/**
 * Token-bucket rate limiting with an injected clock.
 *
 * Exactness: tokens are kept in milli-bytes and refilled by `elapsedMs × rate` (bytes/s × ms = milli-bytes),
 * measured from the last refill instant, so with an integer clock there is no rounding and no drift:
 * over any window of T ms exactly rate × T / 1000 bytes become available (plus the burst).
 *
 * A request larger than the burst is allowed once the bucket is full and puts the bucket in debt
 * (tokens go negative), so a 16 KiB block still passes a 1 KiB/s limit at the right average rate.
 * Waiters are served FIFO within a priority; `tryTake` never jumps ahead of queued waiters of its own priority or
 * higher (high priority passes normal waiters except while normal traffic is below NORMAL_SHARE).
 */

import { systemClock, type Clock, type Timer } from './clock.js';

/** The part of the session clock (./clock.ts) a bucket needs. */
export type BucketClock = Pick<Clock, 'now' | 'setTimeout' | 'clearTimeout'>;

export class RateLimitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RateLimitError';
  }
}

function checkRate(rate: number, what: string): void {
  if (!Number.isFinite(rate) || rate < 0) throw new RateLimitError(`${what} must be a finite number ≥ 0 (0 = unlimited), got ${rate}`);
}

function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('aborted');
}

interface Waiter {
  n: number;
  resolve: () => void;
  reject: (e: Error) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
  priority: Priority;
}

/**
 * Priority of a transfer. PRIORITY_HIGH (e.g. an upload slot someone pays for) goes ahead of PRIORITY_NORMAL, except
 * that while both are waiting, normal traffic still gets NORMAL_SHARE of the bytes granted, so it is slowed, never
 * starved.
 */
export const PRIORITY_NORMAL = 0;
export const PRIORITY_HIGH = 1;
export type Priority = typeof PRIORITY_NORMAL | typeof PRIORITY_HIGH;
/** Share of contended bandwidth kept for normal-priority transfers. */
export const NORMAL_SHARE = 0.1;
/** Grant accounting decays (both counters halve) past this many bytes, so the share is about recent traffic. */
const SHARE_WINDOW_BYTES = 4 * 1024 * 1024;

/**
 * Shared wait queue driven by a `ready(n)` predicate and a `delay(n)` estimate: FIFO within each priority lane;
 * between lanes, high first unless normal traffic is below its share of recent grants.
 */
class WaitQueue {
  private lanes: [Waiter[], Waiter[]] = [[], []];
  /** Bytes granted per priority, decayed (see SHARE_WINDOW_BYTES). */
  private granted = [0, 0];
  private timer: Timer | undefined = undefined;
  constructor(
    private clock: BucketClock,
    private ready: (n: number) => boolean,
    private delay: (n: number) => number,
  ) {}

  get length(): number {
    return this.lanes[0].length + this.lanes[1].length;
  }

  /** Normal traffic got less than its share of recent grants. */
  private normalOwed(): boolean {
    return this.granted[0] < NORMAL_SHARE * (this.granted[0] + this.granted[1]);
  }

  /**
   * Grant `n` bytes now if a request at `priority` need not wait behind queued ones and `ready` allows it (taking the
   * tokens); false otherwise, taking nothing.
   */
  tryGrant(n: number, priority: Priority): boolean {
    const mustQueue = priority === PRIORITY_HIGH ? this.lanes[1].length > 0 || (this.lanes[0].length > 0 && this.normalOwed()) : this.length > 0;
    if (mustQueue || !this.ready(n)) return false;
    this.noteGrant(n, priority);
    return true;
  }

  /** Account `n` bytes granted at `priority`. */
  private noteGrant(n: number, priority: Priority): void {
    this.granted[priority] += n;
    if (this.granted[0] + this.granted[1] > SHARE_WINDOW_BYTES) {
      this.granted[0] /= 2;
      this.granted[1] /= 2;
    }
  }

  /** The lane whose head is served next (-1: none waiting). */
  private nextLane(): number {
    const high = this.lanes[1].length > 0, normal = this.lanes[0].length > 0;
    if (!high) return normal ? 0 : -1;
    if (!normal) return 1;
    return this.normalOwed() ? 0 : 1;
  }

  enqueue(n: number, signal?: AbortSignal, priority: Priority = PRIORITY_NORMAL): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(abortError(signal));
      const w: Waiter = { n, resolve, reject, signal, priority };
      const lane = this.lanes[priority];
      if (signal) {
        w.onAbort = () => {
          const i = lane.indexOf(w);
          if (i >= 0) lane.splice(i, 1);
          reject(abortError(signal));
          this.reschedule();
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      lane.push(w);
      this.reschedule();
    });
  }

  /** Serve as many head waiters as possible, then arm a timer for the next one. */
  reschedule(): void {
    if (this.timer !== undefined) {
      this.clock.clearTimeout(this.timer);
      this.timer = undefined;
    }
    for (let lane = this.nextLane(); lane >= 0; lane = this.nextLane()) {
      const w = this.lanes[lane][0];
      if (!this.ready(w.n)) break;
      this.lanes[lane].shift();
      this.noteGrant(w.n, w.priority);
      if (w.signal && w.onAbort) w.signal.removeEventListener('abort', w.onAbort);
      w.resolve();
    }
    const lane = this.nextLane();
    if (lane >= 0) {
      const ms = Math.max(1, this.delay(this.lanes[lane][0].n));
      this.timer = this.clock.setTimeout(() => {
        this.timer = undefined;
        this.reschedule();
      }, ms);
    }
  }

  rejectAll(e: Error): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    const q = [...this.lanes[1], ...this.lanes[0]];
    this.lanes = [[], []];
    for (const w of q) {
      if (w.signal && w.onAbort) w.signal.removeEventListener('abort', w.onAbort);
      w.reject(e);
    }
  }
}

export interface TokenBucketOptions {
  /** Bytes per second; 0 = unlimited. */
  rate: number;
  /** Bucket capacity in bytes (default: one second of rate, at least 16 KiB). */
  burst?: number;
  clock?: BucketClock;
}

export class TokenBucket {
  private rateBps: number;
  private burstBytes: number;
  private explicitBurst: boolean;
  /** Milli-bytes; may be negative (debt). */
  private tokensMilli: number;
  private last: number;
  readonly clock: BucketClock;
  private queue: WaitQueue;

  constructor(opts: TokenBucketOptions) {
    checkRate(opts.rate, 'rate');
    this.clock = opts.clock ?? systemClock;
    this.rateBps = opts.rate;
    this.explicitBurst = opts.burst !== undefined;
    this.burstBytes = this.computeBurst(opts.burst);
    this.tokensMilli = this.burstBytes * 1000;
    this.last = this.clock.now();
    this.queue = new WaitQueue(this.clock, (n) => this.consumeIfReady(n), (n) => this.delayIgnoringQueue(n));
  }

  private computeBurst(burst: number | undefined): number {
    if (burst !== undefined) {
      if (!Number.isFinite(burst) || burst <= 0) throw new RateLimitError(`burst must be > 0 bytes, got ${burst}`);
      return burst;
    }
    return Math.max(this.rateBps, 16384);
  }

  get rate(): number {
    return this.rateBps;
  }
  get burst(): number {
    return this.burstBytes;
  }
  /** Number of queued `take` waiters. */
  get waiting(): number {
    return this.queue.length;
  }

  private refill(): void {
    const now = this.clock.now();
    const dt = now - this.last;
    this.last = now;
    if (dt <= 0 || this.rateBps === 0) return;
    const cap = this.burstBytes * 1000;
    if (this.tokensMilli >= cap) return;
    this.tokensMilli = Math.min(cap, this.tokensMilli + dt * this.rateBps);
  }

  /** Whole bytes currently available (negative while in debt). */
  available(): number {
    if (this.rateBps === 0) return Infinity;
    this.refill();
    return Math.floor(this.tokensMilli / 1000);
  }

  /** True when `n` bytes may be taken now, ignoring queued waiters. */
  canTake(n: number): boolean {
    if (this.rateBps === 0) return true;
    this.refill();
    return this.tokensMilli >= Math.min(n, this.burstBytes) * 1000;
  }

  /** Remove `n` bytes unconditionally (may go into debt). For composing limiters. */
  consume(n: number): void {
    if (this.rateBps === 0) return;
    this.refill();
    this.tokensMilli -= n * 1000;
  }

  private consumeIfReady(n: number): boolean {
    if (!this.canTake(n)) return false;
    this.consume(n);
    return true;
  }

  private delayIgnoringQueue(n: number): number {
    if (this.rateBps === 0) return 0;
    this.refill();
    const deficit = Math.min(n, this.burstBytes) * 1000 - this.tokensMilli;
    return deficit <= 0 ? 0 : Math.ceil(deficit / this.rateBps);
  }

  /** Take `n` bytes now if allowed (and nobody is queued ahead at this priority); otherwise take nothing and return false. */
  tryTake(n: number, priority: Priority = PRIORITY_NORMAL): boolean {
    checkAmount(n);
    return this.queue.tryGrant(n, priority);
  }

  /** Milliseconds until `tryTake(n)` would succeed (0 = now), assuming no other consumer. */
  delayFor(n: number): number {
    checkAmount(n);
    return this.delayIgnoringQueue(n);
  }

  /** Wait until `n` bytes are granted (FIFO among waiters of the same priority). */
  take(n: number, signal?: AbortSignal, priority: Priority = PRIORITY_NORMAL): Promise<void> {
    checkAmount(n);
    if (this.tryTake(n, priority)) return Promise.resolve();
    return this.queue.enqueue(n, signal, priority);
  }

  /** Change the rate (and optionally the burst). Tokens accrued so far at the old rate are kept (capped). */
  setRate(rate: number, burst?: number): void {
    checkRate(rate, 'rate');
    this.refill();
    const wasUnlimited = this.rateBps === 0;
    this.rateBps = rate;
    if (burst !== undefined) {
      this.burstBytes = this.computeBurst(burst);
      this.explicitBurst = true;
    } else if (!this.explicitBurst) {
      this.burstBytes = this.computeBurst(undefined);
    }
    const cap = this.burstBytes * 1000;
    if (wasUnlimited || this.tokensMilli > cap) this.tokensMilli = cap;
    this.queue.reschedule();
  }

  /** Reject every waiter (e.g. on shutdown). */
  close(reason = new RateLimitError('rate limiter closed')): void {
    this.queue.rejectAll(reason);
  }
}

function checkAmount(n: number): void {
  if (!Number.isFinite(n) || n < 0) throw new RateLimitError(`byte count must be a finite number ≥ 0, got ${n}`);
}

/**
 * Several buckets that must all allow a transfer — typically a global (session-wide) bucket and
 * a per-torrent bucket. Buckets may be shared between limiters. Either may be omitted.
 */
export class RateLimiter {
  readonly buckets: TokenBucket[];
  private queue: WaitQueue;

  constructor(opts: { global?: TokenBucket; local?: TokenBucket; clock?: BucketClock } | TokenBucket[]) {
    const list = Array.isArray(opts) ? opts : [opts.global, opts.local].filter((b): b is TokenBucket => b !== undefined);
    this.buckets = list;
    const clock = (Array.isArray(opts) ? undefined : opts.clock) ?? list[0]?.clock ?? systemClock;
    this.queue = new WaitQueue(clock, (n) => this.consumeIfReady(n), (n) => this.delayFor(n));
  }

  private consumeIfReady(n: number): boolean {
    for (const b of this.buckets) if (!b.canTake(n)) return false;
    for (const b of this.buckets) b.consume(n);
    return true;
  }

  tryTake(n: number, priority: Priority = PRIORITY_NORMAL): boolean {
    checkAmount(n);
    return this.queue.tryGrant(n, priority);
  }

  /** The longest wait among the buckets. */
  delayFor(n: number): number {
    checkAmount(n);
    let d = 0;
    for (const b of this.buckets) d = Math.max(d, b.delayFor(n));
    return d;
  }

  take(n: number, signal?: AbortSignal, priority: Priority = PRIORITY_NORMAL): Promise<void> {
    checkAmount(n);
    if (this.tryTake(n, priority)) return Promise.resolve();
    return this.queue.enqueue(n, signal, priority);
  }

  /** Call after changing a bucket's rate so queued waiters are re-timed. */
  poke(): void {
    this.queue.reschedule();
  }

  close(reason = new RateLimitError('rate limiter closed')): void {
    this.queue.rejectAll(reason);
  }
}
