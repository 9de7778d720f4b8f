/**
 * Piece and block picker: which blocks to request from which peer. Pure (no I/O), randomness injected.
 *
 * Policy, in order, for each `pickBlocks` call:
 *  1. free blocks of pieces already in flight (partial pieces) that the peer has — finish what was started,
 *     keeping the number of pieces in flight (and of unverified bytes in memory) small;
 *  2. new pieces: sequential mode → lowest index first; until `firstRandomPieces` pieces are complete → a random
 *     piece (gets us something to trade quickly); otherwise rarest first by priority level (7 → 1), random tie-break;
 *  3. end-game: once every remaining wanted block has been requested, blocks outstanding at one other peer may be
 *     requested again (at most 2 copies; 3 when both holders are in a slower speed class than the asking peer);
 *     the first arrival tells the caller whom to cancel.
 *
 * Piece affinity (speed classes, as libtorrent's): when peers report their download `rate`, a piece in flight
 * belongs to the peer that started it while that peer still has requests in it. Another peer joins it in step 1
 * only if the two rates are within a factor AFFINITY_RATIO (floor: one block per second). A much slower peer never
 * joins (its blocks would hold the piece's verification — and, with BitTorrent Speed, the payment and the starter's
 * next piece); a much faster peer joins only after trying new pieces (step 1b), so it still finishes slow pieces
 * once nothing new is left. Peers that give no rate are not classed (plain step 1).
 *
 * Cost: untouched wanted pieces sit in buckets keyed by (priority, availability); availability updates move a piece
 * between buckets in O(1), so `peerHave` is O(1), and a rarest-first pick looks only at the rarest buckets (skipping
 * just the pieces this peer lacks). Pieces in flight leave the buckets; those with free blocks sit in a small `open`
 * set that step 1 walks. Seeds (have_all) are counted separately and cost nothing per piece.
 */

export interface BlockRequest {
  index: number;
  begin: number;
  length: number;
}

export interface PickerPeer {
  id: string;
  has(index: number): boolean;
  /** Peer has every piece (have_all / full bitfield): `has` is not consulted. */
  hasAll?: boolean;
  /** BEP 6 allowed-fast set: while choked, only these pieces may be requested. */
  fastAllowed?: Set<number>;
  /** We are choked by this peer. */
  choked?: boolean;
  /** Our download rate from this peer, bytes/s: enables piece affinity by speed class (see the class comment). */
  rate?: number;
  /**
   * At most this many distinct pieces with requests outstanding at this peer (whole pieces, then the next). For
   * peers that serve only a few pieces at a time, e.g. a BitTorrent Speed provider that holds requests beyond its
   * unpaid-piece limit: requests for other pieces would only sit in its queue while slower peers get the blocks
   * its current piece still needs.
   */
  maxPieces?: number;
}

/** A wire-format bitfield (MSB of byte 0 = piece 0), or anything with `has(index)` (BitField; its `toBuffer()` is used when present). */
export type BitsLike = Uint8Array | { has(index: number): boolean; toBuffer?(): Uint8Array };

export interface PiecePickerOptions {
  pieceCount: number;
  pieceLength: number;
  totalLength: number;
  /** Default 16384. */
  blockSize?: number;
  /** Random integer in [0, n) (default Math.random based; `crypto.randomInt` fits). */
  rng?: RandomInt;
  /** Pick random pieces until this many pieces are complete (default 4). */
  firstRandomPieces?: number;
  /** Default piece priority 1..7 (default 4). */
  defaultPriority?: number;
}

/**
 * Injected randomness. Given n, return an integer in [0, n) (`crypto.randomInt` fits). A Math.random-style source
 * (no argument used, float in [0, 1)) is accepted too and scaled: see randomBelow().
 */
export type RandomInt = (n: number) => number;

export const defaultRandomInt: RandomInt = (n) => Math.floor(Math.random() * n);

/**
 * Draw an integer in [0, n) from an injected source, defensively: integers are used as-is (reduced mod n),
 * fractions in [0, 1) are scaled by n (Math.random-style sources), anything else maps to 0.
 */
export function randomBelow(rng: RandomInt, n: number): number {
  if (n <= 1) return 0;
  const r = rng(n);
  if (!Number.isFinite(r) || r < 0) return 0;
  if (Number.isInteger(r)) return r < n ? r : r % n;
  if (r < 1) return Math.floor(r * n);
  return Math.floor(r) % n;
}

export class PickerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PickerError';
  }
}

const FREE = 0, REQUESTED = 1, RECEIVED = 2;
/** Availability above this is bucketed together (ordering among >65k-peer pieces is moot). */
const AVAIL_CAP = 0xffff;
/** Maximum number of outstanding copies of one block in end-game. */
const ENDGAME_COPIES = 2;
/** Peers whose download rates differ by more than this factor are in different speed classes. */
export const AFFINITY_RATIO = 4;

class Partial {
  readonly state: Uint8Array;
  readonly owners: (string[] | undefined)[];
  free: number;
  received = 0;
  /** Lowest block index that may be free. */
  nextFree = 0;
  readonly contributors = new Set<string>();
  /** The peer that started the piece (piece affinity); replaced when it no longer has requests in it. */
  starter?: string;
  constructor(readonly blocks: number) {
    this.state = new Uint8Array(blocks);
    this.owners = new Array(blocks);
    this.free = blocks;
  }
}

export interface BlockReceivedResult {
  /** Every block of the piece is now here: verify its hash, then call setHave() or pieceFailed(). */
  pieceComplete: boolean;
  /** Other peers that still had this block requested (end-game): send them `cancel`. */
  cancel: string[];
  /** The block was already received (or the piece is already verified): data can be dropped. */
  duplicate: boolean;
}

const ANY_OWNER = (): boolean => true;

/** One pickBlocks call: the asking peer, what it may be asked for, and the requests chosen so far. */
class PickRun {
  /** The peer's piece limit (PickerPeer.maxPieces), if it has a valid one. */
  readonly lim: number | undefined;
  /** With a limit: the pieces this peer has requests in or has sent blocks of, plus those started in this call. */
  held: Set<number> | undefined;
  /** Open pieces started by a much slower peer, for step 1b. */
  deferred: number[] | undefined;

  constructor(
    private readonly pieceCount: number,
    readonly peer: PickerPeer,
    /** The allowed-fast set while the peer chokes us. */
    readonly fast: Set<number> | undefined,
    readonly out: BlockRequest[],
    readonly max: number,
  ) {
    const m = peer.maxPieces;
    this.lim = m !== undefined && Number.isInteger(m) && m > 0 ? m : undefined;
  }

  /** The peer has the piece (and, while it chokes us, it is allowed-fast). */
  allowedBase(i: number): boolean {
    const fast = this.fast;
    if (fast) return i >= 0 && i < this.pieceCount && fast.has(i) && (this.peer.hasAll === true || this.peer.has(i));
    return this.peer.hasAll ? true : this.peer.has(i);
  }

  /** allowedBase, and within the piece limit. */
  allowed(i: number): boolean {
    const held = this.held;
    return this.allowedBase(i) && (held === undefined || held.has(i) || held.size < this.lim!);
  }

  /** Count piece `i` against the limit if this call requested blocks of it (out grew past `before`). */
  took(i: number, before: number): void {
    if (this.held && this.out.length > before) this.held.add(i);
  }

  /** Another piece may start. */
  room(): boolean {
    return this.held === undefined || this.held.size < this.lim!;
  }

  full(): boolean {
    return this.out.length >= this.max;
  }
}

export class PiecePicker {
  readonly pieceCount: number;
  readonly pieceLength: number;
  readonly totalLength: number;
  readonly blockSize: number;
  /** Blocks in a full-size piece. */
  readonly blocksPerPiece: number;
  private readonly rng: RandomInt;
  private readonly firstRandom: number;

  private readonly haveBits: Uint8Array;
  private haveCount_ = 0;
  private readonly prio: Uint8Array;
  private readonly avail: Uint32Array;
  private seeds = 0;
  /** buckets[priority][availability] = wanted pieces not in flight; pos[i] = index in its bucket or -1. */
  private readonly buckets: number[][][] = [];
  private readonly bucketCount = new Array<number>(8).fill(0);
  private readonly maxAvail = new Array<number>(8).fill(0);
  private readonly pos: Int32Array;
  /** Pieces not had with priority > 0. */
  private wantedCount = 0;
  private readonly partials = new Map<number, Partial>();
  /** Partial pieces that still have free blocks (the only ones step 1 of pickBlocks needs to look at). */
  private readonly open = new Set<number>();
  /** Outstanding requests per peer, as block keys (index * blocksPerPiece + block). */
  private readonly peerReqs = new Map<string, Set<number>>();
  private readonly failedBy = new Map<number, string[]>();
  /** Free (unrequested, unreceived) blocks in wanted pieces. */
  private freeBlocks = 0;
  private sequential = false;
  private seqCursor = 0;
  /** Last download rate each peer reported (piece affinity). */
  private readonly rates = new Map<string, number>();

  constructor(opts: PiecePickerOptions) {
    const { pieceCount, pieceLength, totalLength } = opts;
    const blockSize = opts.blockSize ?? 16384;
    if (!Number.isSafeInteger(pieceLength) || pieceLength <= 0) throw new PickerError(`invalid piece length ${pieceLength}`);
    if (!Number.isSafeInteger(totalLength) || totalLength <= 0) throw new PickerError(`invalid total length ${totalLength}`);
    if (!Number.isSafeInteger(blockSize) || blockSize <= 0) throw new PickerError(`invalid block size ${blockSize}`);
    if (pieceCount !== Math.ceil(totalLength / pieceLength)) {
      throw new PickerError(`piece count ${pieceCount} does not match total length ${totalLength} / piece length ${pieceLength}`);
    }
    const defaultPriority = opts.defaultPriority ?? 4;
    if (!Number.isInteger(defaultPriority) || defaultPriority < 1 || defaultPriority > 7) throw new PickerError(`invalid default priority ${defaultPriority}`);
    this.pieceCount = pieceCount;
    this.pieceLength = pieceLength;
    this.totalLength = totalLength;
    this.blockSize = blockSize;
    this.blocksPerPiece = Math.ceil(pieceLength / blockSize);
    this.rng = opts.rng ?? defaultRandomInt;
    this.firstRandom = opts.firstRandomPieces ?? 4;
    this.haveBits = new Uint8Array(pieceCount);
    this.prio = new Uint8Array(pieceCount).fill(defaultPriority);
    this.avail = new Uint32Array(pieceCount);
    this.pos = new Int32Array(pieceCount).fill(-1);
    for (let p = 0; p < 8; p++) this.buckets.push([]);
    for (let i = 0; i < pieceCount; i++) {
      this.bucketAdd(i);
      this.freeBlocks += this.blocksIn(i);
    }
    this.wantedCount = pieceCount;
  }

  // ---------------------------------------------------------------- geometry

  pieceSize(index: number): number {
    return index === this.pieceCount - 1 ? this.totalLength - index * this.pieceLength : this.pieceLength;
  }

  blocksIn(index: number): number {
    return Math.ceil(this.pieceSize(index) / this.blockSize);
  }

  private blockLength(index: number, block: number): number {
    return Math.min(this.blockSize, this.pieceSize(index) - block * this.blockSize);
  }

  private checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.pieceCount) throw new PickerError(`piece index ${index} out of range 0..${this.pieceCount - 1}`);
  }

  // ---------------------------------------------------------------- buckets

  private bucketOf(i: number): number[] {
    const p = this.prio[i];
    const a = Math.min(this.avail[i], AVAIL_CAP);
    const byAvail = this.buckets[p];
    let b = byAvail[a];
    if (!b) {
      for (let k = byAvail.length; k <= a; k++) byAvail.push([]);
      b = byAvail[a];
    }
    return b;
  }

  private bucketAdd(i: number): void {
    const b = this.bucketOf(i);
    this.pos[i] = b.length;
    b.push(i);
    const p = this.prio[i];
    this.bucketCount[p]++;
    const a = Math.min(this.avail[i], AVAIL_CAP);
    if (a > this.maxAvail[p]) this.maxAvail[p] = a;
  }

  private bucketRemove(i: number): void {
    const b = this.bucketOf(i);
    const at = this.pos[i];
    const last = b.pop()!;
    if (at < b.length) {
      b[at] = last;
      this.pos[last] = at;
    }
    this.pos[i] = -1;
    this.bucketCount[this.prio[i]]--;
  }

  private wanted(i: number): boolean {
    return this.haveBits[i] === 0 && this.prio[i] > 0;
  }

  private freeOf(i: number): number {
    if (this.haveBits[i]) return 0;
    const part = this.partials.get(i);
    return part ? part.free : this.blocksIn(i);
  }

  // ---------------------------------------------------------------- our pieces

  have(index: number): boolean {
    return this.haveBits[index] === 1;
  }

  get haveCount(): number {
    return this.haveCount_;
  }

  /** Every piece is verified. */
  isComplete(): boolean {
    return this.haveCount_ === this.pieceCount;
  }

  /** Every piece with priority > 0 is verified (downloading is done even if some files are skipped). */
  isDone(): boolean {
    return this.wantedRemaining === 0;
  }

  /** Pieces still wanted (not had, priority > 0). */
  get wantedRemaining(): number {
    return this.wantedCount;
  }

  /** A verified piece (hash checked, or found on disk at startup). */
  setHave(index: number): void {
    this.checkIndex(index);
    if (this.haveBits[index]) return;
    if (this.wanted(index)) {
      this.freeBlocks -= this.freeOf(index);
      this.wantedCount--;
    }
    if (this.pos[index] >= 0) this.bucketRemove(index);
    this.dropPartial(index);
    this.haveBits[index] = 1;
    this.haveCount_++;
    this.failedBy.delete(index);
  }

  /** A piece we had is gone from disk (e.g. found bad when re-checked): wanted again, downloaded from scratch. */
  unsetHave(index: number): void {
    this.checkIndex(index);
    if (!this.haveBits[index]) return;
    this.haveBits[index] = 0;
    this.haveCount_--;
    if (this.wanted(index)) {
      this.bucketAdd(index);
      this.freeBlocks += this.freeOf(index);
      this.wantedCount++;
    }
  }

  /** Wire-format bitfield of verified pieces. */
  bitfield(): Uint8Array {
    const out = new Uint8Array(Math.ceil(this.pieceCount / 8));
    for (let i = 0; i < this.pieceCount; i++) if (this.haveBits[i]) out[i >> 3] |= 0x80 >> (i & 7);
    return out;
  }

  /** 0 = skip, 1..7 (higher first). */
  setPiecePriority(index: number, priority: number): void {
    this.checkIndex(index);
    if (!Number.isInteger(priority) || priority < 0 || priority > 7) throw new PickerError(`priority must be an integer 0..7, got ${priority}`);
    if (this.prio[index] === priority) return;
    const was = this.wanted(index);
    if (this.pos[index] >= 0) this.bucketRemove(index);
    this.prio[index] = priority;
    const now = this.wanted(index);
    if (now && !this.partials.has(index)) this.bucketAdd(index);
    if (was && !now) {
      this.freeBlocks -= this.freeOf(index);
      this.wantedCount--;
    }
    if (!was && now) {
      this.freeBlocks += this.freeOf(index);
      this.wantedCount++;
    }
  }

  piecePriority(index: number): number {
    return this.prio[index];
  }

  /** Apply file priorities (see filePrioritiesToPieces). */
  setFilePriorities(files: readonly FileSpan[], priorities: readonly number[]): void {
    const pp = filePrioritiesToPieces(files, priorities, this.pieceLength, this.pieceCount);
    for (let i = 0; i < this.pieceCount; i++) this.setPiecePriority(i, pp[i]);
  }

  setSequential(on: boolean): void {
    this.sequential = on;
  }

  // ---------------------------------------------------------------- availability

  availability(index: number): number {
    return this.avail[index] + this.seeds;
  }

  private availAdd(i: number, d: number): void {
    if (this.pos[i] >= 0) {
      this.bucketRemove(i);
      this.avail[i] += d;
      this.bucketAdd(i);
    } else {
      this.avail[i] += d;
    }
  }

  peerHasAll(): void {
    this.seeds++;
  }

  peerHave(index: number): void {
    this.checkIndex(index);
    this.availAdd(index, 1);
  }

  peerBitfield(bits: BitsLike): void {
    this.forEachSet(bits, (i) => this.availAdd(i, 1));
  }

  /** A peer left (or its bitfield is replaced): pass what it had, or 'all' for a have_all peer. */
  peerLost(bits: BitsLike | 'all'): void {
    if (bits === 'all') {
      if (this.seeds > 0) this.seeds--;
      return;
    }
    this.forEachSet(bits, (i) => {
      if (this.avail[i] > 0) this.availAdd(i, -1);
    });
  }

  private forEachSet(bits: BitsLike, fn: (i: number) => void): void {
    if (!(bits instanceof Uint8Array) && typeof bits.toBuffer === 'function') bits = bits.toBuffer();
    if (bits instanceof Uint8Array) {
      const n = Math.min(bits.length, Math.ceil(this.pieceCount / 8));
      for (let byte = 0; byte < n; byte++) {
        const v = bits[byte];
        if (v === 0) continue;
        for (let bit = 0; bit < 8; bit++) {
          if (v & (0x80 >> bit)) {
            const i = byte * 8 + bit;
            if (i < this.pieceCount) fn(i);
          }
        }
      }
    } else {
      for (let i = 0; i < this.pieceCount; i++) if (bits.has(i)) fn(i);
    }
  }

  /** Does the peer have any piece we still want? O(pieces) worst case; call on bitfield/have, not per block. */
  isInteresting(peer: Pick<PickerPeer, 'has' | 'hasAll'>): boolean {
    if (this.wantedCount === 0) return false;
    if (peer.hasAll) return true;
    for (const i of this.partials.keys()) if (this.wanted(i) && peer.has(i)) return true;
    for (let p = 7; p >= 1; p--) {
      if (this.bucketCount[p] === 0) continue;
      for (const b of this.buckets[p]) for (const i of b) if (peer.has(i)) return true;
    }
    return false;
  }

  // ---------------------------------------------------------------- picking

  /** True once every remaining wanted block has been requested at least once. */
  get inEndgame(): boolean {
    return this.freeBlocks === 0 && this.wantedCount > 0;
  }

  /** Number of blocks currently requested from `peerId`. */
  outstanding(peerId: string): number {
    return this.peerReqs.get(peerId)?.size ?? 0;
  }

  pickBlocks(peer: PickerPeer, max: number): BlockRequest[] {
    const out: BlockRequest[] = [];
    if (!(max > 0)) return out;
    const fast = peer.choked ? peer.fastAllowed : undefined;
    if (peer.choked && (!fast || fast.size === 0)) return out;
    // Each step is its own method: a step first reached after the picker got hot (e.g. a peer that becomes
    // piece-limited mid-transfer) then re-optimises a small function, not one that inlines every step (~40–70 ms of
    // compiler time per re-optimisation, measured with --trace-opt).
    const run = new PickRun(this.pieceCount, peer, fast, out, max);
    // 0. A limited peer (a provider that serves few pieces at a time, e.g. until they are paid for) first finishes the
    //    pieces it already sent blocks of: their free blocks, and a copy of the blocks other peers still owe.
    if (run.lim !== undefined && this.finishOwnPieces(run)) return out;
    const classed = peer.rate !== undefined && Number.isFinite(peer.rate) && peer.rate >= 0;
    if (classed) this.rates.set(peer.id, peer.rate!);
    // 1. Finish pieces in flight (sequential mode does this in index order, in step 2). Partials started by a much
    //    slower peer are set aside (run.deferred) for step 1b.
    if ((!this.sequential || fast) && this.finishOpenPieces(run, classed)) return out;
    // 2. Start new pieces (not when the peer's piece limit is reached: nothing new may start, and scanning every
    //    piece for nothing on each call would cost O(pieces) per block received).
    if (this.freeBlocks > 0 && (run.room() || this.sequential) && this.startNewPieces(run)) return out;
    // 1b. Pieces started by slower peers, once nothing new was left for this peer: take their free blocks and a
    //     copy of the blocks only slower peers hold, so the piece completes at this peer's speed.
    if (run.deferred && this.finishSlowerPieces(run, run.deferred)) return out;
    // 3. End-game: duplicate requests of blocks outstanding at exactly one other peer (or, for a classed peer, at
    //    peers that are all in a slower class: one more copy, so slow peers cannot hold the last pieces hostage).
    if (this.freeBlocks === 0 && out.length < max) this.endgame(run, classed);
    return out;
  }

  /** Step 0: the limited peer's piece set (`run.held`), then the pieces it already sent blocks of. True when `max` is reached. */
  private finishOwnPieces(run: PickRun): boolean {
    const id = run.peer.id;
    const bpp = this.blocksPerPiece;
    // Every piece this peer has requests in or has sent blocks of is open (a partial), and every piece this call
    // starts takes all its blocks, but for the last one started and a short last piece: when the open pieces and
    // those still fit under the limit, it cannot bind this call, and the held set (a pass over up to a pipeline of
    // request keys, on every call) is not needed.
    if (this.partials.size + Math.ceil(run.max / bpp) + 2 > run.lim!) {
      // The pieces this peer has requests in or has sent blocks of (not yet verified).
      const held = (run.held = new Set<number>());
      // A peer's requests are recorded piece by piece, so runs of keys share a piece: one add per run, not per block.
      let last = -1;
      // Not `get(id) ?? []`: iterating an array here, when the peer has no requests out, deoptimised this function
      // (its for-of had only seen Sets) and cost a recompile per download.
      const reqs = this.peerReqs.get(id);
      if (reqs) {
        for (const k of reqs) {
          const i = Math.floor(k / bpp);
          if (i !== last) held.add((last = i));
        }
      }
    }
    let mine: number[] | undefined;
    for (const [i, part] of this.partials) {
      if (part.contributors.has(id) && part.received < part.blocks && this.wanted(i)) {
        run.held?.add(i);
        (mine ??= []).push(i);
      }
    }
    if (!mine) return false;
    for (const i of mine) {
      const part = this.partials.get(i)!;
      if (!run.allowedBase(i)) continue;
      this.takeFree(i, part, id, run.out, run.max);
      this.copyBlocks(i, part, id, run.out, run.max, ANY_OWNER);
      if (run.full()) return true;
    }
    return false;
  }

  /** Step 1: free blocks of open pieces. True when `max` is reached. */
  private finishOpenPieces(run: PickRun, classed: boolean): boolean {
    const id = run.peer.id;
    for (const i of this.open) {
      const part = this.partials.get(i)!;
      if (!this.wanted(i) || !run.allowed(i)) continue;
      if (classed) {
        const c = this.affinity(part, i, id, run.peer.rate!);
        if (c === 'slower') continue;
        if (c === 'faster') {
          (run.deferred ??= []).push(i);
          continue;
        }
      }
      if (this.takeFreeFor(run, i, part)) return true;
    }
    return false;
  }

  /** The free blocks of `part` for this run's peer, counted against its piece limit. True when `max` is reached. */
  private takeFreeFor(run: PickRun, i: number, part: Partial): boolean {
    const before = run.out.length;
    this.takeFree(i, part, run.peer.id, run.out, run.max);
    run.took(i, before);
    return run.full();
  }

  /** Step 2 by mode: allowed-fast pieces while choked, sequential, random first pieces, else rarest first. True when `max` is reached. */
  private startNewPieces(run: PickRun): boolean {
    if (run.fast) {
      for (const i of run.fast) if (this.tryStart(run, i)) return true;
      return false;
    }
    if (this.sequential) return this.startSequential(run);
    if (this.haveCount_ < this.firstRandom) return this.startRandom(run);
    return this.startRarest(run);
  }

  /** Start piece `i` for this peer if it is free to start. True when `max` is reached. */
  private tryStart(run: PickRun, i: number): boolean {
    if (this.partials.has(i) || !this.wanted(i) || !run.allowed(i)) return false;
    return this.takeFreeFor(run, i, this.newPartial(i));
  }

  private startSequential(run: PickRun): boolean {
    while (this.seqCursor < this.pieceCount && this.haveBits[this.seqCursor]) this.seqCursor++;
    for (let i = this.seqCursor; i < this.pieceCount && this.freeBlocks > 0; i++) {
      if (this.open.has(i)) {
        if (!this.wanted(i) || !run.allowed(i)) continue;
        if (this.takeFreeFor(run, i, this.partials.get(i)!)) return true;
      } else if (this.tryStart(run, i)) return true;
    }
    return false;
  }

  /** Random piece(s): random start, cyclic scan; re-randomised for every piece started. */
  private startRandom(run: PickRun): boolean {
    while (this.freeBlocks > 0 && run.room()) {
      const start = randomBelow(this.rng, this.pieceCount);
      let started = false;
      for (let k = 0; k < this.pieceCount; k++) {
        const i = (start + k) % this.pieceCount;
        if (this.partials.has(i) || !this.wanted(i) || !run.allowed(i)) continue;
        started = true;
        if (this.tryStart(run, i)) return true;
        break;
      }
      if (!started) break;
    }
    return false;
  }

  /** Rarest first by priority level (7 → 1), random tie-break within an availability bucket. */
  private startRarest(run: PickRun): boolean {
    const { held, lim, out, max } = run;
    for (let p = 7; p >= 1 && this.freeBlocks > 0 && run.room(); p--) {
      if (this.bucketCount[p] === 0) continue;
      const byAvail = this.buckets[p];
      const top = Math.min(this.maxAvail[p], byAvail.length - 1);
      for (let a = 0; a <= top && run.room(); a++) {
        const b = byAvail[a];
        const len = b.length;
        if (len === 0) continue;
        // Choose first, start after: starting a piece removes it from this bucket.
        const start = randomBelow(this.rng, len);
        const chosen: number[] = [];
        let planned = out.length;
        for (let k = 0; k < len && planned < max && (held === undefined || held.size + chosen.length < lim!); k++) {
          let j = start + k;
          if (j >= len) j -= len;
          const i = b[j];
          if (!run.allowed(i)) continue;
          chosen.push(i);
          planned += this.blocksIn(i);
        }
        for (const i of chosen) if (this.tryStart(run, i)) return true;
      }
    }
    return false;
  }

  /** Step 1b. True when `max` is reached. */
  private finishSlowerPieces(run: PickRun, deferred: number[]): boolean {
    const id = run.peer.id;
    for (const i of deferred) {
      const part = this.partials.get(i);
      if (!part || !this.wanted(i) || !run.allowed(i)) continue;
      const before = run.out.length;
      this.takeFree(i, part, id, run.out, run.max);
      this.copySlowBlocks(i, part, id, run.peer.rate!, run.out, run.max);
      run.took(i, before);
      if (run.full()) return true;
    }
    return false;
  }

  /** Step 3. */
  private endgame(run: PickRun, classed: boolean): void {
    const { out, max, peer } = run;
    for (const [i, part] of this.partials) {
      if (!this.wanted(i) || !run.allowed(i) || part.received === part.blocks) continue;
      const before = out.length;
      for (let b = 0; b < part.blocks && out.length < max; b++) {
        if (part.state[b] !== REQUESTED) continue;
        const owners = part.owners[b]!;
        if (owners.includes(peer.id)) continue;
        if (owners.length >= ENDGAME_COPIES && !(classed && owners.length === ENDGAME_COPIES && owners.every((o) => this.isSlower(o, peer.rate!)))) continue;
        owners.push(peer.id);
        this.recordReq(peer.id, i, b);
        out.push({ index: i, begin: b * this.blockSize, length: this.blockLength(i, b) });
      }
      run.took(i, before);
      if (out.length >= max) break;
    }
  }

  /**
   * How this peer's speed class compares with that of the peer that started `part`, if that peer still has
   * requests in it: 'same' (or no active starter: the piece becomes ours), 'slower' or 'faster' than it.
   */
  private affinity(part: Partial, i: number, peerId: string, rate: number): 'same' | 'slower' | 'faster' {
    const s = part.starter;
    if (s === undefined || s === peerId || !this.hasRequestsIn(s, i, part)) return 'same';
    const floor = this.blockSize; // one block per second: peers we know nothing about yet are all alike
    const mine = Math.max(rate, floor);
    const theirs = Math.max(this.rates.get(s) ?? 0, floor);
    if (theirs > mine * AFFINITY_RATIO) return 'slower';
    if (mine > theirs * AFFINITY_RATIO) return 'faster';
    return 'same';
  }

  /** Request blocks of `part` that are outstanding only at peers in a slower class than `rate` (one more copy). */
  private copySlowBlocks(i: number, part: Partial, peerId: string, rate: number, out: BlockRequest[], max: number): void {
    this.copyBlocks(i, part, peerId, out, max, (o) => this.isSlower(o, rate));
  }

  /** One more copy (at most ENDGAME_COPIES + 1 in all) of blocks of `part` requested only from peers `fromOk` accepts. */
  private copyBlocks(i: number, part: Partial, peerId: string, out: BlockRequest[], max: number, fromOk: (owner: string) => boolean): void {
    for (let b = 0; b < part.blocks && out.length < max; b++) {
      if (part.state[b] !== REQUESTED) continue;
      const owners = part.owners[b]!;
      if (owners.length > ENDGAME_COPIES || owners.includes(peerId) || !owners.every(fromOk)) continue;
      owners.push(peerId);
      this.recordReq(peerId, i, b);
      out.push({ index: i, begin: b * this.blockSize, length: this.blockLength(i, b) });
    }
  }

  /** Is `other` in a slower speed class than a peer at `rate`? */
  private isSlower(other: string, rate: number): boolean {
    const floor = this.blockSize;
    return Math.max(rate, floor) > Math.max(this.rates.get(other) ?? 0, floor) * AFFINITY_RATIO;
  }

  private hasRequestsIn(peerId: string, i: number, part: Partial): boolean {
    const s = this.peerReqs.get(peerId);
    if (!s) return false;
    const base = i * this.blocksPerPiece;
    for (let b = 0; b < part.blocks; b++) if (s.has(base + b)) return true;
    return false;
  }

  private takeFree(i: number, part: Partial, peerId: string, out: BlockRequest[], max: number): void {
    if (part.starter === undefined || (part.starter !== peerId && !this.hasRequestsIn(part.starter, i, part))) part.starter = peerId;
    for (let b = part.nextFree; b < part.blocks && out.length < max; b++) {
      if (part.state[b] !== FREE) {
        if (b === part.nextFree) part.nextFree++;
        continue;
      }
      part.state[b] = REQUESTED;
      part.owners[b] = [peerId];
      part.free--;
      this.freeBlocks--;
      if (b === part.nextFree) part.nextFree++;
      this.recordReq(peerId, i, b);
      out.push({ index: i, begin: b * this.blockSize, length: this.blockLength(i, b) });
    }
    if (part.free > 0) this.open.add(i);
    else this.open.delete(i);
  }

  private recordReq(peerId: string, i: number, b: number): void {
    let s = this.peerReqs.get(peerId);
    if (!s) this.peerReqs.set(peerId, (s = new Set()));
    s.add(i * this.blocksPerPiece + b);
  }

  private forgetReq(peerId: string, i: number, b: number): void {
    const s = this.peerReqs.get(peerId);
    if (!s) return;
    s.delete(i * this.blocksPerPiece + b);
    if (s.size === 0) this.peerReqs.delete(peerId);
  }

  /** Validate a block reference; returns the block number or throws. */
  private blockOf(req: BlockRequest): number {
    this.checkIndex(req.index);
    const { begin, length } = req;
    if (!Number.isInteger(begin) || begin < 0 || begin % this.blockSize !== 0 || begin >= this.pieceSize(req.index)) {
      throw new PickerError(`block offset ${begin} is not a block boundary of piece ${req.index}`);
    }
    const b = begin / this.blockSize;
    if (length !== this.blockLength(req.index, b)) {
      throw new PickerError(`block ${req.index}/${begin} has length ${length}, expected ${this.blockLength(req.index, b)}`);
    }
    return b;
  }

  /** Is this block currently requested from this peer? (Use to reject unsolicited data if wanted.) */
  isRequested(req: BlockRequest, peerId: string): boolean {
    const s = this.peerReqs.get(peerId);
    if (!s) return false;
    return s.has(req.index * this.blocksPerPiece + Math.floor(req.begin / this.blockSize));
  }

  /**
   * A block arrived from `peerId`. Throws PickerError for a malformed reference (wrong offset/length).
   * Unsolicited but well-formed blocks of a wanted piece are accepted.
   */
  blockReceived(req: BlockRequest, peerId: string): BlockReceivedResult {
    const b = this.blockOf(req);
    const i = req.index;
    if (this.haveBits[i]) {
      this.forgetReq(peerId, i, b);
      return { pieceComplete: false, cancel: [], duplicate: true };
    }
    const part = this.partials.get(i) ?? this.newPartial(i);
    if (part.state[b] === RECEIVED) {
      this.forgetReq(peerId, i, b);
      return { pieceComplete: false, cancel: [], duplicate: true };
    }
    const cancel: string[] = [];
    const owners = part.owners[b];
    if (owners) {
      for (const o of owners) {
        this.forgetReq(o, i, b);
        if (o !== peerId) cancel.push(o);
      }
      part.owners[b] = undefined;
    }
    if (part.state[b] === FREE) {
      part.free--;
      if (this.wanted(i)) this.freeBlocks--;
      if (part.free === 0) this.open.delete(i);
      else this.open.add(i);
    }
    part.state[b] = RECEIVED;
    part.received++;
    part.contributors.add(peerId);
    return { pieceComplete: part.received === part.blocks, cancel, duplicate: false };
  }

  /** The piece failed its hash check: every block becomes requestable again. Returns the contributing peers. */
  pieceFailed(index: number): string[] {
    this.checkIndex(index);
    const part = this.partials.get(index);
    const who = part ? [...part.contributors] : [];
    this.failedBy.set(index, who);
    if (this.haveBits[index]) return who;
    const before = this.freeOf(index);
    this.dropPartial(index);
    if (this.wanted(index)) {
      this.freeBlocks += this.blocksIn(index) - before;
      if (this.pos[index] < 0) this.bucketAdd(index);
    }
    return who;
  }

  /** Peers that sent blocks of this piece (in flight), or of its last failed attempt. */
  contributors(index: number): string[] {
    const part = this.partials.get(index);
    if (part && part.contributors.size > 0) return [...part.contributors];
    return this.failedBy.get(index) ?? [];
  }

  /** Start tracking a piece in flight: it leaves the availability buckets. */
  private newPartial(i: number): Partial {
    const part = new Partial(this.blocksIn(i));
    this.partials.set(i, part);
    if (this.pos[i] >= 0) this.bucketRemove(i);
    return part;
  }

  /** Forget a piece's in-flight state (callers put it back in a bucket if still wanted). */
  private dropPartial(index: number): void {
    const part = this.partials.get(index);
    if (!part) return;
    for (let b = 0; b < part.blocks; b++) {
      const owners = part.owners[b];
      if (owners) for (const o of owners) this.forgetReq(o, index, b);
    }
    this.partials.delete(index);
    this.open.delete(index);
  }

  /** A request was cancelled, rejected (BEP 6) or timed out: the block is requestable again. */
  requestCancelled(req: BlockRequest, peerId: string): void {
    const b = this.blockOf(req);
    this.release(req.index, b, peerId);
  }

  private release(i: number, b: number, peerId: string): void {
    this.forgetReq(peerId, i, b);
    const part = this.partials.get(i);
    if (!part || part.state[b] !== REQUESTED) return;
    const owners = part.owners[b]!;
    const k = owners.indexOf(peerId);
    if (k < 0) return;
    owners.splice(k, 1);
    if (owners.length > 0) return;
    part.owners[b] = undefined;
    part.state[b] = FREE;
    part.free++;
    this.open.add(i);
    if (b < part.nextFree) part.nextFree = b;
    if (this.wanted(i)) this.freeBlocks++;
  }

  /** The peer disconnected (or choked us without fast extension): all its outstanding blocks are requestable again. */
  peerGone(peerId: string): void {
    this.rates.delete(peerId);
    const s = this.peerReqs.get(peerId);
    if (!s) return;
    for (const key of [...s]) {
      const i = Math.floor(key / this.blocksPerPiece);
      this.release(i, key - i * this.blocksPerPiece, peerId);
    }
    this.peerReqs.delete(peerId);
  }

  /** Blocks requested from `peerId` and not yet received. */
  requestsOf(peerId: string): BlockRequest[] {
    const s = this.peerReqs.get(peerId);
    if (!s) return [];
    return [...s].map((key) => {
      const i = Math.floor(key / this.blocksPerPiece);
      const b = key - i * this.blocksPerPiece;
      return { index: i, begin: b * this.blockSize, length: this.blockLength(i, b) };
    });
  }

  /** Pieces currently in flight (some block requested or received, not yet verified). */
  get piecesInFlight(): number {
    return this.partials.size;
  }
}

/** A file's place in the torrent's byte stream. Either give `offset` or list files in torrent order. */
export interface FileSpan {
  length: number;
  offset?: number;
  /** BEP 47 pad file: never raises a piece's priority. */
  pad?: boolean;
}

/**
 * Map file priorities (0 = skip, 1..7) to piece priorities: a piece takes the highest priority of the files it
 * overlaps, so a piece shared by a skipped and a wanted file is still downloaded. Zero-length files are ignored.
 */
export function filePrioritiesToPieces(files: readonly FileSpan[], priorities: readonly number[], pieceLength: number, pieceCount?: number): Uint8Array {
  if (files.length !== priorities.length) throw new PickerError(`${files.length} files but ${priorities.length} priorities`);
  let off = 0;
  let total = 0;
  const spans = files.map((f) => {
    const o = f.offset ?? off;
    off = o + f.length;
    total = Math.max(total, off);
    return o;
  });
  const n = pieceCount ?? Math.ceil(total / pieceLength);
  const out = new Uint8Array(n);
  files.forEach((f, k) => {
    const p = priorities[k];
    if (!Number.isInteger(p) || p < 0 || p > 7) throw new PickerError(`file priority must be 0..7, got ${p}`);
    if (f.length <= 0 || p === 0 || f.pad) return;
    const first = Math.floor(spans[k] / pieceLength);
    const last = Math.min(n - 1, Math.floor((spans[k] + f.length - 1) / pieceLength));
    for (let i = first; i <= last; i++) if (p > out[i]) out[i] = p;
  });
  return out;
}
