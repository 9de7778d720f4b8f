/**
 * Choking policy (BEP 3 "tit-for-tat"), pure and swappable.
 *
 * The session calls `rechoke()` every 10 s, and sooner when a peer connects, leaves or changes interest (at once when
 * an upload slot is free), and applies the returned set: every peer in `unchoke` is unchoked, every other peer is
 * choked. So a policy must not count calls as time: the optimistic slot rotates on the clock (`now`).
 * BitTorrent Speed plugs a bidding policy in through the same `ChokerPolicy` interface.
 */
import { defaultRandomInt, randomBelow, type RandomInt } from './picker.js';

export interface ChokerPeer {
  id: string;
  /** Peer is interested in our pieces. */
  interested: boolean;
  /** Bytes/s we receive from this peer. */
  downloadRate: number;
  /** Bytes/s we send to this peer. */
  uploadRate: number;
  isSeed?: boolean;
  /** ms timestamp (same clock as `now`). */
  connectedAt: number;
  lastUnchokedAt?: number;
  /** Currently unchoked by us. */
  unchoked: boolean;
  /** No block received from it for a long time while we wanted some (libtorrent: 60 s). */
  snubbed?: boolean;
}

export interface RechokeInput {
  peers: ChokerPeer[];
  /** ms, same clock as connectedAt. */
  now: number;
  /** We have every wanted piece: rank by upload rate instead of download rate. */
  seeding: boolean;
  /** Regular unchoke slots (the optimistic slot comes on top). */
  slots: number;
}

export interface RechokeResult {
  /** Every peer to leave unchoked (regular + optimistic); all others get choked. */
  unchoke: Set<string>;
  /** The optimistic unchoke, also contained in `unchoke`. */
  optimistic?: string;
}

export interface ChokerPolicy {
  rechoke(input: RechokeInput): RechokeResult;
  /**
   * May this peer, just interested while an upload slot is free, be unchoked at once (default yes)? A policy that
   * prices its slots says no while the peer's price is still on its way (a Speed bid follows its `interested` by a
   * round trip); the peer then waits for the coalesced rechoke, or for the rechoke its price triggers.
   */
  admitAtOnce?(peerId: string): boolean;
}

export interface StandardChokerOptions {
  /** Random integer in [0, n) (default Math.random based; `crypto.randomInt` fits). */
  rng?: RandomInt;
  /** Rotate the optimistic unchoke after this long (ms of `now`; default 30 s, BEP 3's three 10 s rounds). */
  optimisticIntervalMs?: number;
  /** Peers connected for less than this get `newPeerWeight`× the chance to be picked optimistically (default 60 s). */
  newPeerMs?: number;
  newPeerWeight?: number;
}

/**
 * libtorrent/Transmission-like choker:
 *  - regular slots go to interested, non-snubbed peers ranked by the rate they give us (leeching) or by
 *    the rate we achieve to them (seeding, "fastest upload" seed mode), ties broken by longest since last unchoke;
 *  - one optimistic slot, rotated every `optimisticIntervalMs`, chosen at random among interested peers not
 *    holding a regular slot, new peers weighted 3×; peers that have been waiting longest are not favoured beyond that.
 */
export class StandardChoker implements ChokerPolicy {
  private rng: RandomInt;
  private intervalMs: number;
  private newPeerMs: number;
  private newPeerWeight: number;
  /** `now` when the optimistic slot last rotated (undefined: never). */
  private rotatedAt: number | undefined;
  private optimistic: string | undefined;

  constructor(opts: StandardChokerOptions = {}) {
    this.rng = opts.rng ?? defaultRandomInt;
    this.intervalMs = Math.max(0, opts.optimisticIntervalMs ?? 30_000);
    this.newPeerMs = opts.newPeerMs ?? 60_000;
    this.newPeerWeight = opts.newPeerWeight ?? 3;
  }

  /** Current optimistic unchoke (if still chosen). */
  get optimisticPeer(): string | undefined {
    return this.optimistic;
  }

  rechoke(input: RechokeInput): RechokeResult {
    const { peers, now, seeding } = input;
    const slots = Math.max(0, Math.floor(input.slots));
    // A clock that went backwards (or a first call) rotates: never keep a pick for longer than the interval.
    const rotate = this.rotatedAt === undefined || now - this.rotatedAt >= this.intervalMs || now < this.rotatedAt;

    // Regular slots. Seeds are not interested in us normally; if one is, it cannot reciprocate while we leech.
    const candidates = peers.filter((p) => p.interested && !p.snubbed && !(p.isSeed && !seeding));
    const rate = (p: ChokerPeer) => (seeding ? p.uploadRate : p.downloadRate);
    candidates.sort((a, b) => {
      const d = rate(b) - rate(a);
      if (d !== 0) return d;
      // Prefer keeping currently unchoked peers (less churn), then the one waiting longest.
      if (a.unchoked !== b.unchoked) return a.unchoked ? -1 : 1;
      const la = a.lastUnchokedAt ?? -Infinity, lb = b.lastUnchokedAt ?? -Infinity;
      if (la !== lb) return la - lb;
      return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    });
    const unchoke = new Set<string>();
    for (const p of candidates) {
      if (unchoke.size >= slots) break;
      unchoke.add(p.id);
    }

    // Optimistic slot: keep the current one between rotations if it is still eligible.
    const eligible = (p: ChokerPeer) => p.interested && !unchoke.has(p.id) && !(p.isSeed && !seeding);
    const current = this.optimistic !== undefined ? peers.find((p) => p.id === this.optimistic) : undefined;
    if (rotate) this.rotatedAt = now; // a fixed 30 s cadence (BEP 3); a replacement in between keeps it
    if (rotate || !current || !eligible(current)) {
      const pool = peers.filter(eligible);
      this.optimistic = undefined;
      if (pool.length > 0) {
        let total = 0;
        const weights = pool.map((p) => {
          const w = now - p.connectedAt < this.newPeerMs ? this.newPeerWeight : 1;
          total += w;
          return w;
        });
        let r = randomBelow(this.rng, total);
        let chosen = pool[pool.length - 1];
        for (let i = 0; i < pool.length; i++) {
          r -= weights[i];
          if (r < 0) {
            chosen = pool[i];
            break;
          }
        }
        this.optimistic = chosen.id;
      }
    }
    if (this.optimistic !== undefined) unchoke.add(this.optimistic);
    return { unchoke, optimistic: this.optimistic };
  }
}
