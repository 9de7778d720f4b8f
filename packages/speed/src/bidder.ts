/**
 * Requester-side automatic bidding (whitepaper "Automatic Bidding", "Bidding Revisions and Frequency").
 *
 *   bid [base units / byte] = floor(spendingRate × budget / remainingBytes)
 *   budget = min(wallet balance, maxSpend − spent on this torrent)
 *
 * This is the whitepaper's "spending rate × remaining balance / remaining kilobytes" expressed per byte (the unit of
 * the wire protocol), so that paying the bid for every remaining byte spends exactly spendingRate × budget.
 * The spending rate is an integer in parts per million (1_000_000 = 1.0) so all money math is exact bigint.
 *
 * Revision policy: the first bid goes out at once; afterwards a new bid is sent only when it differs from the last
 * one sent by more than 10 %, and never sooner than 60 s after the previous one, except that a change of settings
 * is sent immediately, and a bid that drops to zero (download complete, budget exhausted, Speed turned off) is
 * withdrawn immediately. When nothing remains to download the bidder stops for good.
 */

export const PPM = 1_000_000;
export const DEFAULT_MIN_REBID_MS = 60_000;
/** 10 % in ppm. */
export const DEFAULT_REBID_THRESHOLD_PPM = 100_000;

export interface BidderSettings {
  /** Speed on for this torrent (the caller ANDs the global switch in). */
  enabled: boolean;
  /** 0 … 1_000_000 (0.0 … 1.0). Default 1_000_000. */
  spendingRatePpm: number;
  /** Most this torrent may spend in total, base units (undefined: no cap beyond the balance). */
  maxSpend?: bigint;
}

export interface BidderState {
  /** Wallet balance available for spending, base units. */
  balance: bigint;
  /** Bytes still to download for this torrent. */
  remainingBytes: bigint | number;
  /** Already spent (paid) on this torrent, base units. */
  spent: bigint;
}

export type BidReason = 'initial' | 'revise' | 'settings' | 'withdraw' | 'complete';

export interface BidUpdate {
  /** New bid, base units per byte; 0 withdraws the bid. */
  price: bigint;
  reason: BidReason;
}

function checkPpm(ppm: number): number {
  if (!Number.isInteger(ppm) || ppm < 0 || ppm > PPM) throw new RangeError(`spending rate must be an integer 0…${PPM} ppm, got ${ppm}`);
  return ppm;
}

function toBigBytes(n: bigint | number): bigint {
  if (typeof n === 'number') {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`remainingBytes must be a non-negative integer, got ${n}`);
    return BigInt(n);
  }
  if (typeof n !== 'bigint' || n < 0n) throw new RangeError(`remainingBytes must be non-negative, got ${n}`);
  return n;
}

/** The budget this torrent may still spend. */
export function bidBudget(state: BidderState, maxSpend?: bigint): bigint {
  let budget = state.balance > 0n ? state.balance : 0n;
  if (maxSpend !== undefined) {
    const left = maxSpend - state.spent;
    if (left < budget) budget = left > 0n ? left : 0n;
  }
  return budget;
}

/** The auto-bid formula, exact: floor(ratePpm × budget / (1e6 × remainingBytes)); 0 when nothing remains. */
export function computeBid(budget: bigint, remainingBytes: bigint | number, spendingRatePpm: number): bigint {
  const rem = toBigBytes(remainingBytes);
  checkPpm(spendingRatePpm);
  if (rem === 0n || budget <= 0n) return 0n;
  return (BigInt(spendingRatePpm) * budget) / (BigInt(PPM) * rem);
}

export interface AutoBidderOptions {
  /** Injected clock (ms). */
  now: () => number;
  settings?: Partial<BidderSettings>;
  minRebidMs?: number;
  rebidThresholdPpm?: number;
}

/** One per torrent. Pure bookkeeping: the caller polls it and sends what it returns to every provider. */
export class AutoBidder {
  private settings: BidderSettings;
  private readonly now: () => number;
  private readonly minRebidMs: number;
  private readonly thresholdPpm: bigint;
  private current = 0n;
  private lastSentAt: number | undefined;
  private settingsDirty = false;
  private done = false;

  constructor(opts: AutoBidderOptions) {
    this.now = opts.now;
    this.minRebidMs = opts.minRebidMs ?? DEFAULT_MIN_REBID_MS;
    this.thresholdPpm = BigInt(opts.rebidThresholdPpm ?? DEFAULT_REBID_THRESHOLD_PPM);
    this.settings = { enabled: true, spendingRatePpm: PPM };
    this.applySettings(opts.settings ?? {});
    this.settingsDirty = false;
  }

  private applySettings(s: Partial<BidderSettings>): void {
    const next = { ...this.settings, ...s };
    checkPpm(next.spendingRatePpm);
    if (next.maxSpend !== undefined && (typeof next.maxSpend !== 'bigint' || next.maxSpend < 0n)) {
      throw new RangeError(`maxSpend must be a non-negative bigint, got ${next.maxSpend}`);
    }
    this.settings = next;
  }

  /** The user changed settings: the next poll() sends the resulting bid immediately. */
  setSettings(s: Partial<BidderSettings>): void {
    this.applySettings(s);
    this.settingsDirty = true;
  }

  getSettings(): Readonly<BidderSettings> {
    return this.settings;
  }

  /** The last bid sent (0: none / withdrawn). */
  get bid(): bigint {
    return this.current;
  }

  /** True once the download completed: the bidder sends nothing more. */
  get stopped(): boolean {
    return this.done;
  }

  /** What the bid would be right now (no side effects). */
  target(state: BidderState): bigint {
    if (!this.settings.enabled) return 0n;
    return computeBid(bidBudget(state, this.settings.maxSpend), state.remainingBytes, this.settings.spendingRatePpm);
  }

  /** Decide whether to send a bid now; returns the update to send, or null. Call on every tick/progress event. */
  poll(state: BidderState): BidUpdate | null {
    if (this.done) return null;
    const now = this.now();
    const remaining = toBigBytes(state.remainingBytes);
    if (remaining === 0n) {
      this.done = true;
      this.settingsDirty = false;
      return this.current > 0n ? this.send(0n, 'complete', now) : null;
    }
    const target = this.target(state);
    if (this.settingsDirty) {
      this.settingsDirty = false;
      if (target !== this.current) return this.send(target, 'settings', now);
      return null;
    }
    if (target === this.current) return null;
    if (target === 0n) return this.send(0n, 'withdraw', now);
    if (this.lastSentAt === undefined) return this.send(target, 'initial', now);
    if (now - this.lastSentAt < this.minRebidMs) return null;
    const diff = target > this.current ? target - this.current : this.current - target;
    // More than 10 % of the last bid (any change counts when the last bid was 0).
    if (diff * BigInt(PPM) > this.thresholdPpm * this.current) {
      return this.send(target, this.current === 0n ? 'initial' : 'revise', now);
    }
    return null;
  }

  /** Earliest time (ms) a non-forced revision could be sent; undefined when unrestricted. */
  nextRebidAt(): number | undefined {
    return this.lastSentAt === undefined ? undefined : this.lastSentAt + this.minRebidMs;
  }

  private send(price: bigint, reason: BidReason, now: number): BidUpdate {
    this.current = price;
    this.lastSentAt = now;
    return { price, reason };
  }
}
