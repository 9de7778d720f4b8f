/**
 * The provider's unchoke auction (whitepaper "Matchmaking"): a multi-unit uniform-price auction over the regular
 * unchoke slots, layered on the legacy tit-for-tat choker.
 *
 *  1. Eligible bidders — interested, bid ≥ max(reserve, 1), funded (or able to open a channel), not banned — are
 *     ranked by bid, then by data rate (what the legacy choker ranks by), then by a random draw.
 *  2. The top `slots` of them win. Each winner pays the highest losing eligible bid, floored at the reserve price,
 *     never more than its own bid (with unit demand this is the VCG price; truthful bidding is dominant).
 *  3. The remaining regular slots and the optimistic slot are decided by the legacy choker over the other peers,
 *     so with no eligible bids the result *is* the legacy choker's, by construction.
 *  4. The optimistic slot stays the legacy's (round-robin/random). Bids only break ties: when the legacy rotates
 *     to a new optimistic peer, an eligible bidder that has been choked exactly as long (same `lastUnchokedAt`,
 *     typically "never unchoked") takes it instead, highest bid first. The optimistic slot is free (no price).
 *
 * `runAuction` is pure given the legacy policy's own state; `AuctionChoker` wraps it as a `ChokerPolicy`.
 */
import type { ChokerPeer, ChokerPolicy, RechokeInput, RechokeResult } from './core-choker.js';

export interface AuctionPeer extends ChokerPeer {
  /** Current bid, base units per byte. undefined or 0: no bid. */
  bid?: bigint;
  /** Has a funded channel to us, or is an authenticated Speed peer able to open one (default true when it bids). */
  funded?: boolean;
  /** Banned for repeated payment failures: never unchoked. */
  banned?: boolean;
}

/** Optimistic-slot memory carried between rounds (returned by runAuction, fed back next round). */
export interface OptimisticState {
  /** What the legacy choker chose last round. */
  legacy?: string;
  /** What we actually unchoked optimistically last round (may differ from `legacy` after a tie-break). */
  chosen?: string;
}

export interface AuctionInput {
  peers: AuctionPeer[];
  /** Regular unchoke slots; the optimistic slot comes on top. */
  slots: number;
  /** Provider's reserve price, base units per byte (0 = none). */
  reservePrice: bigint;
  seeding: boolean;
  now: number;
  /** The legacy (tit-for-tat) policy that decides the non-auctioned slots. */
  legacy: ChokerPolicy;
  /** Random source in [0, 1) for the final tie-break between equal bids and equal rates. */
  rng: () => number;
  optimistic?: OptimisticState;
}

export interface AuctionResult {
  /** Every peer to leave unchoked (auction winners + legacy regular + optimistic). */
  unchoke: Set<string>;
  /** Auction winners → clearing price per byte each must pay. */
  winners: Map<string, bigint>;
  /** The optimistic unchoke (free), also in `unchoke`. */
  optimistic?: string;
  /** The uniform clearing price of this round (undefined when nobody won). */
  clearingPrice?: bigint;
  /** Eligible bidders, best first. */
  ranking: string[];
  /** Feed back as `optimistic` next round. */
  optimisticState: OptimisticState;
}

function bidOf(p: AuctionPeer): bigint {
  return typeof p.bid === 'bigint' && p.bid > 0n ? p.bid : 0n;
}

export function isEligibleBidder(p: AuctionPeer, reservePrice: bigint): boolean {
  const b = bidOf(p);
  return p.interested && !p.banned && p.funded !== false && b > 0n && b >= reservePrice;
}

/** One round of the auction. See the module comment for the rules. */
export function runAuction(input: AuctionInput): AuctionResult {
  const slots = Math.max(0, Math.floor(input.slots));
  const reserve = input.reservePrice > 0n ? input.reservePrice : 0n;
  const { peers, seeding, now } = input;
  const rate = (p: ChokerPeer) => (seeding ? p.uploadRate : p.downloadRate);

  // One draw per peer in input order, so a peer's draw does not depend on anyone's bid.
  const draw = new Map<string, number>();
  for (const p of peers) draw.set(p.id, input.rng());

  const eligible = peers.filter((p) => isEligibleBidder(p, reserve));
  const better = (a: AuctionPeer, b: AuctionPeer): number => {
    const ba = bidOf(a), bb = bidOf(b);
    if (ba !== bb) return ba > bb ? -1 : 1;
    const dr = rate(b) - rate(a);
    if (dr !== 0) return dr;
    const da = draw.get(a.id)!, db = draw.get(b.id)!;
    if (da !== db) return da - db;
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  };
  eligible.sort(better);

  const nWin = Math.min(slots, eligible.length);
  const winners = new Map<string, bigint>();
  let clearingPrice: bigint | undefined;
  if (nWin > 0) {
    const highestLosing = eligible.length > nWin ? bidOf(eligible[nWin]) : 0n;
    clearingPrice = highestLosing > reserve ? highestLosing : reserve;
    for (let i = 0; i < nWin; i++) {
      const own = bidOf(eligible[i]);
      winners.set(eligible[i].id, clearingPrice < own ? clearingPrice : own);
    }
  }

  // Legacy part. With no winners and nobody banned, the legacy sees exactly our input.
  const anyBanned = peers.some((p) => p.banned);
  const rest = nWin === 0 && !anyBanned ? peers : peers.filter((p) => !winners.has(p.id) && !p.banned);
  const legacyInput: RechokeInput = { peers: rest, now, seeding, slots: slots - nWin };
  const legacy = input.legacy.rechoke(legacyInput);

  const unchoke = new Set<string>(winners.keys());
  for (const id of legacy.unchoke) if (id !== legacy.optimistic) unchoke.add(id);

  // Optimistic slot.
  const prev = input.optimistic ?? {};
  let optimistic = legacy.optimistic;
  const byId = new Map(rest.map((p) => [p.id, p] as const));
  const optEligible = (p: AuctionPeer | undefined): p is AuctionPeer =>
    !!p && p.interested && !p.banned && !unchoke.has(p.id) && !(p.isSeed && !seeding);
  if (optimistic !== undefined) {
    const rotated = optimistic !== prev.legacy;
    if (!rotated && prev.chosen !== undefined && prev.chosen !== optimistic && optEligible(byId.get(prev.chosen))) {
      optimistic = prev.chosen; // keep last round's tie-break winner until the legacy rotates
    } else if (rotated) {
      const o = byId.get(optimistic);
      const waitKey = o?.lastUnchokedAt;
      const ties = rest.filter(
        (p) => optEligible(p) && p.lastUnchokedAt === waitKey && isEligibleBidder(p, reserve),
      );
      if (ties.length > 0) {
        ties.sort(better);
        optimistic = ties[0].id;
      }
    }
    unchoke.add(optimistic);
  }

  return {
    unchoke,
    winners,
    optimistic,
    clearingPrice,
    ranking: eligible.map((p) => p.id),
    optimisticState: { legacy: legacy.optimistic, chosen: optimistic },
  };
}

export interface BidInfo {
  bid: bigint;
  funded: boolean;
  banned?: boolean;
}

export interface AuctionChokerOptions {
  legacy: ChokerPolicy;
  /** The Speed state's view of a peer: its current bid, channel funding and ban status (undefined: legacy peer). */
  bidOf: (peerId: string) => BidInfo | undefined;
  /** Reserve price per byte (a function so the user can change it at any time). */
  reservePrice?: () => bigint;
  rng?: () => number;
  /**
   * Called synchronously with every round's result, before the session applies the unchokes: the place to send
   * bid responses to winners so they precede the unchoke on the wire.
   */
  onResult?: (r: AuctionResult) => void;
  /** ChokerPolicy.admitAtOnce: false for a peer whose bid may still be on its way (default true; the legacy may also say no). */
  admitAtOnce?: (peerId: string) => boolean;
}

/** The auction as the engine's pluggable choker policy. */
export class AuctionChoker implements ChokerPolicy {
  private opt: OptimisticState = {};
  private readonly rng: () => number;
  /** The last round's full result (winners and prices). */
  lastResult: AuctionResult | undefined;

  constructor(private readonly opts: AuctionChokerOptions) {
    this.rng = opts.rng ?? Math.random;
  }

  admitAtOnce(peerId: string): boolean {
    return (this.opts.admitAtOnce?.(peerId) ?? true) && (this.opts.legacy.admitAtOnce?.(peerId) ?? true);
  }

  rechoke(input: RechokeInput): RechokeResult {
    const peers: AuctionPeer[] = input.peers.map((p) => {
      const b = this.opts.bidOf(p.id);
      return b ? { ...p, bid: b.bid, funded: b.funded, banned: b.banned } : p;
    });
    const r = runAuction({
      peers,
      slots: input.slots,
      reservePrice: this.opts.reservePrice?.() ?? 0n,
      seeding: input.seeding,
      now: input.now,
      legacy: this.opts.legacy,
      rng: this.rng,
      optimistic: this.opt,
    });
    this.opt = r.optimisticState;
    this.lastResult = r;
    this.opts.onResult?.(r);
    return r.optimistic !== undefined ? { unchoke: r.unchoke, optimistic: r.optimistic } : { unchoke: r.unchoke };
  }
}
