/**
 * Compact peer and node encodings shared by trackers (BEP 23, BEP 7), PEX (BEP 11) and the DHT (BEP 5, BEP 32).
 * IPv4 peers are 6 bytes (4 address + 2 port), IPv6 peers 18 bytes (16 + 2), both big-endian.
 */
import { isIPv4, isIPv6 } from 'node:net';

export interface PeerAddress {
  host: string;
  port: number;
}

export class CompactError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CompactError';
  }
}

export function encodeIPv4(host: string, out: Buffer, offset: number): void {
  const parts = host.split('.');
  if (parts.length !== 4) throw new CompactError(`not an IPv4 address: ${host}`);
  for (let i = 0; i < 4; i++) {
    const n = Number(parts[i]);
    if (!Number.isInteger(n) || n < 0 || n > 255) throw new CompactError(`not an IPv4 address: ${host}`);
    out[offset + i] = n;
  }
}

export function encodeIPv6(host: string, out: Buffer, offset: number): void {
  let h = host;
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  const zone = h.indexOf('%');
  if (zone >= 0) h = h.slice(0, zone);
  if (!isIPv6(h)) throw new CompactError(`not an IPv6 address: ${host}`);
  // Expand an embedded IPv4 tail (::ffff:1.2.3.4) into two hextets.
  const v4 = h.match(/(\d+\.\d+\.\d+\.\d+)$/);
  if (v4) {
    const b = Buffer.alloc(4);
    encodeIPv4(v4[1], b, 0);
    h = h.slice(0, -v4[1].length) + `${b.readUInt16BE(0).toString(16)}:${b.readUInt16BE(2).toString(16)}`;
  }
  const [head, tail] = h.split('::');
  const headParts = head ? head.split(':') : [];
  const tailParts = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = h.includes('::') ? 8 - headParts.length - tailParts.length : 0;
  const groups = [...headParts, ...new Array(fill).fill('0'), ...tailParts];
  if (groups.length !== 8) throw new CompactError(`not an IPv6 address: ${host}`);
  for (let i = 0; i < 8; i++) out.writeUInt16BE(parseInt(groups[i], 16), offset + i * 2);
}

export function decodeIPv4(buf: Uint8Array, offset: number): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

export function decodeIPv6(buf: Uint8Array, offset: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(((buf[offset + i * 2] << 8) | buf[offset + i * 2 + 1]).toString(16));
  // Compress the longest run of zero groups (RFC 5952 style).
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  if (bestStart < 0) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLen).join(':')}`;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CompactError(`invalid port ${port}`);
}

/** Encode IPv4 peers as 6-byte entries. Non-IPv4 entries are skipped (put them in the IPv6 list). */
export function encodeCompactPeers(peers: Iterable<PeerAddress>): Buffer {
  const list = [...peers].filter((p) => isIPv4(p.host));
  const out = Buffer.alloc(list.length * 6);
  list.forEach((p, i) => {
    checkPort(p.port);
    encodeIPv4(p.host, out, i * 6);
    out.writeUInt16BE(p.port, i * 6 + 4);
  });
  return out;
}

/** Encode IPv6 peers as 18-byte entries. Non-IPv6 entries are skipped. */
export function encodeCompactPeers6(peers: Iterable<PeerAddress>): Buffer {
  const list = [...peers].filter((p) => isIPv6(p.host.replace(/^\[|\]$/g, '').replace(/%.*$/, '')));
  const out = Buffer.alloc(list.length * 18);
  list.forEach((p, i) => {
    checkPort(p.port);
    encodeIPv6(p.host, out, i * 18);
    out.writeUInt16BE(p.port, i * 18 + 16);
  });
  return out;
}

/** Decode 6-byte IPv4 entries. A trailing partial entry is an error (hostile or broken input). Port 0 entries are dropped. */
export function decodeCompactPeers(buf: Uint8Array): PeerAddress[] {
  if (buf.length % 6 !== 0) throw new CompactError(`compact peer list length ${buf.length} is not a multiple of 6`);
  const out: PeerAddress[] = [];
  for (let i = 0; i < buf.length; i += 6) {
    const port = (buf[i + 4] << 8) | buf[i + 5];
    if (port === 0) continue;
    out.push({ host: decodeIPv4(buf, i), port });
  }
  return out;
}

/** Decode 18-byte IPv6 entries. */
export function decodeCompactPeers6(buf: Uint8Array): PeerAddress[] {
  if (buf.length % 18 !== 0) throw new CompactError(`compact IPv6 peer list length ${buf.length} is not a multiple of 18`);
  const out: PeerAddress[] = [];
  for (let i = 0; i < buf.length; i += 18) {
    const port = (buf[i + 16] << 8) | buf[i + 17];
    if (port === 0) continue;
    out.push({ host: decodeIPv6(buf, i), port });
  }
  return out;
}

/** "host:port" with IPv6 hosts bracketed; a stable key for peer maps. */
export function peerKey(p: PeerAddress): string {
  return p.host.includes(':') ? `[${p.host}]:${p.port}` : `${p.host}:${p.port}`;
}

/** Parse "host:port" or "[v6]:port". */
export function parsePeerAddress(s: string): PeerAddress {
  const m = s.match(/^\[([^\]]+)\]:(\d+)$/) ?? s.match(/^([^:]+):(\d+)$/);
  if (!m) throw new CompactError(`invalid peer address '${s}' (expected host:port or [ipv6]:port)`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new CompactError(`invalid port in '${s}'`);
  return { host: m[1], port };
}
