/** Injected time: the real clock for sockets, a virtual one for simulations (thousands of nodes, minutes in ms). */

export type TimerHandle = unknown;

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(h: TimerHandle): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

interface Timer {
  at: number;
  seq: number;
  fn: (() => void) | null;
}

/** Discrete-event virtual clock backed by a binary heap. Timers run in (time, insertion) order. */
export class VirtualClock implements Clock {
  private t: number;
  private seq = 0;
  private heap: Timer[] = [];

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const timer: Timer = { at: this.t + Math.max(0, ms), seq: this.seq++, fn };
    this.push(timer);
    return timer;
  }

  clearTimeout(h: TimerHandle): void {
    if (h && typeof h === 'object') (h as Timer).fn = null;
  }

  pending(): number {
    return this.heap.length;
  }

  /** Run the next timer; false when none is left. */
  step(): boolean {
    while (this.heap.length > 0) {
      const timer = this.pop();
      if (!timer.fn) continue;
      this.t = Math.max(this.t, timer.at);
      const fn = timer.fn;
      timer.fn = null;
      fn();
      return true;
    }
    return false;
  }

  /** Run timers until `done()` holds, no timers remain, or virtual time passes `until`. */
  runUntil(done: () => boolean, maxMs = Number.POSITIVE_INFINITY): boolean {
    const limit = this.t + maxMs;
    while (!done()) {
      const next = this.peek();
      if (!next || next.at > limit) {
        if (Number.isFinite(limit)) this.t = Math.max(this.t, limit);
        return done();
      }
      this.step();
    }
    return true;
  }

  /** Advance virtual time by `ms`, running every timer due in that span. */
  advance(ms: number): void {
    this.runUntil(() => false, ms);
  }

  private peek(): Timer | undefined {
    while (this.heap.length > 0 && !this.heap[0].fn) this.pop();
    return this.heap[0];
  }

  private less(a: Timer, b: Timer): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  private push(x: Timer): void {
    const h = this.heap;
    h.push(x);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  private pop(): Timer {
    const h = this.heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l], h[m])) m = l;
        if (r < h.length && this.less(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}
