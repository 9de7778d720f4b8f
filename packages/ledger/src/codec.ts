/** Fixed-width big-endian encoders used by every signed layout of the ledger. */
import { createHash } from 'node:crypto';
import * as nodeCrypto from 'node:crypto';
import { createRequire } from 'node:module';

export const U64_MAX = (1n << 64n) - 1n;
export const U128_MAX = (1n << 128n) - 1n;

/**
 * Canonical binary layouts, written into one growing buffer (not a small Buffer per field joined by concat: every
 * signed payment state and ledger operation goes through here, ~40 µs each that way in a busy transfer's profile).
 */
export class Writer {
  private buf = Buffer.allocUnsafe(128);
  private pos = 0;
  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }
  bytes(b: Buffer | Uint8Array, len?: number): this {
    if (len !== undefined && b.length !== len) throw new RangeError(`expected ${len} bytes, got ${b.length}`);
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }
  u8(n: number): this {
    this.room(1);
    this.buf.writeUInt8(n, this.pos);
    this.pos += 1;
    return this;
  }
  u64(n: bigint | number): this {
    const v = BigInt(n);
    if (v < 0n || v > U64_MAX) throw new RangeError(`u64 out of range: ${v}`);
    this.room(8);
    this.buf.writeBigUInt64BE(v, this.pos);
    this.pos += 8;
    return this;
  }
  u128(n: bigint): this {
    if (typeof n !== 'bigint' || n < 0n || n > U128_MAX) throw new RangeError(`u128 out of range: ${n}`);
    this.room(16);
    this.buf.writeBigUInt64BE(n >> 64n, this.pos);
    this.buf.writeBigUInt64BE(n & U64_MAX, this.pos + 8);
    this.pos += 16;
    return this;
  }
  /** The bytes written (a new Buffer of exactly that length). */
  done(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos));
  }
}

export class Reader {
  pos = 0;
  constructor(readonly buf: Buffer) {}
  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new RangeError('truncated input');
  }
  bytes(n: number): Buffer {
    this.need(n);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  u64(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  u128(): bigint {
    this.need(16);
    const hi = this.buf.readBigUInt64BE(this.pos);
    const lo = this.buf.readBigUInt64BE(this.pos + 8);
    this.pos += 16;
    return (hi << 64n) | lo;
  }
  rest(): Buffer {
    const b = this.buf.subarray(this.pos);
    this.pos = this.buf.length;
    return b;
  }
  end(): void {
    if (this.pos !== this.buf.length) throw new RangeError('trailing bytes');
  }
}

interface SodiumHash {
  crypto_hash_sha256(out: Buffer, msg: Uint8Array): void;
}
let sodiumHash: SodiumHash | null = null;
if (!process.env.BITORRENT_NO_SODIUM) {
  try {
    sodiumHash = createRequire(import.meta.url)('sodium-native') as SodiumHash;
  } catch {
    sodiumHash = null;
  }
}
/** One-shot hashing (node:crypto.hash, Node ≥ 20.12) — ~2.5× cheaper than createHash for small inputs. */
const oneShot = (nodeCrypto as { hash?: (alg: string, data: Uint8Array, enc: 'buffer') => Buffer }).hash;

/** SHA-256 of one buffer: libsodium when it loads (~1 µs for 200 bytes), else node:crypto. */
export function sha256One(b: Uint8Array): Buffer {
  if (sodiumHash) {
    // Not from the shared pool: hashes are often kept (op records, journal rows) and must not pin 8 KiB pool slabs.
    const out = Buffer.allocUnsafeSlow(32);
    sodiumHash.crypto_hash_sha256(out, b);
    return out;
  }
  if (oneShot) return oneShot('sha256', b, 'buffer');
  return createHash('sha256').update(b).digest();
}

export function sha256(...parts: (Buffer | Uint8Array)[]): Buffer {
  if (parts.length === 1) return sha256One(parts[0]!);
  if (sodiumHash || oneShot) return sha256One(Buffer.concat(parts));
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

/** Domain tags: fixed ASCII prefixes so a signature over one kind of message can never be replayed as another. */
export function tag(s: string): Buffer {
  return Buffer.from(s + '\0', 'ascii');
}

export function toHex(b: Buffer | Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

/** Parse a lowercase/uppercase hex string of an exact byte length; throws a RangeError with the field name otherwise. */
export function fromHex(s: unknown, len: number, what = 'value'): Buffer {
  if (typeof s !== 'string' || s.length !== len * 2 || !/^[0-9a-fA-F]*$/.test(s)) {
    throw new RangeError(`${what} must be ${len * 2} hex characters`);
  }
  return Buffer.from(s, 'hex');
}

/** 1 BTT = 10^18 base units. */
export const BTT = 10n ** 18n;

/** Format base units as a decimal BTT string ("12.5"). */
export function formatBtt(units: bigint): string {
  const neg = units < 0n;
  const v = neg ? -units : units;
  const whole = v / BTT;
  const frac = (v % BTT).toString().padStart(18, '0').replace(/0+$/, '');
  return (neg ? '-' : '') + whole.toString() + (frac ? '.' + frac : '');
}

/** Parse a decimal BTT string ("12.5", "0.000000000000000001") into base units; throws on bad syntax. */
export function parseBtt(s: string): bigint {
  const m = /^(\d+)(?:\.(\d{1,18}))?$/.exec(s.trim());
  if (!m) throw new RangeError(`bad BTT amount '${s}' (expected e.g. 12.5)`);
  return BigInt(m[1]!) * BTT + BigInt((m[2] ?? '').padEnd(18, '0') || '0');
}
