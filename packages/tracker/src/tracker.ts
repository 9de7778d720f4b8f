/**
 * Tracker protocol logic, sans-I/O: an HTTP request target or a UDP datagram in, response bytes out.
 * Sockets live in server.ts. Everything hostile ends in a bencoded `failure reason` (HTTP) or a dropped /
 * size-bounded error packet (UDP); nothing here throws on remote input.
 */
import { encode, encodeIPv6, type EncodableValue } from '@bitorrent/core';
import { ConnectionIds } from './connid.js';
import { SwarmStore, type AnnounceEvent, type SwarmStoreOptions, EVENT_NONE, EVENT_COMPLETED, EVENT_STARTED, EVENT_STOPPED } from './swarm.js';
import { RateLimiter } from './ratelimit.js';
import { InfoHashCache } from './ihcache.js';

export interface TrackerOptions {
  /** Announce interval in seconds (default 1800). Peers expire after 2 × interval unless store.peerTtl is set. */
  interval?: number;
  /** Minimum re-announce interval in seconds (default interval / 2). */
  minInterval?: number;
  /** Peers returned when the client does not ask (default 50). */
  defaultNumwant?: number;
  store?: SwarmStoreOptions;
  /** Only these info-hashes (20-byte latin1 strings) are tracked; others get a failure reason. Null = any. */
  allow?: Set<string> | null;
  /** Private mode: announces must carry one of these passkeys as /<passkey>/announce. */
  passkeys?: Set<string> | null;
  /** Per-IP token bucket: requests per second and burst. 0 or null disables it (default 0: off). */
  rateLimit?: { perSecond: number; burst: number } | null;
  /** Cap on info-hashes in one scrape (default 100). */
  maxScrape?: number;
  now?: () => number;
  random?: () => number;
  randomBytes?: (n: number) => Buffer;
  /** Shared secret for UDP connection ids (cluster workers must share it); default: random keys. */
  connIdSecret?: Buffer;
  /**
   * Called after every stored announce with the raw announce facts (for replication to other workers).
   * `addr` is only valid during the call.
   */
  onAnnounce?: (ih: string, v6: boolean, addr: Buffer, event: AnnounceEvent, seeder: boolean) => void;
}

export interface HttpResult {
  status: number;
  contentType: string;
  body: Buffer;
}

export class TrackerStats {
  httpAnnounces = 0;
  httpScrapes = 0;
  httpFailures = 0;
  httpOther = 0;
  udpConnects = 0;
  udpAnnounces = 0;
  udpScrapes = 0;
  udpErrors = 0;
  udpDropped = 0;
  rateLimited = 0;
}

const TEXT = 'text/plain';
const HEX = '0123456789abcdef';
const UDP_MAGIC_HI = 0x417;
const UDP_MAGIC_LO = 0x27101980;

/** Big-endian u32 at b[o..o+4) (caller checked bounds; cheaper than Buffer#readUInt32BE's checks). */
function u32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}

function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/** Percent-decode s[from, to) into out; returns bytes written or -1 on bad escapes / overflow. */
function pctDecode(s: string, from: number, to: number, out: Buffer, max: number): number {
  let n = 0;
  for (let i = from; i < to; i++) {
    if (n >= max) return -1;
    const c = s.charCodeAt(i);
    if (c === 37) {
      if (i + 2 >= to) return -1;
      const h = hexVal(s.charCodeAt(i + 1));
      const l = hexVal(s.charCodeAt(i + 2));
      if (h < 0 || l < 0) return -1;
      out[n++] = (h << 4) | l;
      i += 2;
    } else {
      if (c > 255) return -1;
      out[n++] = c;
    }
  }
  return n;
}

function parseUint(s: string, from: number, to: number): number {
  if (from >= to || to - from > 20) return -1;
  let v = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    v = v * 10 + c;
  }
  return v;
}

function parseInt32(s: string, from: number, to: number): number {
  if (from < to && s.charCodeAt(from) === 45) {
    const v = parseUint(s, from + 1, to);
    return v < 0 ? -2 : -v;
  }
  return parseUint(s, from, to);
}

/**
 * Parse a dotted IPv4 string into out[off..off+4); returns false if it is not one.
 * Accepts the IPv4-mapped IPv6 form ::ffff:a.b.c.d as IPv4.
 */
export function parseIPv4(s: string, out: Uint8Array, off: number): boolean {
  let i = 0;
  if (s.length > 7 && s.charCodeAt(0) === 58) {
    if (!s.startsWith('::ffff:') || s.indexOf('.') < 0) return false;
    i = 7;
  }
  let part = 0, v = 0, digits = 0;
  for (; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || part === 3) return false;
      out[off + part++] = v;
      v = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      v = v * 10 + (c - 48);
      if (++digits > 3 || v > 255) return false;
    } else return false;
  }
  if (part !== 3 || digits === 0) return false;
  out[off + 3] = v;
  return true;
}

/** Compact-encode a socket address into out[0..6) or out[0..18); returns 6, 18 or 0 (unparseable). */
export function compactAddress(address: string, port: number, out: Buffer): number {
  if (parseIPv4(address, out, 0)) {
    out[4] = port >>> 8;
    out[5] = port & 0xff;
    return 6;
  }
  try {
    encodeIPv6(address, out, 0);
  } catch {
    return 0;
  }
  out[16] = port >>> 8;
  out[17] = port & 0xff;
  return 18;
}

export function hexToInfoHash(hex: string): string {
  const h = hex.trim().toLowerCase();
  if (!/^[0-9a-f]{40}$/.test(h)) throw new Error(`not a 40-character hex info-hash: '${hex.trim().slice(0, 60)}'`);
  return Buffer.from(h, 'hex').toString('latin1');
}

export function infoHashToHex(ih: string): string {
  let s = '';
  for (let i = 0; i < ih.length; i++) {
    const c = ih.charCodeAt(i);
    s += HEX[c >> 4] + HEX[c & 15];
  }
  return s;
}

function failure(reason: string): Buffer {
  return encode({ 'failure reason': reason });
}

export class Tracker {
  readonly store: SwarmStore;
  readonly stats = new TrackerStats();
  readonly interval: number;
  readonly minInterval: number;
  readonly defaultNumwant: number;
  readonly maxScrape: number;
  allow: Set<string> | null;
  passkeys: Set<string> | null;
  readonly connIds: ConnectionIds;
  readonly limiter: RateLimiter | null;
  readonly startedAt: number;
  private readonly now: () => number;
  private readonly ihBuf = Buffer.alloc(20);
  private readonly pidBuf = Buffer.alloc(20);
  private readonly addrBuf = Buffer.alloc(18);
  private out: Buffer;
  /** Views out[0..n) by length n, so a reply needs no new Buffer object (reset by detachOutput). */
  private views: (Buffer | undefined)[] = [];
  /** Last UDP source address and its parsed IP bytes (srcIp[0..srcIpLen), 4 or 16; 0 = unparseable). */
  private srcAddr = '';
  private readonly srcIp = Buffer.alloc(16);
  private srcIpLen = -1;
  /** Info-hash strings of UDP requests, one string object per hash (see ihcache.ts). */
  private readonly ihCache = new InfoHashCache();
  private readonly onAnnounce: NonNullable<TrackerOptions['onAnnounce']> | null;
  /** Request counters summed over all cluster workers, when running clustered (set by the cluster layer). */
  clusterStats: TrackerStats | null = null;

  constructor(opts: TrackerOptions = {}) {
    this.interval = opts.interval ?? 1800;
    if (!Number.isInteger(this.interval) || this.interval < 1) throw new Error(`interval must be a positive integer of seconds`);
    this.minInterval = opts.minInterval ?? Math.max(1, Math.floor(this.interval / 2));
    this.defaultNumwant = opts.defaultNumwant ?? 50;
    this.maxScrape = opts.maxScrape ?? 100;
    this.now = opts.now ?? Date.now;
    this.store = new SwarmStore({ peerTtl: this.interval * 2, now: this.now, random: opts.random, ...opts.store });
    this.allow = opts.allow ?? null;
    this.passkeys = opts.passkeys ?? null;
    this.connIds = new ConnectionIds({ now: this.now, randomBytes: opts.randomBytes, secret: opts.connIdSecret });
    this.onAnnounce = opts.onAnnounce ?? null;
    const rl = opts.rateLimit;
    this.limiter = rl && rl.perSecond > 0 ? new RateLimiter(rl.perSecond, rl.burst, this.now) : null;
    this.startedAt = this.now();
    this.out = Buffer.alloc(256 + this.store.maxNumwant * 24);
  }

  /**
   * Replies are views of one reused output buffer. Call this when a reply is still referenced after the call
   * that produced it (e.g. queued by the socket): later replies then go to a new buffer.
   */
  detachOutput(): void {
    this.out = Buffer.alloc(this.out.length);
    this.views = [];
  }

  /** out[0..n) as a Buffer, reusing the view of that length. */
  private reply(n: number): Buffer {
    let v = this.views[n];
    if (v === undefined) {
      v = this.out.subarray(0, n);
      this.views[n] = v;
    }
    return v;
  }

  /**
   * Compact address of a UDP source into addrBuf (6 or 18 bytes, port from the request); 0 if unparseable.
   * The IP bytes of the last source are cached: consecutive datagrams mostly come from the same address.
   */
  private udpSource(address: string, port: number): number {
    const a = this.addrBuf;
    if (address !== this.srcAddr || this.srcIpLen < 0) {
      const n = compactAddress(address, port, a);
      this.srcAddr = address;
      this.srcIpLen = n === 0 ? 0 : n - 2;
      if (n !== 0) a.copy(this.srcIp, 0, 0, n - 2);
      return n;
    }
    const n = this.srcIpLen;
    if (n === 0) return 0;
    const ip = this.srcIp;
    for (let i = 0; i < n; i++) a[i] = ip[i];
    a[n] = port >>> 8;
    a[n + 1] = port & 0xff;
    return n + 2;
  }

  // ------------------------------------------------------------------ HTTP

  /**
   * Handle one HTTP GET. `target` is the raw request target (path and query, latin1), `ip` the peer's
   * socket address. `wantJson` selects JSON for /stats when the client asked for it.
   */
  http(target: string, ip: string, wantJson = false): HttpResult {
    const q = target.indexOf('?');
    const path = q < 0 ? target : target.slice(0, q);
    let passkey: string | null = null;
    let kind = path;
    if (path !== '/announce' && path !== '/scrape') {
      const m = /^\/([A-Za-z0-9_-]{1,64})\/(announce|scrape)$/.exec(path);
      if (m) {
        passkey = m[1];
        kind = '/' + m[2];
      }
    }
    if (kind === '/announce' || kind === '/scrape') {
      if (this.limiter !== null && !this.limiter.take(ip)) {
        this.stats.rateLimited++;
        return this.fail('rate limit exceeded, slow down');
      }
      if (this.passkeys !== null && (passkey === null || !this.passkeys.has(passkey))) {
        return this.fail(passkey === null ? 'this is a private tracker: announce to /<passkey>/announce' : 'unknown passkey');
      }
      const query = q < 0 ? '' : target.slice(q + 1);
      if (kind === '/announce') return this.httpAnnounce(query, ip);
      return this.httpScrape(query);
    }
    this.stats.httpOther++;
    if (path === '/stats' || path === '/stats.json') {
      const json = wantJson || path === '/stats.json' || /(?:^|&)format=json(?:&|$)/.test(q < 0 ? '' : target.slice(q + 1));
      return json
        ? { status: 200, contentType: 'application/json', body: Buffer.from(JSON.stringify(this.statsObject(), null, 1)) }
        : { status: 200, contentType: 'text/html; charset=utf-8', body: Buffer.from(this.statsHtml()) };
    }
    if (path === '/metrics') return { status: 200, contentType: 'text/plain; version=0.0.4', body: Buffer.from(this.metrics()) };
    if (path === '/') return { status: 200, contentType: TEXT, body: Buffer.from('bitorrent tracker: /announce /scrape /stats /metrics\n') };
    return { status: 404, contentType: TEXT, body: Buffer.from('not found\n') };
  }

  private fail(reason: string): HttpResult {
    this.stats.httpFailures++;
    return { status: 200, contentType: TEXT, body: failure(reason) };
  }

  private httpAnnounce(query: string, ip: string): HttpResult {
    let ihLen = -1, pidLen = -1, port = -1, numwant = this.defaultNumwant, compact = 1, seeder = false;
    let event: AnnounceEvent = EVENT_NONE;
    const len = query.length;
    let i = 0;
    while (i < len) {
      let amp = query.indexOf('&', i);
      if (amp < 0) amp = len;
      const eq = query.indexOf('=', i);
      if (eq > i && eq < amp) {
        const klen = eq - i;
        const v = eq + 1;
        // Dispatch on key length first, then the exact key.
        if (klen === 9 && query.startsWith('info_hash', i)) ihLen = pctDecode(query, v, amp, this.ihBuf, 20);
        else if (klen === 7 && query.startsWith('peer_id', i)) pidLen = pctDecode(query, v, amp, this.pidBuf, 20);
        else if (klen === 4 && query.startsWith('port', i)) port = parseUint(query, v, amp);
        else if (klen === 4 && query.startsWith('left', i)) seeder = amp - v === 1 && query.charCodeAt(v) === 48;
        else if (klen === 7 && query.startsWith('numwant', i)) {
          const n = parseInt32(query, v, amp);
          if (n >= 0) numwant = n;
          else if (n !== -1) return this.fail('invalid numwant');
        } else if (klen === 7 && query.startsWith('compact', i)) compact = amp - v === 1 && query.charCodeAt(v) === 48 ? 0 : 1;
        else if (klen === 5 && query.startsWith('event', i)) {
          const e = query.slice(v, amp);
          if (e === 'started') event = EVENT_STARTED;
          else if (e === 'completed') event = EVENT_COMPLETED;
          else if (e === 'stopped') event = EVENT_STOPPED;
          else if (e !== '' && e !== 'empty' && e !== 'paused') return this.fail(`invalid event '${e.slice(0, 20)}'`);
        }
        // key, trackerid, uploaded, downloaded, ip, ipv4, ipv6, no_peer_id, supportcrypto, corrupt... accepted and ignored.
      }
      i = amp + 1;
    }
    if (ihLen !== 20) return this.fail(ihLen < 0 && query.indexOf('info_hash=') < 0 ? 'missing info_hash' : 'info_hash must be 20 bytes');
    if (pidLen !== 20) return this.fail(pidLen < 0 && query.indexOf('peer_id=') < 0 ? 'missing peer_id' : 'peer_id must be 20 bytes');
    if (port < 1 || port > 65535) return this.fail('missing or invalid port');
    const ih = this.ihBuf.toString('latin1', 0, 20);
    if (this.allow !== null && !this.allow.has(ih)) return this.fail('info_hash not allowed on this tracker');
    const alen = compactAddress(ip, port, this.addrBuf);
    if (alen === 0) return this.fail('cannot determine your address');
    this.stats.httpAnnounces++;
    const r = this.store.announce(ih, alen === 18, this.addrBuf, 0, event, seeder, numwant, true);
    if (this.onAnnounce !== null) this.onAnnounce(ih, alen === 18, this.addrBuf, event, seeder);
    const out = this.out;
    let head = `d8:completei${r.complete}e10:downloadedi${r.downloaded}e10:incompletei${r.incomplete}e8:intervali${this.interval}e12:min intervali${this.minInterval}e5:peers`;
    if (compact === 1) {
      head += `${r.peers4Len}:`;
      let n = out.write(head, 0, 'latin1');
      n += r.peers4.copy(out, n, 0, r.peers4Len);
      if (r.peers6Len > 0) {
        n += out.write(`6:peers6${r.peers6Len}:`, n, 'latin1');
        n += r.peers6.copy(out, n, 0, r.peers6Len);
      }
      out[n++] = 101; // 'e'
      return { status: 200, contentType: TEXT, body: out.subarray(0, n) };
    }
    // Non-compact (BEP 3 dictionary model). Peer ids are not stored (memory budget), so entries carry ip and port.
    const list: EncodableValue[] = [];
    for (let k = 0; k < r.peers4Len; k += 6) {
      const p = r.peers4;
      list.push({ ip: `${p[k]}.${p[k + 1]}.${p[k + 2]}.${p[k + 3]}`, port: (p[k + 4] << 8) | p[k + 5] });
    }
    for (let k = 0; k < r.peers6Len; k += 18) {
      const p = r.peers6;
      const g: string[] = [];
      for (let j = 0; j < 16; j += 2) g.push(((p[k + j] << 8) | p[k + j + 1]).toString(16));
      list.push({ ip: g.join(':'), port: (p[k + 16] << 8) | p[k + 17] });
    }
    const body = encode({
      complete: r.complete,
      downloaded: r.downloaded,
      incomplete: r.incomplete,
      interval: this.interval,
      'min interval': this.minInterval,
      peers: list,
    });
    return { status: 200, contentType: TEXT, body };
  }

  private httpScrape(query: string): HttpResult {
    const hashes: string[] = [];
    const len = query.length;
    let i = 0;
    while (i < len) {
      let amp = query.indexOf('&', i);
      if (amp < 0) amp = len;
      if (query.startsWith('info_hash=', i)) {
        const n = pctDecode(query, i + 10, amp, this.ihBuf, 20);
        if (n !== 20) return this.fail('info_hash must be 20 bytes');
        if (hashes.length >= this.maxScrape) return this.fail(`too many info_hash values (max ${this.maxScrape})`);
        hashes.push(this.ihBuf.toString('latin1', 0, 20));
      }
      i = amp + 1;
    }
    if (hashes.length === 0) return this.fail('full scrape is not supported: pass info_hash');
    this.stats.httpScrapes++;
    const files = new Map<Uint8Array, EncodableValue>();
    for (const ih of hashes) {
      if (this.allow !== null && !this.allow.has(ih)) continue;
      const s = this.store.scrape(ih);
      files.set(Buffer.from(ih, 'latin1'), { complete: s.complete, downloaded: s.downloaded, incomplete: s.incomplete });
    }
    return { status: 200, contentType: TEXT, body: encode({ files }) };
  }

  // ------------------------------------------------------------------ UDP (BEP 15)

  /**
   * Handle one datagram from address:port. Returns the reply (a view into a reused buffer, send it before the
   * next call) or null to stay silent. Never answers an unverified source with more bytes than it sent.
   */
  udp(msg: Buffer, address: string, port: number): Buffer | null {
    const len = msg.length;
    if (len < 16) {
      this.stats.udpDropped++;
      return null;
    }
    if (this.limiter !== null && !this.limiter.take(address)) {
      this.stats.rateLimited++;
      this.stats.udpDropped++;
      return null;
    }
    const out = this.out;
    const action = u32(msg, 8);
    if (action === 0) {
      if (u32(msg, 0) !== UDP_MAGIC_HI || u32(msg, 4) !== UDP_MAGIC_LO) {
        this.stats.udpDropped++;
        return null;
      }
      this.stats.udpConnects++;
      put32(out, 0, 0);
      out[4] = msg[12]; out[5] = msg[13]; out[6] = msg[14]; out[7] = msg[15];
      this.connIds.issue(address, out, 8);
      return this.reply(16);
    }
    if (!this.connIds.verify(address, msg, 0)) return this.udpError(msg, 'connection id mismatch');
    if (action === 1) {
      if (len < 98) return this.udpError(msg, 'malformed announce');
      let passkey: string | null = null;
      if (this.passkeys !== null) {
        passkey = bep41Passkey(msg);
        if (passkey === null || !this.passkeys.has(passkey)) return this.udpError(msg, 'unknown passkey');
      }
      const ih = this.ihCache.get(msg, 16);
      if (this.allow !== null && !this.allow.has(ih)) return this.udpError(msg, 'info_hash not allowed');
      const cport = (msg[96] << 8) | msg[97];
      if (cport === 0) return this.udpError(msg, 'invalid port');
      const alen = this.udpSource(address, cport);
      if (alen === 0) return null;
      const ev = u32(msg, 80);
      const event = (ev <= 3 ? ev : 0) as AnnounceEvent;
      const seeder = u32(msg, 64) === 0 && u32(msg, 68) === 0;
      const nw = u32(msg, 92) | 0;
      const numwant = nw < 0 ? this.defaultNumwant : nw;
      this.stats.udpAnnounces++;
      // Peers go straight into the reply after its 20-byte header.
      const r = this.store.announce(ih, alen === 18, this.addrBuf, 0, event, seeder, numwant, false, out, 20);
      if (this.onAnnounce !== null) this.onAnnounce(ih, alen === 18, this.addrBuf, event, seeder);
      put32(out, 0, 1);
      out[4] = msg[12]; out[5] = msg[13]; out[6] = msg[14]; out[7] = msg[15];
      put32(out, 8, this.interval);
      put32(out, 12, r.incomplete);
      put32(out, 16, r.complete);
      return this.reply(20 + (alen === 6 ? r.peers4Len : r.peers6Len));
    }
    if (action === 2) {
      // BEP 41 options cannot be told apart from info-hashes in a scrape, so private trackers scrape over HTTP only.
      if (this.passkeys !== null) return this.udpError(msg, 'private tracker: scrape over HTTP');
      const count = Math.min(Math.floor((len - 16) / 20), 74);
      if (count === 0) return this.udpError(msg, 'no info_hash');
      this.stats.udpScrapes++;
      out.writeUInt32BE(2, 0);
      out[4] = msg[12]; out[5] = msg[13]; out[6] = msg[14]; out[7] = msg[15];
      let n = 8;
      for (let k = 0; k < count; k++) {
        const ih = this.ihCache.get(msg, 16 + k * 20);
        const s = this.allow !== null && !this.allow.has(ih) ? { complete: 0, incomplete: 0, downloaded: 0 } : this.store.scrape(ih);
        out.writeUInt32BE(s.complete, n);
        out.writeUInt32BE(s.downloaded, n + 4);
        out.writeUInt32BE(s.incomplete, n + 8);
        n += 12;
      }
      return this.reply(n);
    }
    return this.udpError(msg, 'unknown action');
  }

  /** Error packet, only if it is no larger than the request (no amplification, whatever the source). */
  private udpError(msg: Buffer, text: string): Buffer | null {
    const out = this.out;
    const n = 8 + out.write(text, 8, 'latin1');
    if (n > msg.length) {
      this.stats.udpDropped++;
      return null;
    }
    this.stats.udpErrors++;
    out.writeUInt32BE(3, 0);
    out[4] = msg[12]; out[5] = msg[13]; out[6] = msg[14]; out[7] = msg[15];
    return this.reply(n);
  }

  // ------------------------------------------------------------------ housekeeping and introspection

  sweep(): number {
    return this.store.sweep();
  }

  statsObject(): Record<string, number> {
    const st = this.store;
    let seeders = 0;
    for (const sw of st.swarms.values()) seeders += sw.seeders;
    const mem = process.memoryUsage();
    const c = this.clusterStats ?? this.stats;
    return {
      uptime_seconds: Math.floor((this.now() - this.startedAt) / 1000),
      torrents: st.swarms.size,
      peers: st.totalPeers,
      seeders,
      leechers: st.totalPeers - seeders,
      peer_storage_bytes: st.storageBytes(),
      evicted_swarms: st.evictedSwarms,
      rejected_peers: st.rejectedPeers,
      http_announces: c.httpAnnounces,
      http_scrapes: c.httpScrapes,
      http_failures: c.httpFailures,
      udp_connects: c.udpConnects,
      udp_announces: c.udpAnnounces,
      udp_scrapes: c.udpScrapes,
      udp_errors: c.udpErrors,
      udp_dropped: c.udpDropped,
      rate_limited: c.rateLimited,
      heap_used_bytes: mem.heapUsed,
      rss_bytes: mem.rss,
    };
  }

  statsHtml(): string {
    const s = this.statsObject();
    const rows = Object.entries(s)
      .map(([k, v]) => `<tr><th>${k.replace(/_/g, ' ')}</th><td>${v}</td></tr>`)
      .join('\n');
    return `<!doctype html><html><head><meta charset="utf-8"><title>bitorrent tracker</title></head><body><h1>bitorrent tracker</h1><table>\n${rows}\n</table><p>JSON: /stats?format=json · Prometheus: /metrics</p></body></html>\n`;
  }

  metrics(): string {
    const s = this.statsObject();
    const lines: string[] = [];
    const g = (name: string, help: string, type: 'gauge' | 'counter', v: number, labels = ''): void => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name}${labels} ${v}`);
    };
    g('bitorrent_tracker_torrents', 'Swarms tracked', 'gauge', s.torrents);
    g('bitorrent_tracker_peers', 'Peers stored', 'gauge', s.peers);
    g('bitorrent_tracker_seeders', 'Seeders stored', 'gauge', s.seeders);
    g('bitorrent_tracker_leechers', 'Leechers stored', 'gauge', s.leechers);
    g('bitorrent_tracker_peer_storage_bytes', 'Bytes of typed-array peer storage', 'gauge', s.peer_storage_bytes);
    g('bitorrent_tracker_evicted_swarms_total', 'Swarms evicted by the global cap', 'counter', s.evicted_swarms);
    g('bitorrent_tracker_rejected_peers_total', 'Peers not stored because of caps', 'counter', s.rejected_peers);
    lines.push('# HELP bitorrent_tracker_requests_total Requests handled', '# TYPE bitorrent_tracker_requests_total counter');
    lines.push(`bitorrent_tracker_requests_total{proto="http",kind="announce"} ${s.http_announces}`);
    lines.push(`bitorrent_tracker_requests_total{proto="http",kind="scrape"} ${s.http_scrapes}`);
    lines.push(`bitorrent_tracker_requests_total{proto="http",kind="failure"} ${s.http_failures}`);
    lines.push(`bitorrent_tracker_requests_total{proto="udp",kind="connect"} ${s.udp_connects}`);
    lines.push(`bitorrent_tracker_requests_total{proto="udp",kind="announce"} ${s.udp_announces}`);
    lines.push(`bitorrent_tracker_requests_total{proto="udp",kind="scrape"} ${s.udp_scrapes}`);
    lines.push(`bitorrent_tracker_requests_total{proto="udp",kind="error"} ${s.udp_errors}`);
    lines.push(`bitorrent_tracker_requests_total{proto="udp",kind="dropped"} ${s.udp_dropped}`);
    g('bitorrent_tracker_rate_limited_total', 'Requests refused by the per-IP rate limit', 'counter', s.rate_limited);
    g('bitorrent_tracker_uptime_seconds', 'Seconds since start', 'gauge', s.uptime_seconds);
    g('process_resident_memory_bytes', 'Resident set size', 'gauge', s.rss_bytes);
    g('nodejs_heap_used_bytes', 'V8 heap used', 'gauge', s.heap_used_bytes);
    return lines.join('\n') + '\n';
  }
}

/** Extract the passkey from BEP 41 URL-data options ("/<passkey>/announce"), or null. */
export function bep41Passkey(msg: Buffer): string | null {
  let url = '';
  let i = 98;
  while (i < msg.length) {
    const t = msg[i];
    if (t === 0) break;
    if (t === 1) {
      i++;
      continue;
    }
    if (i + 1 >= msg.length) break;
    const l = msg[i + 1];
    if (i + 2 + l > msg.length) break;
    if (t === 2) url += msg.toString('latin1', i + 2, i + 2 + l);
    i += 2 + l;
  }
  const m = /^\/([A-Za-z0-9_-]{1,64})\/announce(?:\?.*)?$/.exec(url);
  return m ? m[1] : null;
}

export { EVENT_NONE, EVENT_COMPLETED, EVENT_STARTED, EVENT_STOPPED };
