/**
 * Stateless UDP connection ids (BEP 15): id = HalfSipHash-2-4 (64-bit output) of the source IP address
 * under a secret key that rotates every `rotateMs`. The current and the previous key are accepted, so an id
 * stays valid for at least one full rotation period (2 minutes by default, as BEP 15 asks). Nothing is stored
 * per connection; spoofed sources never see the id, so they cannot announce. The id covers the IP, not the
 * port (as opentracker does): libtorrent shares one id cache across sessions and sockets of a process, and the
 * port adds no protection against spoofing that the IP does not already give.
 */
import { createHmac, randomBytes } from 'node:crypto';

function rotl(x: number, b: number): number {
  return (x << b) | (x >>> (32 - b));
}

/** HalfSipHash-2-4 with 64-bit output over msg[0..len). Writes 8 bytes (little-endian words) to out[outOff..]. */
export function halfSipHash64(k0: number, k1: number, msg: Uint8Array, len: number, out: Uint8Array, outOff: number): void {
  let v0 = k0 | 0;
  let v1 = k1 | 0;
  let v2 = (0x6c796765 ^ k0) | 0;
  let v3 = (0x74656462 ^ k1) | 0;
  v1 ^= 0xee;
  const end = len - (len & 3);
  let i = 0;
  for (; i < end; i += 4) {
    const m = msg[i] | (msg[i + 1] << 8) | (msg[i + 2] << 16) | (msg[i + 3] << 24);
    v3 ^= m;
    for (let r = 0; r < 2; r++) {
      v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
      v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
      v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
      v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
    }
    v0 ^= m;
  }
  let b = (len & 0xff) << 24;
  const left = len & 3;
  if (left >= 3) b |= msg[i + 2] << 16;
  if (left >= 2) b |= msg[i + 1] << 8;
  if (left >= 1) b |= msg[i];
  v3 ^= b;
  for (let r = 0; r < 2; r++) {
    v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
    v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
    v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
    v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  }
  v0 ^= b;
  v2 ^= 0xee;
  for (let r = 0; r < 4; r++) {
    v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
    v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
    v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
    v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  }
  const h0 = v1 ^ v3;
  v1 ^= 0xdd;
  for (let r = 0; r < 4; r++) {
    v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
    v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
    v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
    v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  }
  const h1 = v1 ^ v3;
  out[outOff] = h0; out[outOff + 1] = h0 >>> 8; out[outOff + 2] = h0 >>> 16; out[outOff + 3] = h0 >>> 24;
  out[outOff + 4] = h1; out[outOff + 5] = h1 >>> 8; out[outOff + 6] = h1 >>> 16; out[outOff + 7] = h1 >>> 24;
}

export interface ConnectionIdOptions {
  rotateMs?: number;
  now?: () => number;
  /** Source of key material (default crypto.randomBytes). */
  randomBytes?: (n: number) => Buffer;
  /**
   * Shared master secret: keys are then derived per rotation epoch as HMAC-SHA256(secret, epoch), so several
   * processes (cluster workers) issue and accept the same ids without talking to each other.
   */
  secret?: Buffer;
}

export class ConnectionIds {
  private readonly rotateMs: number;
  private readonly now: () => number;
  private readonly rand: (n: number) => Buffer;
  private epoch: number;
  private cur: [number, number];
  private prev: [number, number];
  private readonly msg = Buffer.alloc(64);
  private readonly tmp = Buffer.alloc(8);

  constructor(opts: ConnectionIdOptions = {}) {
    this.rotateMs = opts.rotateMs ?? 120_000;
    this.now = opts.now ?? Date.now;
    this.rand = opts.randomBytes ?? randomBytes;
    this.secret = opts.secret ?? null;
    this.epoch = Math.floor(this.now() / this.rotateMs);
    this.cur = this.newKey(this.epoch);
    this.prev = this.newKey(this.epoch - 1);
  }

  private readonly secret: Buffer | null;

  private newKey(epoch: number): [number, number] {
    const b = this.secret !== null ? createHmac('sha256', this.secret).update(`bitorrent-udp-connid:${epoch}`).digest() : this.rand(8);
    return [b.readInt32LE(0), b.readInt32LE(4)];
  }

  private maybeRotate(): void {
    const e = Math.floor(this.now() / this.rotateMs);
    if (e === this.epoch) return;
    this.prev = e === this.epoch + 1 ? this.cur : this.newKey(e - 1);
    this.cur = this.newKey(e);
    this.epoch = e;
  }

  private fill(address: string): number {
    const m = this.msg;
    const n = address.length > 64 ? 64 : address.length;
    for (let i = 0; i < n; i++) m[i] = address.charCodeAt(i);
    return n;
  }

  /**
   * One-entry cache of the last source address's ids under the current key (and, once needed, the previous key),
   * as little-endian words. A tracker mostly sees bursts from the same address (connect then announces, clients
   * re-announcing several torrents), and the cache only skips recomputing the same keyed hash: what is accepted
   * does not change. Reset whenever the key rotates.
   */
  private cAddr = '';
  private cEpoch = NaN;
  private cCur0 = 0;
  private cCur1 = 0;
  private cHavePrev = false;
  private cPrev0 = 0;
  private cPrev1 = 0;

  private cacheFor(address: string): void {
    if (address === this.cAddr && this.cEpoch === this.epoch) return;
    const len = this.fill(address);
    const t = this.tmp;
    halfSipHash64(this.cur[0], this.cur[1], this.msg, len, t, 0);
    this.cCur0 = t.readInt32LE(0);
    this.cCur1 = t.readInt32LE(4);
    this.cHavePrev = false;
    this.cAddr = address;
    this.cEpoch = this.epoch;
  }

  /** Write the connection id for this source IP into out[off..off+8). */
  issue(address: string, out: Uint8Array, off: number): void {
    this.maybeRotate();
    this.cacheFor(address);
    const a = this.cCur0;
    const b = this.cCur1;
    out[off] = a; out[off + 1] = a >>> 8; out[off + 2] = a >>> 16; out[off + 3] = a >>> 24;
    out[off + 4] = b; out[off + 5] = b >>> 8; out[off + 6] = b >>> 16; out[off + 7] = b >>> 24;
  }

  /** True if buf[off..off+8) is a connection id issued to this source IP under the current or previous key. */
  verify(address: string, buf: Uint8Array, off: number): boolean {
    this.maybeRotate();
    this.cacheFor(address);
    const w0 = buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16) | (buf[off + 3] << 24);
    const w1 = buf[off + 4] | (buf[off + 5] << 8) | (buf[off + 6] << 16) | (buf[off + 7] << 24);
    if (w0 === this.cCur0 && w1 === this.cCur1) return true;
    if (!this.cHavePrev) {
      const t = this.tmp;
      halfSipHash64(this.prev[0], this.prev[1], this.msg, this.fill(address), t, 0);
      this.cPrev0 = t.readInt32LE(0);
      this.cPrev1 = t.readInt32LE(4);
      this.cHavePrev = true;
    }
    return w0 === this.cPrev0 && w1 === this.cPrev1;
  }
}
