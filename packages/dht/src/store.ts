/** Bounded state a DHT node keeps for others: announced peers (with expiry), BEP 44 items, tokens, rate limits. */
import { createHash } from 'node:crypto';
import type { PeerAddress, BencodeValue } from '@bitorrent/core';
import type { Rng } from './id.js';
import { bloomAdd, BLOOM_BYTES } from './bep33.js';

/** Peers announced to us per info-hash, each expiring after `ttlMs`; bounded in torrents and peers per torrent. */
export class PeerStore {
  private torrents = new Map<string, Map<string, { peer: PeerAddress; expires: number; seed: boolean }>>();
  constructor(
    private now: () => number,
    readonly maxTorrents = 2000,
    readonly maxPeersPerTorrent = 300,
    readonly ttlMs = 30 * 60 * 1000,
  ) {}

  add(infoHash: Buffer, peer: PeerAddress, seed = false): void {
    const key = infoHash.toString('hex');
    let t = this.torrents.get(key);
    if (!t) {
      if (this.torrents.size >= this.maxTorrents) {
        this.expire();
        if (this.torrents.size >= this.maxTorrents) {
          // Evict the torrent with the fewest peers (cheap to lose, hardest to fill by an attacker).
          let victim: string | undefined;
          let min = Infinity;
          for (const [k, v] of this.torrents) if (v.size < min) { min = v.size; victim = k; }
          if (victim) this.torrents.delete(victim);
        }
      }
      t = new Map();
      this.torrents.set(key, t);
    }
    const pk = `${peer.host}|${peer.port}`;
    t.delete(pk);
    if (t.size >= this.maxPeersPerTorrent) {
      const oldest = t.keys().next().value as string;
      t.delete(oldest);
    }
    t.set(pk, { peer: { host: peer.host, port: peer.port }, expires: this.now() + this.ttlMs, seed });
  }

  /** Up to `max` live peers for an info-hash, a random sample when there are more. */
  get(infoHash: Buffer, max: number, rng: Rng): PeerAddress[] {
    const t = this.torrents.get(infoHash.toString('hex'));
    if (!t) return [];
    const now = this.now();
    const live: PeerAddress[] = [];
    for (const [k, e] of t) {
      if (e.expires <= now) t.delete(k);
      else live.push(e.peer);
    }
    if (t.size === 0) this.torrents.delete(infoHash.toString('hex'));
    if (live.length <= max) return live;
    const r = rng(live.length * 4);
    for (let i = live.length - 1; i > 0; i--) {
      const j = r.readUInt32LE(i * 4) % (i + 1);
      [live[i], live[j]] = [live[j], live[i]];
    }
    return live.slice(0, max);
  }

  /** BEP 33: bloom filters of the live seeds' and downloaders' IPs. */
  scrape(infoHash: Buffer): { seeds: Buffer; peers: Buffer } | undefined {
    const t = this.torrents.get(infoHash.toString('hex'));
    // Nothing stored: no filters at all (keeps replies to spoofable scrapes small).
    if (!t || t.size === 0) return undefined;
    const seeds = Buffer.alloc(BLOOM_BYTES);
    const peers = Buffer.alloc(BLOOM_BYTES);
    const now = this.now();
    for (const e of t.values()) if (e.expires > now) bloomAdd(e.seed ? seeds : peers, e.peer.host);
    return { seeds, peers };
  }

  expire(): void {
    const now = this.now();
    for (const [key, t] of this.torrents) {
      for (const [k, e] of t) if (e.expires <= now) t.delete(k);
      if (t.size === 0) this.torrents.delete(key);
    }
  }

  torrentCount(): number {
    return this.torrents.size;
  }
  peerCount(): number {
    let n = 0;
    for (const t of this.torrents.values()) n += t.size;
    return n;
  }
}

export interface StoredItem {
  v: BencodeValue;
  /** Mutable items only. */
  k?: Buffer;
  seq?: number;
  sig?: Buffer;
  salt?: Buffer;
  expires: number;
}

/** BEP 44 items, bounded; oldest-expiring evicted first. */
export class ItemStore {
  private items = new Map<string, StoredItem>();
  constructor(private now: () => number, readonly maxItems = 1000, readonly ttlMs = 2 * 60 * 60 * 1000) {}

  get(target: Buffer): StoredItem | undefined {
    const key = target.toString('hex');
    const it = this.items.get(key);
    if (it && it.expires <= this.now()) {
      this.items.delete(key);
      return undefined;
    }
    return it;
  }

  set(target: Buffer, item: Omit<StoredItem, 'expires'>): void {
    const key = target.toString('hex');
    this.items.delete(key);
    if (this.items.size >= this.maxItems) {
      this.expire();
      if (this.items.size >= this.maxItems) this.items.delete(this.items.keys().next().value as string);
    }
    this.items.set(key, { ...item, expires: this.now() + this.ttlMs });
  }

  expire(): void {
    const now = this.now();
    for (const [k, v] of this.items) if (v.expires <= now) this.items.delete(k);
  }

  size(): number {
    return this.items.size;
  }
}

/** Write tokens: SHA-1(secret | ip) truncated, valid for the current and the previous secret (rotated every 5 min). */
export class TokenManager {
  private secret: Buffer;
  private previous: Buffer;
  constructor(private rng: Rng) {
    this.secret = rng(16);
    this.previous = rng(16);
  }
  rotate(): void {
    this.previous = this.secret;
    this.secret = this.rng(16);
  }
  private make(secret: Buffer, ip: string): Buffer {
    return createHash('sha1').update(secret).update(ip).digest().subarray(0, 8);
  }
  issue(ip: string): Buffer {
    return this.make(this.secret, ip);
  }
  check(token: Uint8Array, ip: string): boolean {
    if (token.length !== 8) return false;
    return this.make(this.secret, ip).equals(token) || this.make(this.previous, ip).equals(token);
  }
}

/** Token bucket per source IP, with a bounded number of tracked IPs. */
export class RateLimiter {
  private buckets = new Map<string, { tokens: number; at: number }>();
  constructor(private now: () => number, readonly perSecond = 50, readonly burst = 100, readonly maxIps = 20_000) {}

  allow(ip: string): boolean {
    const now = this.now();
    let b = this.buckets.get(ip);
    if (!b) {
      if (this.buckets.size >= this.maxIps) {
        // Drop the oldest tracked IP (insertion order); it starts again with a full bucket.
        this.buckets.delete(this.buckets.keys().next().value as string);
      }
      b = { tokens: this.burst, at: now };
      this.buckets.set(ip, b);
    } else {
      b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.perSecond);
      b.at = now;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  size(): number {
    return this.buckets.size;
  }
}
