/**
 * DhtNode: the BEP 5 / BEP 42 / BEP 44 node core. Sans-I/O and time-injected: it sends and receives
 * datagrams through a `Transport` and reads time and randomness from an injected `Clock` and `Rng`, so a
 * thousand nodes run in one process in virtual time. All callbacks here are synchronous; the promise
 * API lives in dht.ts.
 */
import { randomBytes } from 'node:crypto';
import { encode, decode, type BencodeDict, type BencodeValue, type EncodableValue, type PeerAddress } from '@bitorrent/core';
import { systemClock, type Clock, type TimerHandle } from './clock.js';
import { compareDistance, isLocalAddress, isSecureNodeId, randomIdInBucket, secureNodeId, ID_LEN, type Rng } from './id.js';
import {
  decodeMessage,
  encodeQuery,
  encodeResponse,
  encodeError,
  encodeNodes,
  compactAddr,
  responseNodes,
  responseValues,
  hashArg,
  parseWant,
  ErrorCode,
  KrpcDecodeError,
  type KrpcQuery,
  type KrpcResponse,
  type KrpcErrorMsg,
  type NodeInfo,
} from './krpc.js';
import { RoutingTable, QUESTIONABLE_MS } from './routing.js';
import { bloomMerge, bloomEstimate, BLOOM_BYTES } from './bep33.js';
import { PeerStore, ItemStore, TokenManager, RateLimiter } from './store.js';
import { immutableTarget, mutableTarget, signItem, verifyItem, MAX_ITEM_VALUE, MAX_SALT, type KeyPair } from './bep44.js';

export interface Transport {
  send(buf: Buffer, addr: PeerAddress): void;
  onMessage(cb: (buf: Buffer, from: PeerAddress) => void): void;
}

export interface DhtNodeOptions {
  transport: Transport;
  clock?: Clock;
  rng?: Rng;
  /** Our node ID; default: BEP 42 ID from `externalIp`, else random (regenerated once our IP is learned). */
  nodeId?: Buffer;
  /** Keep `nodeId` even if it does not match our external IP (default: true when nodeId is given). */
  keepNodeId?: boolean;
  /** Our external IP if known (BEP 42 ID generation). */
  externalIp?: string;
  /** Address family of this node's routing table (BEP 32: one table per family). Default 4. */
  family?: 4 | 6;
  k?: number;
  alpha?: number;
  /** After this long an outstanding query stops counting against alpha (default 1000 ms). */
  softTimeoutMs?: number;
  /** After this long an outstanding query has failed (default 4000 ms). */
  queryTimeoutMs?: number;
  /** Queries accepted per source IP per second (burst = 2x). Default 50. */
  rateLimitPerSecond?: number;
  maxTorrents?: number;
  maxPeersPerTorrent?: number;
  maxItems?: number;
  /** BEP 42: prefer nodes whose ID matches their IP in full buckets (loopback/private addresses exempt). Default true. */
  preferVerified?: boolean;
  /** One routing entry per non-local IP. Default true. */
  restrictRoutingIps?: boolean;
  /** BEP 32: closest nodes of the other address family, for queries whose 'want' asks for both. */
  otherFamilyClosest?: (target: Buffer, count: number) => NodeInfo[];
  /** Called when a peer announces itself to us (announce_peer). */
  onAnnounce?: (infoHash: Buffer, peer: PeerAddress) => void;
}

export interface LookupStats {
  queries: number;
  responses: number;
  timeouts: number;
  bytesSent: number;
  /** Hops from our routing table to the deepest node of the final closest set (1 = answered from our table). */
  roundTrips: number;
  /** Hops to the first response that carried values (get_peers/get), if any. */
  firstValueRoundTrips?: number;
  /** Time to the first response that carried values. */
  firstValueMs?: number;
  durationMs: number;
}

export interface LookupNode extends NodeInfo {
  token?: Buffer;
}

export interface LookupResult {
  /** The k closest nodes that answered, closest first, with their write tokens. */
  nodes: LookupNode[];
  peers: PeerAddress[];
  stats: LookupStats;
}

export type LookupKind = 'find_node' | 'get_peers' | 'get';

export interface LookupOptions {
  kind: LookupKind;
  /** Extra query arguments (e.g. 'seq' for get). */
  args?: Record<string, EncodableValue>;
  /** Extra nodes to query (bootstrap addresses with IDs unknown are queried first; at most 32 of those). */
  seeds?: (PeerAddress & { id?: Buffer })[];
  onPeers?: (peers: PeerAddress[]) => void;
  /** Every response (after the generic checks), e.g. to extract BEP 44 values. */
  onResponse?: (r: BencodeDict, from: NodeInfo) => void;
  onDone?: (result: LookupResult) => void;
  maxQueries?: number;
}

export interface DhtItem {
  v: BencodeValue;
  k?: Buffer;
  seq?: number;
  sig?: Buffer;
  salt?: Buffer;
}

export interface PutOptions {
  /** Immutable item: just v. Mutable item: v plus keyPair and seq (and optional salt/cas). */
  v: EncodableValue;
  keyPair?: KeyPair;
  seq?: number;
  salt?: Buffer;
  cas?: number;
}

export interface NodeStats {
  bytesSent: number;
  bytesReceived: number;
  packetsReceived: number;
  badPackets: number;
  rateLimited: number;
  queriesAnswered: number;
  /** Exceptions caught in the handler that were not decode errors (bugs); should stay 0. */
  internalErrors: number;
}

const NEW = 0, INFLIGHT = 1, DONE = 2, FAILED = 3;
const MAX_PENDING = 4096;
const MAX_CANDIDATES = 100;
const MAX_VALUES_REPLY = 32;
const TOKEN_ROTATE_MS = 5 * 60 * 1000;
const MAINTENANCE_MS = 60 * 1000;
const REFRESH_MS = QUESTIONABLE_MS;

interface Pending {
  host: string;
  port: number;
  cb: (res: KrpcResponse | null, err?: KrpcErrorMsg) => void;
  timer: TimerHandle;
  soft?: TimerHandle;
}

interface Candidate {
  id: Buffer | null;
  host: string;
  port: number;
  state: number;
  slow: boolean;
  depth: number;
  token?: Buffer;
}

function addrKey(host: string, port: number): string {
  return `${host}|${port}`;
}

export class Lookup {
  private cands: Candidate[] = [];
  private seen = new Set<string>();
  private peers = new Map<string, PeerAddress>();
  private finished = false;
  private started: number;
  readonly stats: LookupStats = { queries: 0, responses: 0, timeouts: 0, bytesSent: 0, roundTrips: 0, durationMs: 0 };

  constructor(private node: DhtNode, readonly target: Buffer, private opts: LookupOptions) {
    this.started = node.clock.now();
    let idless = 0;
    for (const s of opts.seeds ?? []) {
      if (s.id && s.id.length === ID_LEN) this.addCandidate(s.id, s.host, s.port, 1);
      else if (idless++ < 32) this.addCandidate(null, s.host, s.port, 1);
    }
    for (const n of node.table.closest(target, node.k * 2)) this.addCandidate(n.id, n.host, n.port, 1);
  }

  get done(): boolean {
    return this.finished;
  }

  private addCandidate(id: Buffer | null, host: string, port: number, depth: number): void {
    if (id && id.equals(this.node.id)) return;
    if (this.node.isSelf(host, port)) return;
    const key = addrKey(host, port);
    if (this.seen.has(key)) return;
    this.seen.add(key);
    const c: Candidate = { id, host, port, state: NEW, slow: false, depth };
    if (!id) {
      this.cands.unshift(c);
      return;
    }
    // Binary insertion by distance (ID-less seeds stay at the front).
    let lo = 0;
    while (lo < this.cands.length && this.cands[lo].id === null) lo++;
    let hi = this.cands.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareDistance(this.cands[mid].id!, id, this.target) < 0) lo = mid + 1;
      else hi = mid;
    }
    if (lo >= MAX_CANDIDATES) return;
    this.cands.splice(lo, 0, c);
    if (this.cands.length > MAX_CANDIDATES) {
      // Drop the farthest candidate that is not in flight.
      for (let i = this.cands.length - 1; i >= 0; i--) {
        if (this.cands[i].state !== INFLIGHT) {
          this.cands.splice(i, 1);
          break;
        }
      }
    }
  }

  private resort(): void {
    this.cands.sort((a, b) => {
      if (!a.id || !b.id) return (a.id ? 1 : 0) - (b.id ? 1 : 0);
      return compareDistance(a.id, b.id, this.target);
    });
  }

  /** Issue queries up to alpha; finish when the k closest live candidates have all answered. */
  step(): void {
    if (this.finished) return;
    const node = this.node;
    if (node.isClosed) {
      this.finish();
      return;
    }
    const maxQueries = this.opts.maxQueries ?? 200;
    let active = 0;
    let inflightAny = 0;
    for (const c of this.cands) {
      if (c.state === INFLIGHT) {
        inflightAny++;
        if (!c.slow) active++;
      }
    }
    let window = 0;
    let settled = true;
    for (const c of this.cands) {
      if (window >= node.k) break;
      if (c.state === FAILED || (c.state === INFLIGHT && c.slow)) continue;
      window++;
      if (c.state === NEW) {
        settled = false;
        if (active < node.alpha && this.stats.queries < maxQueries) {
          this.query(c);
          if (this.finished) return;
          active++;
          inflightAny++;
        }
      } else if (c.state === INFLIGHT) settled = false;
    }
    if ((settled && window > 0) || inflightAny === 0 || (this.stats.queries >= maxQueries && active === 0)) this.finish();
  }

  private query(c: Candidate): void {
    c.state = INFLIGHT;
    this.stats.queries++;
    const node = this.node;
    const args: Record<string, EncodableValue> = { id: node.id, ...(this.opts.args ?? {}) };
    if (this.opts.kind === 'find_node') args.target = this.target;
    else if (this.opts.kind === 'get_peers') args.info_hash = this.target;
    else args.target = this.target;
    const sent = node.query(
      { host: c.host, port: c.port },
      this.opts.kind,
      args,
      (res) => {
        if (this.finished) {
          return;
        }
        if (!res) {
          c.state = FAILED;
          this.stats.timeouts++;
          this.step();
          return;
        }
        this.onResponse(c, res);
        this.step();
      },
      () => {
        c.slow = true;
        this.step();
      },
    );
    this.stats.bytesSent += sent;
  }

  private onResponse(c: Candidate, res: KrpcResponse): void {
    this.stats.responses++;
    c.state = DONE;
    if (!c.id) {
      c.id = res.id;
      this.resort();
    } else if (!c.id.equals(res.id)) {
      // The node answered with another ID than we were told: do not trust it for the closest set.
      c.state = FAILED;
      return;
    }
    const r = res.r;
    const tok = r.token;
    if (tok instanceof Uint8Array && tok.length > 0 && tok.length <= 64) c.token = Buffer.from(tok);
    for (const n of responseNodes(r, this.node.family)) {
      if (this.node.isSelf(n.host, n.port)) continue;
      this.addCandidate(n.id, n.host, n.port, c.depth + 1);
    }
    const from: NodeInfo = { id: res.id, host: c.host, port: c.port };
    if (this.opts.kind === 'get_peers') {
      const fresh: PeerAddress[] = [];
      for (const p of responseValues(r)) {
        const k = addrKey(p.host, p.port);
        if (this.peers.has(k) || this.peers.size >= 10_000) continue;
        this.peers.set(k, p);
        fresh.push(p);
      }
      if (fresh.length > 0) {
        if (this.stats.firstValueRoundTrips === undefined) {
          this.stats.firstValueRoundTrips = c.depth;
          this.stats.firstValueMs = this.node.clock.now() - this.started;
        }
        this.opts.onPeers?.(fresh);
      }
    }
    if (this.opts.kind === 'get' && r.v !== undefined && this.stats.firstValueRoundTrips === undefined) {
      this.stats.firstValueRoundTrips = c.depth;
    }
    this.opts.onResponse?.(r, from);
  }

  cancel(): void {
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    const nodes: LookupNode[] = [];
    let depth = 0;
    for (const c of this.cands) {
      if (nodes.length >= this.node.k) break;
      if (c.state !== DONE || !c.id) continue;
      nodes.push({ id: c.id, host: c.host, port: c.port, token: c.token });
      depth = Math.max(depth, c.depth);
    }
    this.stats.roundTrips = depth;
    this.stats.durationMs = this.node.clock.now() - this.started;
    this.opts.onDone?.({ nodes, peers: [...this.peers.values()], stats: this.stats });
  }
}

export class DhtNode {
  id: Buffer;
  readonly clock: Clock;
  readonly rng: Rng;
  readonly family: 4 | 6;
  readonly k: number;
  readonly alpha: number;
  readonly table: RoutingTable;
  readonly peerStore: PeerStore;
  readonly items: ItemStore;
  readonly stats: NodeStats = { bytesSent: 0, bytesReceived: 0, packetsReceived: 0, badPackets: 0, rateLimited: 0, queriesAnswered: 0, internalErrors: 0 };
  /** Our external address as voted by responders (BEP 42 'ip' field). */
  externalIp?: string;
  /** Our own reachable addresses (to avoid querying ourselves). */
  readonly selfAddrs = new Set<string>();

  private readonly transport: Transport;
  private readonly tokens: TokenManager;
  private readonly limiter: RateLimiter;
  private readonly pending = new Map<string, Pending>();
  private readonly softTimeoutMs: number;
  private readonly queryTimeoutMs: number;
  private readonly fixedId: boolean;
  private readonly onAnnounce?: (infoHash: Buffer, peer: PeerAddress) => void;
  private readonly otherFamilyClosest?: (target: Buffer, count: number) => NodeInfo[];
  private tid: number;
  private maintenanceTimer?: TimerHandle;
  private lastRotate: number;
  private ipVotes = new Map<string, Set<string>>();
  private pinging = new Set<string>();
  private bootstrapAddrs: PeerAddress[] = [];
  private closed = false;

  constructor(opts: DhtNodeOptions) {
    this.transport = opts.transport;
    this.clock = opts.clock ?? systemClock;
    this.rng = opts.rng ?? ((n) => randomBytes(n));
    this.family = opts.family ?? 4;
    this.k = opts.k ?? 8;
    this.alpha = opts.alpha ?? 3;
    this.softTimeoutMs = opts.softTimeoutMs ?? 1000;
    this.queryTimeoutMs = opts.queryTimeoutMs ?? 4000;
    this.fixedId = opts.keepNodeId ?? !!opts.nodeId;
    if (opts.nodeId && opts.nodeId.length !== ID_LEN) throw new RangeError('nodeId must be 20 bytes');
    this.externalIp = opts.externalIp;
    this.id = opts.nodeId ? Buffer.from(opts.nodeId) : opts.externalIp ? secureNodeId(opts.externalIp, this.rng) : this.rng(ID_LEN);
    const now = () => this.clock.now();
    this.table = new RoutingTable(this.id, now, { k: this.k, preferVerified: opts.preferVerified ?? true, restrictIps: opts.restrictRoutingIps ?? true });
    this.peerStore = new PeerStore(now, opts.maxTorrents, opts.maxPeersPerTorrent);
    this.items = new ItemStore(now, opts.maxItems);
    this.tokens = new TokenManager(this.rng);
    const rate = opts.rateLimitPerSecond ?? 50;
    this.limiter = new RateLimiter(now, rate, rate * 2);
    this.onAnnounce = opts.onAnnounce;
    this.otherFamilyClosest = opts.otherFamilyClosest;
    this.tid = this.rng(2).readUInt16BE(0);
    this.lastRotate = this.clock.now();
    this.transport.onMessage((buf, from) => this.receive(buf, from));
    this.scheduleMaintenance();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  isSelf(host: string, port: number): boolean {
    return this.selfAddrs.has(addrKey(host, port));
  }

  nodeCount(): number {
    return this.table.size();
  }

  /** Start (or restart) from bootstrap addresses: a lookup of our own ID fills the routing table. */
  bootstrap(addrs: (PeerAddress & { id?: Buffer })[], onDone?: (result: LookupResult) => void): Lookup {
    for (const a of addrs) if (!this.bootstrapAddrs.some((b) => b.host === a.host && b.port === a.port)) this.bootstrapAddrs.push(a);
    return this.lookup(this.id, { kind: 'find_node', seeds: addrs, onDone });
  }

  /** Ping a node; it enters the routing table if it answers. */
  addNode(addr: PeerAddress, onDone?: (ok: boolean) => void): void {
    this.query(addr, 'ping', { id: this.id }, (res) => onDone?.(!!res));
  }

  lookup(target: Buffer, opts: LookupOptions): Lookup {
    const l = new Lookup(this, target, opts);
    if (this.closed) {
      l.step(); // finishes at once
      return l;
    }
    // Start on the next tick of the injected clock so callers can attach state first.
    this.clock.setTimeout(() => l.step(), 0);
    return l;
  }

  getPeers(infoHash: Buffer, onPeers?: (peers: PeerAddress[]) => void, onDone?: (result: LookupResult) => void): Lookup {
    return this.lookup(infoHash, { kind: 'get_peers', onPeers, onDone });
  }

  /** BEP 33: estimated numbers of seeds and downloaders, merged from the bloom filters of the nodes on the path. */
  scrape(infoHash: Buffer, onDone?: (counts: { seeds: number; peers: number }, result: LookupResult) => void): Lookup {
    const seeds = Buffer.alloc(BLOOM_BYTES);
    const peers = Buffer.alloc(BLOOM_BYTES);
    return this.lookup(infoHash, {
      kind: 'get_peers',
      args: { scrape: 1 },
      onResponse: (r) => {
        if (r.BFsd instanceof Uint8Array) bloomMerge(seeds, r.BFsd);
        if (r.BFpe instanceof Uint8Array) bloomMerge(peers, r.BFpe);
      },
      onDone: (result) => onDone?.({ seeds: Math.round(bloomEstimate(seeds)), peers: Math.round(bloomEstimate(peers)) }, result),
    });
  }

  /** get_peers lookup, then announce_peer to the k closest nodes that gave us a token (`seed` for BEP 33). */
  announce(infoHash: Buffer, port: number | 'implied', onDone?: (acked: number, result: LookupResult) => void, seed = false): Lookup {
    return this.getPeers(infoHash, undefined, (result) => {
      const targets = result.nodes.filter((n) => n.token);
      let left = targets.length;
      let acked = 0;
      if (left === 0) {
        onDone?.(0, result);
        return;
      }
      for (const n of targets) {
        const args: Record<string, EncodableValue> = {
          id: this.id,
          info_hash: infoHash,
          port: port === 'implied' ? 1 : port,
          token: n.token!,
        };
        if (port === 'implied') args.implied_port = 1;
        if (seed) args.seed = 1;
        result.stats.bytesSent += this.query(n, 'announce_peer', args, (res) => {
          if (res) acked++;
          if (--left === 0) onDone?.(acked, result);
        });
      }
    });
  }

  /** BEP 44 get: the item stored under `target` (immutable: verified hash; mutable: verified signature, highest seq). */
  getItem(target: Buffer, opts: { salt?: Buffer; seq?: number } = {}, onDone?: (item: DhtItem | null, result: LookupResult) => void): Lookup {
    let best: DhtItem | null = null;
    const args: Record<string, EncodableValue> = {};
    if (opts.seq !== undefined) args.seq = opts.seq;
    return this.lookup(target, {
      kind: 'get',
      args,
      onResponse: (r) => {
        const item = validateItem(r, target, opts.salt);
        if (!item) return;
        if (!best || (item.seq ?? 0) > (best.seq ?? 0)) best = item;
      },
      onDone: (result) => onDone?.(best, result),
    });
  }

  /** BEP 44 put. Returns the target; onDone gets how many nodes stored it. */
  putItem(opts: PutOptions, onDone?: (stored: number, target: Buffer) => void): Buffer {
    const encV = encode(opts.v);
    if (encV.length > MAX_ITEM_VALUE) throw new RangeError(`item value is ${encV.length} bytes, BEP 44 allows ${MAX_ITEM_VALUE}`);
    let target: Buffer;
    const args: Record<string, EncodableValue> = { v: opts.v };
    if (opts.keyPair) {
      const salt = opts.salt ?? Buffer.alloc(0);
      if (salt.length > MAX_SALT) throw new RangeError('salt longer than 64 bytes');
      if (opts.seq === undefined || !Number.isSafeInteger(opts.seq) || opts.seq < 0) throw new RangeError('mutable put needs a non-negative integer seq');
      target = mutableTarget(opts.keyPair.publicKey, salt);
      args.k = opts.keyPair.publicKey;
      args.seq = opts.seq;
      args.sig = signItem(opts.keyPair.secretKey, opts.seq, encV, salt);
      if (salt.length > 0) args.salt = salt;
      if (opts.cas !== undefined) args.cas = opts.cas;
      // Store locally too, so a lone node can serve its own items.
    } else {
      target = immutableTarget(opts.v);
    }
    this.lookup(target, {
      kind: 'get',
      onDone: (result) => {
        const targets = result.nodes.filter((n) => n.token);
        let left = targets.length;
        let stored = 0;
        if (left === 0) {
          onDone?.(0, target);
          return;
        }
        for (const n of targets) {
          this.query(n, 'put', { ...args, id: this.id, token: n.token! }, (res) => {
            if (res) stored++;
            if (--left === 0) onDone?.(stored, target);
          });
        }
      },
    });
    return target;
  }

  /** Send a query; `cb(null)` on timeout, error reply or overload. Returns bytes sent. */
  query(
    addr: PeerAddress,
    method: string,
    args: Record<string, EncodableValue | undefined>,
    cb: (res: KrpcResponse | null, err?: KrpcErrorMsg) => void,
    onSoftTimeout?: () => void,
  ): number {
    if (this.closed) {
      cb(null);
      return 0;
    }
    if (this.pending.size >= MAX_PENDING || addr.port <= 0 || addr.port > 65535) {
      this.clock.setTimeout(() => cb(null), 0);
      return 0;
    }
    let key: string;
    let t: Buffer;
    do {
      this.tid = (this.tid + 1) & 0xffff;
      t = Buffer.from([this.tid >> 8, this.tid & 0xff]);
      key = t.toString('latin1');
    } while (this.pending.has(key));
    let buf: Buffer;
    try {
      buf = encodeQuery(t, method, args);
    } catch {
      this.clock.setTimeout(() => cb(null), 0);
      return 0;
    }
    const p: Pending = {
      host: addr.host,
      port: addr.port,
      cb,
      timer: this.clock.setTimeout(() => {
        if (this.pending.get(key) !== p) return;
        this.pending.delete(key);
        if (p.soft) this.clock.clearTimeout(p.soft);
        this.table.failed(p.host, p.port);
        cb(null);
      }, this.queryTimeoutMs),
    };
    if (onSoftTimeout) p.soft = this.clock.setTimeout(() => {
      p.soft = undefined;
      if (this.pending.get(key) === p) onSoftTimeout();
    }, this.softTimeoutMs);
    this.pending.set(key, p);
    this.send(buf, addr);
    return buf.length;
  }

  private send(buf: Buffer, addr: PeerAddress): void {
    this.stats.bytesSent += buf.length;
    try {
      this.transport.send(buf, addr);
    } catch {
      /* a failed send is a timeout later */
    }
  }

  /** Entry point for every datagram. Never throws. */
  receive(buf: Buffer, from: PeerAddress): void {
    if (this.closed) return;
    this.stats.bytesReceived += buf.length;
    this.stats.packetsReceived++;
    try {
      let msg;
      try {
        msg = decodeMessage(buf);
      } catch (err) {
        this.stats.badPackets++;
        if (err instanceof KrpcDecodeError && err.t && this.limiter.allow(from.host)) {
          this.send(encodeError(err.t, ErrorCode.Protocol, 'Protocol Error'), from);
        }
        return;
      }
      if (msg.y === 'q') {
        if (!this.limiter.allow(from.host)) {
          this.stats.rateLimited++;
          return;
        }
        this.handleQuery(msg, from);
      } else {
        this.handleReply(msg, from);
      }
    } catch {
      this.stats.internalErrors++;
    }
  }

  private reply(q: KrpcQuery, from: PeerAddress, r: Record<string, EncodableValue | undefined>): void {
    this.stats.queriesAnswered++;
    this.send(encodeResponse(q.t, { id: this.id, ...r }, from), from);
  }

  private replyError(q: KrpcQuery, from: PeerAddress, code: number, message: string): void {
    this.send(encodeError(q.t, code, message), from);
  }

  /** 'nodes'/'nodes6' for a reply: our family unless 'want' (BEP 32) asks otherwise. */
  private nodeFields(target: Buffer, args: BencodeDict): Record<string, Buffer | undefined> {
    const want = parseWant(args);
    const own = this.family === 4 ? 'n4' : 'n6';
    const wantOwn = !want || (own === 'n4' ? want.n4 : want.n6) || (!want.n4 && !want.n6);
    const wantOther = !!want && (own === 'n4' ? want.n6 : want.n4) && !!this.otherFamilyClosest;
    const out: Record<string, Buffer | undefined> = {};
    if (wantOwn) out[this.family === 4 ? 'nodes' : 'nodes6'] = encodeNodes(this.table.closest(target, this.k), this.family);
    if (wantOther) {
      const other = this.family === 4 ? 6 : 4;
      out[other === 4 ? 'nodes' : 'nodes6'] = encodeNodes(this.otherFamilyClosest!(target, this.k), other);
    }
    return out;
  }

  private handleQuery(q: KrpcQuery, from: PeerAddress): void {
    if (q.id.equals(this.id)) return;
    if (!q.ro) this.table.heard({ id: q.id, host: from.host, port: from.port }, false);
    const a = q.args;
    try {
      switch (q.method) {
        case 'ping':
          this.reply(q, from, {});
          return;
        case 'find_node': {
          const target = hashArg(a, 'target', q.t);
          this.reply(q, from, this.nodeFields(target, a));
          return;
        }
        case 'get_peers': {
          const ih = hashArg(a, 'info_hash', q.t);
          const peers = this.peerStore.get(ih, MAX_VALUES_REPLY, this.rng);
          const scrape = a.scrape === 1 ? this.peerStore.scrape(ih) : undefined;
          this.reply(q, from, {
            BFsd: scrape?.seeds,
            BFpe: scrape?.peers,
            token: this.tokens.issue(from.host),
            ...this.nodeFields(ih, a),
            values: peers.length > 0 ? peers.map(compactAddr) : undefined,
          });
          return;
        }
        case 'announce_peer': {
          const ih = hashArg(a, 'info_hash', q.t);
          const token = a.token;
          if (!(token instanceof Uint8Array) || !this.tokens.check(token, from.host)) {
            this.replyError(q, from, ErrorCode.Protocol, 'bad token');
            return;
          }
          let port: number;
          if (a.implied_port === 1) port = from.port;
          else if (typeof a.port === 'number' && Number.isInteger(a.port) && a.port > 0 && a.port < 65536) port = a.port;
          else {
            this.replyError(q, from, ErrorCode.Protocol, 'bad port');
            return;
          }
          const peer = { host: from.host, port };
          this.peerStore.add(ih, peer, a.seed === 1);
          this.reply(q, from, {});
          this.onAnnounce?.(ih, peer);
          return;
        }
        case 'get': {
          const target = hashArg(a, 'target', q.t);
          const item = this.items.get(target);
          const r: Record<string, EncodableValue | undefined> = { token: this.tokens.issue(from.host), ...this.nodeFields(target, a) };
          if (item) {
            if (item.k) {
              r.k = item.k;
              r.seq = item.seq;
              const want = typeof a.seq === 'number' ? a.seq : undefined;
              if (want === undefined || (item.seq ?? 0) > want) {
                r.v = item.v as EncodableValue;
                r.sig = item.sig;
              }
            } else r.v = item.v as EncodableValue;
          }
          this.reply(q, from, r);
          return;
        }
        case 'put':
          this.handlePut(q, from);
          return;
        default:
          this.replyError(q, from, ErrorCode.MethodUnknown, 'Method Unknown');
      }
    } catch (err) {
      if (err instanceof KrpcDecodeError) this.replyError(q, from, ErrorCode.Protocol, err.message.slice(0, 80));
      else throw err;
    }
  }

  private handlePut(q: KrpcQuery, from: PeerAddress): void {
    const a = q.args;
    const token = a.token;
    if (!(token instanceof Uint8Array) || !this.tokens.check(token, from.host)) return this.replyError(q, from, ErrorCode.Protocol, 'bad token');
    if (a.v === undefined) return this.replyError(q, from, ErrorCode.Protocol, 'missing v');
    let encV: Buffer;
    try {
      encV = encode(a.v as EncodableValue);
    } catch {
      return this.replyError(q, from, ErrorCode.Protocol, 'bad v');
    }
    if (encV.length > MAX_ITEM_VALUE) return this.replyError(q, from, ErrorCode.MessageTooBig, 'Message (v field) too big');
    if (a.k === undefined) {
      this.items.set(immutableTarget(a.v), { v: decode(encV) }); // fresh copy, not a view of the datagram
      return this.reply(q, from, {});
    }
    const k = a.k, sig = a.sig, seq = a.seq;
    const salt = a.salt instanceof Uint8Array ? Buffer.from(a.salt) : Buffer.alloc(0);
    if (!(k instanceof Uint8Array) || k.length !== 32 || !(sig instanceof Uint8Array) || sig.length !== 64 || typeof seq !== 'number' || seq < 0) {
      return this.replyError(q, from, ErrorCode.Protocol, 'bad mutable item');
    }
    if (salt.length > MAX_SALT) return this.replyError(q, from, ErrorCode.SaltTooBig, 'salt (salt field) too big');
    if (!verifyItem(k, sig, seq, encV, salt)) return this.replyError(q, from, ErrorCode.InvalidSignature, 'invalid signature');
    const target = mutableTarget(k, salt);
    const cur = this.items.get(target);
    if (cur && cur.seq !== undefined) {
      if (typeof a.cas === 'number' && a.cas !== cur.seq) return this.replyError(q, from, ErrorCode.CasMismatch, 'the CAS hash mismatched, re-read value and try again');
      if (seq < cur.seq) return this.replyError(q, from, ErrorCode.SeqTooSmall, 'sequence number less than current');
    }
    this.items.set(target, { v: decode(encV), k: Buffer.from(k), seq, sig: Buffer.from(sig), salt });
    this.reply(q, from, {});
  }

  private handleReply(msg: KrpcResponse | KrpcErrorMsg, from: PeerAddress): void {
    const key = msg.t.toString('latin1');
    const p = this.pending.get(key);
    // Only the address we asked may answer (a spoofed reply from elsewhere is ignored).
    if (!p || p.host !== from.host || p.port !== from.port) return;
    this.pending.delete(key);
    this.clock.clearTimeout(p.timer);
    if (p.soft) this.clock.clearTimeout(p.soft);
    if (msg.y === 'e') {
      p.cb(null, msg);
      return;
    }
    if (msg.id.equals(this.id)) {
      this.selfAddrs.add(addrKey(from.host, from.port));
      p.cb(null);
      return;
    }
    const result = this.table.heard({ id: msg.id, host: from.host, port: from.port }, true);
    if (result === 'replacement') this.pingQuestionable(msg.id);
    if (msg.ip) this.voteExternalIp(msg.ip.host, from.host);
    p.cb(msg);
  }

  private pingQuestionable(id: Buffer): void {
    const q = this.table.questionableIn(id);
    if (!q) return;
    const key = addrKey(q.host, q.port);
    if (this.pinging.has(key) || this.pinging.size > 64) return;
    this.pinging.add(key);
    this.query(q, 'ping', { id: this.id }, () => this.pinging.delete(key));
  }

  /** BEP 42: count distinct responders reporting our IP; once it is clear, make our ID conform to it. */
  private voteExternalIp(ip: string, voter: string): void {
    let set = this.ipVotes.get(ip);
    if (!set) {
      if (this.ipVotes.size >= 16) this.ipVotes.clear();
      set = new Set();
      this.ipVotes.set(ip, set);
    }
    if (set.size < 64) set.add(voter);
    if (set.size >= 5 && this.externalIp !== ip) {
      this.externalIp = ip;
      if (!this.fixedId && !isLocalAddress(ip) && !isSecureNodeId(this.id, ip)) {
        this.id = secureNodeId(ip, this.rng);
        this.table.rebase(this.id);
        this.bootstrap([]);
      }
    }
  }

  private scheduleMaintenance(): void {
    this.maintenanceTimer = this.clock.setTimeout(() => {
      if (this.closed) return;
      this.maintenance();
      this.scheduleMaintenance();
    }, MAINTENANCE_MS);
  }

  private maintenance(): void {
    const now = this.clock.now();
    if (now - this.lastRotate >= TOKEN_ROTATE_MS) {
      this.tokens.rotate();
      this.lastRotate = now;
      this.peerStore.expire();
      this.items.expire();
    }
    if (this.table.size() === 0 && this.bootstrapAddrs.length > 0) {
      this.bootstrap([]);
      return;
    }
    // Refresh: a lookup for a random ID in (up to two) buckets that saw no change for 15 minutes.
    for (const i of this.table.staleBuckets(REFRESH_MS).slice(0, 2)) {
      this.table.touchBucket(i);
      const last = i === this.table.bucketCount() - 1;
      const target = last ? this.rng(ID_LEN) : randomIdInBucket(this.id, i, this.rng);
      if (last) this.id.copy(target, 0, 0, Math.min(ID_LEN, (i >> 3)));
      this.lookup(target, { kind: 'find_node' });
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.maintenanceTimer) this.clock.clearTimeout(this.maintenanceTimer);
    const pending = [...this.pending.values()];
    this.pending.clear();
    // Fail what is outstanding so running lookups finish (and their promises settle).
    for (const p of pending) {
      this.clock.clearTimeout(p.timer);
      if (p.soft) this.clock.clearTimeout(p.soft);
      p.cb(null);
    }
  }

  pendingQueries(): number {
    return this.pending.size;
  }
  rateLimiterSize(): number {
    return this.limiter.size();
  }
}

/** Validate a BEP 44 'get' response against the target; null when absent or invalid. */
export function validateItem(r: BencodeDict, target: Buffer, salt?: Buffer): DhtItem | null {
  const v = r.v;
  if (v === undefined) return null;
  let encV: Buffer;
  try {
    encV = encode(v as EncodableValue);
  } catch {
    return null;
  }
  if (encV.length > MAX_ITEM_VALUE) return null;
  const k = r.k;
  if (k === undefined) {
    return immutableTarget(v).equals(target) ? { v } : null;
  }
  const sig = r.sig;
  const seq = r.seq;
  if (!(k instanceof Uint8Array) || k.length !== 32 || !(sig instanceof Uint8Array) || typeof seq !== 'number') return null;
  if (!mutableTarget(k, salt).equals(target)) return null;
  if (!verifyItem(k, sig, seq, encV, salt)) return null;
  return { v, k: Buffer.from(k), seq, sig: Buffer.from(sig), salt };
}
