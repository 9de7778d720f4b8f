/**
 * Routing table of k-buckets (BEP 5). Buckets are indexed by the number of leading bits a node's ID
 * shares with ours; the last bucket holds everything closer and is split when it fills up, so the
 * table covers far space coarsely and our own neighbourhood finely. Sans-I/O: the owner decides when
 * to ping questionable nodes; the table only reports what to do.
 */
import { compareDistance, commonPrefixBits, isLocalAddress, isSecureNodeId, ID_LEN } from './id.js';
import type { NodeInfo } from './krpc.js';

export interface RoutingNode extends NodeInfo {
  /** Last time the node responded to us (0: never). */
  lastResponse: number;
  /** Last time we heard from it at all (query or response). */
  lastSeen: number;
  /** Consecutive timeouts. */
  fails: number;
  /** BEP 42: ID conforms to the node's IP (or the IP is local). */
  verified: boolean;
}

interface Bucket {
  nodes: RoutingNode[];
  replacements: RoutingNode[];
  lastChanged: number;
}

export type AddResult = 'added' | 'updated' | 'replacement' | 'rejected';

export interface RoutingTableOptions {
  k?: number;
  /** Prefer BEP 42 conforming nodes: evict an unverified node from a full bucket for a verified one. */
  preferVerified?: boolean;
  /** At most one routing-table entry per non-local IP (dht_restrict_routing_ips). */
  restrictIps?: boolean;
}

/** A node is questionable after 15 minutes of silence (BEP 5). */
export const QUESTIONABLE_MS = 15 * 60 * 1000;
const MAX_BUCKETS = ID_LEN * 8;

export class RoutingTable {
  readonly k: number;
  private buckets: Bucket[] = [];
  private byAddr = new Map<string, RoutingNode>();
  private byIp = new Map<string, number>();
  private readonly preferVerified: boolean;
  private readonly restrictIps: boolean;

  constructor(public selfId: Buffer, private now: () => number, opts: RoutingTableOptions = {}) {
    this.k = opts.k ?? 8;
    this.preferVerified = opts.preferVerified ?? true;
    this.restrictIps = opts.restrictIps ?? true;
    this.buckets.push({ nodes: [], replacements: [], lastChanged: now() });
  }

  private bucketIndex(id: Uint8Array): number {
    return Math.min(commonPrefixBits(this.selfId, id), this.buckets.length - 1);
  }

  size(): number {
    let n = 0;
    for (const b of this.buckets) n += b.nodes.length;
    return n;
  }

  bucketCount(): number {
    return this.buckets.length;
  }

  all(): RoutingNode[] {
    return this.buckets.flatMap((b) => b.nodes);
  }

  getByAddr(host: string, port: number): RoutingNode | undefined {
    return this.byAddr.get(`${host}|${port}`);
  }

  private index(n: RoutingNode): void {
    this.byAddr.set(`${n.host}|${n.port}`, n);
    this.byIp.set(n.host, (this.byIp.get(n.host) ?? 0) + 1);
  }
  private unindex(n: RoutingNode): void {
    this.byAddr.delete(`${n.host}|${n.port}`);
    const c = (this.byIp.get(n.host) ?? 1) - 1;
    if (c <= 0) this.byIp.delete(n.host);
    else this.byIp.set(n.host, c);
  }

  /**
   * Record that we heard from a node. `responded` is true for responses to our queries (the node is
   * reachable), false for queries it sent us. Returns what happened.
   */
  heard(info: NodeInfo, responded: boolean): AddResult {
    if (info.id.length !== ID_LEN || info.id.equals(this.selfId) || info.port === 0) return 'rejected';
    const now = this.now();
    const existing = this.byAddr.get(`${info.host}|${info.port}`);
    if (existing) {
      // Node ID/IP check: an address does not change its ID; ignore the newcomer claim.
      if (!existing.id.equals(info.id)) return 'rejected';
      existing.lastSeen = now;
      if (responded) {
        existing.lastResponse = now;
        existing.fails = 0;
      }
      return 'updated';
    }
    if (this.restrictIps && !isLocalAddress(info.host) && this.byIp.has(info.host)) return 'rejected';
    const node: RoutingNode = {
      id: Buffer.from(info.id), // copy: do not pin the whole datagram the ID was sliced from
      host: info.host,
      port: info.port,
      lastResponse: responded ? now : 0,
      lastSeen: now,
      fails: 0,
      verified: isSecureNodeId(info.id, info.host),
    };
    for (;;) {
      const bi = this.bucketIndex(node.id);
      const b = this.buckets[bi];
      if (b.nodes.some((n) => n.id.equals(node.id))) return 'rejected';
      if (b.nodes.length < this.k) {
        b.nodes.push(node);
        b.lastChanged = now;
        this.index(node);
        this.removeReplacement(b, node);
        return 'added';
      }
      if (bi === this.buckets.length - 1 && this.buckets.length < MAX_BUCKETS) {
        this.split();
        continue;
      }
      // Full bucket: replace a bad node, or (BEP 42) an unverified one with a verified one.
      let victim = b.nodes.findIndex((n) => n.fails >= 2 || (n.lastResponse === 0 && responded && now - n.lastSeen > QUESTIONABLE_MS));
      if (victim < 0 && this.preferVerified && node.verified && responded) victim = b.nodes.findIndex((n) => !n.verified);
      if (victim >= 0) {
        this.unindex(b.nodes[victim]);
        b.nodes[victim] = node;
        b.lastChanged = now;
        this.index(node);
        return 'added';
      }
      if (!responded) return 'rejected';
      this.removeReplacement(b, node);
      b.replacements.push(node);
      if (b.replacements.length > this.k) b.replacements.shift();
      return 'replacement';
    }
  }

  private removeReplacement(b: Bucket, node: NodeInfo): void {
    const i = b.replacements.findIndex((r) => r.host === node.host && r.port === node.port);
    if (i >= 0) b.replacements.splice(i, 1);
  }

  private split(): void {
    const last = this.buckets[this.buckets.length - 1];
    const next: Bucket = { nodes: [], replacements: [], lastChanged: last.lastChanged };
    const depth = this.buckets.length; // nodes sharing >= depth bits move to the new bucket
    this.buckets.push(next);
    const keep: RoutingNode[] = [];
    for (const n of last.nodes) (commonPrefixBits(this.selfId, n.id) >= depth ? next.nodes : keep).push(n);
    last.nodes = keep;
    const keepR: RoutingNode[] = [];
    for (const n of last.replacements) (commonPrefixBits(this.selfId, n.id) >= depth ? next.replacements : keepR).push(n);
    last.replacements = keepR;
    // Refill the old bucket from its replacement cache is not needed: it only lost nodes to the new one.
  }

  /** The node at this address failed to answer. Evicts it after repeated failures when a replacement waits. */
  failed(host: string, port: number): void {
    const n = this.byAddr.get(`${host}|${port}`);
    if (!n) return;
    n.fails++;
    const b = this.buckets[this.bucketIndex(n.id)];
    const limit = b.replacements.length > 0 ? 1 : 3;
    if (n.fails >= limit) {
      const i = b.nodes.indexOf(n);
      if (i >= 0) b.nodes.splice(i, 1);
      this.unindex(n);
      // Promote the most recently seen replacement that is allowed in.
      while (b.replacements.length > 0) {
        const r = b.replacements.pop()!;
        if (this.restrictIps && !isLocalAddress(r.host) && this.byIp.has(r.host)) continue;
        if (this.byAddr.has(`${r.host}|${r.port}`)) continue;
        b.nodes.push(r);
        this.index(r);
        break;
      }
      b.lastChanged = this.now();
    }
  }

  remove(host: string, port: number): void {
    const n = this.byAddr.get(`${host}|${port}`);
    if (!n) return;
    const b = this.buckets[this.bucketIndex(n.id)];
    const i = b.nodes.indexOf(n);
    if (i >= 0) b.nodes.splice(i, 1);
    this.unindex(n);
  }

  /** The `count` nodes closest to `target`, good ones first within equal standing. */
  closest(target: Uint8Array, count = this.k): RoutingNode[] {
    const all: RoutingNode[] = [];
    for (const b of this.buckets) for (const n of b.nodes) if (n.fails < 2) all.push(n);
    all.sort((a, b) => compareDistance(a.id, b.id, target));
    return all.slice(0, count);
  }

  /** The least recently seen questionable node in the bucket `id` falls in, if that bucket is full. */
  questionableIn(id: Uint8Array): RoutingNode | undefined {
    const b = this.buckets[this.bucketIndex(id)];
    const now = this.now();
    let best: RoutingNode | undefined;
    for (const n of b.nodes) {
      if (now - n.lastSeen > QUESTIONABLE_MS || n.lastResponse === 0 || n.fails > 0) {
        if (!best || n.lastSeen < best.lastSeen) best = n;
      }
    }
    return best;
  }

  /** Buckets not touched for `ageMs`: [index, prefix depth] for refresh lookups. */
  staleBuckets(ageMs: number): number[] {
    const now = this.now();
    const out: number[] = [];
    this.buckets.forEach((b, i) => {
      if (now - b.lastChanged >= ageMs) out.push(i);
    });
    return out;
  }

  touchBucket(i: number): void {
    if (this.buckets[i]) this.buckets[i].lastChanged = this.now();
  }

  /** Change our own ID (after learning our external IP, BEP 42): rebuild the table around it. */
  rebase(selfId: Buffer): void {
    const nodes = this.all();
    this.selfId = selfId;
    this.buckets = [{ nodes: [], replacements: [], lastChanged: this.now() }];
    this.byAddr.clear();
    this.byIp.clear();
    for (const n of nodes) {
      const r = this.heard(n, n.lastResponse > 0);
      const added = this.byAddr.get(`${n.host}|${n.port}`);
      if (r === 'added' && added) Object.assign(added, { lastResponse: n.lastResponse, lastSeen: n.lastSeen });
    }
  }
}
