/**
 * UDP tracker client (BEP 15). One `UdpTrackerClient` owns one UDP socket per address family and multiplexes
 * every torrent's requests over it by transaction id.
 *
 * - connect handshake (magic 0x41727101980), connection ids cached 60 s per tracker address, concurrent
 *   connects to the same tracker share one exchange;
 * - retransmission after timeoutMs·2^n (BEP 15: 15 s·2^n; configurable, tests use ms), n ≤ maxRetries;
 * - replies are accepted only from the address/port the request went to, with a pending transaction id and the
 *   expected action (anything else — spoofed, stale, mismatched — is silently dropped);
 * - action 3 (error) → TrackerError carrying the tracker's message;
 * - announce replies carry 6-byte peers over IPv4 and 18-byte peers over IPv6 (by the tracker's address family).
 */
import dgram from 'node:dgram';
import { lookup as dnsLookup } from 'node:dns/promises';
import { decodeCompactPeers, decodeCompactPeers6 } from '../compact.js';
import { systemClock, type Clock, type Timer } from '../clock.js';
import { defaultRandomInt, randomBelow, type RandomInt } from '../picker.js';
import { checkAnnounceParams, TrackerError, type AnnounceParams, type AnnounceResponse, type TrackerRequestOptions, type ScrapeResult } from './types.js';

const PROTOCOL_ID = 0x41727101980n;
const ACTION_CONNECT = 0, ACTION_ANNOUNCE = 1, ACTION_SCRAPE = 2, ACTION_ERROR = 3;
const EVENTS = { none: 0, completed: 1, started: 2, stopped: 3 } as const;
/** BEP 15: at most ~74 info-hashes fit in one scrape packet. */
const SCRAPE_BATCH = 74;

export interface UdpTrackerClientOptions {
  /** Random integer in [0, n) for transaction ids (default Math.random based). */
  rng?: RandomInt;
  clock?: Pick<Clock, 'now' | 'setTimeout' | 'clearTimeout'>;
  /** First retransmit timeout; doubles per attempt (BEP 15: 15000). */
  timeoutMs?: number;
  /** Retransmissions after the first attempt (BEP 15 allows 8; default 3 → 15+30+60+120 s). */
  maxRetries?: number;
  /** Connection-id lifetime (BEP 15: 60 s). */
  connectionTtlMs?: number;
  /** Name resolution (default dns.promises.lookup). */
  lookup?: (host: string) => Promise<{ address: string; family: number }>;
  /** Local address for the IPv4 socket (default all interfaces). */
  bindAddress4?: string;
}

interface Target {
  url: string;
  address: string;
  port: number;
  family: 4 | 6;
}

interface Pending {
  target: Target;
  action: number;
  resolve: (msg: Buffer) => void;
  reject: (err: Error) => void;
}

class AttemptTimeout extends Error {}

/** Parse udp://host:port[/path] (exported for tests). */
export function parseUdpUrl(url: string): { host: string; port: number } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TrackerError('invalid tracker URL', url);
  }
  if (u.protocol !== 'udp:') throw new TrackerError(`not a udp:// URL`, url);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port);
  if (!host) throw new TrackerError('missing host', url);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TrackerError('missing or invalid port', url);
  return { host, port };
}

export class UdpTrackerClient {
  private readonly rng: RandomInt;
  private readonly clock: Pick<Clock, 'now' | 'setTimeout' | 'clearTimeout'>;
  private readonly timeoutMs: number;
  private readonly maxRetries: number;
  private readonly ttl: number;
  private readonly lookup: (host: string) => Promise<{ address: string; family: number }>;
  private readonly bind4?: string;
  private sockets: { 4?: dgram.Socket; 6?: dgram.Socket } = {};
  private ready: { 4?: Promise<dgram.Socket>; 6?: Promise<dgram.Socket> } = {};
  private readonly pending = new Map<number, Pending>();
  private readonly connIds = new Map<string, { id: Buffer; expires: number }>();
  private readonly connecting = new Map<string, Promise<Buffer>>();
  private closed = false;
  private readonly lifetime = new AbortController();

  constructor(opts: UdpTrackerClientOptions = {}) {
    this.rng = opts.rng ?? defaultRandomInt;
    this.clock = opts.clock ?? systemClock;
    this.timeoutMs = opts.timeoutMs ?? 15000;
    this.maxRetries = opts.maxRetries ?? 3;
    this.ttl = opts.connectionTtlMs ?? 60000;
    this.lookup = opts.lookup ?? ((h) => dnsLookup(h));
    this.bind4 = opts.bindAddress4;
  }

  /** Local port of the IPv4 socket (after first use), for diagnostics and tests. */
  get localPort4(): number | undefined {
    try {
      return this.sockets[4]?.address().port;
    } catch {
      return undefined;
    }
  }

  private socket(family: 4 | 6): Promise<dgram.Socket> {
    const existing = this.ready[family];
    if (existing) return existing;
    const p = new Promise<dgram.Socket>((resolve, reject) => {
      const s = dgram.createSocket({ type: family === 4 ? 'udp4' : 'udp6' });
      const onError = (e: Error) => {
        delete this.ready[family];
        reject(new TrackerError(`cannot open UDP socket: ${e.message}`));
      };
      s.once('error', onError);
      s.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
      s.bind({ port: 0, address: family === 4 ? this.bind4 : undefined }, () => {
        s.off('error', onError);
        // Later socket errors (ICMP-induced etc.) must not crash the process; requests time out instead.
        s.on('error', () => {});
        this.sockets[family] = s;
        this.refresh();
        resolve(s);
      });
    });
    this.ready[family] = p;
    return p;
  }

  /** Keep the process alive only while requests are pending. */
  private refresh(): void {
    for (const s of [this.sockets[4], this.sockets[6]]) {
      if (!s) continue;
      if (this.pending.size > 0) s.ref();
      else s.unref();
    }
  }

  private onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (msg.length < 8) return;
    const action = msg.readUInt32BE(0);
    const tid = msg.readUInt32BE(4);
    const p = this.pending.get(tid);
    if (!p) return;
    if (rinfo.port !== p.target.port || !sameAddress(rinfo.address, p.target.address)) return;
    if (action === ACTION_ERROR) {
      this.pending.delete(tid);
      this.refresh();
      this.connIds.delete(keyOf(p.target));
      const text = msg.subarray(8).toString('utf8').replace(/\0+$/, '') || 'unspecified error';
      p.reject(new TrackerError(text, p.target.url, true));
      return;
    }
    if (action !== p.action) return;
    this.pending.delete(tid);
    this.refresh();
    p.resolve(msg);
  }

  private newTid(): number {
    for (;;) {
      const t = randomBelow(this.rng, 0x100000000) >>> 0;
      if (!this.pending.has(t)) return t;
    }
  }

  /** Send one packet and wait for the matching reply, at most `ms`. */
  private async transact(target: Target, tid: number, packet: Buffer, action: number, ms: number, signal: AbortSignal): Promise<Buffer> {
    const sock = await this.socket(target.family);
    if (this.closed) throw new TrackerError('UDP tracker client closed', target.url);
    return new Promise<Buffer>((resolve, reject) => {
      let timer: Timer | undefined;
      const done = () => {
        this.clock.clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        if (this.pending.get(tid)?.target === target) this.pending.delete(tid);
        this.refresh();
      };
      const onAbort = () => {
        done();
        reject(signal.reason instanceof Error ? signal.reason : new TrackerError('aborted', target.url));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      this.pending.set(tid, {
        target,
        action,
        resolve: (m) => {
          done();
          resolve(m);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      });
      this.refresh();
      timer = this.clock.setTimeout(() => {
        done();
        reject(new AttemptTimeout());
      }, ms);
      sock.send(packet, target.port, target.address, (err) => {
        if (err && this.pending.get(tid)?.target === target) {
          done();
          reject(new TrackerError(`send failed: ${err.message}`, target.url));
        }
      });
    });
  }

  /** Connection id for the target. The connect exchange is shared by concurrent callers, so it is not tied to any
   * one caller's signal; each caller stops waiting on its own abort. */
  private async connectionId(target: Target, ms: number, signal: AbortSignal): Promise<Buffer> {
    const key = keyOf(target);
    const cached = this.connIds.get(key);
    if (cached && cached.expires > this.clock.now()) return cached.id;
    let inflight = this.connecting.get(key);
    if (!inflight) {
      const tid = this.newTid();
      const pkt = Buffer.alloc(16);
      pkt.writeBigUInt64BE(PROTOCOL_ID, 0);
      pkt.writeUInt32BE(ACTION_CONNECT, 8);
      pkt.writeUInt32BE(tid, 12);
      inflight = this.transact(target, tid, pkt, ACTION_CONNECT, ms, this.lifetime.signal).then((msg) => {
        if (msg.length < 16) throw new TrackerError(`connect reply too short (${msg.length} bytes)`, target.url);
        const id = Buffer.from(msg.subarray(8, 16));
        this.connIds.set(key, { id, expires: this.clock.now() + this.ttl });
        return id;
      });
      const p = inflight;
      this.connecting.set(key, p);
      p.finally(() => {
        if (this.connecting.get(key) === p) this.connecting.delete(key);
      }).catch(() => {});
    }
    return raceAbort(inflight, signal, target.url);
  }

  /** connect (if needed) + one request, with BEP 15 retransmission; honours an overall deadline. */
  private async exchange(url: string, action: number, body: Buffer, opts: TrackerRequestOptions): Promise<{ msg: Buffer; target: Target }> {
    if (this.closed) throw new TrackerError('UDP tracker client closed', url);
    const { host, port } = parseUdpUrl(url);
    const ac = new AbortController();
    const onOuterAbort = () => ac.abort(new TrackerError('request aborted', url));
    if (opts.signal?.aborted) throw new TrackerError('request aborted', url);
    opts.signal?.addEventListener('abort', onOuterAbort, { once: true });
    const deadline = opts.timeoutMs !== undefined
      ? this.clock.setTimeout(() => ac.abort(new TrackerError(`timed out after ${opts.timeoutMs} ms`, url)), opts.timeoutMs)
      : undefined;
    try {
      let resolved: { address: string; family: number };
      try {
        resolved = await this.lookup(host);
      } catch (e) {
        throw new TrackerError(`cannot resolve ${host}: ${(e as Error).message}`, url);
      }
      if (ac.signal.aborted) throw ac.signal.reason;
      const target: Target = { url, address: resolved.address, port, family: resolved.family === 6 ? 6 : 4 };
      for (let n = 0; ; n++) {
        const ms = this.timeoutMs * 2 ** n;
        try {
          const connId = await this.connectionId(target, ms, ac.signal);
          const tid = this.newTid();
          const head = Buffer.alloc(16);
          connId.copy(head, 0);
          head.writeUInt32BE(action, 8);
          head.writeUInt32BE(tid, 12);
          const msg = await this.transact(target, tid, Buffer.concat([head, body]), action, ms, ac.signal);
          return { msg, target };
        } catch (e) {
          if (!(e instanceof AttemptTimeout)) throw e;
          if (n >= this.maxRetries) throw new TrackerError(`no reply after ${n + 1} attempts`, url);
        }
      }
    } finally {
      this.clock.clearTimeout(deadline);
      opts.signal?.removeEventListener('abort', onOuterAbort);
    }
  }

  async announce(url: string, params: AnnounceParams, opts: TrackerRequestOptions = {}): Promise<AnnounceResponse> {
    checkAnnounceParams(params);
    const body = Buffer.alloc(82);
    params.infoHash.copy(body, 0);
    params.peerId.copy(body, 20);
    body.writeBigUInt64BE(BigInt(params.downloaded), 40);
    body.writeBigUInt64BE(BigInt(params.left), 48);
    body.writeBigUInt64BE(BigInt(params.uploaded), 56);
    body.writeUInt32BE(EVENTS[params.event ?? 'none'], 64);
    body.writeUInt32BE(0, 68); // IP: default (the sender's)
    body.writeUInt32BE((params.key ?? 0) >>> 0, 72);
    body.writeInt32BE(params.numwant ?? -1, 76);
    body.writeUInt16BE(params.port, 80);
    const { msg, target } = await this.exchange(url, ACTION_ANNOUNCE, body, opts);
    if (msg.length < 20) throw new TrackerError(`announce reply too short (${msg.length} bytes)`, url);
    const stride = target.family === 6 ? 18 : 6;
    const raw = msg.subarray(20);
    if (raw.length % stride !== 0) throw new TrackerError(`announce reply peer list of ${raw.length} bytes is not a multiple of ${stride}`, url);
    return {
      interval: msg.readUInt32BE(8),
      incomplete: msg.readUInt32BE(12),
      complete: msg.readUInt32BE(16),
      peers: stride === 18 ? decodeCompactPeers6(raw) : decodeCompactPeers(raw),
    };
  }

  async scrape(url: string, infoHashes: Buffer[], opts: TrackerRequestOptions = {}): Promise<ScrapeResult[]> {
    for (const h of infoHashes) if (!Buffer.isBuffer(h) || h.length !== 20) throw new TrackerError('info_hash must be 20 bytes', url);
    const out: ScrapeResult[] = [];
    for (let i = 0; i < infoHashes.length; i += SCRAPE_BATCH) {
      const batch = infoHashes.slice(i, i + SCRAPE_BATCH);
      const { msg } = await this.exchange(url, ACTION_SCRAPE, Buffer.concat(batch), opts);
      for (let k = 0; k < batch.length && 8 + 12 * (k + 1) <= msg.length; k++) {
        const o = 8 + 12 * k;
        out.push({ infoHash: batch[k], complete: msg.readUInt32BE(o), downloaded: msg.readUInt32BE(o + 4), incomplete: msg.readUInt32BE(o + 8) });
      }
    }
    return out;
  }

  /** Close the sockets; pending requests reject. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const err = new TrackerError('UDP tracker client closed');
    this.lifetime.abort(err);
    for (const [tid, p] of this.pending) {
      this.pending.delete(tid);
      p.reject(err);
    }
    for (const s of [this.sockets[4], this.sockets[6]]) {
      try {
        s?.close();
      } catch {
        /* already closed */
      }
    }
    this.sockets = {};
  }
}

function raceAbort<T>(p: Promise<T>, signal: AbortSignal, url: string): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason instanceof Error ? signal.reason : new TrackerError('aborted', url));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason instanceof Error ? signal.reason : new TrackerError('aborted', url));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

function keyOf(t: Target): string {
  return `${t.family === 6 ? `[${t.address}]` : t.address}:${t.port}`;
}

function sameAddress(a: string, b: string): boolean {
  if (a === b) return true;
  const strip = (s: string) => s.replace(/^::ffff:/i, '').replace(/%.*$/, '').toLowerCase();
  return strip(a) === strip(b);
}
