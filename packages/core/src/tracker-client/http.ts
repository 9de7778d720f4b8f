/**
 * HTTP(S) tracker client: BEP 3 announce, BEP 23 compact peers, BEP 7 `peers6`, BEP 48 scrape.
 * Hostile-input rules: response body capped (2 MiB), ≤ 3 redirects (http/https only), overall timeout,
 * every malformed response becomes a TrackerError naming the tracker.
 */
import http from 'node:http';
import https from 'node:https';
import { decode, isDict, type BencodeDict, type BencodeValue } from '../bencode.js';
import { decodeCompactPeers, decodeCompactPeers6, type PeerAddress } from '../compact.js';
import { checkAnnounceParams, TrackerError, type AnnounceParams, type AnnounceResponse, type TrackerRequestOptions, type ScrapeResult } from './types.js';

export const MAX_TRACKER_RESPONSE = 2 * 1024 * 1024;
const MAX_REDIRECTS = 3;
const USER_AGENT = 'bitorrent/0.1';

/** Percent-encode raw bytes for a query string (unreserved characters kept, BEP 3). */
export function percentEncodeBytes(b: Uint8Array): string {
  let s = '';
  for (const c of b) {
    if ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e) {
      s += String.fromCharCode(c);
    } else {
      s += '%' + (c < 16 ? '0' : '') + c.toString(16).toUpperCase();
    }
  }
  return s;
}

function appendQuery(url: string, query: string): string {
  const hash = url.indexOf('#');
  const base = hash >= 0 ? url.slice(0, hash) : url;
  const sep = base.includes('?') ? (base.endsWith('?') || base.endsWith('&') ? '' : '&') : '?';
  return base + sep + query;
}

/** Build the full announce URL (exported for tests). */
export function buildAnnounceUrl(url: string, p: AnnounceParams): string {
  const q = [
    `info_hash=${percentEncodeBytes(p.infoHash)}`,
    `peer_id=${percentEncodeBytes(p.peerId)}`,
    `port=${p.port}`,
    `uploaded=${p.uploaded}`,
    `downloaded=${p.downloaded}`,
    `left=${p.left}`,
  ];
  if (p.compact !== false) q.push('compact=1');
  q.push('no_peer_id=1');
  if (p.event) q.push(`event=${p.event}`);
  q.push(`numwant=${p.numwant ?? 50}`);
  if (p.key !== undefined) q.push(`key=${(p.key >>> 0).toString(16).padStart(8, '0')}`);
  if (p.trackerId !== undefined) q.push(`trackerid=${percentEncodeBytes(Buffer.from(p.trackerId, 'latin1'))}`);
  if (p.ipv6) q.push(`ipv6=${encodeURIComponent(p.ipv6)}`);
  return appendQuery(url, q.join('&'));
}

/** BEP 48: the scrape URL replaces a last path segment starting with "announce"; undefined if not supported. */
export function scrapeUrlFor(announceUrl: string): string | undefined {
  let u: URL;
  try {
    u = new URL(announceUrl);
  } catch {
    return undefined;
  }
  const slash = u.pathname.lastIndexOf('/');
  const last = u.pathname.slice(slash + 1);
  if (!last.startsWith('announce')) return undefined;
  u.pathname = u.pathname.slice(0, slash + 1) + 'scrape' + last.slice('announce'.length);
  return u.toString();
}

/** GET with size cap, redirects, timeout and abort. Resolves with status and body. */
function httpGet(url: string, opts: TrackerRequestOptions, origUrl: string): Promise<{ status: number; body: Buffer }> {
  const timeoutMs = opts.timeoutMs ?? 15000;
  return new Promise((resolve, reject) => {
    let settled = false;
    let req: http.ClientRequest | undefined;
    const finish = (err: Error | undefined, value?: { status: number; body: Buffer }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      req?.destroy();
      if (err) reject(err);
      else resolve(value!);
    };
    const timer = setTimeout(() => finish(new TrackerError(`timed out after ${timeoutMs} ms`, origUrl)), timeoutMs);
    const onAbort = () => finish(new TrackerError('request aborted', origUrl));
    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    const go = (target: string, redirects: number) => {
      let u: URL;
      try {
        u = new URL(target);
      } catch {
        return finish(new TrackerError(`invalid URL ${target}`, origUrl));
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') return finish(new TrackerError(`unsupported protocol ${u.protocol}`, origUrl));
      const mod = u.protocol === 'https:' ? https : http;
      req = mod.get(u, { headers: { 'user-agent': USER_AGENT, 'accept-encoding': 'identity', connection: 'close' }, agent: false }, (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 300 && status < 400 && res.headers.location) {
          res.resume();
          if (redirects >= MAX_REDIRECTS) return finish(new TrackerError(`too many redirects (> ${MAX_REDIRECTS})`, origUrl));
          let next: string;
          try {
            next = new URL(res.headers.location, u).toString();
          } catch {
            return finish(new TrackerError(`invalid redirect location ${res.headers.location}`, origUrl));
          }
          req?.destroy();
          return go(next, redirects + 1);
        }
        const declared = Number(res.headers['content-length']);
        if (Number.isFinite(declared) && declared > MAX_TRACKER_RESPONSE) {
          return finish(new TrackerError(`response too large (${declared} bytes > ${MAX_TRACKER_RESPONSE})`, origUrl));
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_TRACKER_RESPONSE) return finish(new TrackerError(`response too large (> ${MAX_TRACKER_RESPONSE} bytes)`, origUrl));
          chunks.push(c);
        });
        res.on('end', () => finish(undefined, { status, body: Buffer.concat(chunks) }));
        res.on('error', (e) => finish(new TrackerError(`response error: ${e.message}`, origUrl)));
      });
      req.on('error', (e) => finish(new TrackerError(`connection failed: ${e.message}`, origUrl)));
    };
    go(url, 0);
  });
}

function parseBody(url: string, status: number, body: Buffer): BencodeDict {
  let v: BencodeValue | undefined;
  try {
    v = decode(body);
  } catch (e) {
    v = undefined;
    if (status === 200) throw new TrackerError(`invalid bencoded response: ${(e as Error).message}`, url);
  }
  if (v !== undefined && isDict(v)) {
    const failure = v['failure reason'];
    if (failure instanceof Uint8Array) throw new TrackerError(Buffer.from(failure).toString('utf8'), url, true);
  }
  if (status !== 200) throw new TrackerError(`HTTP status ${status}`, url);
  if (!isDict(v)) throw new TrackerError('response is not a bencoded dictionary', url);
  return v;
}

function optInt(d: BencodeDict, key: string, url: string): number | undefined {
  const v = d[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new TrackerError(`'${key}' is not a non-negative integer`, url);
  return v;
}

function parsePeers(d: BencodeDict, url: string): PeerAddress[] {
  const peers: PeerAddress[] = [];
  const p = d.peers;
  try {
    if (p instanceof Uint8Array) peers.push(...decodeCompactPeers(p));
    else if (Array.isArray(p)) {
      for (const e of p) {
        // Non-compact (BEP 3) form: list of dicts with ip, port. Skip unusable entries instead of failing all.
        if (!isDict(e)) continue;
        const ip = e.ip, port = e.port;
        if (!(ip instanceof Uint8Array) || typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) continue;
        const host = Buffer.from(ip).toString('utf8');
        if (host.length === 0 || host.length > 255 || /[\s/]/.test(host)) continue;
        peers.push({ host: host.replace(/^\[|\]$/g, ''), port });
      }
    } else if (p !== undefined) throw new TrackerError("'peers' is neither a string nor a list", url);
    const p6 = d.peers6;
    if (p6 instanceof Uint8Array) peers.push(...decodeCompactPeers6(p6));
  } catch (e) {
    if (e instanceof TrackerError) throw e;
    throw new TrackerError(`bad peer list: ${(e as Error).message}`, url);
  }
  return peers;
}

/** Announce to an HTTP(S) tracker. Rejects with TrackerError on any failure (including `failure reason`). */
export async function httpAnnounce(url: string, params: AnnounceParams, opts: TrackerRequestOptions = {}): Promise<AnnounceResponse> {
  checkAnnounceParams(params);
  const { status, body } = await httpGet(buildAnnounceUrl(url, params), opts, url);
  const d = parseBody(url, status, body);
  const interval = optInt(d, 'interval', url);
  const res: AnnounceResponse = { interval: interval ?? 1800, peers: parsePeers(d, url) };
  const minInterval = optInt(d, 'min interval', url);
  if (minInterval !== undefined) res.minInterval = minInterval;
  const complete = optInt(d, 'complete', url);
  if (complete !== undefined) res.complete = complete;
  const incomplete = optInt(d, 'incomplete', url);
  if (incomplete !== undefined) res.incomplete = incomplete;
  const tid = d['tracker id'];
  if (tid instanceof Uint8Array) res.trackerId = Buffer.from(tid).toString('latin1');
  const warn = d['warning message'];
  if (warn instanceof Uint8Array) res.warning = Buffer.from(warn).toString('utf8');
  return res;
}

/** Scrape an HTTP(S) tracker (BEP 48). Info-hashes absent from the reply are omitted from the result. */
export async function httpScrape(url: string, infoHashes: Buffer[], opts: TrackerRequestOptions = {}): Promise<ScrapeResult[]> {
  const surl = scrapeUrlFor(url);
  if (!surl) throw new TrackerError('tracker does not support scrape (announce URL does not end in /announce)', url);
  for (const h of infoHashes) if (!Buffer.isBuffer(h) || h.length !== 20) throw new TrackerError('info_hash must be 20 bytes', url);
  const full = appendQuery(surl, infoHashes.map((h) => `info_hash=${percentEncodeBytes(h)}`).join('&'));
  const { status, body } = await httpGet(full, opts, url);
  const d = parseBody(url, status, body);
  const files = d.files;
  if (!isDict(files)) throw new TrackerError("scrape response has no 'files' dictionary", url);
  const out: ScrapeResult[] = [];
  for (const h of infoHashes) {
    const e = files[h.toString('latin1')];
    if (!isDict(e)) continue;
    out.push({
      infoHash: h,
      complete: optInt(e, 'complete', url) ?? 0,
      incomplete: optInt(e, 'incomplete', url) ?? 0,
      downloaded: optInt(e, 'downloaded', url) ?? 0,
    });
  }
  return out;
}
