/**
 * BEP 6 allowed-fast set: the canonical piece indices a peer may request while choked.
 * Computed by the uploader for the peer at `ip` (the address on the other end of the connection).
 */
import { createHash } from 'node:crypto';
import { isIPv4 } from 'node:net';

/**
 * Generate the allowed-fast set of `k` pieces (fewer if the torrent has fewer pieces) for an IPv4 peer.
 * IPv6 has no canonical set in BEP 6: returns [] (IPv4-mapped IPv6 addresses are treated as IPv4).
 */
export function allowedFastSet(k: number, numPieces: number, infoHash: Uint8Array, ip: string): number[] {
  if (!Number.isInteger(k) || k < 0 || !Number.isInteger(numPieces) || numPieces < 0) throw new RangeError('allowedFastSet: bad k or numPieces');
  if (infoHash.length !== 20) throw new TypeError('allowedFastSet: info-hash must be 20 bytes');
  const host = ip.startsWith('::ffff:') ? ip.slice(7) : ip;
  if (!isIPv4(host) || numPieces === 0) return [];
  const want = Math.min(k, numPieces);
  let x: Buffer = Buffer.alloc(24);
  const parts = host.split('.').map(Number);
  x[0] = parts[0];
  x[1] = parts[1];
  x[2] = parts[2];
  x[3] = 0;
  x.set(infoHash, 4);
  const out: number[] = [];
  const seen = new Set<number>();
  while (out.length < want) {
    x = createHash('sha1').update(x).digest();
    for (let i = 0; i < 5 && out.length < want; i++) {
      const index = x.readUInt32BE(i * 4) % numPieces;
      if (!seen.has(index)) {
        seen.add(index);
        out.push(index);
      }
    }
  }
  return out;
}
