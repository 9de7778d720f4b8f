/**
 * Magnet links (BEP 9): xt=urn:btih (hex or base32), dn, tr, x.pe, ws, so (BEP 53).
 * v2 (btmh, BEP 52) hashes are recognised but v2-only links are rejected as unsupported.
 */
import { type PeerAddress, parsePeerAddress } from './compact.js';

export class MagnetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MagnetError';
  }
}

export interface MagnetLink {
  infoHash: Buffer;
  infoHashHex: string;
  name?: string;
  trackers: string[];
  /** Direct peers from x.pe. */
  peers: PeerAddress[];
  /** Web seeds from ws. */
  webSeeds: string[];
  /** BEP 53 select-only file indices, ascending, deduplicated. */
  selectOnly?: number[];
}

const MAX_URI = 64 * 1024;
const MAX_SELECT = 1_000_000;
const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function decodeBase32(s: string): Buffer | undefined {
  const up = s.toUpperCase();
  const out = Buffer.alloc(Math.floor((up.length * 5) / 8));
  let bits = 0, acc = 0, j = 0;
  for (const ch of up) {
    const v = B32.indexOf(ch);
    if (v < 0) return undefined;
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out[j++] = (acc >>> bits) & 0xff;
    }
  }
  return out;
}

/** Parse a btih value: 40 hex chars or 32 base32 chars. */
export function parseInfoHash(s: string): Buffer {
  if (/^[0-9a-fA-F]{40}$/.test(s)) return Buffer.from(s, 'hex');
  if (/^[A-Za-z2-7]{32}$/.test(s)) {
    const b = decodeBase32(s);
    if (b && b.length === 20) return b;
  }
  throw new MagnetError(`invalid info-hash '${s.slice(0, 80)}': expected 40 hex or 32 base32 characters`);
}

function decodeParam(v: string, key: string, plusIsSpace: boolean): string {
  try {
    return decodeURIComponent(plusIsSpace ? v.replace(/\+/g, ' ') : v);
  } catch {
    throw new MagnetError(`magnet: parameter '${key}' has invalid percent-encoding`);
  }
}

function parseSelectOnly(v: string): number[] {
  const set = new Set<number>();
  for (const part of v.split(',')) {
    if (part === '') continue;
    const m = part.match(/^(\d{1,9})(?:-(\d{1,9}))?$/);
    if (!m) throw new MagnetError(`magnet: so: invalid item '${part.slice(0, 40)}' (expected N or N-M)`);
    const a = Number(m[1]);
    const b = m[2] !== undefined ? Number(m[2]) : a;
    if (b < a) throw new MagnetError(`magnet: so: range '${part}' is reversed`);
    if (set.size + (b - a + 1) > MAX_SELECT) throw new MagnetError('magnet: so: selects too many files');
    for (let i = a; i <= b; i++) set.add(i);
  }
  return [...set].sort((x, y) => x - y);
}

export function parseMagnet(uri: string): MagnetLink {
  if (typeof uri !== 'string') throw new MagnetError('magnet: expected a string');
  if (uri.length > MAX_URI) throw new MagnetError(`magnet: link is longer than ${MAX_URI} characters`);
  const s = uri.trim();
  if (!/^magnet:\?/i.test(s)) throw new MagnetError("magnet: link must start with 'magnet:?'");
  let infoHash: Buffer | undefined;
  let sawBtmh = false;
  let name: string | undefined;
  const trackers: string[] = [];
  const webSeeds: string[] = [];
  const peers: PeerAddress[] = [];
  let selectOnly: number[] | undefined;
  for (const pair of s.slice(8).split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const rawKey = eq < 0 ? pair : pair.slice(0, eq);
    const key = rawKey.toLowerCase().replace(/\.\d+$/, ''); // xt.1, tr.2 ...
    const value = eq < 0 ? '' : decodeParam(pair.slice(eq + 1), rawKey, key === 'dn');
    switch (key) {
      case 'xt': {
        const m = value.match(/^urn:(btih|btmh):(.*)$/i);
        if (!m) break; // other URN kinds (ed2k, sha1...) are ignored
        if (m[1].toLowerCase() === 'btmh') {
          sawBtmh = true;
          break;
        }
        const h = parseInfoHash(m[2]);
        if (infoHash && !infoHash.equals(h)) throw new MagnetError('magnet: several different btih info-hashes');
        infoHash = h;
        break;
      }
      case 'dn':
        name = value;
        break;
      case 'tr':
        if (value && !trackers.includes(value)) trackers.push(value);
        break;
      case 'ws':
        if (value && !webSeeds.includes(value)) webSeeds.push(value);
        break;
      case 'x.pe':
        try {
          peers.push(parsePeerAddress(value));
        } catch (e) {
          throw new MagnetError(`magnet: x.pe: ${(e as Error).message}`);
        }
        break;
      case 'so':
        selectOnly = parseSelectOnly(value);
        break;
      default:
        break; // unknown parameters are ignored
    }
  }
  if (!infoHash) {
    if (sawBtmh) throw new MagnetError('magnet: v2-only magnet links (btmh, BEP 52) are not supported yet');
    throw new MagnetError("magnet: missing 'xt=urn:btih:<info-hash>'");
  }
  const m: MagnetLink = { infoHash, infoHashHex: infoHash.toString('hex'), trackers, peers, webSeeds };
  if (name !== undefined) m.name = name;
  if (selectOnly !== undefined) m.selectOnly = selectOnly;
  return m;
}

function formatRanges(xs: number[]): string {
  const sorted = [...new Set(xs)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(j > i ? `${sorted[i]}-${sorted[j]}` : `${sorted[i]}`);
    i = j + 1;
  }
  return parts.join(',');
}

const enc = (s: string) => encodeURIComponent(s);

export interface MagnetInput {
  infoHash?: Buffer;
  infoHashHex?: string;
  name?: string;
  trackers?: string[];
  peers?: PeerAddress[];
  webSeeds?: string[];
  selectOnly?: number[];
}

/** Build a magnet URI (hex btih). */
export function formatMagnet(m: MagnetInput): string {
  const hex = m.infoHash ? m.infoHash.toString('hex') : m.infoHashHex;
  if (!hex || !/^[0-9a-fA-F]{40}$/.test(hex)) throw new MagnetError('formatMagnet: a 20-byte info-hash is required');
  let out = `magnet:?xt=urn:btih:${hex.toLowerCase()}`;
  if (m.name !== undefined && m.name !== '') out += `&dn=${enc(m.name)}`;
  for (const t of m.trackers ?? []) out += `&tr=${enc(t)}`;
  for (const w of m.webSeeds ?? []) out += `&ws=${enc(w)}`;
  for (const p of m.peers ?? []) out += `&x.pe=${enc(p.host.includes(':') ? `[${p.host}]:${p.port}` : `${p.host}:${p.port}`)}`;
  if (m.selectOnly && m.selectOnly.length) out += `&so=${formatRanges(m.selectOnly)}`;
  return out;
}

/** A magnet URI, or a bare info-hash (40 hex or 32 base32 characters). .torrent files are the caller's business. */
export function parseTorrentId(s: string): MagnetLink {
  const t = s.trim();
  if (/^magnet:/i.test(t)) return parseMagnet(t);
  if (/^[0-9a-fA-F]{40}$/.test(t) || /^[A-Za-z2-7]{32}$/.test(t)) {
    const infoHash = parseInfoHash(t);
    return { infoHash, infoHashHex: infoHash.toString('hex'), trackers: [], peers: [], webSeeds: [] };
  }
  throw new MagnetError(`not a magnet link or info-hash: '${t.slice(0, 80)}'`);
}
