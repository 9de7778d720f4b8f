/**
 * BEP 11 ut_pex: peer exchange.
 *
 * Sending: every `intervalMs` (default 60 s; never more often) we diff the peers returned by
 * `getPeers()` against what this peer already heard from us and send added/added.f/dropped and
 * added6/added6.f/dropped6, at most 50 added and 50 dropped contacts per message (the rest waits
 * for the next round). Receiving: we decode at most `maxPeersPerMessage` contacts per field,
 * ignore malformed fields and garbage, and emit `'pex-peers'` ({ added, dropped }) on the wire.
 * Private torrents must simply not register this extension (BEP 27).
 */
import { isIPv4, isIPv6 } from 'node:net';
import { decode, encode, isDict, type BencodeDict, type BencodeValue } from '../bencode.js';
import { decodeCompactPeers, decodeCompactPeers6, encodeCompactPeers, encodeCompactPeers6, peerKey, type PeerAddress } from '../compact.js';
import type { WireExtension, WireExtensionFactory } from './extensions.js';
import type { PeerWire } from './peer-wire.js';

export const PEX_FLAG_ENCRYPTION = 0x01;
export const PEX_FLAG_SEED = 0x02;
export const PEX_FLAG_UTP = 0x04;
export const PEX_FLAG_HOLEPUNCH = 0x08;
export const PEX_FLAG_REACHABLE = 0x10;

export interface PexPeer extends PeerAddress {
  /** BEP 11 flags byte (PEX_FLAG_*), 0 when unknown. */
  flags?: number;
}

export interface PexUpdate {
  added: PexPeer[];
  dropped: PeerAddress[];
}

export interface UtPexOptions {
  /** Our currently connected peers (their listen addresses) to advertise. */
  getPeers?: () => Iterable<PexPeer>;
  /** Interval between messages (default 60000; BEP 11 forbids more than one per minute). */
  intervalMs?: number;
  /** Clock (default Date.now). */
  now?: () => number;
  /** Timer factory (default setInterval().unref()); returns a cancel function. Inject for virtual time. */
  setTimer?: (fn: () => void, ms: number) => () => void;
  /** Cap of contacts per message we send, added and dropped each (default 50). */
  maxPerMessage?: number;
  /** Cap of contacts per field we accept from the peer (default 200). */
  maxPeersPerMessage?: number;
  /** Ignore incoming PEX messages that arrive sooner than this after the last accepted one (default 10000; BEP 11 senders wait 60 s). */
  minReceiveIntervalMs?: number;
}

export interface UtPexExtension extends WireExtension {
  /** Send a PEX message now if the interval allows it and there is something to say. Returns whether sent. */
  flush(): boolean;
  /** Number of contacts this peer currently believes we are connected to. */
  readonly advertisedCount: number;
}

export function utPex(opts: UtPexOptions = {}): WireExtensionFactory<UtPexExtension> {
  return (wire: PeerWire) => new UtPex(wire, opts);
}

function defaultTimer(fn: () => void, ms: number): () => void {
  const t = setInterval(fn, ms);
  t.unref();
  return () => clearInterval(t);
}

/** Take up to max*N whole entries of `size` bytes from a compact field. */
function field(dict: BencodeDict, key: string, size: number, max: number): Buffer | undefined {
  const v: BencodeValue | undefined = dict[key];
  if (!(v instanceof Uint8Array)) return undefined;
  const n = Math.min(Math.floor(v.length / size), max);
  return Buffer.from(v.buffer, v.byteOffset, n * size);
}

class UtPex implements UtPexExtension {
  readonly name = 'ut_pex';
  private readonly intervalMs: number;
  private readonly now: () => number;
  private readonly maxPer: number;
  private readonly maxIn: number;
  /** What the peer has been told: key → address. */
  private readonly advertised = new Map<string, PexPeer>();
  private lastSentAt = -Infinity;
  private lastReceivedAt = -Infinity;
  private cancelTimer: (() => void) | undefined;

  constructor(private readonly wire: PeerWire, private readonly opts: UtPexOptions) {
    this.intervalMs = opts.intervalMs ?? 60_000;
    this.now = opts.now ?? Date.now;
    this.maxPer = opts.maxPerMessage ?? 50;
    this.maxIn = opts.maxPeersPerMessage ?? 200;
  }

  get advertisedCount(): number {
    return this.advertised.size;
  }

  onExtendedHandshake(): void {
    if (!this.wire.extensionSupported('ut_pex') || this.cancelTimer || !this.opts.getPeers) return;
    this.flush();
    this.cancelTimer = (this.opts.setTimer ?? defaultTimer)(() => this.flush(), this.intervalMs);
  }

  flush(): boolean {
    if (this.wire.destroyed || !this.opts.getPeers || !this.wire.extensionSupported('ut_pex')) return false;
    const t = this.now();
    if (t - this.lastSentAt < this.intervalMs) return false;
    const self = this.wire.remoteAddress !== undefined && this.wire.remotePort !== undefined
      ? peerKey({ host: this.wire.remoteAddress, port: this.wire.remotePort })
      : undefined;
    const current = new Map<string, PexPeer>();
    for (const p of this.opts.getPeers()) {
      if (!p || typeof p.host !== 'string' || !Number.isInteger(p.port) || p.port <= 0 || p.port > 65535) continue;
      const host = p.host.replace(/^\[|\]$/g, '');
      if (!isIPv4(host) && !isIPv6(host)) continue;
      const key = peerKey({ host, port: p.port });
      if (key === self) continue; // do not tell a peer about itself
      current.set(key, { host, port: p.port, flags: p.flags ?? 0 });
    }
    const added: PexPeer[] = [];
    const dropped: PexPeer[] = [];
    for (const [k, p] of current) {
      if (added.length >= this.maxPer) break;
      if (!this.advertised.has(k)) added.push(p);
    }
    for (const [k, p] of this.advertised) {
      if (dropped.length >= this.maxPer) break;
      if (!current.has(k)) dropped.push(p);
    }
    if (added.length === 0 && dropped.length === 0) return false;
    for (const p of added) this.advertised.set(peerKey(p), p);
    for (const p of dropped) this.advertised.delete(peerKey(p));
    const v4 = (l: PexPeer[]): PexPeer[] => l.filter((p) => isIPv4(p.host));
    const v6 = (l: PexPeer[]): PexPeer[] => l.filter((p) => !isIPv4(p.host));
    const a4 = v4(added), a6 = v6(added), d4 = v4(dropped), d6 = v6(dropped);
    const msg: Record<string, Buffer> = {};
    if (a4.length) {
      msg.added = encodeCompactPeers(a4);
      msg['added.f'] = Buffer.from(a4.map((p) => (p.flags ?? 0) & 0xff));
    }
    if (a6.length) {
      msg.added6 = encodeCompactPeers6(a6);
      msg['added6.f'] = Buffer.from(a6.map((p) => (p.flags ?? 0) & 0xff));
    }
    if (d4.length) msg.dropped = encodeCompactPeers(d4);
    if (d6.length) msg.dropped6 = encodeCompactPeers6(d6);
    this.lastSentAt = t;
    return this.wire.sendExtended('ut_pex', encode(msg));
  }

  onMessage(payload: Buffer): void {
    let dict: BencodeDict;
    try {
      const v = decode(payload, { maxDepth: 4 });
      if (!isDict(v)) return;
      dict = v;
    } catch {
      return; // hostile or broken: ignore
    }
    const max = this.maxIn;
    const added: PexPeer[] = [];
    const dropped: PeerAddress[] = [];
    const withFlags = (list: PeerAddress[], flagsKey: string): void => {
      const f = dict[flagsKey];
      const flags = f instanceof Uint8Array && f.length === list.length ? f : undefined;
      list.forEach((p, i) => added.push({ host: p.host, port: p.port, flags: flags ? flags[i] : 0 }));
    };
    try {
      const a = field(dict, 'added', 6, max);
      if (a) withFlags(decodeCompactPeers(a), 'added.f');
      const a6 = field(dict, 'added6', 18, max);
      if (a6) withFlags(decodeCompactPeers6(a6), 'added6.f');
      const d = field(dict, 'dropped', 6, max);
      if (d) dropped.push(...decodeCompactPeers(d));
      const d6 = field(dict, 'dropped6', 18, max);
      if (d6) dropped.push(...decodeCompactPeers6(d6));
    } catch {
      return;
    }
    if (added.length === 0 && dropped.length === 0) return;
    const t = this.now();
    if (t - this.lastReceivedAt < (this.opts.minReceiveIntervalMs ?? 10_000)) return; // flooding peer
    this.lastReceivedAt = t;
    this.wire.emit('pex-peers', { added, dropped } satisfies PexUpdate);
  }

  onClose(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }
}
