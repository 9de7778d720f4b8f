/**
 * BEP 19 web seeds (GetRight style): an HTTP(S) server holding the torrent's files is one more source of
 * blocks. A web seed takes a whole piece at a time from the picker (it "has" everything), fetches the byte
 * ranges of the files that piece spans with Range requests, and hands the blocks to the torrent, which hashes
 * them like any peer's. Failures back off; a seed whose data fails the hash check twice, or that keeps
 * failing, is dropped for the session.
 */
import type { Metainfo } from './metainfo.js';
import { filesForPiece, pieceSize } from './metainfo.js';

/** One HTTP range read: resolves with exactly `length` bytes or rejects. */
export type RangeFetcher = (url: string, start: number, length: number, signal: AbortSignal) => Promise<Buffer>;

export class WebSeedError extends Error {
  override name = 'WebSeedError';
}

/** Largest body we accept for one request (one piece is what we ask for; libtorrent caps pieces at 16 MiB+). */
const MAX_RANGE_BYTES = 64 * 1024 * 1024;

/** Range GET with node's fetch: 206 with the exact range, or 200 when the range is the whole file. */
export const httpRangeFetcher: RangeFetcher = async (url, start, length, signal) => {
  const res = await fetch(url, { headers: { Range: `bytes=${start}-${start + length - 1}`, 'Accept-Encoding': 'identity' }, signal, redirect: 'follow' });
  if (res.status !== 206 && !(res.status === 200 && start === 0)) {
    await res.body?.cancel().catch(() => {});
    throw new WebSeedError(`${url}: HTTP ${res.status}${res.status === 200 ? ' (server ignores Range)' : ''}`);
  }
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (res.status === 206 && Number.isFinite(declared) && declared !== length) {
    await res.body?.cancel().catch(() => {});
    throw new WebSeedError(`${url}: asked for ${length} bytes, server sends ${declared}`);
  }
  if (!res.body) throw new WebSeedError(`${url}: empty response`);
  // Read at most `length` bytes (a 200 answer may be the whole, larger file: stop once we have our range).
  const out = Buffer.allocUnsafe(length);
  let got = 0;
  const reader = res.body.getReader();
  try {
    while (got < length) {
      const { done, value } = await reader.read();
      if (done) break;
      const n = Math.min(value.length, length - got);
      out.set(value.subarray(0, n), got);
      got += n;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  if (got !== length) throw new WebSeedError(`${url}: body ended after ${got} of ${length} bytes`);
  return out;
};

/** URL of file `fileIndex` on a BEP 19 web seed (`base` ending in '/' names a folder). */
export function webSeedFileUrl(base: string, meta: Metainfo, fileIndex: number): string {
  const single = meta.files.length === 1 && meta.files[0].path.length === 1;
  const parts = meta.files[fileIndex].path.map((p) => encodeURIComponent(p));
  if (single) return base.endsWith('/') ? base + parts[0] : base;
  return (base.endsWith('/') ? base : `${base}/`) + parts.join('/');
}

/** The HTTP reads that make up piece `index`: file ranges, and zero-filled pad-file spans. */
export function pieceRanges(base: string, meta: Metainfo, index: number): { at: number; url?: string; start: number; length: number }[] {
  const pieceStart = index * meta.pieceLength;
  const pieceEnd = pieceStart + pieceSize(meta, index);
  const out: { at: number; url?: string; start: number; length: number }[] = [];
  for (const fi of filesForPiece(meta, index)) {
    const f = meta.files[fi];
    const from = Math.max(pieceStart, f.offset);
    const to = Math.min(pieceEnd, f.offset + f.length);
    if (to <= from) continue;
    out.push({ at: from - pieceStart, url: f.pad ? undefined : webSeedFileUrl(base, meta, fi), start: from - f.offset, length: to - from });
  }
  return out;
}

export interface WebSeedHost {
  /** Reserve a piece for this seed: the blocks to fetch (all of one piece), or none. */
  reservePiece(seedKey: string): { index: number; begin: number; length: number }[];
  /** A fetched block (the torrent hashes and stores it as it does a peer's). */
  deliver(seedKey: string, req: { index: number; begin: number; length: number }, block: Buffer): void;
  /** Give back reserved blocks that were not delivered. */
  release(seedKey: string, reqs: { index: number; begin: number; length: number }[]): void;
  /** Whether downloading still wants pieces. */
  active(): boolean;
  /** Resolves when `bytes` may be downloaded under the download rate limits (charged before the request). */
  throttle?(bytes: number, signal: AbortSignal): Promise<void>;
  log(msg: string): void;
}

export interface WebSeedOptions {
  fetcher?: RangeFetcher;
  /** Per request (default 30 s). */
  timeoutMs?: number;
  /** Backoff timer (the torrent's clock, so tests run in virtual time). */
  setTimer?: (fn: () => void, ms: number) => unknown;
  /** Consecutive failed pieces before the seed is dropped (default 5). */
  maxFailures?: number;
}

/** One web seed's download loop: one piece in flight at a time. */
export class WebSeed {
  readonly key: string;
  private running = false;
  private stopped = false;
  private failures = 0;
  hashFailures = 0;
  downloadedBytes = 0;
  private readonly controller = new AbortController();
  private readonly fetcher: RangeFetcher;

  constructor(
    readonly url: string,
    private readonly meta: Metainfo,
    private readonly host: WebSeedHost,
    private readonly opts: WebSeedOptions = {},
  ) {
    this.key = `web:${url}`;
    this.fetcher = opts.fetcher ?? httpRangeFetcher;
  }

  get disabled(): boolean {
    return this.stopped;
  }

  /** Start (or continue) fetching; a no-op while a piece is in flight or after stop(). */
  kick(): void {
    if (this.running || this.stopped || !this.host.active()) return;
    this.running = true;
    void this.loop().finally(() => {
      this.running = false;
    });
  }

  stop(reason?: string): void {
    if (this.stopped) return;
    this.stopped = true;
    this.controller.abort();
    if (reason) this.host.log(`web seed ${this.url} dropped: ${reason}`);
  }

  /** The torrent reports a piece this seed supplied that failed its hash. */
  onHashFailure(): void {
    if (++this.hashFailures >= 2) this.stop('its data failed the hash check twice');
  }

  private async loop(): Promise<void> {
    while (!this.stopped && this.host.active()) {
      const reqs = this.host.reservePiece(this.key);
      if (reqs.length === 0) return;
      const index = reqs[0].index;
      try {
        await this.host.throttle?.(pieceSize(this.meta, index), this.controller.signal);
        if (this.stopped) throw new WebSeedError('stopped');
        const piece = await this.fetchPiece(index);
        this.failures = 0;
        for (const r of reqs) {
          this.downloadedBytes += r.length;
          this.host.deliver(this.key, r, piece.subarray(r.begin, r.begin + r.length));
        }
      } catch (err) {
        this.host.release(this.key, reqs);
        if (this.stopped) return;
        const max = this.opts.maxFailures ?? 5;
        if (++this.failures >= max) return this.stop(`${max} failed requests in a row, last: ${(err as Error).message}`);
        this.host.log(`web seed ${this.url}: ${(err as Error).message} (retrying)`);
        const ms = Math.min(60_000, 1000 * 2 ** this.failures);
        await new Promise<void>((r) => (this.opts.setTimer ? this.opts.setTimer(r, ms) : setTimeout(r, ms).unref()));
      }
    }
  }

  private async fetchPiece(index: number): Promise<Buffer> {
    const size = pieceSize(this.meta, index);
    if (size > MAX_RANGE_BYTES) throw new WebSeedError(`piece of ${size} bytes is too large for a web seed request`);
    const buf = Buffer.alloc(size); // zeros: pad-file spans stay zero
    const timeout = AbortSignal.timeout(this.opts.timeoutMs ?? 30_000);
    const signal = AbortSignal.any([this.controller.signal, timeout]);
    for (const r of pieceRanges(this.url, this.meta, index)) {
      if (!r.url) continue;
      const data = await this.fetcher(r.url, r.start, r.length, signal);
      if (data.length !== r.length) throw new WebSeedError(`${r.url}: expected ${r.length} bytes, got ${data.length}`);
      data.copy(buf, r.at);
    }
    return buf;
  }
}
