/**
 * Announce scheduling for one torrent over a BEP 12 tier list.
 *
 * - each tier is shuffled once; trackers are tried in order, a tracker that answers moves to the front of its tier,
 *   and the next tier is tried only when every tracker of the previous tier failed;
 * - `started` goes to every tracker the first time it is used, `completed` once (to the tracker in use when
 *   the download finishes), `stopped` on stop() to trackers that saw `started` (best effort, short timeout);
 * - the next announce follows the tracker's interval (floored at `minAnnounceIntervalMs`); manual
 *   announceNow() honours the tracker's `min interval`; when every tracker fails, retries back off exponentially;
 * - problems are reported as events ('error' with a TrackerError naming the tracker, 'warning'), never thrown.
 *
 * Events: 'peers' (PeerAddress[], url), 'announce' (url, AnnounceResponse, event), 'warning' (message, url),
 * 'retry' (delayMs, consecutiveFailures) when every tracker failed, 'error' (TrackerError) — emitted only when someone listens, so a missing listener cannot crash the process.
 */
import { EventEmitter } from 'node:events';
import { systemClock, type Clock, type Timer } from '../clock.js';
import { defaultRandomInt, randomBelow, type RandomInt } from '../picker.js';
import { httpAnnounce, httpScrape } from './http.js';
import { UdpTrackerClient } from './udp.js';
import { TrackerError, type AnnounceEvent, type AnnounceParams, type AnnounceResponse, type ScrapeResult } from './types.js';

/** Longest wait honoured (a huge tracker interval would overflow timers and fire at once). */
const MAX_INTERVAL_MS = 24 * 3600 * 1000;

export interface AnnouncerStats {
  uploaded: number;
  downloaded: number;
  left: number;
}

export interface AnnouncerOptions {
  infoHash: Buffer;
  peerId: Buffer;
  port: number;
  /** BEP 12 announce-list (a single `announce` URL is [[url]]). */
  tiers: string[][];
  getStats: () => AnnouncerStats;
  clock?: Pick<Clock, 'now' | 'setTimeout' | 'clearTimeout'>;
  /** Random integer in [0, n): tier shuffling and the announce key. */
  rng?: RandomInt;
  /** Shared UDP client (one socket per session). If absent, one is created on demand and closed by stop(). */
  udp?: UdpTrackerClient;
  /** Peers asked for per announce (default 50). */
  numwant?: number;
  /** Announce key (default random). */
  key?: number;
  /** Deadline of one announce to one tracker (default 20 s: one 15 s UDP attempt plus a retransmit window). */
  requestTimeoutMs?: number;
  /** Deadline of the `stopped` announce (default 5 s). */
  stopTimeoutMs?: number;
  /** Floor for the tracker's interval (default 30 s) — a hostile or broken tracker cannot make us hammer it. */
  minAnnounceIntervalMs?: number;
  /** First retry delay after every tracker failed (default 15 s), doubling up to retryMaxMs (default 30 min). */
  retryBaseMs?: number;
  retryMaxMs?: number;
}

interface TrackerState {
  startedSent: boolean;
  trackerId?: string;
  minIntervalMs: number;
  lastOkAt?: number;
  lastError?: string;
  response?: AnnounceResponse;
}

/** Status of one tracker, for UIs. */
export interface TrackerStatus {
  url: string;
  tier: number;
  working: boolean;
  lastError?: string;
  lastAnnounceAt?: number;
  seeders?: number;
  leechers?: number;
  peers?: number;
}

export class Announcer extends EventEmitter {
  private readonly opts: AnnouncerOptions;
  private readonly clock: Pick<Clock, 'now' | 'setTimeout' | 'clearTimeout'>;
  private readonly tiers: string[][];
  private readonly state = new Map<string, TrackerState>();
  private readonly key: number;
  private udp: UdpTrackerClient | undefined;
  private ownsUdp = false;
  private timer: Timer | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private abort: AbortController | undefined;
  private started = false;
  private stopped = false;
  private completedPending = false;
  private completedSent = false;
  private failures = 0;
  private lastCycleAt: number | undefined;
  /** Time of the next scheduled announce (ms on the injected clock). */
  nextAnnounceAt: number | undefined;

  constructor(opts: AnnouncerOptions) {
    super();
    if (!Buffer.isBuffer(opts.infoHash) || opts.infoHash.length !== 20) throw new TrackerError('announcer: info_hash must be 20 bytes');
    if (!Buffer.isBuffer(opts.peerId) || opts.peerId.length !== 20) throw new TrackerError('announcer: peer_id must be 20 bytes');
    this.opts = opts;
    this.clock = opts.clock ?? systemClock;
    const rng = opts.rng ?? defaultRandomInt;
    this.key = opts.key ?? randomBelow(rng, 0x100000000) >>> 0;
    this.udp = opts.udp;
    // Dedupe URLs across tiers (first occurrence wins), drop empty tiers, shuffle each tier once (BEP 12).
    const seen = new Set<string>();
    this.tiers = [];
    for (const tier of opts.tiers) {
      const t = tier.map((u) => u.trim()).filter((u) => u.length > 0 && !seen.has(u) && (seen.add(u), true));
      for (let i = t.length - 1; i > 0; i--) {
        const j = randomBelow(rng, i + 1);
        [t[i], t[j]] = [t[j], t[i]];
      }
      if (t.length > 0) this.tiers.push(t);
    }
  }

  /** Current tier order (after shuffling and promotions). */
  get tierList(): string[][] {
    return this.tiers.map((t) => [...t]);
  }

  /** Per-tracker status. */
  status(): TrackerStatus[] {
    const out: TrackerStatus[] = [];
    this.tiers.forEach((t, tier) => {
      for (const url of t) {
        const s = this.state.get(url);
        out.push({
          url,
          tier,
          working: s?.lastOkAt !== undefined && s.lastError === undefined,
          lastError: s?.lastError,
          lastAnnounceAt: s?.lastOkAt,
          seeders: s?.response?.complete,
          leechers: s?.response?.incomplete,
          peers: s?.response?.peers.length,
        });
      }
    });
    return out;
  }

  private st(url: string): TrackerState {
    let s = this.state.get(url);
    if (!s) this.state.set(url, (s = { startedSent: false, minIntervalMs: 0 }));
    return s;
  }

  private emitError(err: TrackerError): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  /** Begin announcing (event=started). Idempotent. */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.trigger();
  }

  /** The download finished: send event=completed (once). */
  complete(): void {
    if (this.completedSent || this.completedPending || this.stopped) return;
    this.completedPending = true;
    if (this.started) this.trigger();
  }

  /** Ask for peers now (honours the tracker's min interval; otherwise waits until it allows). */
  announceNow(): void {
    if (!this.started || this.stopped) return;
    const now = this.clock.now();
    const current = this.tiers.flat().find((u) => this.state.get(u)?.lastOkAt !== undefined);
    const s = current ? this.state.get(current) : undefined;
    const earliest = s?.lastOkAt !== undefined ? s.lastOkAt + s.minIntervalMs : now;
    if (earliest <= now) this.trigger();
    else this.schedule(earliest - now, true);
  }

  private schedule(ms: number, onlyIfSooner = false): void {
    if (this.stopped) return;
    ms = Math.min(ms, MAX_INTERVAL_MS);
    const at = this.clock.now() + ms;
    if (onlyIfSooner && this.nextAnnounceAt !== undefined && this.nextAnnounceAt <= at) return;
    this.clock.clearTimeout(this.timer);
    this.nextAnnounceAt = at;
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      this.nextAnnounceAt = undefined;
      this.trigger();
    }, ms);
    (this.timer as { unref?: () => unknown } | undefined)?.unref?.();
  }

  private trigger(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.nextAnnounceAt = undefined;
    this.running = this.cycle()
      .catch((e) => this.emitError(e instanceof TrackerError ? e : new TrackerError(`announcer: ${(e as Error).message}`)))
      .finally(() => {
        this.running = undefined;
        if (this.again && !this.stopped) {
          this.again = false;
          this.trigger();
        }
      });
  }

  private stats(): AnnouncerStats {
    try {
      const s = this.opts.getStats();
      const fix = (n: number) => (Number.isFinite(n) && n > 0 ? Math.floor(n) : 0);
      return { uploaded: fix(s.uploaded), downloaded: fix(s.downloaded), left: fix(s.left) };
    } catch {
      return { uploaded: 0, downloaded: 0, left: 0 };
    }
  }

  private params(url: string, event: AnnounceEvent | undefined, numwant: number): AnnounceParams {
    return {
      infoHash: this.opts.infoHash,
      peerId: this.opts.peerId,
      port: this.opts.port,
      ...this.stats(),
      event,
      numwant,
      key: this.key,
      trackerId: this.state.get(url)?.trackerId,
    };
  }

  private udpClient(): UdpTrackerClient {
    if (!this.udp) {
      this.udp = new UdpTrackerClient({ clock: this.clock });
      this.ownsUdp = true;
    }
    return this.udp;
  }

  private async send(url: string, params: AnnounceParams, timeoutMs: number, signal?: AbortSignal): Promise<AnnounceResponse> {
    const scheme = url.slice(0, url.indexOf(':')).toLowerCase();
    if (scheme === 'http' || scheme === 'https') return httpAnnounce(url, params, { timeoutMs, signal });
    if (scheme === 'udp') return this.udpClient().announce(url, params, { timeoutMs, signal });
    throw new TrackerError(`unsupported tracker protocol '${scheme || url}'`, url);
  }

  private async cycle(): Promise<void> {
    this.lastCycleAt = this.clock.now();
    const ac = new AbortController();
    this.abort = ac;
    try {
      for (const tier of this.tiers) {
        for (let i = 0; i < tier.length; i++) {
          if (this.stopped) return;
          const url = tier[i];
          const s = this.st(url);
          const event: AnnounceEvent | undefined = !s.startedSent ? 'started' : this.completedPending ? 'completed' : undefined;
          let res: AnnounceResponse;
          try {
            res = await this.send(url, this.params(url, event, this.opts.numwant ?? 50), this.opts.requestTimeoutMs ?? 20000, ac.signal);
          } catch (e) {
            if (this.stopped) return;
            const err = e instanceof TrackerError ? e : new TrackerError((e as Error).message, url);
            s.lastError = err.message;
            this.emitError(err);
            continue;
          }
          if (this.stopped) return;
          // Success: promote within the tier (BEP 12).
          if (i > 0) {
            tier.splice(i, 1);
            tier.unshift(url);
          }
          s.lastError = undefined;
          s.lastOkAt = this.clock.now();
          s.response = res;
          if (event === 'started') s.startedSent = true;
          if (event === 'completed' || (event === 'started' && this.completedPending && this.stats().left === 0)) {
            this.completedPending = false;
            this.completedSent = true;
          }
          if (res.trackerId !== undefined) s.trackerId = res.trackerId;
          s.minIntervalMs = (res.minInterval ?? 0) * 1000;
          this.failures = 0;
          this.emit('announce', url, res, event);
          if (res.warning) this.emit('warning', res.warning, url);
          if (res.peers.length > 0) this.emit('peers', res.peers, url);
          const floor = this.opts.minAnnounceIntervalMs ?? 30000;
          this.schedule(Math.max(floor, res.interval * 1000, s.minIntervalMs));
          if (this.completedPending) this.again = true;
          return;
        }
      }
      if (this.stopped) return;
      this.failures++;
      const base = this.opts.retryBaseMs ?? 15000;
      const max = this.opts.retryMaxMs ?? 30 * 60 * 1000;
      const delay = Math.min(max, base * 2 ** Math.min(this.failures - 1, 30));
      this.schedule(delay);
      this.emit('retry', delay, this.failures);
    } finally {
      if (this.abort === ac) this.abort = undefined;
    }
  }

  /** Stop: cancel timers and in-flight announces, send event=stopped to trackers that saw started. Never rejects. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.nextAnnounceAt = undefined;
    this.abort?.abort(new TrackerError('announcer stopped'));
    await this.running?.catch(() => {});
    const targets = this.tiers.flat().filter((u) => this.state.get(u)?.startedSent);
    const timeoutMs = this.opts.stopTimeoutMs ?? 5000;
    await Promise.all(
      targets.map(async (url) => {
        try {
          await this.send(url, this.params(url, 'stopped', 0), timeoutMs);
          this.emit('announce', url, undefined, 'stopped');
        } catch (e) {
          this.emitError(e instanceof TrackerError ? e : new TrackerError((e as Error).message, url));
        }
      }),
    );
    if (this.ownsUdp) this.udp?.close();
  }

  /** Scrape the first tracker that supports it (working trackers first). Rejects with the last error if all fail. */
  async scrape(opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<ScrapeResult | undefined> {
    const urls = this.tiers.flat();
    urls.sort((a, b) => Number(this.state.get(b)?.lastOkAt !== undefined) - Number(this.state.get(a)?.lastOkAt !== undefined));
    let last: Error | undefined;
    for (const url of urls) {
      const scheme = url.slice(0, url.indexOf(':')).toLowerCase();
      try {
        let r: ScrapeResult[];
        const o = { timeoutMs: opts.timeoutMs ?? this.opts.requestTimeoutMs ?? 20000, signal: opts.signal };
        if (scheme === 'http' || scheme === 'https') r = await httpScrape(url, [this.opts.infoHash], o);
        else if (scheme === 'udp') r = await this.udpClient().scrape(url, [this.opts.infoHash], o);
        else continue;
        return r[0];
      } catch (e) {
        last = e as Error;
      }
    }
    if (last) throw last;
    return undefined;
  }
}
