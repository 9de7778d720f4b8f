/**
 * Bencode codec (BEP 3). Sans-I/O: bytes in, values out.
 *
 * Values: integers decode to `bigint` only when they do not fit a safe JS number
 * (so ordinary lengths stay `number`), byte strings decode to `Uint8Array`
 * (Buffer subarrays, zero-copy), lists to arrays, dictionaries to
 * `BencodeDict` (a plain object keyed by the latin1 form of the raw key bytes,
 * so binary keys round-trip exactly).
 *
 * Strict where it matters for security (lengths, nesting depth, truncation,
 * leading zeros, "-0") and tolerant where real torrents are sloppy
 * (unsorted or duplicate dictionary keys are accepted on decode; encode always sorts).
 */

export type BencodeValue = number | bigint | Uint8Array | BencodeValue[] | BencodeDict;
export interface BencodeDict {
  [key: string]: BencodeValue;
}

export class BencodeError extends Error {
  constructor(message: string, readonly offset: number) {
    super(`bencode: ${message} at byte ${offset}`);
    this.name = 'BencodeError';
  }
}

export interface DecodeOptions {
  /** Maximum nesting depth of lists/dicts (default 64). */
  maxDepth?: number;
  /** Reject dictionaries whose keys are not sorted / unique (default false: real torrents are sloppy). */
  strictKeyOrder?: boolean;
  /** Allow trailing bytes after the first value (default false). */
  allowTrailing?: boolean;
}

export interface DecodeResult {
  value: BencodeValue;
  /** Offset just past the decoded value. */
  end: number;
}

/** Byte span [start, end) of the value stored under each key of the top-level dict, when asked for. */
export interface SpanRecorder {
  /** Top-level key whose raw value bytes should be located (e.g. "info"). */
  key: string;
  start?: number;
  end?: number;
}

const C_i = 0x69, C_l = 0x6c, C_d = 0x64, C_e = 0x65, C_colon = 0x3a, C_minus = 0x2d, C_0 = 0x30, C_9 = 0x39;

function toBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

class Decoder {
  pos = 0;
  constructor(
    readonly buf: Buffer,
    readonly maxDepth: number,
    readonly strictKeyOrder: boolean,
    readonly span?: SpanRecorder,
  ) {}

  fail(msg: string): never {
    throw new BencodeError(msg, this.pos);
  }

  value(depth: number): BencodeValue {
    const buf = this.buf;
    if (this.pos >= buf.length) this.fail('unexpected end of data');
    const c = buf[this.pos];
    if (c === C_i) return this.integer();
    if (c >= C_0 && c <= C_9) return this.bytes();
    if (c === C_l) {
      if (depth >= this.maxDepth) this.fail('nesting too deep');
      this.pos++;
      const list: BencodeValue[] = [];
      while (true) {
        if (this.pos >= buf.length) this.fail('unterminated list');
        if (buf[this.pos] === C_e) break;
        list.push(this.value(depth + 1));
      }
      this.pos++;
      return list;
    }
    if (c === C_d) {
      if (depth >= this.maxDepth) this.fail('nesting too deep');
      this.pos++;
      const dict: BencodeDict = Object.create(null);
      let prevKey: Buffer | undefined;
      while (true) {
        if (this.pos >= buf.length) this.fail('unterminated dictionary');
        if (buf[this.pos] === C_e) break;
        const kc = buf[this.pos];
        if (kc < C_0 || kc > C_9) this.fail('dictionary key is not a byte string');
        const keyBytes = this.bytes() as Buffer;
        if (this.strictKeyOrder && prevKey && Buffer.compare(prevKey, keyBytes) >= 0) {
          this.fail('dictionary keys not sorted or duplicated');
        }
        prevKey = keyBytes;
        const key = keyBytes.toString('latin1');
        const start = this.pos;
        const v = this.value(depth + 1);
        if (depth === 0 && this.span && key === this.span.key) {
          this.span.start = start;
          this.span.end = this.pos;
        }
        // Duplicate keys: last one wins (tolerant), unless strict mode rejected it above.
        dict[key] = v;
      }
      this.pos++;
      return dict;
    }
    this.fail(`unexpected byte 0x${c.toString(16)}`);
  }

  integer(): number | bigint {
    const buf = this.buf;
    const start = ++this.pos;
    const end = buf.indexOf(C_e, start);
    if (end < 0) this.fail('unterminated integer');
    if (end - start > 64) this.fail('integer too long');
    let i = start;
    if (buf[i] === C_minus) i++;
    if (i === end) this.fail('empty integer');
    for (let j = i; j < end; j++) {
      const d = buf[j];
      if (d < C_0 || d > C_9) this.fail('invalid integer digit');
    }
    if (buf[i] === C_0 && end - i > 1) this.fail('integer has leading zero');
    if (buf[start] === C_minus && buf[i] === C_0) this.fail('negative zero');
    const text = buf.toString('latin1', start, end);
    this.pos = end + 1;
    const n = Number(text);
    return Number.isSafeInteger(n) ? n : BigInt(text);
  }

  bytes(): Uint8Array {
    const buf = this.buf;
    const start = this.pos;
    let len = 0;
    let i = start;
    while (i < buf.length && buf[i] !== C_colon) {
      const d = buf[i];
      if (d < C_0 || d > C_9) this.fail('invalid string length');
      if (i - start >= 15) this.fail('string length too long');
      len = len * 10 + (d - C_0);
      i++;
    }
    if (i >= buf.length) this.fail('unterminated string length');
    if (i === start) this.fail('empty string length');
    if (buf[start] === C_0 && i - start > 1) this.fail('string length has leading zero');
    const dataStart = i + 1;
    if (dataStart + len > buf.length) {
      this.pos = dataStart;
      this.fail(`string of ${len} bytes runs past end of data`);
    }
    this.pos = dataStart + len;
    return buf.subarray(dataStart, dataStart + len);
  }
}

/** Decode exactly one bencoded value. Throws BencodeError on malformed input. */
export function decode(data: Uint8Array, options: DecodeOptions = {}): BencodeValue {
  const r = decodePrefix(data, options);
  if (!options.allowTrailing && r.end !== data.length) {
    throw new BencodeError('trailing data after value', r.end);
  }
  return r.value;
}

/** Decode one value from the start of `data`, returning where it ended (for messages followed by raw payload, e.g. ut_metadata). */
export function decodePrefix(data: Uint8Array, options: DecodeOptions = {}, span?: SpanRecorder): DecodeResult {
  const d = new Decoder(toBuffer(data), options.maxDepth ?? 64, options.strictKeyOrder ?? false, span);
  const value = d.value(0);
  return { value, end: d.pos };
}

/** Decode and also return the raw byte span of one top-level key (the info dict for info-hash computation). */
export function decodeWithSpan(data: Uint8Array, key: string, options: DecodeOptions = {}): { value: BencodeValue; span?: Uint8Array } {
  const rec: SpanRecorder = { key };
  const r = decodePrefix(data, options, rec);
  if (!options.allowTrailing && r.end !== data.length) throw new BencodeError('trailing data after value', r.end);
  const span = rec.start !== undefined ? toBuffer(data).subarray(rec.start, rec.end) : undefined;
  return { value: r.value, span };
}

export type EncodableValue =
  | number
  | bigint
  | string
  | Uint8Array
  | boolean
  | EncodableValue[]
  | { [key: string]: EncodableValue | undefined | null }
  | Map<string | Uint8Array, EncodableValue>;

/** Encode a value. Strings encode as UTF-8; dictionary keys are sorted by raw bytes; undefined/null dict values are omitted. */
export function encode(value: EncodableValue): Buffer {
  const parts: Buffer[] = [];
  encodeInto(value, parts);
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

function keyBytes(k: string | Uint8Array): Buffer {
  // Object keys produced by decode() are latin1 views of raw bytes; encode them back as latin1 when they contain
  // no characters above 0xff. Keys with higher code points are treated as UTF-8 text.
  if (typeof k !== 'string') return toBuffer(k);
  for (let i = 0; i < k.length; i++) if (k.charCodeAt(i) > 0xff) return Buffer.from(k, 'utf8');
  return Buffer.from(k, 'latin1');
}

function encodeInto(value: EncodableValue, out: Buffer[]): void {
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new TypeError(`bencode: cannot encode non-integer number ${value}`);
    out.push(Buffer.from(`i${value}e`, 'latin1'));
  } else if (typeof value === 'bigint') {
    out.push(Buffer.from(`i${value}e`, 'latin1'));
  } else if (typeof value === 'boolean') {
    out.push(Buffer.from(value ? 'i1e' : 'i0e', 'latin1'));
  } else if (typeof value === 'string') {
    const b = Buffer.from(value, 'utf8');
    out.push(Buffer.from(`${b.length}:`, 'latin1'), b);
  } else if (value instanceof Uint8Array) {
    out.push(Buffer.from(`${value.length}:`, 'latin1'), toBuffer(value));
  } else if (Array.isArray(value)) {
    out.push(Buffer.from('l', 'latin1'));
    for (const v of value) encodeInto(v, out);
    out.push(Buffer.from('e', 'latin1'));
  } else if (value instanceof Map) {
    const entries = [...value.entries()].map(([k, v]) => [keyBytes(k), v] as const);
    encodeDictEntries(entries, out);
  } else if (value !== null && typeof value === 'object') {
    const entries: (readonly [Buffer, EncodableValue])[] = [];
    for (const k of Object.keys(value)) {
      const v = (value as Record<string, EncodableValue | undefined | null>)[k];
      if (v === undefined || v === null) continue;
      entries.push([keyBytes(k), v]);
    }
    encodeDictEntries(entries, out);
  } else {
    throw new TypeError(`bencode: cannot encode ${typeof value}`);
  }
}

function encodeDictEntries(entries: (readonly [Buffer, EncodableValue])[], out: Buffer[]): void {
  entries.sort((a, b) => Buffer.compare(a[0], b[0]));
  out.push(Buffer.from('d', 'latin1'));
  for (const [k, v] of entries) {
    out.push(Buffer.from(`${k.length}:`, 'latin1'), k);
    encodeInto(v, out);
  }
  out.push(Buffer.from('e', 'latin1'));
}

// ---- Typed accessors for decoded values: each throws a clear error naming the field. ----

export function isDict(v: unknown): v is BencodeDict {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

export function asDict(v: BencodeValue | undefined, what: string): BencodeDict {
  if (!isDict(v)) throw new TypeError(`${what}: expected a dictionary`);
  return v;
}
export function asBytes(v: BencodeValue | undefined, what: string): Buffer {
  if (!(v instanceof Uint8Array)) throw new TypeError(`${what}: expected a byte string`);
  return toBuffer(v);
}
export function asString(v: BencodeValue | undefined, what: string): string {
  return asBytes(v, what).toString('utf8');
}
export function asInt(v: BencodeValue | undefined, what: string): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') throw new RangeError(`${what}: integer ${v} out of range`);
  throw new TypeError(`${what}: expected an integer`);
}
export function asList(v: BencodeValue | undefined, what: string): BencodeValue[] {
  if (!Array.isArray(v)) throw new TypeError(`${what}: expected a list`);
  return v;
}
export function optString(v: BencodeValue | undefined): string | undefined {
  return v instanceof Uint8Array ? toBuffer(v).toString('utf8') : undefined;
}
export function optInt(v: BencodeValue | undefined): number | undefined {
  return typeof v === 'number' ? v : undefined;
}
