/**
 * Piece bitfield as sent in the BitTorrent `bitfield` message (BEP 3): bit 0 is the high bit of byte 0.
 * Spare bits in the last byte are always zero.
 */

const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >> 1];

export class BitFieldError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BitFieldError';
  }
}

export class BitField {
  readonly length: number;
  private readonly bytes: Buffer;
  private setCount: number;

  constructor(length: number, buf?: Buffer) {
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`bitfield length must be a non-negative integer, got ${length}`);
    this.length = length;
    const n = (length + 7) >>> 3;
    if (buf) {
      if (buf.length !== n) throw new BitFieldError(`bitfield: expected ${n} bytes for ${length} pieces, got ${buf.length}`);
      this.bytes = Buffer.from(buf);
      const spare = n * 8 - length;
      if (spare > 0) this.bytes[n - 1] &= (0xff << spare) & 0xff;
      let c = 0;
      for (let i = 0; i < n; i++) c += POPCOUNT[this.bytes[i]];
      this.setCount = c;
    } else {
      this.bytes = Buffer.alloc(n);
      this.setCount = 0;
    }
  }

  /** Parse a wire/resume bitfield: exact byte length and zero spare bits, else BitFieldError. */
  static fromBuffer(buf: Uint8Array, length: number): BitField {
    const n = (length + 7) >>> 3;
    if (buf.length !== n) throw new BitFieldError(`bitfield: expected ${n} bytes for ${length} pieces, got ${buf.length}`);
    const spare = n * 8 - length;
    if (spare > 0 && (buf[n - 1] & ((1 << spare) - 1)) !== 0) {
      throw new BitFieldError(`bitfield: spare bits set past piece ${length - 1}`);
    }
    return new BitField(length, Buffer.from(buf));
  }

  static allSet(length: number): BitField {
    const b = new BitField(length);
    b.setAll();
    return b;
  }

  private check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) throw new RangeError(`bit index ${i} out of range (0..${this.length - 1})`);
  }

  get(i: number): boolean {
    this.check(i);
    return (this.bytes[i >>> 3] & (0x80 >>> (i & 7))) !== 0;
  }

  /** Alias of get(). */
  has(i: number): boolean {
    return this.get(i);
  }

  set(i: number, v = true): void {
    this.check(i);
    const j = i >>> 3, m = 0x80 >>> (i & 7);
    const had = (this.bytes[j] & m) !== 0;
    if (v && !had) {
      this.bytes[j] |= m;
      this.setCount++;
    } else if (!v && had) {
      this.bytes[j] &= ~m;
      this.setCount--;
    }
  }

  setAll(): void {
    const n = this.bytes.length;
    if (n === 0) return;
    this.bytes.fill(0xff);
    const spare = n * 8 - this.length;
    if (spare > 0) this.bytes[n - 1] = (0xff << spare) & 0xff;
    this.setCount = this.length;
  }

  /** Number of set bits (O(1): maintained incrementally). */
  count(): number {
    return this.setCount;
  }

  isComplete(): boolean {
    return this.setCount === this.length;
  }

  isEmpty(): boolean {
    return this.setCount === 0;
  }

  /** Copy of the wire bytes. */
  toBuffer(): Buffer {
    return Buffer.from(this.bytes);
  }

  clone(): BitField {
    return new BitField(this.length, this.bytes);
  }

  /** Indices of set bits, ascending. */
  *indices(): IterableIterator<number> {
    for (let j = 0; j < this.bytes.length; j++) {
      const b = this.bytes[j];
      if (b === 0) continue;
      for (let k = 0; k < 8; k++) if (b & (0x80 >>> k)) yield j * 8 + k;
    }
  }

  /** Count of bits set in both this and `other` (same length), via the popcount table. */
  countAnd(other: BitField): number {
    if (other.length !== this.length) throw new RangeError('bitfield lengths differ');
    let c = 0;
    for (let j = 0; j < this.bytes.length; j++) c += POPCOUNT[this.bytes[j] & other.bytes[j]];
    return c;
  }
}
