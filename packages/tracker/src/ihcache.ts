/**
 * Bytes → string cache for 20-byte info-hashes (UDP path). The swarm store and the allow-list are keyed by the
 * info-hash as a 20-character latin1 string; making that string from the datagram costs a native call and a new
 * string per packet, and V8 then hashes the new string again for every Map/Set lookup. This cache hands back the
 * same string object for the same bytes (its hash is computed once), without allocating on a hit.
 *
 * Fixed size, two candidate slots per key (seeded hash), no chaining: a miss (new key, or one evicted by other
 * keys) just builds the string as before, so adversarial keys can cost at most the uncached path, and memory is
 * bounded at `slots` × (20 bytes + one string).
 */
import { randomBytes } from 'node:crypto';

export class InfoHashCache {
  private readonly keys: Buffer;
  private readonly strs: (string | null)[];
  private readonly mask: number;
  private readonly seed: number;
  private flip = 0;
  hits = 0;
  misses = 0;

  /** `slots` is rounded up to a power of two (at least 2). */
  constructor(slots = 8192, seed = randomBytes(4).readInt32LE(0)) {
    let n = 2;
    while (n < slots) n <<= 1;
    this.mask = n - 1;
    this.keys = Buffer.alloc(n * 20);
    this.strs = new Array<string | null>(n).fill(null);
    this.seed = seed | 0;
  }

  /** The latin1 string of buf[off..off+20) (caller checked the bounds). */
  get(buf: Buffer, off: number): string {
    let h = this.seed;
    for (let i = off; i < off + 20; i += 4) {
      h = Math.imul(h ^ (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24)), 0x9e3779b1);
      h ^= h >>> 15;
    }
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    const a = h & this.mask;
    const b = (h >>> 16) & this.mask;
    const strs = this.strs;
    let s = strs[a];
    if (s !== null && this.same(a, buf, off)) {
      this.hits++;
      return s;
    }
    s = strs[b];
    if (s !== null && this.same(b, buf, off)) {
      this.hits++;
      return s;
    }
    this.misses++;
    const str = buf.toString('latin1', off, off + 20);
    // Fill an empty candidate first; with both taken, alternate which one is replaced.
    const slot = strs[a] === null ? a : strs[b] === null ? b : (this.flip ^= 1) === 0 ? a : b;
    buf.copy(this.keys, slot * 20, off, off + 20);
    strs[slot] = str;
    return str;
  }

  private same(slot: number, buf: Buffer, off: number): boolean {
    const k = this.keys;
    const p = slot * 20;
    for (let i = 0; i < 20; i++) if (k[p + i] !== buf[off + i]) return false;
    return true;
  }
}
