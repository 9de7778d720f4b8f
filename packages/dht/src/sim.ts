/**
 * In-process simulated UDP network on a VirtualClock: each endpoint is a Transport; datagrams arrive
 * after a per-link latency; endpoints can be made unresponsive (they receive and never answer) or dropped.
 */
import type { PeerAddress } from '@bitorrent/core';
import { VirtualClock } from './clock.js';
import { randInt, type Rng } from './id.js';
import type { Transport } from './node.js';

export interface SimNetworkOptions {
  clock?: VirtualClock;
  rng: Rng;
  /** One-way latency range in ms (default 10..60). */
  minLatencyMs?: number;
  maxLatencyMs?: number;
  /** Probability a datagram is lost (default 0). */
  lossRate?: number;
}

export class SimTransport implements Transport {
  cb?: (buf: Buffer, from: PeerAddress) => void;
  bytesSent = 0;
  constructor(private net: SimNetwork, readonly addr: PeerAddress) {}
  get port(): number {
    return this.addr.port;
  }
  send(buf: Buffer, to: PeerAddress): void {
    this.bytesSent += buf.length;
    this.net.deliver(Buffer.from(buf), this.addr, to);
  }
  onMessage(cb: (buf: Buffer, from: PeerAddress) => void): void {
    this.cb = cb;
  }
  close(): void {
    this.net.remove(this.addr);
  }
}

export class SimNetwork {
  readonly clock: VirtualClock;
  private endpoints = new Map<string, SimTransport>();
  private dead = new Set<string>();
  private rng: Rng;
  private minL: number;
  private maxL: number;
  private loss: number;
  delivered = 0;

  constructor(opts: SimNetworkOptions) {
    this.clock = opts.clock ?? new VirtualClock();
    this.rng = opts.rng;
    this.minL = opts.minLatencyMs ?? 10;
    this.maxL = opts.maxLatencyMs ?? 60;
    this.loss = opts.lossRate ?? 0;
  }

  static key(a: PeerAddress): string {
    return `${a.host}|${a.port}`;
  }

  /** A distinct public-looking IPv4 address per index (BEP 42 applies to it). */
  static addressFor(i: number): string {
    return `${11 + ((i >> 16) & 0x7f)}.${(i >> 8) & 0xff}.${i & 0xff}.${1 + (i % 250)}`;
  }

  createTransport(addr: PeerAddress): SimTransport {
    const t = new SimTransport(this, addr);
    this.endpoints.set(SimNetwork.key(addr), t);
    return t;
  }

  /** The endpoint still receives packets but never processes them (a node behind a black hole). */
  setUnresponsive(addr: PeerAddress, on = true): void {
    if (on) this.dead.add(SimNetwork.key(addr));
    else this.dead.delete(SimNetwork.key(addr));
  }

  remove(addr: PeerAddress): void {
    this.endpoints.delete(SimNetwork.key(addr));
  }

  deliver(buf: Buffer, from: PeerAddress, to: PeerAddress): void {
    if (this.loss > 0 && randInt(this.rng, 1_000_000) < this.loss * 1_000_000) return;
    const latency = this.minL + randInt(this.rng, Math.max(1, this.maxL - this.minL + 1));
    const key = SimNetwork.key(to);
    this.clock.setTimeout(() => {
      if (this.dead.has(key)) return;
      const ep = this.endpoints.get(key);
      if (!ep?.cb) return;
      this.delivered++;
      ep.cb(buf, from);
    }, latency);
  }
}

import { DhtNode, type DhtNodeOptions } from './node.js';

export interface SimSwarmOptions {
  nodes: number;
  rng: Rng;
  /** Fraction of nodes made unresponsive after the network formed (default 0). */
  deadFraction?: number;
  minLatencyMs?: number;
  maxLatencyMs?: number;
  lossRate?: number;
  /** Virtual time to let the network settle (bucket refreshes) after all joins (default 0). */
  settleMs?: number;
  node?: Partial<Omit<DhtNodeOptions, 'transport' | 'clock' | 'rng'>>;
}

export interface SimSwarm {
  net: SimNetwork;
  clock: VirtualClock;
  nodes: DhtNode[];
  addrs: PeerAddress[];
  dead: Set<number>;
  /** Indices of live nodes. */
  live: number[];
}

/** Build a DHT of `nodes` nodes joining one by one (each bootstraps from a random earlier node). */
export function buildSimSwarm(opts: SimSwarmOptions): SimSwarm {
  const net = new SimNetwork({ rng: opts.rng, minLatencyMs: opts.minLatencyMs, maxLatencyMs: opts.maxLatencyMs, lossRate: opts.lossRate });
  const clock = net.clock;
  const nodes: DhtNode[] = [];
  const addrs: PeerAddress[] = [];
  for (let i = 0; i < opts.nodes; i++) {
    const addr = { host: SimNetwork.addressFor(i), port: 6881 };
    const transport = net.createTransport(addr);
    const node = new DhtNode({ ...opts.node, transport, clock, rng: opts.rng, externalIp: addr.host });
    node.selfAddrs.add(SimNetwork.key(addr));
    nodes.push(node);
    addrs.push(addr);
    if (i === 0) continue;
    const seeds = [addrs[0]];
    if (i > 1) seeds.push(addrs[1 + randInt(opts.rng, i - 1)]);
    let done = false;
    node.bootstrap(seeds, () => (done = true));
    clock.runUntil(() => done, 60_000);
  }
  if (opts.settleMs) clock.advance(opts.settleMs);
  const dead = new Set<number>();
  const deadCount = Math.floor(opts.nodes * (opts.deadFraction ?? 0));
  while (dead.size < deadCount) {
    const i = randInt(opts.rng, opts.nodes);
    if (dead.has(i)) continue;
    dead.add(i);
    net.setUnresponsive(addrs[i]);
  }
  const live = nodes.map((_, i) => i).filter((i) => !dead.has(i));
  return { net, clock, nodes, addrs, dead, live };
}
