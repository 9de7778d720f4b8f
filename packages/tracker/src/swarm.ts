/**
 * In-memory swarm store for the tracker. Sans-I/O: callers pass raw compact addresses and get compact peer lists back.
 *
 * Memory layout: one `PeerTable` per address family per swarm, holding peers as packed compact addresses
 * (6 bytes for IPv4, 18 for IPv6) followed by their metadata words (bit 31 = seeder, bits 0..30 = last-seen time
 * in seconds since the store's epoch), all in one Buffer. Tables above a few entries get an open-addressing
 * index (Int32Array of entry+1). No JS object per peer.
 */
import { randomBytes } from 'node:crypto';

export const EVENT_NONE = 0;
export const EVENT_COMPLETED = 1;
export const EVENT_STARTED = 2;
export const EVENT_STOPPED = 3;
export type AnnounceEvent = 0 | 1 | 2 | 3;

const SEED_BIT = 0x80000000;
const TIME_MASK = 0x7fffffff;
const LINEAR_MAX = 8;

let hashSeed = randomBytes(4).readUInt32LE(0) | 0;

/** FNV-1a over `len` bytes, seeded per process so remote peers cannot aim collisions at one table. */
function hashBytes(buf: Uint8Array, off: number, len: number): number {
  let h = (0x811c9dc5 ^ hashSeed) | 0;
  for (let i = 0; i < len; i++) h = Math.imul(h ^ buf[off + i], 0x01000193);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  return h >>> 0;
}

function sameBytes(a: Uint8Array, ao: number, b: Uint8Array, bo: number, len: number): boolean {
  for (let i = 0; i < len; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}

/**
 * Peers of one address family in one swarm, in one Buffer: `cap` addresses of `stride` bytes back to back,
 * then `cap` metadata words (big-endian u32). Entries are partitioned: leechers in [0, n - seeders), seeders in
 * [n - seeders, n). So the peers to hand out (everyone, or only leechers for a seeder) are one contiguous run of
 * compact addresses, copied with at most three memcpy calls.
 */
export class PeerTable {
  /** Backing storage; small tables live in Node's shared Buffer pool (no ArrayBuffer of their own). */
  buf: Buffer;
  n = 0;
  seeders = 0;
  cap: number;
  /** Byte offset of the metadata region (cap × stride). */
  private moff: number;
  private index: Int32Array | null = null;
  private mask = 0;

  constructor(readonly stride: number, capacity = 2) {
    this.cap = capacity;
    this.moff = capacity * stride;
    this.buf = Buffer.allocUnsafe(capacity * (stride + 4));
  }

  /** Bytes of backing storage (for memory accounting). */
  get storageBytes(): number {
    return this.buf.length + (this.index ? this.index.byteLength : 0);
  }

  /** Entries in [0, leechers) are leechers. */
  get leechers(): number {
    return this.n - this.seeders;
  }

  meta(i: number): number {
    const b = this.buf;
    const o = this.moff + i * 4;
    return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
  }

  private writeMeta(i: number, m: number): void {
    const b = this.buf;
    const o = this.moff + i * 4;
    b[o] = m >>> 24;
    b[o + 1] = m >>> 16;
    b[o + 2] = m >>> 8;
    b[o + 3] = m;
  }

  /** Copy the address of entry i to out[off..off+stride). */
  copyAddr(i: number, out: Uint8Array, off: number): void {
    const b = this.buf;
    const o = i * this.stride;
    for (let k = 0; k < this.stride; k++) out[off + k] = b[o + k];
  }

  /** Copy the addresses of entries [from, to) to out[off..); returns bytes written. */
  copyRange(from: number, to: number, out: Buffer, off: number): number {
    if (to <= from) return 0;
    const s = this.stride;
    const len = (to - from) * s;
    const b = this.buf;
    if (len > 48) return b.copy(out, off, from * s, to * s);
    for (let k = 0, o = from * s; k < len; k++) out[off + k] = b[o + k];
    return len;
  }

  find(key: Uint8Array, off: number): number {
    const s = this.stride;
    const b = this.buf;
    if (this.index === null) {
      for (let i = 0, p = 0; i < this.n; i++, p += s) if (sameBytes(b, p, key, off, s)) return i;
      return -1;
    }
    const idx = this.index;
    let slot = hashBytes(key, off, s) & this.mask;
    for (;;) {
      const v = idx[slot];
      if (v === 0) return -1;
      if (sameBytes(b, (v - 1) * s, key, off, s)) return v - 1;
      slot = (slot + 1) & this.mask;
    }
  }

  /** Add a new peer (caller checked it is absent). Returns its position. */
  add(key: Uint8Array, off: number, meta: number): number {
    if (this.n === this.cap) this.resize(Math.max(4, Math.ceil(this.cap * 1.5)));
    let i = this.n++;
    if (meta & SEED_BIT) this.seeders++;
    else if (this.seeders > 0) {
      // Keep leechers first: the first seeder moves to the end, the new leecher takes its place.
      const first = i - this.seeders;
      this.moveEntry(first, i);
      i = first;
    }
    const s = this.stride;
    const b = this.buf;
    for (let k = 0, o = i * s; k < s; k++) b[o + k] = key[off + k];
    this.writeMeta(i, meta);
    if (this.index !== null) {
      if (this.n * 2 > this.mask + 1) this.rebuildIndex();
      else this.indexInsert(i);
    } else if (this.n > LINEAR_MAX) this.rebuildIndex();
    return i;
  }

  /** Set the metadata of entry i; a leecher/seeder change moves the entry. Returns its (new) position. */
  setMeta(i: number, meta: number): number {
    const wasSeed = (this.meta(i) & SEED_BIT) !== 0;
    const isSeed = (meta & SEED_BIT) !== 0;
    if (wasSeed !== isSeed) {
      const boundary = this.n - this.seeders; // first seeder
      const j = isSeed ? boundary - 1 : boundary;
      this.swap(i, j);
      i = j;
      this.seeders += isSeed ? 1 : -1;
    }
    this.writeMeta(i, meta);
    return i;
  }

  /** Remove entry i, keeping the leecher/seeder partition. */
  removeAt(i: number): void {
    const seed = (this.meta(i) & SEED_BIT) !== 0;
    const last = this.n - 1;
    if (this.index !== null) this.indexDelete(i);
    if (seed) {
      if (i !== last) this.moveEntry(last, i);
      this.seeders--;
    } else {
      const lastLeecher = last - this.seeders;
      if (i !== lastLeecher) this.moveEntry(lastLeecher, i);
      if (lastLeecher !== last) this.moveEntry(last, lastLeecher);
    }
    this.n = last;
    if (this.cap > 8 && this.n * 4 < this.cap) this.resize(Math.max(4, this.n * 2));
  }

  /** Drop peers last seen before `cutoff` (seconds since epoch of the store). Returns how many. */
  expire(cutoff: number): number {
    // Downwards: whatever removeAt moves into position i comes from a position above i, already checked.
    let removed = 0;
    for (let i = this.n - 1; i >= 0; i--) {
      if ((this.meta(i) & TIME_MASK) < cutoff) {
        this.removeAt(i);
        removed++;
      }
    }
    return removed;
  }

  /** Move entry `from` over position `to` (whose index slot, if any, is already gone). */
  private moveEntry(from: number, to: number): void {
    if (this.index !== null) this.index[this.slotOf(from)] = to + 1;
    const b = this.buf;
    const s = this.stride;
    for (let k = 0, a = to * s, z = from * s; k < s; k++) b[a + k] = b[z + k];
    this.writeMeta(to, this.meta(from));
  }

  private swap(i: number, j: number): void {
    if (i === j) return;
    if (this.index !== null) {
      const si = this.slotOf(i);
      const sj = this.slotOf(j);
      this.index[si] = j + 1;
      this.index[sj] = i + 1;
    }
    const b = this.buf;
    const s = this.stride;
    for (let k = 0, a = i * s, z = j * s; k < s; k++) {
      const t = b[a + k];
      b[a + k] = b[z + k];
      b[z + k] = t;
    }
    const mi = this.meta(i);
    this.writeMeta(i, this.meta(j));
    this.writeMeta(j, mi);
  }

  private resize(cap: number): void {
    const s = this.stride;
    const nb = Buffer.allocUnsafe(cap * (s + 4));
    this.buf.copy(nb, 0, 0, this.n * s);
    const moff = cap * s;
    this.buf.copy(nb, moff, this.moff, this.moff + this.n * 4);
    this.buf = nb;
    this.cap = cap;
    this.moff = moff;
    if (this.index !== null) {
      if (this.n <= LINEAR_MAX) {
        this.index = null;
        this.mask = 0;
      } else this.rebuildIndex();
    }
  }

  private rebuildIndex(): void {
    let size = 16;
    while (size < this.n * 2 + 2) size <<= 1;
    this.index = new Int32Array(size);
    this.mask = size - 1;
    for (let i = 0; i < this.n; i++) this.indexInsert(i);
  }

  private indexInsert(i: number): void {
    const idx = this.index!;
    let slot = hashBytes(this.buf, i * this.stride, this.stride) & this.mask;
    while (idx[slot] !== 0) slot = (slot + 1) & this.mask;
    idx[slot] = i + 1;
  }

  private slotOf(i: number): number {
    const idx = this.index!;
    let slot = hashBytes(this.buf, i * this.stride, this.stride) & this.mask;
    while (idx[slot] !== i + 1) slot = (slot + 1) & this.mask;
    return slot;
  }

  /** Linear-probing deletion with backward shift (no tombstones). */
  private indexDelete(i: number): void {
    const idx = this.index!;
    const mask = this.mask;
    let hole = this.slotOf(i);
    let j = hole;
    for (;;) {
      j = (j + 1) & mask;
      const v = idx[j];
      if (v === 0) break;
      const home = hashBytes(this.buf, (v - 1) * this.stride, this.stride) & mask;
      // Move v into the hole if its home slot is not cyclically within (hole, j].
      const inRange = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (!inRange) {
        idx[hole] = v;
        hole = j;
      }
    }
    idx[hole] = 0;
  }
}

export class Swarm {
  v4: PeerTable | null = null;
  v6: PeerTable | null = null;
  completed = 0;
  get peers(): number {
    return (this.v4 ? this.v4.n : 0) + (this.v6 ? this.v6.n : 0);
  }
  get seeders(): number {
    return (this.v4 ? this.v4.seeders : 0) + (this.v6 ? this.v6.seeders : 0);
  }
}

export interface SwarmStoreOptions {
  /** Seconds a peer stays listed without re-announcing (default 3600 = 2 × 1800 interval). */
  peerTtl?: number;
  /** Global cap on swarms; beyond it the least useful swarms are evicted (default 1,000,000). */
  maxSwarms?: number;
  /** Cap on peers per swarm and address family; new peers beyond it are not stored (default 100,000). */
  maxPeersPerSwarm?: number;
  /** Global cap on stored peers; new peers beyond it are not stored (default 10,000,000). */
  maxPeers?: number;
  /** Largest number of peers returned per announce (default 200). */
  maxNumwant?: number;
  /** Time source in milliseconds (default Date.now). */
  now?: () => number;
  /** Randomness for peer selection, returns [0,1) (default Math.random). */
  random?: () => number;
}

/** Result of an announce; `peers4`/`peers6` are scratch buffers valid until the next call. */
export interface AnnounceResult {
  complete: number;
  incomplete: number;
  downloaded: number;
  peers4: Buffer;
  peers4Len: number;
  peers6: Buffer;
  peers6Len: number;
  /** False when the peer could not be stored (caps reached). */
  stored: boolean;
}

export class SwarmStore {
  readonly swarms = new Map<string, Swarm>();
  totalPeers = 0;
  evictedSwarms = 0;
  rejectedPeers = 0;
  readonly peerTtl: number;
  readonly maxSwarms: number;
  readonly maxPeersPerSwarm: number;
  readonly maxPeers: number;
  readonly maxNumwant: number;
  private readonly nowMs: () => number;
  private readonly random: () => number;
  /** Store epoch in unix seconds: metadata times are relative to it so they fit 31 bits. */
  readonly epoch: number;
  private readonly res: AnnounceResult;

  constructor(opts: SwarmStoreOptions = {}) {
    this.peerTtl = opts.peerTtl ?? 3600;
    this.maxSwarms = opts.maxSwarms ?? 1_000_000;
    this.maxPeersPerSwarm = opts.maxPeersPerSwarm ?? 100_000;
    this.maxPeers = opts.maxPeers ?? 10_000_000;
    this.maxNumwant = opts.maxNumwant ?? 200;
    this.nowMs = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.epoch = Math.floor(this.nowMs() / 1000) - 1;
    this.res = {
      complete: 0,
      incomplete: 0,
      downloaded: 0,
      peers4: Buffer.alloc(this.maxNumwant * 6),
      peers4Len: 0,
      peers6: Buffer.alloc(this.maxNumwant * 18),
      peers6Len: 0,
      stored: true,
    };
  }

  /** Seconds since the store epoch. */
  nowSec(): number {
    return Math.floor(this.nowMs() / 1000) - this.epoch;
  }

  get seeders(): number {
    let s = 0;
    for (const sw of this.swarms.values()) s += sw.seeders;
    return s;
  }

  /**
   * Record an announce from `addr[off..off+6|18)` (compact ip+port; family from `v6`) for info-hash `ih`
   * (20-byte latin1 string) and fill in the peers to return (at most `numwant`, never the announcer itself;
   * seeders get no seeders back). With `bothFamilies` false only the announcer's own family is returned (UDP).
   * With `dst`, the own-family peers are written to dst[dstOff..] instead of res.peers4 / res.peers6 (the
   * lengths are still in res.peers4Len / res.peers6Len); dst needs room for maxNumwant entries.
   */
  announce(
    ih: string,
    v6: boolean,
    addr: Uint8Array,
    off: number,
    event: AnnounceEvent,
    seeder: boolean,
    numwant: number,
    bothFamilies = true,
    dst: Buffer | null = null,
    dstOff = 0,
  ): AnnounceResult {
    const res = this.res;
    res.peers4Len = 0;
    res.peers6Len = 0;
    res.stored = true;
    let sw = this.swarms.get(ih);
    if (sw === undefined) {
      if (event === EVENT_STOPPED) {
        res.complete = res.incomplete = res.downloaded = 0;
        return res;
      }
      if (this.swarms.size >= this.maxSwarms) this.evictOne();
      sw = new Swarm();
      this.swarms.set(ih, sw);
    }
    const stride = v6 ? 18 : 6;
    let table = v6 ? sw.v6 : sw.v4;
    let self = -1;
    if (table !== null) self = table.find(addr, off);
    if (event === EVENT_STOPPED) {
      if (self >= 0) {
        table!.removeAt(self);
        this.totalPeers--;
      }
      res.complete = sw.seeders;
      res.incomplete = sw.peers - res.complete;
      res.downloaded = sw.completed;
      return res;
    }
    const meta = ((this.nowSec() & TIME_MASK) | (seeder ? SEED_BIT : 0)) >>> 0;
    if (self >= 0) {
      if (event === EVENT_COMPLETED && !(table!.meta(self) & SEED_BIT)) sw.completed++;
      self = table!.setMeta(self, meta);
    } else {
      if (event === EVENT_COMPLETED) sw.completed++;
      if (table === null) {
        table = new PeerTable(stride);
        if (v6) sw.v6 = table;
        else sw.v4 = table;
      }
      if (table.n >= this.maxPeersPerSwarm || this.totalPeers >= this.maxPeers) {
        res.stored = false;
        this.rejectedPeers++;
      } else {
        self = table.add(addr, off, meta);
        this.totalPeers++;
      }
    }
    res.complete = sw.seeders;
    res.incomplete = sw.peers - res.complete;
    res.downloaded = sw.completed;
    if (numwant > this.maxNumwant) numwant = this.maxNumwant;
    if (numwant > 0) {
      // Same family first, then the other family with what is left.
      const own = v6 ? sw.v6 : sw.v4;
      const other = v6 ? sw.v4 : sw.v6;
      let got = own ? (dst !== null ? this.pick(own, self, seeder, numwant, dst, dstOff) : this.pick(own, self, seeder, numwant, v6 ? res.peers6 : res.peers4, 0)) : 0;
      if (v6) res.peers6Len = got * 18;
      else res.peers4Len = got * 6;
      if (bothFamilies && other && got < numwant) {
        const g2 = this.pick(other, -1, seeder, numwant - got, v6 ? res.peers4 : res.peers6, 0);
        if (v6) res.peers4Len = g2 * 6;
        else res.peers6Len = g2 * 18;
        got += g2;
      }
    }
    return res;
  }

  /**
   * Copy up to `want` addresses, a contiguous run from a random starting point (wrapping), of the leechers (for a
   * seeder) or of all peers, never entry `skip`. Returns how many.
   */
  private pick(t: PeerTable, skip: number, seeder: boolean, want: number, out: Buffer, off: number): number {
    const range = seeder ? t.leechers : t.n;
    if (skip >= range) skip = -1;
    const m = range - (skip >= 0 ? 1 : 0); // candidates
    if (m <= 0) return 0;
    if (m <= want) {
      this.copyLogical(t, skip, 0, m, out, off);
      return m;
    }
    const start = Math.floor(this.random() * m);
    const end = start + want;
    if (end <= m) this.copyLogical(t, skip, start, end, out, off);
    else {
      const n = this.copyLogical(t, skip, start, m, out, off);
      this.copyLogical(t, skip, 0, end - m, out, off + n);
    }
    return want;
  }

  /** Copy candidates [a, b) where candidate j is entry j, or j + 1 at and after `skip`. Returns bytes written. */
  private copyLogical(t: PeerTable, skip: number, a: number, b: number, out: Buffer, off: number): number {
    if (skip < 0 || b <= skip) return t.copyRange(a, b, out, off);
    if (a >= skip) return t.copyRange(a + 1, b + 1, out, off);
    const n = t.copyRange(a, skip, out, off);
    return n + t.copyRange(skip + 1, b + 1, out, off + n);
  }

  /** Counts for one info-hash (zeros if unknown). */
  scrape(ih: string): { complete: number; incomplete: number; downloaded: number } {
    const sw = this.swarms.get(ih);
    if (!sw) return { complete: 0, incomplete: 0, downloaded: 0 };
    const c = sw.seeders;
    return { complete: c, incomplete: sw.peers - c, downloaded: sw.completed };
  }

  /** Drop peers not seen within the TTL, and swarms left empty with nothing worth keeping. Returns peers removed. */
  sweep(): number {
    const cutoff = this.nowSec() - this.peerTtl;
    let removed = 0;
    for (const [ih, sw] of this.swarms) {
      if (sw.v4) {
        removed += sw.v4.expire(cutoff);
        if (sw.v4.n === 0) sw.v4 = null;
      }
      if (sw.v6) {
        removed += sw.v6.expire(cutoff);
        if (sw.v6.n === 0) sw.v6 = null;
      }
      if (sw.v4 === null && sw.v6 === null && sw.completed === 0) this.swarms.delete(ih);
    }
    this.totalPeers -= removed;
    return removed;
  }

  /**
   * Make room for one swarm: CLOCK-style second chance over insertion order. Swarms with more than one peer
   * are moved to the back (up to 16 times); the first small swarm found is evicted. A flood of random
   * info-hashes therefore evicts its own one-peer swarms, not established ones.
   */
  private evictOne(): void {
    let tries = 0;
    for (const [ih, sw] of this.swarms) {
      if (sw.peers <= 1 || tries >= 16) {
        this.totalPeers -= sw.peers;
        this.swarms.delete(ih);
        this.evictedSwarms++;
        return;
      }
      this.swarms.delete(ih);
      this.swarms.set(ih, sw);
      tries++;
    }
  }

  /** Bytes of peer storage held in typed arrays (not counting JS object overhead). */
  storageBytes(): number {
    let b = 0;
    for (const sw of this.swarms.values()) b += (sw.v4 ? sw.v4.storageBytes : 0) + (sw.v6 ? sw.v6.storageBytes : 0);
    return b;
  }

  /** Insert a peer with an explicit last-seen time (unix seconds); used when loading persisted state. */
  restorePeer(ih: string, v6: boolean, addr: Uint8Array, off: number, lastSeenUnix: number, seeder: boolean): boolean {
    const rel = lastSeenUnix - this.epoch;
    if (rel < this.nowSec() - this.peerTtl) return false;
    let sw = this.swarms.get(ih);
    if (sw === undefined) {
      if (this.swarms.size >= this.maxSwarms) return false;
      sw = new Swarm();
      this.swarms.set(ih, sw);
    }
    let table = v6 ? sw.v6 : sw.v4;
    if (table === null) {
      table = new PeerTable(v6 ? 18 : 6);
      if (v6) sw.v6 = table;
      else sw.v4 = table;
    }
    if (table.find(addr, off) >= 0 || table.n >= this.maxPeersPerSwarm || this.totalPeers >= this.maxPeers) return false;
    table.add(addr, off, ((Math.max(0, rel) & TIME_MASK) | (seeder ? SEED_BIT : 0)) >>> 0);
    this.totalPeers++;
    return true;
  }

  /** Set the completed counter of a swarm (persistence). */
  restoreCompleted(ih: string, completed: number): void {
    let sw = this.swarms.get(ih);
    if (sw === undefined) {
      if (completed === 0 || this.swarms.size >= this.maxSwarms) return;
      sw = new Swarm();
      this.swarms.set(ih, sw);
    }
    sw.completed = completed;
  }

  /** Unix seconds of a metadata word. */
  lastSeenUnix(meta: number): number {
    return (meta & TIME_MASK) + this.epoch;
  }

  static isSeeder(meta: number): boolean {
    return (meta & SEED_BIT) !== 0;
  }
}

/** For tests: reseed the table hash. */
export function _setHashSeed(seed: number): void {
  hashSeed = seed | 0;
}
