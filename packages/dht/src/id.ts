/**
 * Node IDs: XOR metric helpers and BEP 42 (secure node IDs derived from the node's external IP).
 */
import { isIPv4 } from 'node:net';
import { encodeIPv4, encodeIPv6 } from '@bitorrent/core';

export const ID_LEN = 20;

/** Random-byte source; inject a seeded one for reproducible simulations. */
export type Rng = (n: number) => Buffer;

/** Compare the XOR distances of `a` and `b` to `target`: negative when `a` is closer. */
export function compareDistance(a: Uint8Array, b: Uint8Array, target: Uint8Array): number {
  for (let i = 0; i < ID_LEN; i++) {
    const da = a[i] ^ target[i];
    const db = b[i] ^ target[i];
    if (da !== db) return da - db;
  }
  return 0;
}

/** Number of leading bits `a` and `b` share (160 when equal). */
export function commonPrefixBits(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < ID_LEN; i++) {
    const x = a[i] ^ b[i];
    if (x !== 0) return i * 8 + Math.clz32(x) - 24;
  }
  return ID_LEN * 8;
}

/** A random ID sharing exactly `bits` leading bits with `base` (bit `bits` flipped), when bits < 160. */
export function randomIdInBucket(base: Uint8Array, bits: number, rng: Rng): Buffer {
  const id = rng(ID_LEN);
  for (let i = 0; i < ID_LEN * 8; i++) {
    if (i > bits) break;
    const byte = i >> 3;
    const mask = 0x80 >> (i & 7);
    const want = i < bits ? base[byte] & mask : (base[byte] & mask) ^ mask;
    id[byte] = (id[byte] & ~mask) | want;
  }
  return id;
}

// ---- CRC32C (Castagnoli), as BEP 42 specifies ----
const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32c(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC32C_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const V4_MASK = [0x03, 0x0f, 0x3f, 0xff];
const V6_MASK = [0x01, 0x03, 0x07, 0x0f, 0x1f, 0x3f, 0x7f, 0xff];

function ipBytes(ip: string): Buffer {
  if (isIPv4(ip)) {
    const b = Buffer.alloc(4);
    encodeIPv4(ip, b, 0);
    return b;
  }
  const b = Buffer.alloc(16);
  encodeIPv6(ip, b, 0);
  return b.subarray(0, 8);
}

function prefixCrc(ip: string, r: number): number {
  const b = Buffer.from(ipBytes(ip));
  const mask = b.length === 4 ? V4_MASK : V6_MASK;
  for (let i = 0; i < b.length; i++) b[i] &= mask[i];
  b[0] |= (r & 7) << 5;
  return crc32c(b);
}

/** Loopback, private, link-local and unspecified addresses: exempt from BEP 42 checks (as in libtorrent). */
export function isLocalAddress(ip: string): boolean {
  if (isIPv4(ip)) {
    const [a, b] = ip.split('.').map(Number);
    return a === 127 || a === 10 || a === 0 || (a === 172 && b >= 16 && b < 32) || (a === 192 && b === 168) || (a === 169 && b === 254) || (a === 100 && b >= 64 && b < 128);
  }
  const h = ip.toLowerCase();
  return h === '::1' || h === '::' || h.startsWith('fe80:') || h.startsWith('fc') || h.startsWith('fd') || h.startsWith('::ffff:127.');
}

/** Generate a BEP 42 conforming node ID for `ip` (random when the address is local). */
export function secureNodeId(ip: string, rng: Rng): Buffer {
  const id = rng(ID_LEN);
  if (isLocalAddress(ip)) return id;
  const rand = id[19];
  const crc = prefixCrc(ip, rand & 7);
  id[0] = (crc >>> 24) & 0xff;
  id[1] = (crc >>> 16) & 0xff;
  id[2] = ((crc >>> 8) & 0xf8) | (id[2] & 0x7);
  return id;
}

/** Does `id` conform to BEP 42 for `ip`? Local addresses always conform. */
export function isSecureNodeId(id: Uint8Array, ip: string): boolean {
  if (isLocalAddress(ip)) return true;
  if (id.length !== ID_LEN) return false;
  let crc: number;
  try {
    crc = prefixCrc(ip, id[19] & 7);
  } catch {
    return false;
  }
  return id[0] === ((crc >>> 24) & 0xff) && id[1] === ((crc >>> 16) & 0xff) && (id[2] & 0xf8) === ((crc >>> 8) & 0xf8);
}

/** Deterministic PRNG (xorshift128+ style via splitmix32) for simulations and tests. */
export function seededRng(seed: number): Rng {
  let s = seed >>> 0 || 0x9e3779b9;
  const next = (): number => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  return (n: number) => {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 4) {
      const v = next();
      for (let j = 0; j < 4 && i + j < n; j++) b[i + j] = (v >>> (j * 8)) & 0xff;
    }
    return b;
  };
}

/** Random integer in [0, n) from an Rng. */
export function randInt(rng: Rng, n: number): number {
  return rng(4).readUInt32LE(0) % n;
}
