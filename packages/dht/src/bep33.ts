/**
 * BEP 33 DHT scrape: 256-byte bloom filters (m = 2048 bits, k = 2) of the IPs of seeds (BFsd) and of
 * downloaders (BFpe), keyed by SHA-1 of the compact IP (4 or 16 bytes); merged by OR, sized by estimate().
 */
import { createHash } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { encodeIPv4, encodeIPv6 } from '@bitorrent/core';

export const BLOOM_BYTES = 256;
const M = BLOOM_BYTES * 8;

export function bloomAdd(bits: Uint8Array, ip: string): void {
  const raw = isIPv4(ip) ? Buffer.alloc(4) : Buffer.alloc(16);
  if (raw.length === 4) encodeIPv4(ip, raw, 0);
  else encodeIPv6(ip, raw, 0);
  const h = createHash('sha1').update(raw).digest();
  const i1 = (h[0] | (h[1] << 8)) % M;
  const i2 = (h[2] | (h[3] << 8)) % M;
  bits[i1 >> 3] |= 1 << (i1 & 7);
  bits[i2 >> 3] |= 1 << (i2 & 7);
}

/** Estimated number of distinct IPs in a filter (BEP 33 formula); Infinity when saturated. */
export function bloomEstimate(bits: Uint8Array): number {
  let zero = 0;
  for (let i = 0; i < BLOOM_BYTES; i++) for (let b = 0; b < 8; b++) if (!(bits[i] & (1 << b))) zero++;
  if (zero === 0) return Infinity;
  return Math.log(zero / M) / (2 * Math.log(1 - 1 / M));
}

export function bloomMerge(into: Uint8Array, other: Uint8Array): void {
  if (other.length !== BLOOM_BYTES) return;
  for (let i = 0; i < BLOOM_BYTES; i++) into[i] |= other[i];
}
