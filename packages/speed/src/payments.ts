/**
 * Per-piece payment bookkeeping for BitTorrent Speed, as pure state machines (no I/O, injected time).
 *
 * Pricing rule shared by both sides (docs/speed-protocol.md §Payments): every block the provider sends while a
 * price P > 0 is in force (set by a bid_response, reset to 0 by a choke) costs P × block length, attributed to the
 * block's piece. TCP keeps bid_response, choke and piece messages in order, so both sides compute the same owed
 * amount per piece without talking about it. The requester pays a piece's owed amount once the piece has passed
 * its hash check, by signing the next cumulative payment state on its current channel; it never pays for a piece
 * that failed (it sends `reject` instead).
 *
 *  - ProviderPayments: what each requester owes, which channel states we hold, exposure ≤ K unpaid pieces,
 *    payment timeouts (choke), strikes (ban for a period), and which channels to close when (before expiry with a
 *    safety margin, when superseded, or when the requester has gone idle).
 *  - RequesterPayments: what we owe one provider, signing payment states, opening a new channel when the current
 *    one cannot cover the next payment, provider strikes for corrupt data (ban), resync after reconnect.
 */
import { checkPaymentState, signPaymentState, verifyPaymentStateSignature, type ChannelInfo, type PaymentState } from '@bitorrent/ledger';
import {
  SpeedErrorCode,
  type AckMessage,
  type ChannelMessage,
  type PaymentMessage,
  type RejectMessage,
} from './messages.js';

const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
const buf = (b: Uint8Array) => (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength));

// ====================================================================================================
// Provider
// ====================================================================================================

export interface ProviderPaymentsOptions {
  /** Our ledger id (32 bytes) and wallet public key (the payee of every channel). */
  ledgerId: Buffer;
  publicKey: Buffer;
  /** K: most pieces a requester may have received and not paid for (default 1 here; SpeedAgent uses defaultMaxUnpaid). */
  maxUnpaid?: number;
  /** Time from the requester's HAVE for a piece to its payment (default 30 s). */
  paymentTimeoutMs?: number;
  /** A paid piece never announced (no HAVE, no reject) counts as overdue after this long (default 10 min). */
  staleMs?: number;
  /** Failures (overdue payments, rejects) before a ban (default 3). */
  maxStrikes?: number;
  /** Ban length (default 1 h). */
  banMs?: number;
  /** Close a channel this long before its expiry (default 10 min). */
  closeMarginMs?: number;
  /** A new channel must have at least this much time left when announced (default 30 min). */
  minChannelTtlMs?: number;
  /** Close a requester's channels after it has been disconnected this long (default 2 min). */
  idleCloseMs?: number;
  /** Signature/state check; defaults to the ledger's checkPaymentState. Injected by tests that simulate failures. */
  check?: typeof checkPaymentState;
}

interface ProviderChannel {
  info: ChannelInfo;
  requester: string;
  last?: { state: PaymentState; sig: Buffer };
  superseded: boolean;
  closing: boolean;
}

interface UnpaidPiece {
  piece: number;
  owed: bigint;
  startedAt: number;
  dueAt?: number;
  /** Its payment timed out at least once (the requester stays suspended until it is paid). */
  overdue?: boolean;
}

interface RequesterAccount {
  key: string;
  pk: Buffer;
  price: bigint;
  /** Open (not fully paid) pieces in service order. */
  unpaid: UnpaidPiece[];
  /** Cached canServe result for the current price, and the cost of a block of the last size served. */
  serveOk?: { ok: true; price: bigint };
  blockCost?: { bytes: number; price: bigint; cost: bigint };
  /** Payment received beyond what was owed, applied to later pieces. */
  credit: bigint;
  current?: string;
  pendingChannel?: string;
  strikes: number;
  suspended: boolean;
  connected: boolean;
  disconnectedAt?: number;
  earned: bigint;
  paidPieces: number;
  /** It told us it cannot reach the ledger (or our lookup for it failed): overdue payments are no strikes until then. */
  ledgerWaitUntil?: number;
  /** Its account's free balance as we last read it on the ledger (undefined: not looked up). */
  fundsSeen?: bigint;
  /** A channel of its has been current: the balance we saw predates its deposits, so no more credit. */
  hadChannel?: boolean;
}

export type ServeDecision =
  | { ok: true; price: bigint }
  | { ok: false; reason: 'banned' | 'no_channel' | 'unpaid_limit' | 'suspended' | 'unknown_requester' };

export type ProviderPaymentResult =
  | { ok: true; ack: AckMessage; delta: bigint; duplicate?: boolean; stillOwed: bigint }
  | { ok: false; code: number; reason: string; pending?: boolean };

export type ProviderAction =
  | { type: 'choke'; requester: string; reason: string }
  | { type: 'ban'; requester: string; until: number; reason: string }
  | { type: 'close'; requester: string; channelId: Buffer; state: PaymentState; sig: Buffer; reason: 'expiry' | 'superseded' | 'idle' }
  | { type: 'abandon'; requester: string; channelId: Buffer; reason: string };

/** Unpaid data a provider risks per requester by default (see defaultMaxUnpaid). */
export const DEFAULT_UNPAID_BYTES = 16 * 1024 * 1024;

/**
 * Default K for a torrent's piece length: the pieces in 16 MiB, at least 2 and at most 64. The risk is a few MiB per
 * requester (an optimistic unchoke gives away more), and it keeps a loopback-speed transfer flowing: with K = 1 every
 * piece waits a full payment round trip, and K ≥ 4 lets the requester pay for ⌊K/2⌋ pieces with one signature
 * (64 pieces of 256 KiB: a payment per 8 MiB, with 8 MiB of room left while it travels). The room must exceed what
 * sits between the provider's socket and the requester's hash check (several MiB on a fast link): the requester can
 * only pay for a piece it has read and hashed, and it holds up to ⌊K/2⌋ − 1 verified pieces back for the next state.
 * At 8 MiB (K = 32, a state per 4 MiB) a 1 GiB loopback transfer at ~600 MB/s between two processes held the
 * provider at its limit 200–207 times (205–342 ms in all), about once per state, and ran 3–11% slower than at 16 MiB,
 * which held it never (alternated runs of the same code); at 4 MiB, ~400 holds per GiB.
 */
export function defaultMaxUnpaid(pieceLength: number): number {
  if (!Number.isSafeInteger(pieceLength) || pieceLength <= 0) return 2;
  return Math.min(64, Math.max(2, Math.ceil(DEFAULT_UNPAID_BYTES / pieceLength)));
}

const SERVE_FREE: ServeDecision = Object.freeze({ ok: true, price: 0n }) as ServeDecision;

/**
 * The unpaid entry of `piece` (at most one per piece). A loop rather than find with a closure: it runs for every piece
 * served. Newest first: blocks are served, and the gate asked, mostly for the piece started last, while up to K older
 * ones wait for their payment.
 */
function findPiece(list: UnpaidPiece[], piece: number): UnpaidPiece | undefined {
  for (let i = list.length - 1; i >= 0; i--) if (list[i].piece === piece) return list[i];
  return undefined;
}

/** One instance per SpeedAgent, i.e. per torrent: unpaid pieces are keyed by piece index alone. Keys are requester wallet keys. */
export class ProviderPayments {
  readonly maxUnpaid: number;
  private readonly o: Required<Omit<ProviderPaymentsOptions, 'check'>>;
  private readonly check: typeof checkPaymentState;
  private readonly accounts = new Map<string, RequesterAccount>();
  private readonly channels = new Map<string, ProviderChannel>();
  private readonly bans = new Map<string, number>();
  /** We could not reach the ledger ourselves: nobody's overdue payment is a strike until then. */
  private ledgerDownUntil = -Infinity;

  constructor(opts: ProviderPaymentsOptions) {
    this.o = {
      ledgerId: opts.ledgerId,
      publicKey: opts.publicKey,
      maxUnpaid: opts.maxUnpaid ?? 1,
      paymentTimeoutMs: opts.paymentTimeoutMs ?? 30_000,
      staleMs: opts.staleMs ?? 600_000,
      maxStrikes: opts.maxStrikes ?? 3,
      banMs: opts.banMs ?? 3_600_000,
      closeMarginMs: opts.closeMarginMs ?? 600_000,
      minChannelTtlMs: opts.minChannelTtlMs ?? 1_800_000,
      idleCloseMs: opts.idleCloseMs ?? 120_000,
    };
    if (!Number.isInteger(this.o.maxUnpaid) || this.o.maxUnpaid < 1) throw new RangeError('maxUnpaid must be an integer ≥ 1');
    if (this.o.minChannelTtlMs <= this.o.closeMarginMs) throw new RangeError('minChannelTtlMs must exceed closeMarginMs');
    this.maxUnpaid = this.o.maxUnpaid;
    this.check = opts.check ?? checkPaymentState;
  }

  /** Seconds of channel lifetime we require (the bid_response `min_ttl`). */
  get minTtlSeconds(): number {
    return Math.ceil(this.o.minChannelTtlMs / 1000);
  }

  // ---- bans ----

  isBanned(key: string, now: number): boolean {
    const until = this.bans.get(key);
    if (until === undefined) return false;
    if (now >= until) {
      this.bans.delete(key);
      return false;
    }
    return true;
  }
  /** Ban any key (wallet key hex, or an address the integration wants rejected too). */
  ban(key: string, now: number): number {
    const until = now + this.o.banMs;
    this.bans.set(key, until);
    return until;
  }

  // ---- requester lifecycle ----

  /** An authenticated Speed requester connected (wallet public key). Returns its key, or undefined if banned. */
  connect(pk: Buffer, now: number): string | undefined {
    const key = hex(pk);
    if (this.isBanned(key, now)) return undefined;
    let a = this.accounts.get(key);
    if (!a) {
      a = { key, pk: Buffer.from(pk), price: 0n, unpaid: [], credit: 0n, strikes: 0, suspended: false, connected: true, earned: 0n, paidPieces: 0 };
      this.accounts.set(key, a);
    }
    a.connected = true;
    a.disconnectedAt = undefined;
    a.price = 0n;
    return key;
  }

  /** The account key of a wallet public key (no side effects). */
  keyOf(pk: Buffer): string {
    return hex(pk);
  }

  disconnect(key: string, now: number): void {
    const a = this.accounts.get(key);
    if (!a) return;
    a.connected = false;
    a.disconnectedAt = now;
    a.price = 0n;
  }

  /** The price now in force for this requester (after sending a bid_response), or 0 after a choke. */
  setPrice(key: string, price: bigint): void {
    const a = this.mustAccount(key);
    if (price < 0n) throw new RangeError('price must be ≥ 0');
    a.price = price;
  }

  // ---- serving ----

  /**
   * May we send a block of `piece` to this requester now? Free blocks (price 0) are always allowed. Paid blocks
   * need a verified open channel, no payment suspension, and either the piece already open or fewer than K open.
   */
  canServe(key: string, piece: number, now: number): ServeDecision {
    if (this.isBanned(key, now)) return { ok: false, reason: 'banned' };
    const a = this.accounts.get(key);
    if (!a) return { ok: false, reason: 'unknown_requester' };
    if (a.price === 0n) return SERVE_FREE;
    if (a.suspended) return { ok: false, reason: 'suspended' };
    const ch = a.current !== undefined ? this.channels.get(a.current) : undefined;
    if (!ch || ch.closing || ch.superseded) {
      // Before its first channel, a requester whose account we saw on the ledger holding more than it owes us may take
      // up to K pieces while it opens one (the whitepaper's flow: data after the unchoke, the channel opened meanwhile,
      // a payment per verified piece): the channel's two ledger round trips are off the first bytes' path. Once it
      // has had a channel, a closing or superseded one means waiting for the next (the balance we saw is stale).
      if (a.hadChannel || !this.coveredByFunds(a, piece)) return { ok: false, reason: 'no_channel' };
    }
    if (a.unpaid.length >= this.o.maxUnpaid && findPiece(a.unpaid, piece) === undefined) return { ok: false, reason: 'unpaid_limit' };
    // Called for every block served: one decision object per price, not one per call.
    if (a.serveOk?.price !== a.price) a.serveOk = { ok: true, price: a.price };
    return a.serveOk;
  }

  /** A new piece may start on credit only while what the requester owes is below the balance we saw. */
  private coveredByFunds(a: RequesterAccount, piece: number): boolean {
    if (a.fundsSeen === undefined) return false;
    return findPiece(a.unpaid, piece) !== undefined || this.owed(a) < a.fundsSeen;
  }

  /**
   * The ledger says this requester's account holds `balance` (outside its channels). Before its first channel it may
   * then take paid pieces up to K, while it owes less than this (canServe); a balance of 0 makes it ineligible in the
   * auction until it has a channel (mayFund).
   */
  onRequesterFunds(key: string, balance: bigint): void {
    const a = this.accounts.get(key);
    if (a && balance >= 0n) a.fundsSeen = balance;
  }

  /** Can this requester pay us: a channel, or funds seen on the ledger? undefined while we do not know. */
  mayFund(key: string): boolean | undefined {
    const a = this.accounts.get(key);
    if (!a) return undefined;
    if (a.current !== undefined || a.hadChannel) return true;
    return a.fundsSeen === undefined ? undefined : a.fundsSeen > 0n;
  }

  /** We sent `bytes` of `piece`: charge them at the price in force. Call only after canServe said ok. */
  onBlockSent(key: string, piece: number, bytes: number, now: number): bigint {
    const a = this.mustAccount(key);
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError('bytes must be a non-negative integer');
    if (a.price === 0n || bytes === 0) return 0n;
    // Called for every block served: whole blocks at an unchanged price reuse one product.
    let cost: bigint;
    if (bytes === a.blockCost?.bytes && a.blockCost.price === a.price) cost = a.blockCost.cost;
    else {
      cost = a.price * BigInt(bytes);
      a.blockCost = { bytes, price: a.price, cost };
    }
    let u = findPiece(a.unpaid, piece);
    if (!u) {
      u = { piece, owed: 0n, startedAt: now, dueAt: undefined, overdue: false };
      a.unpaid.push(u);
    }
    u.owed += cost;
    this.applyCredit(a);
    return cost;
  }

  /** The requester announced HAVE `piece` (it verified it): the payment for it is now due. */
  onHave(key: string, piece: number, now: number): void {
    const a = this.accounts.get(key);
    const u = a?.unpaid.find((x) => x.piece === piece); // oldest first: HAVEs come in about the order pieces started
    if (u && u.dueAt === undefined) u.dueAt = now + this.o.paymentTimeoutMs;
  }

  /** The requester says `piece` failed its hash: it will not pay for it. Counts as a strike (we cannot tell who lies). */
  onReject(key: string, piece: number, now: number): ProviderAction[] {
    const a = this.accounts.get(key);
    if (!a) return [];
    const i = a.unpaid.findIndex((x) => x.piece === piece);
    if (i < 0) return [];
    a.unpaid.splice(i, 1);
    return this.strike(a, now, 'rejected a piece');
  }

  // ---- channels ----

  /**
   * The requester announced a channel. Returns 'fetch' when we must look it up on the ledger first
   * (then call onChannelInfo), 'known' when we already verified it.
   */
  onChannelAnnounced(key: string, channelId: Buffer): 'fetch' | 'known' | 'foreign' {
    const a = this.mustAccount(key);
    const id = hex(channelId);
    const ch = this.channels.get(id);
    if (ch) {
      if (ch.requester !== key) return 'foreign';
      this.makeCurrent(a, id);
      return 'known';
    }
    a.pendingChannel = id;
    return 'fetch';
  }

  /** The ledger's view of an announced channel. Accepts it as the requester's current channel if it checks out. */
  onChannelInfo(key: string, info: ChannelInfo, now: number): { ok: true } | { ok: false; code: number; reason: string } {
    const a = this.mustAccount(key);
    const bad = (reason: string, code: number = SpeedErrorCode.CHANNEL_INVALID) => ({ ok: false as const, code, reason });
    if (!info.ledgerId.equals(this.o.ledgerId)) return bad('channel is on another ledger', SpeedErrorCode.WRONG_LEDGER);
    if (!info.provider.equals(this.o.publicKey)) return bad('channel does not pay us');
    if (!info.requester.equals(a.pk)) return bad('channel payer is not this peer');
    if (info.status !== 'open') return bad(`channel is ${info.status}`);
    if (info.expiresAt - now < this.o.minChannelTtlMs) return bad('channel expires too soon');
    if (info.deposit <= 0n) return bad('channel has no deposit');
    const id = hex(info.id);
    const existing = this.channels.get(id);
    if (existing && existing.requester !== key) return bad('channel belongs to another requester');
    if (!existing) this.channels.set(id, { info, requester: key, superseded: false, closing: false });
    else existing.info = info;
    if (a.pendingChannel === id) a.pendingChannel = undefined;
    this.makeCurrent(a, id);
    return { ok: true };
  }

  private makeCurrent(a: RequesterAccount, id: string): void {
    if (a.current !== undefined && a.current !== id) {
      const old = this.channels.get(a.current);
      if (old) old.superseded = true;
    }
    a.current = id;
    a.hadChannel = true;
  }

  /** Accept (or not) a payment message. On success send back the returned ack. */
  onPayment(key: string, m: PaymentMessage, now: number): ProviderPaymentResult {
    const a = this.accounts.get(key);
    if (!a) return { ok: false, code: SpeedErrorCode.PAYMENT_INVALID, reason: 'unknown requester' };
    const id = hex(m.channel);
    const ch = this.channels.get(id);
    if (!ch) {
      if (a.pendingChannel === id) return { ok: false, code: SpeedErrorCode.PAYMENT_INVALID, reason: 'channel not yet verified', pending: true };
      return { ok: false, code: SpeedErrorCode.CHANNEL_INVALID, reason: 'payment on an unknown channel' };
    }
    if (ch.requester !== key) return { ok: false, code: SpeedErrorCode.CHANNEL_INVALID, reason: 'channel belongs to another requester' };
    const state: PaymentState = { ledgerId: this.o.ledgerId, channelId: buf(m.channel), sequence: m.seq, cumulative: m.amount };
    const sig = buf(m.sig);
    const last = ch.last;
    if (last && last.state.sequence === m.seq && last.state.cumulative === m.amount && last.sig.equals(sig)) {
      return { ok: true, ack: this.ackOf(ch), delta: 0n, duplicate: true, stillOwed: this.owed(a) };
    }
    if (ch.closing) return { ok: false, code: SpeedErrorCode.CHANNEL_INVALID, reason: 'channel is being closed' };
    const r = this.check(ch.info, last ? { sequence: last.state.sequence, cumulative: last.state.cumulative } : undefined, state, sig, now);
    if (!r.ok) return { ok: false, code: r.reason.includes('deposit') ? SpeedErrorCode.CHANNEL_EXHAUSTED : SpeedErrorCode.PAYMENT_INVALID, reason: r.reason };
    // A valid higher state is never bad for us: keep it whatever it pays for.
    const delta = m.amount - (last?.state.cumulative ?? 0n);
    ch.last = { state, sig: Buffer.from(sig) };
    a.earned += delta;
    a.credit += delta;
    // Pay the named piece first, then the oldest.
    const i = a.unpaid.findIndex((u) => u.piece === m.piece);
    if (i > 0) a.unpaid.unshift(a.unpaid.splice(i, 1)[0]);
    this.applyCredit(a);
    if (a.suspended && !a.unpaid.some((u) => u.overdue)) a.suspended = false;
    return { ok: true, ack: this.ackOf(ch), delta, stillOwed: this.owed(a) };
  }

  private applyCredit(a: RequesterAccount): void {
    while (a.unpaid.length > 0 && a.credit > 0n) {
      const u = a.unpaid[0];
      if (a.credit >= u.owed) {
        a.credit -= u.owed;
        a.unpaid.shift();
        a.paidPieces++;
      } else {
        u.owed -= a.credit;
        a.credit = 0n;
      }
    }
  }

  private owed(a: RequesterAccount): bigint {
    return a.unpaid.reduce((s, u) => s + u.owed, 0n);
  }

  private ackOf(ch: ProviderChannel): AckMessage {
    const ack: AckMessage = { type: 'ack', channel: ch.info.id, seq: ch.last?.state.sequence ?? 0n, amount: ch.last?.state.cumulative ?? 0n };
    if (ch.last) ack.sig = ch.last.sig;
    return ack;
  }

  /** What to tell a (re)connected requester about its current channel (resync), if any. */
  resyncAck(key: string): AckMessage | undefined {
    const a = this.accounts.get(key);
    const ch = a?.current !== undefined ? this.channels.get(a.current) : undefined;
    return ch && !ch.closing ? this.ackOf(ch) : undefined;
  }

  // ---- ledger outages ----

  /**
   * The requester told us it is waiting on the ledger (error `ledger_unavailable`: it cannot open or top up the
   * channel its next payment needs), or our own ledger lookup of its channel failed. For the next payment timeout
   * (renewed by each notice) its overdue payments still choke it (no paid data beyond K unpaid pieces) but are not
   * strikes, so an outage longer than the timeout does not get an honest requester banned.
   */
  onLedgerWait(key: string, now: number): void {
    const a = this.accounts.get(key);
    if (a) a.ledgerWaitUntil = now + this.o.paymentTimeoutMs;
  }

  /** A ledger call of ours failed (lookup, close): for the next payment timeout no overdue payment is a strike. */
  onLedgerUnavailable(now: number): void {
    this.ledgerDownUntil = now + this.o.paymentTimeoutMs;
  }

  /** Is this requester's lateness excused by a ledger outage right now? */
  waitingOnLedger(key: string, now: number): boolean {
    const a = this.accounts.get(key);
    return now < this.ledgerDownUntil || (a?.ledgerWaitUntil !== undefined && now < a.ledgerWaitUntil);
  }

  // ---- time ----

  private strike(a: RequesterAccount, now: number, reason: string): ProviderAction[] {
    a.strikes++;
    if (a.strikes >= this.o.maxStrikes) {
      const until = this.ban(a.key, now);
      a.price = 0n;
      return [{ type: 'ban', requester: a.key, until, reason: `${reason} (${a.strikes} failures)` }];
    }
    return [];
  }

  /** Advance time: overdue payments (choke, strike, ban) and channel closes due. Call every few seconds. */
  tick(now: number): ProviderAction[] {
    const out: ProviderAction[] = [];
    for (const a of this.accounts.values()) {
      const overdue = a.unpaid.filter((u) => (u.dueAt !== undefined ? u.dueAt <= now : now - u.startedAt >= this.o.staleMs));
      // Waiting on the ledger (it said so, or we cannot reach it ourselves): choked, never struck.
      const excused = this.waitingOnLedger(a.key, now);
      if (overdue.length > 0 && !a.suspended && !this.isBanned(a.key, now)) {
        a.suspended = true;
        // Give it another full timeout before the next strike.
        for (const u of overdue) {
          u.dueAt = now + this.o.paymentTimeoutMs;
          u.overdue = true;
        }
        out.push({ type: 'choke', requester: a.key, reason: excused ? `payment for piece ${overdue[0].piece} waits for the ledger` : `payment overdue for piece ${overdue[0].piece}` });
        if (!excused) out.push(...this.strike(a, now, 'payment overdue'));
      } else if (overdue.length > 0 && a.suspended && !this.isBanned(a.key, now)) {
        for (const u of overdue) u.dueAt = now + this.o.paymentTimeoutMs;
        if (!excused) out.push(...this.strike(a, now, 'payment still overdue'));
      }
    }
    for (const [id, ch] of this.channels) {
      if (ch.closing) continue;
      const a = this.accounts.get(ch.requester);
      let reason: 'expiry' | 'superseded' | 'idle' | undefined;
      if (now >= ch.info.expiresAt - this.o.closeMarginMs) reason = 'expiry';
      else if (ch.superseded) reason = 'superseded';
      else if (a && !a.connected && a.disconnectedAt !== undefined && now - a.disconnectedAt >= this.o.idleCloseMs) reason = 'idle';
      else if (a && this.isBanned(a.key, now)) reason = 'idle';
      if (!reason) continue;
      ch.closing = true;
      if (a && a.current === id) a.current = undefined;
      if (ch.last) {
        out.push({ type: 'close', requester: ch.requester, channelId: ch.info.id, state: ch.last.state, sig: ch.last.sig, reason });
      } else {
        // Nothing was paid on it: nothing to claim; the ledger refunds the requester at expiry.
        out.push({ type: 'abandon', requester: ch.requester, channelId: ch.info.id, reason: 'no payment received' });
        this.channels.delete(id);
      }
    }
    return out;
  }

  /** Close every channel now (transfer finished, shutting down): close actions for paid ones, abandon the rest. */
  closeAll(): ProviderAction[] {
    const out: ProviderAction[] = [];
    for (const [id, ch] of this.channels) {
      if (ch.closing) continue;
      ch.closing = true;
      const a = this.accounts.get(ch.requester);
      if (a && a.current === id) a.current = undefined;
      if (ch.last) out.push({ type: 'close', requester: ch.requester, channelId: ch.info.id, state: ch.last.state, sig: ch.last.sig, reason: 'idle' });
      else {
        out.push({ type: 'abandon', requester: ch.requester, channelId: ch.info.id, reason: 'no payment received' });
        this.channels.delete(id);
      }
    }
    return out;
  }

  /** The ledger confirmed the close (or the integration gave up on it): forget the channel. */
  onChannelClosed(channelId: Buffer): void {
    this.channels.delete(hex(channelId));
  }
  /** The close failed (ledger unreachable): try again on a later tick (still before expiry). */
  onCloseFailed(channelId: Buffer): void {
    const ch = this.channels.get(hex(channelId));
    if (ch) ch.closing = false;
  }

  // ---- persistence and introspection ----

  /** Everything needed to close every channel after a crash: persist after each accepted payment. */
  exportChannels(): PersistedChannel[] {
    const out: PersistedChannel[] = [];
    for (const ch of this.channels.values()) {
      if (!ch.last) continue;
      out.push({ requester: ch.requester, info: ch.info, sequence: ch.last.state.sequence, cumulative: ch.last.state.cumulative, sig: ch.last.sig });
    }
    return out;
  }

  /** Reload channels after a restart; they will be closed by tick() (idle/expiry) unless the requester resumes. */
  importChannels(list: PersistedChannel[], now: number): void {
    for (const p of list) {
      const pk = Buffer.from(p.requester, 'hex');
      let a = this.accounts.get(p.requester);
      if (!a) {
        a = { key: p.requester, pk, price: 0n, unpaid: [], credit: 0n, strikes: 0, suspended: false, connected: false, disconnectedAt: now, earned: 0n, paidPieces: 0 };
        this.accounts.set(p.requester, a);
      }
      const id = hex(p.info.id);
      const prev = this.channels.get(id);
      if (prev?.last && prev.last.state.cumulative >= p.cumulative) continue;
      this.channels.set(id, {
        info: p.info,
        requester: p.requester,
        last: { state: { ledgerId: p.info.ledgerId, channelId: p.info.id, sequence: p.sequence, cumulative: p.cumulative }, sig: p.sig },
        superseded: false,
        closing: false,
      });
      if (a.current === undefined) a.current = id;
    }
  }

  /** Snapshot of one requester's account (tests, UI). */
  account(key: string): { price: bigint; unpaidPieces: number; owed: bigint; strikes: number; suspended: boolean; earned: bigint; paidPieces: number; channel?: string; fundsSeen?: bigint } | undefined {
    const a = this.accounts.get(key);
    if (!a) return undefined;
    const view = { price: a.price, unpaidPieces: a.unpaid.length, owed: this.owed(a), strikes: a.strikes, suspended: a.suspended, earned: a.earned, paidPieces: a.paidPieces, channel: a.current };
    return a.fundsSeen === undefined ? view : { ...view, fundsSeen: a.fundsSeen };
  }

  /** Total accepted from every requester (base units). */
  totalEarned(): bigint {
    let s = 0n;
    for (const a of this.accounts.values()) s += a.earned;
    return s;
  }

  /** Best state held per channel (tests, UI). */
  heldState(channelId: Buffer): { sequence: bigint; cumulative: bigint } | undefined {
    const l = this.channels.get(hex(channelId))?.last;
    return l ? { sequence: l.state.sequence, cumulative: l.state.cumulative } : undefined;
  }

  private mustAccount(key: string): RequesterAccount {
    const a = this.accounts.get(key);
    if (!a) throw new Error(`speed: unknown requester ${key.slice(0, 16)}…`);
    return a;
  }
}

export interface PersistedChannel {
  requester: string;
  info: ChannelInfo;
  sequence: bigint;
  cumulative: bigint;
  sig: Buffer;
}

// ====================================================================================================
// Requester
// ====================================================================================================

export interface RequesterPaymentsOptions {
  ledgerId: Buffer;
  /** Our wallet key pair (Ed25519, libsodium 64-byte secret key form). */
  publicKey: Buffer;
  secretKey: Buffer;
  /** Provider's wallet public key (channel payee). */
  providerKey: Buffer;
  /** Ban the provider after this many pieces that failed their hash with its bytes in them (default 2). */
  maxBadPieces?: number;
}

export type PayResult =
  | { type: 'payment'; message: PaymentMessage; amount: bigint }
  | { type: 'need_channel'; piece: number; amount: bigint }
  /** Held to be paid together with the next verified piece(s), or by flushDue(). */
  | { type: 'deferred'; piece: number; amount: bigint }
  | { type: 'nothing' };

/** What one piece's bytes from a provider cost: `owed`, plus `bytes` received at `price` and not yet priced. */
interface PieceCharge {
  owed: bigint;
  price: bigint;
  bytes: number;
}

const owedOf = (c: PieceCharge): bigint => (c.bytes === 0 || c.price === 0n ? c.owed : c.owed + c.price * BigInt(c.bytes));

const NOTHING: PayResult = Object.freeze({ type: 'nothing' });

/** One per (torrent, provider) connection with an authenticated Speed provider. */
export class RequesterPayments {
  private price = 0n;
  /**
   * Every piece with bytes from this provider (free or paid: blame on hash failure) and what they cost: bytes that
   * arrived at one price are summed as a number and priced once (when the price changes, or when the piece is
   * settled), not with a BigInt product and sum per 16 KiB block.
   */
  private charges = new Map<number, PieceCharge>();
  /** Verified pieces whose payment is waiting for a channel. */
  private queue: { piece: number; amount: bigint }[] = [];
  private channel?: { id: Buffer; deposit: bigint; expiresAt: number; seq: bigint; cumulative: bigint; lastSig?: Buffer; lastPiece: number };
  /**
   * Sequence numbers of payments sent on the current channel and not yet acknowledged, oldest first. The provider
   * acks every accepted payment in order (TCP), so an ack for an older state while later ones are still in flight
   * is normal and must not trigger a re-send (each re-send would be acked with an older state again: a storm).
   */
  private inFlight: bigint[] = [];
  private badPieces = 0;
  /** Pay for this many verified pieces with one signed state (setProviderLimit). */
  private batchPieces = 1;
  /** Verified pieces held back to be paid in one state: the newest piece, the summed amount, how many pieces. */
  private due?: { piece: number; amount: bigint; pieces: number };
  /** Total signed over to this provider, across channels. */
  paid = 0n;
  banned = false;
  private readonly maxBad: number;

  constructor(private readonly o: RequesterPaymentsOptions) {
    this.maxBad = o.maxBadPieces ?? 2;
  }

  /** Current price in force (0: free). */
  get currentPrice(): bigint {
    return this.price;
  }

  /**
   * A bid_response arrived. `bidForSeq` is the price of our bid with that seq (undefined: we never sent it).
   * Refuses (and returns an error code to send) a price above what we bid.
   */
  onBidResponse(price: bigint, bidForSeq: bigint | undefined): { ok: true } | { ok: false; code: number; reason: string } {
    if (bidForSeq === undefined) return { ok: false, code: SpeedErrorCode.MALFORMED, reason: 'bid_response for a bid we never sent' };
    if (price > bidForSeq) {
      this.price = 0n;
      return { ok: false, code: SpeedErrorCode.PRICE_ABOVE_BID, reason: `price ${price} above our bid ${bidForSeq}` };
    }
    this.price = price;
    return { ok: true };
  }

  /** The provider choked us: blocks that arrive later are free until the next bid_response. */
  onChoke(): void {
    this.price = 0n;
  }

  /** A block of `piece` (`bytes` long) arrived from this provider, at the price in force. */
  onBlock(piece: number, bytes: number): void {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError('bytes must be a non-negative integer');
    const c = this.charges.get(piece);
    if (c === undefined) this.charges.set(piece, { owed: 0n, price: this.price, bytes });
    else {
      if (c.price !== this.price) {
        c.owed += c.price * BigInt(c.bytes);
        c.price = this.price;
        c.bytes = 0;
      }
      c.bytes += bytes;
    }
  }

  /** What we will owe for `piece` once it verifies. */
  owedFor(piece: number): bigint {
    const c = this.charges.get(piece);
    return c === undefined ? 0n : owedOf(c);
  }

  /**
   * The provider's unpaid-piece limit K (its bid_response). With K ≥ 4 one signed state pays for ⌊K/2⌋ verified
   * pieces: half the signatures, signature checks and messages on both sides at full speed, while the provider keeps
   * K − ⌊K/2⌋ pieces of room to go on sending. Below 4 every piece is paid on its own (a held piece would stall it).
   */
  setProviderLimit(k: number): void {
    this.batchPieces = Number.isInteger(k) && k >= 4 ? Math.floor(k / 2) : 1;
  }

  /** `piece` passed its hash check: pay for this provider's bytes in it (if any were paid), possibly with others (setProviderLimit). */
  onPieceVerified(piece: number): PayResult {
    const c = this.charges.get(piece);
    if (c === undefined) return NOTHING; // the engine reports a piece more than once (verified, stored, HAVE)
    this.charges.delete(piece);
    const amount = owedOf(c);
    if (amount === 0n) return NOTHING;
    const ch = this.channel;
    const d = (this.due ??= { piece, amount: 0n, pieces: 0 });
    d.piece = piece;
    d.amount += amount;
    d.pieces++;
    if (d.pieces < this.batchPieces && ch && this.queue.length === 0 && ch.cumulative + d.amount <= ch.deposit) return { type: 'deferred', piece, amount };
    return this.flushDue();
  }

  /** Pay now for the verified pieces held back by onPieceVerified (the agent calls this on its tick, on choke and when the download completes). */
  flushDue(): PayResult {
    const d = this.due;
    if (!d) return { type: 'nothing' };
    this.due = undefined;
    return this.pay(d.piece, d.amount);
  }

  /** Verified pieces held back and not yet paid (0 when none). */
  get dueAmount(): bigint {
    return this.due?.amount ?? 0n;
  }

  /**
   * `piece` failed its hash check. We pay nothing for it. If this provider contributed bytes, that is a strike;
   * returns the reject message to send (when it charged for the piece) and whether to ban it now.
   */
  onPieceFailed(piece: number): { reject?: RejectMessage; ban: boolean } {
    const c = this.charges.get(piece);
    this.charges.delete(piece);
    if (c !== undefined) this.badPieces++;
    if (this.badPieces >= this.maxBad) this.banned = true;
    return { reject: c !== undefined && owedOf(c) > 0n ? { type: 'reject', piece } : undefined, ban: this.banned };
  }

  private pay(piece: number, amount: bigint): PayResult {
    const ch = this.channel;
    if (!ch || this.queue.length > 0 || ch.cumulative + amount > ch.deposit) {
      this.queue.push({ piece, amount });
      return { type: 'need_channel', piece, amount };
    }
    return { type: 'payment', message: this.sign(piece, amount), amount };
  }

  private sign(piece: number, amount: bigint): PaymentMessage {
    const ch = this.channel!;
    const seq = ch.seq + 1n;
    const cumulative = ch.cumulative + amount;
    const sig = signPaymentState({ ledgerId: this.o.ledgerId, channelId: ch.id, sequence: seq, cumulative }, this.o.secretKey);
    ch.seq = seq;
    ch.cumulative = cumulative;
    ch.lastSig = sig;
    ch.lastPiece = piece;
    this.inFlight.push(seq);
    if (this.inFlight.length > 4096) this.inFlight.shift(); // bounded: a provider that never acks only loses dedup
    this.paid += amount;
    return { type: 'payment', channel: ch.id, seq, amount: cumulative, piece, sig };
  }

  /** Sum of verified-but-unpaid amounts waiting for a (new) channel: the minimum deposit the next channel needs. */
  get pendingAmount(): bigint {
    return this.queue.reduce((s, q) => s + q.amount, 0n);
  }

  /** Room left on the current channel. */
  get channelRemaining(): bigint {
    return this.channel ? this.channel.deposit - this.channel.cumulative : 0n;
  }

  get channelId(): Buffer | undefined {
    return this.channel?.id;
  }

  /**
   * A channel to this provider is open on the ledger (we opened it). Returns the `channel` announcement followed
   * by payments for every queued piece it can cover.
   */
  onChannelOpened(info: { id: Buffer; deposit: bigint; expiresAt: number }): { announce: ChannelMessage; payments: PaymentMessage[] } {
    if (info.deposit <= 0n) throw new RangeError('channel deposit must be > 0');
    this.channel = { id: Buffer.from(info.id), deposit: info.deposit, expiresAt: info.expiresAt, seq: 0n, cumulative: 0n, lastPiece: 0 };
    this.inFlight = [];
    return { announce: { type: 'channel', channel: this.channel.id }, payments: this.flush() };
  }

  /**
   * Pay the queued pieces that fit on the current channel (in order) with one signed state, named after the newest
   * of them: pieces verified while the channel was opening (a provider serves a funded requester before it) cost one
   * signature together, not one each.
   */
  flush(): PaymentMessage[] {
    const ch = this.channel;
    let amount = 0n;
    let piece = -1;
    while (ch && this.queue.length > 0 && ch.cumulative + amount + this.queue[0].amount <= ch.deposit) {
      const q = this.queue.shift()!;
      amount += q.amount;
      piece = q.piece;
    }
    return piece >= 0 ? [this.sign(piece, amount)] : [];
  }

  /**
   * The provider's ack (after a payment, or on reconnect). If it holds less than we signed (it lost state),
   * returns our latest payment to re-send; if it holds a state signed by us above ours (we lost state), adopts it.
   */
  onAck(ack: AckMessage): { resend?: PaymentMessage; adopted?: boolean; error?: string } {
    const ch = this.channel;
    if (!ch || !ch.id.equals(buf(ack.channel))) return { error: 'ack for a channel that is not our current one' };
    // Acks are cumulative and in order: one for a state we sent drops it and every older one from the in-flight list.
    const at = this.inFlight.indexOf(ack.seq);
    if (at >= 0) {
      this.inFlight.splice(0, at + 1);
      if (ack.amount <= ch.cumulative) return {};
    }
    if (ack.amount < ch.cumulative && ch.lastSig) {
      // The provider holds less than we signed and nothing we sent later is still on its way (resync after a
      // reconnect or a lost payment): re-send our latest state (cumulative, so nothing is paid twice).
      this.inFlight = [ch.seq];
      return { resend: { type: 'payment', channel: ch.id, seq: ch.seq, amount: ch.cumulative, piece: ch.lastPiece, sig: ch.lastSig } };
    }
    if (ack.amount > ch.cumulative || ack.seq > ch.seq) {
      const state = { ledgerId: this.o.ledgerId, channelId: ch.id, sequence: ack.seq, cumulative: ack.amount };
      if (!ack.sig || !verifyPaymentStateSignature(state, buf(ack.sig), this.o.publicKey)) return { error: 'ack claims a state we did not sign' };
      if (ack.amount > ch.deposit) return { error: 'ack above the deposit' };
      this.paid += ack.amount - ch.cumulative;
      ch.seq = ack.seq;
      ch.cumulative = ack.amount;
      ch.lastSig = Buffer.from(ack.sig);
      return { adopted: true };
    }
    return {};
  }
}

/** Suggested deposit for a new channel: enough for `pieces` pieces at `price`, at least what is pending, at most `budget`. */
export function suggestDeposit(price: bigint, pieceLength: number, pieces: number, pending: bigint, budget: bigint): bigint {
  let d = price * BigInt(pieceLength) * BigInt(Math.max(1, pieces));
  if (d < pending) d = pending;
  return d > budget ? budget : d;
}
