/**
 * BitTorrent peer wire codec (BEP 3, BEP 6 fast extension, BEP 10 extension protocol). Sans-I/O.
 *
 * - `encode*` functions build single messages (fresh Buffers, ready for socket.write).
 * - `MessageParser` is a streaming decoder: feed it chunks of any size; it yields typed messages.
 *   It never buffers more than one message (bounded by configurable caps), never concatenates the
 *   stream (O(n) over any chunking), returns piece blocks as zero-copy subarrays when the whole
 *   message sits in one chunk (otherwise exactly one copy), skips unknown message ids without
 *   buffering them, and reports malformed input as a `WireProtocolError`.
 */

export const PROTOCOL_NAME = 'BitTorrent protocol';
/** 1 + 19 + 8 + 20 + 20 */
export const HANDSHAKE_LENGTH = 68;
export const DEFAULT_MAX_BLOCK_LENGTH = 16 * 1024;
export const DEFAULT_MAX_MESSAGE_LENGTH = 1024 * 1024;

export const MessageId = {
  CHOKE: 0,
  UNCHOKE: 1,
  INTERESTED: 2,
  NOT_INTERESTED: 3,
  HAVE: 4,
  BITFIELD: 5,
  REQUEST: 6,
  PIECE: 7,
  CANCEL: 8,
  PORT: 9,
  SUGGEST: 0x0d,
  HAVE_ALL: 0x0e,
  HAVE_NONE: 0x0f,
  REJECT: 0x10,
  ALLOWED_FAST: 0x11,
  EXTENDED: 20,
} as const;

export type WireErrorCode =
  | 'BAD_HANDSHAKE'
  | 'MESSAGE_TOO_LONG'
  | 'BAD_MESSAGE_LENGTH'
  | 'BAD_MESSAGE'
  | 'PROTOCOL_VIOLATION'
  | 'TIMEOUT';

/** Typed error for anything a peer sends that breaks the protocol (or a protocol-level timeout). */
export class WireProtocolError extends Error {
  constructor(readonly code: WireErrorCode, message: string) {
    super(`wire: ${message}`);
    this.name = 'WireProtocolError';
  }
}

export interface PeerCaps {
  /** BEP 10 extension protocol: reserved[5] & 0x10 */
  extended: boolean;
  /** BEP 6 fast extension: reserved[7] & 0x04 */
  fast: boolean;
  /** BEP 5 DHT (port message): reserved[7] & 0x01 */
  dht: boolean;
}

export interface Handshake {
  infoHash: Buffer;
  peerId: Buffer;
  /** The 8 reserved bytes as received (copy). */
  reserved: Buffer;
  caps: PeerCaps;
}

export function encodeReserved(caps: Partial<PeerCaps> = {}): Buffer {
  const r = Buffer.alloc(8);
  if (caps.extended) r[5] |= 0x10;
  if (caps.fast) r[7] |= 0x04;
  if (caps.dht) r[7] |= 0x01;
  return r;
}

export function parseReserved(reserved: Uint8Array): PeerCaps {
  return {
    extended: (reserved[5] & 0x10) !== 0,
    fast: (reserved[7] & 0x04) !== 0,
    dht: (reserved[7] & 0x01) !== 0,
  };
}

const PSTR = Buffer.from(`\x13${PROTOCOL_NAME}`, 'latin1');

function check20(b: Uint8Array, what: string): void {
  if (!(b instanceof Uint8Array) || b.length !== 20) throw new TypeError(`${what} must be 20 bytes`);
}

/** 68-byte handshake. `reserved` is either the raw 8 bytes or the capability flags to set. */
export function encodeHandshake(infoHash: Uint8Array, peerId: Uint8Array, reserved: Uint8Array | Partial<PeerCaps> = {}): Buffer {
  check20(infoHash, 'info-hash');
  check20(peerId, 'peer id');
  const out = Buffer.allocUnsafe(HANDSHAKE_LENGTH);
  PSTR.copy(out, 0);
  if (reserved instanceof Uint8Array) {
    if (reserved.length !== 8) throw new TypeError('reserved must be 8 bytes');
    out.set(reserved, 20);
  } else {
    encodeReserved(reserved).copy(out, 20);
  }
  out.set(infoHash, 28);
  out.set(peerId, 48);
  return out;
}

/** Check the 20-byte protocol prefix; returns an error for a foreign protocol (e.g. MSE-encrypted or HTTP). */
function checkPstr(buf: Uint8Array, offset: number, n: number): WireProtocolError | null {
  for (let i = 0; i < n; i++) {
    if (buf[offset + i] !== PSTR[i]) {
      return new WireProtocolError('BAD_HANDSHAKE', i === 0 ? `bad protocol name length ${buf[offset]}` : 'protocol name is not "BitTorrent protocol"');
    }
  }
  return null;
}

/** Parse a complete 68-byte handshake (copies out the fields). Throws WireProtocolError. */
export function parseHandshake(buf: Uint8Array): Handshake {
  if (buf.length < HANDSHAKE_LENGTH) throw new WireProtocolError('BAD_HANDSHAKE', `handshake is ${buf.length} bytes, need ${HANDSHAKE_LENGTH}`);
  const err = checkPstr(buf, 0, 20);
  if (err) throw err;
  const b = Buffer.from(buf.buffer, buf.byteOffset, HANDSHAKE_LENGTH);
  const reserved = Buffer.from(b.subarray(20, 28));
  return {
    reserved,
    caps: parseReserved(reserved),
    infoHash: Buffer.from(b.subarray(28, 48)),
    peerId: Buffer.from(b.subarray(48, 68)),
  };
}

// ---------------------------------------------------------------- encoders

function u32(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`${what} must be a uint32, got ${n}`);
  return n;
}

const KEEP_ALIVE = Buffer.alloc(4);
function simple(id: number): Buffer {
  const b = Buffer.allocUnsafe(5);
  b.writeUInt32BE(1, 0);
  b[4] = id;
  return b;
}
function withIndex(id: number, index: number): Buffer {
  const b = Buffer.allocUnsafe(9);
  b.writeUInt32BE(5, 0);
  b[4] = id;
  b.writeUInt32BE(u32(index, 'index'), 5);
  return b;
}
function withTriple(id: number, index: number, begin: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(17);
  b.writeUInt32BE(13, 0);
  b[4] = id;
  b.writeUInt32BE(u32(index, 'index'), 5);
  b.writeUInt32BE(u32(begin, 'begin'), 9);
  b.writeUInt32BE(u32(length, 'length'), 13);
  return b;
}

export function encodeKeepAlive(): Buffer {
  return KEEP_ALIVE;
}
export const encodeChoke = (): Buffer => simple(MessageId.CHOKE);
export const encodeUnchoke = (): Buffer => simple(MessageId.UNCHOKE);
export const encodeInterested = (): Buffer => simple(MessageId.INTERESTED);
export const encodeNotInterested = (): Buffer => simple(MessageId.NOT_INTERESTED);
export const encodeHaveAll = (): Buffer => simple(MessageId.HAVE_ALL);
export const encodeHaveNone = (): Buffer => simple(MessageId.HAVE_NONE);
export const encodeHave = (index: number): Buffer => withIndex(MessageId.HAVE, index);
export const encodeSuggest = (index: number): Buffer => withIndex(MessageId.SUGGEST, index);
export const encodeAllowedFast = (index: number): Buffer => withIndex(MessageId.ALLOWED_FAST, index);
export const encodeRequest = (index: number, begin: number, length: number): Buffer => withTriple(MessageId.REQUEST, index, begin, length);
export const encodeCancel = (index: number, begin: number, length: number): Buffer => withTriple(MessageId.CANCEL, index, begin, length);
export const encodeReject = (index: number, begin: number, length: number): Buffer => withTriple(MessageId.REJECT, index, begin, length);

export function encodeBitfield(bitfield: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(5 + bitfield.length);
  b.writeUInt32BE(1 + bitfield.length, 0);
  b[4] = MessageId.BITFIELD;
  b.set(bitfield, 5);
  return b;
}

export function encodePort(port: number): Buffer {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`invalid port ${port}`);
  const b = Buffer.allocUnsafe(7);
  b.writeUInt32BE(3, 0);
  b[4] = MessageId.PORT;
  b.writeUInt16BE(port, 5);
  return b;
}

/** The 13-byte header of a piece message; write the block right after it (no concatenation needed). */
export function encodePieceHeader(index: number, begin: number, blockLength: number): Buffer {
  const b = Buffer.allocUnsafe(13);
  b.writeUInt32BE(u32(9 + blockLength, 'piece message length'), 0);
  b[4] = MessageId.PIECE;
  b.writeUInt32BE(u32(index, 'index'), 5);
  b.writeUInt32BE(u32(begin, 'begin'), 9);
  return b;
}

/** Whole piece message in one Buffer (copies the block; the PeerWire hot path uses encodePieceHeader instead). */
export function encodePiece(index: number, begin: number, block: Uint8Array): Buffer {
  return Buffer.concat([encodePieceHeader(index, begin, block.length), block]);
}

/** The 6-byte header of a BEP 10 extended message; the payload follows. */
export function encodeExtendedHeader(extId: number, payloadLength: number): Buffer {
  if (!Number.isInteger(extId) || extId < 0 || extId > 255) throw new RangeError(`invalid extended message id ${extId}`);
  const b = Buffer.allocUnsafe(6);
  b.writeUInt32BE(u32(2 + payloadLength, 'extended message length'), 0);
  b[4] = MessageId.EXTENDED;
  b[5] = extId;
  return b;
}

export function encodeExtended(extId: number, payload: Uint8Array): Buffer {
  return Buffer.concat([encodeExtendedHeader(extId, payload.length), payload]);
}

// ---------------------------------------------------------------- messages

export type WireMessage =
  | { type: 'handshake'; handshake: Handshake }
  | { type: 'keep-alive' }
  | { type: 'choke' }
  | { type: 'unchoke' }
  | { type: 'interested' }
  | { type: 'not-interested' }
  | { type: 'have'; index: number }
  | { type: 'bitfield'; bitfield: Buffer }
  | { type: 'request'; index: number; begin: number; length: number }
  | { type: 'piece'; index: number; begin: number; block: Buffer }
  | { type: 'cancel'; index: number; begin: number; length: number }
  | { type: 'port'; port: number }
  | { type: 'suggest'; index: number }
  | { type: 'have-all' }
  | { type: 'have-none' }
  | { type: 'reject'; index: number; begin: number; length: number }
  | { type: 'allowed-fast'; index: number }
  | { type: 'extended'; extId: number; payload: Buffer };

export type WireMessageType = WireMessage['type'];

/** Encode any message object (handy for tests and tools; PeerWire uses the specialised encoders). */
export function encodeMessage(m: WireMessage): Buffer {
  switch (m.type) {
    case 'handshake': return encodeHandshake(m.handshake.infoHash, m.handshake.peerId, m.handshake.reserved);
    case 'keep-alive': return Buffer.alloc(4);
    case 'choke': return encodeChoke();
    case 'unchoke': return encodeUnchoke();
    case 'interested': return encodeInterested();
    case 'not-interested': return encodeNotInterested();
    case 'have': return encodeHave(m.index);
    case 'bitfield': return encodeBitfield(m.bitfield);
    case 'request': return encodeRequest(m.index, m.begin, m.length);
    case 'piece': return encodePiece(m.index, m.begin, m.block);
    case 'cancel': return encodeCancel(m.index, m.begin, m.length);
    case 'port': return encodePort(m.port);
    case 'suggest': return encodeSuggest(m.index);
    case 'have-all': return encodeHaveAll();
    case 'have-none': return encodeHaveNone();
    case 'reject': return encodeReject(m.index, m.begin, m.length);
    case 'allowed-fast': return encodeAllowedFast(m.index);
    case 'extended': return encodeExtended(m.extId, m.payload);
  }
}

// ---------------------------------------------------------------- parser

export interface ParserOptions {
  /** Expect a 68-byte handshake before the length-prefixed messages (default false). */
  expectHandshake?: boolean;
  /** Cap on any message's length prefix (default 1 MiB). Exceeding it is an error as soon as the 4 length bytes arrive. */
  maxMessageLength?: number;
  /** Cap on a piece message's block (default 16 KiB; raise it if you request bigger blocks). */
  maxBlockLength?: number;
  /** Cap on a bitfield's byte length (default: maxMessageLength - 1). */
  maxBitfieldLength?: number;
  /**
   * The caller reuses each chunk's memory once feed() returns (a socket reading into one fixed buffer): whatever
   * outlives the call is copied — extended payloads and input held back. Piece blocks stay zero-copy views, valid
   * only until the sink returns (consumers copy them, as the torrent does into its piece buffer).
   */
  transientChunks?: boolean;
}

/** Return `false` from the sink to stop parsing; the rest is kept and parsed on the next feed(). */
export type MessageSink = (msg: WireMessage) => boolean | void;

const ST_HANDSHAKE = 0, ST_LEN = 1, ST_ID = 2, ST_BODY = 3, ST_SKIP = 4, ST_FAILED = 5;

/** Exact payload lengths (after the id byte) for fixed-size messages; -1 = variable. */
const FIXED = new Int32Array(256).fill(-2); // -2 = unknown id
FIXED[MessageId.CHOKE] = 0;
FIXED[MessageId.UNCHOKE] = 0;
FIXED[MessageId.INTERESTED] = 0;
FIXED[MessageId.NOT_INTERESTED] = 0;
FIXED[MessageId.HAVE] = 4;
FIXED[MessageId.BITFIELD] = -1;
FIXED[MessageId.REQUEST] = 12;
FIXED[MessageId.PIECE] = -1;
FIXED[MessageId.CANCEL] = 12;
FIXED[MessageId.PORT] = 2;
FIXED[MessageId.SUGGEST] = 4;
FIXED[MessageId.HAVE_ALL] = 0;
FIXED[MessageId.HAVE_NONE] = 0;
FIXED[MessageId.REJECT] = 12;
FIXED[MessageId.ALLOWED_FAST] = 4;
FIXED[MessageId.EXTENDED] = -1;

const NAMES: Record<number, string> = {
  0: 'choke', 1: 'unchoke', 2: 'interested', 3: 'not-interested', 4: 'have', 5: 'bitfield', 6: 'request', 7: 'piece',
  8: 'cancel', 9: 'port', 13: 'suggest', 14: 'have-all', 15: 'have-none', 16: 'reject', 17: 'allowed-fast', 20: 'extended',
};

const EMPTY = Buffer.alloc(0);
const M_KEEPALIVE: WireMessage = Object.freeze({ type: 'keep-alive' });
const M_CHOKE: WireMessage = Object.freeze({ type: 'choke' });
const M_UNCHOKE: WireMessage = Object.freeze({ type: 'unchoke' });
const M_INTERESTED: WireMessage = Object.freeze({ type: 'interested' });
const M_NOT_INTERESTED: WireMessage = Object.freeze({ type: 'not-interested' });
const M_HAVE_ALL: WireMessage = Object.freeze({ type: 'have-all' });
const M_HAVE_NONE: WireMessage = Object.freeze({ type: 'have-none' });

export class MessageParser {
  readonly maxMessageLength: number;
  readonly maxBlockLength: number;
  readonly maxBitfieldLength: number;
  private readonly transient: boolean;

  private state: number;
  /** Bytes of the current header / handshake / small body collected so far. */
  private have = 0;
  private len = 0;
  private id = 0;
  /** Scratch for headers, handshakes and fixed bodies that straddle chunks (68 bytes is the largest). */
  private readonly scratch = Buffer.allocUnsafe(HANDSHAKE_LENGTH);
  /** Body under assembly when a variable-size message straddles chunks (allocated once per such message). */
  private body: Buffer | null = null;
  /**
   * With transient chunks, one buffer reused for every PIECE body that straddles chunks: its block is a view valid
   * only until the sink returns, like a block read whole from a chunk. (A new 16 KiB buffer for each such block, about
   * one in four at 64 KiB reads, was 256 MiB of short-lived external memory per GiB downloaded: the old-generation
   * collections it set off cost more CPU than the copies.)
   */
  private pieceBody: Buffer | null = null;
  private skip = 0;
  private error: WireProtocolError | null = null;
  /** Unconsumed input kept when the sink asked to stop. */
  private held: Buffer[] = [];
  /** Total bytes consumed (handy for accounting and tests). */
  bytesParsed = 0;

  constructor(opts: ParserOptions = {}) {
    this.maxMessageLength = opts.maxMessageLength ?? DEFAULT_MAX_MESSAGE_LENGTH;
    this.maxBlockLength = opts.maxBlockLength ?? DEFAULT_MAX_BLOCK_LENGTH;
    this.maxBitfieldLength = opts.maxBitfieldLength ?? this.maxMessageLength - 1;
    this.transient = opts.transientChunks ?? false;
    if (!(this.maxMessageLength >= 13)) throw new RangeError('maxMessageLength must be at least 13');
    this.state = opts.expectHandshake ? ST_HANDSHAKE : ST_LEN;
  }

  /** The error that stopped the parser, if any (it stays failed). */
  get failed(): WireProtocolError | null {
    return this.error;
  }

  /** Bytes held back after the sink stopped parsing. */
  get heldBytes(): number {
    let n = 0;
    for (const b of this.held) n += b.length;
    return n;
  }

  /** True while the parser is in the middle of a message (for tests and diagnostics). */
  get midMessage(): boolean {
    return this.state !== ST_LEN || this.have !== 0;
  }

  /**
   * Parse a chunk, calling `sink` for each complete message. Never throws for any input bytes:
   * returns the WireProtocolError that stopped the stream (then and forever after), or null.
   */
  feed(chunk: Buffer, sink: MessageSink): WireProtocolError | null {
    if (this.error) return this.error;
    if (this.held.length > 0) {
      if (chunk.length > 0) this.held.push(this.transient ? Buffer.from(chunk) : chunk);
      while (this.held.length > 0) {
        const c = this.held.shift()!;
        const stopped = this.run(c, sink);
        if (this.error) return this.error;
        if (stopped) return null;
      }
      return null;
    }
    this.run(chunk, sink);
    return this.error;
  }

  /** Convenience: parse a chunk and return the messages. Throws WireProtocolError on malformed input. */
  push(chunk: Buffer): WireMessage[] {
    const out: WireMessage[] = [];
    const err = this.feed(chunk, (m) => {
      out.push(m);
    });
    if (err) throw err;
    return out;
  }

  private fail(code: WireErrorCode, msg: string): void {
    this.error = new WireProtocolError(code, msg);
    this.state = ST_FAILED;
    this.body = null;
    this.held = [];
  }

  /** Returns true if the sink asked to stop (remaining input held). */
  private run(chunk: Buffer, sink: MessageSink): boolean {
    const n = chunk.length;
    let off = 0;
    while (off < n) {
      switch (this.state) {
        case ST_HANDSHAKE: {
          const take = Math.min(HANDSHAKE_LENGTH - this.have, n - off);
          chunk.copy(this.scratch, this.have, off, off + take);
          // Validate the protocol prefix as soon as its bytes arrive: a foreign protocol fails at once.
          const pfx = Math.min(20, this.have + take);
          if (this.have < 20) {
            const err = checkPstr(this.scratch, 0, pfx);
            if (err) {
              this.fail(err.code, err.message.replace(/^wire: /, ''));
              return false;
            }
          }
          this.have += take;
          off += take;
          this.bytesParsed += take;
          if (this.have === HANDSHAKE_LENGTH) {
            this.have = 0;
            this.state = ST_LEN;
            const handshake = parseHandshake(this.scratch);
            if (sink({ type: 'handshake', handshake }) === false) return this.hold(chunk, off);
          }
          break;
        }
        case ST_LEN: {
          let len: number;
          if (this.have === 0 && n - off >= 4) {
            len = chunk.readUInt32BE(off);
            off += 4;
            this.bytesParsed += 4;
          } else {
            const take = Math.min(4 - this.have, n - off);
            chunk.copy(this.scratch, this.have, off, off + take);
            this.have += take;
            off += take;
            this.bytesParsed += take;
            if (this.have < 4) break;
            this.have = 0;
            len = this.scratch.readUInt32BE(0);
          }
          if (len === 0) {
            if (sink(M_KEEPALIVE) === false) return this.hold(chunk, off);
            break;
          }
          if (len > this.maxMessageLength) {
            this.fail('MESSAGE_TOO_LONG', `message length ${len} exceeds the limit of ${this.maxMessageLength}`);
            return false;
          }
          this.len = len;
          this.state = ST_ID;
          break;
        }
        case ST_ID: {
          const id = chunk[off++];
          this.bytesParsed++;
          const bodyLen = this.len - 1;
          const fixed = FIXED[id];
          if (fixed === -2) {
            // Unknown message: ignore per spec, without buffering it.
            this.skip = bodyLen;
            this.state = bodyLen > 0 ? ST_SKIP : ST_LEN;
            break;
          }
          if (fixed >= 0 && bodyLen !== fixed) {
            this.fail('BAD_MESSAGE_LENGTH', `${NAMES[id]} message has length ${this.len}, expected ${fixed + 1}`);
            return false;
          }
          if (id === MessageId.PIECE && (bodyLen < 8 || bodyLen - 8 > this.maxBlockLength)) {
            this.fail(bodyLen < 8 ? 'BAD_MESSAGE_LENGTH' : 'MESSAGE_TOO_LONG', `piece message with a ${bodyLen - 8}-byte block (limit ${this.maxBlockLength})`);
            return false;
          }
          if (id === MessageId.BITFIELD && bodyLen > this.maxBitfieldLength) {
            this.fail('MESSAGE_TOO_LONG', `bitfield of ${bodyLen} bytes exceeds the limit of ${this.maxBitfieldLength}`);
            return false;
          }
          if (id === MessageId.EXTENDED && bodyLen < 1) {
            this.fail('BAD_MESSAGE_LENGTH', 'extended message without an extended id');
            return false;
          }
          this.id = id;
          this.len = bodyLen;
          if (bodyLen === 0) {
            this.state = ST_LEN;
            if (sink(this.emptyMessage(id)) === false) return this.hold(chunk, off);
            break;
          }
          this.state = ST_BODY;
          break;
        }
        case ST_BODY: {
          const need = this.len - this.have;
          let msg: WireMessage;
          if (this.have === 0 && n - off >= need) {
            // Whole body in this chunk: zero copy.
            msg = this.decodeBody(chunk, off, this.len, false);
            off += need;
            this.bytesParsed += need;
          } else {
            const take = Math.min(need, n - off);
            if (this.len <= HANDSHAKE_LENGTH) {
              chunk.copy(this.scratch, this.have, off, off + take);
            } else {
              if (this.body === null) this.body = this.bodyBuffer();
              chunk.copy(this.body, this.have, off, off + take);
            }
            this.have += take;
            off += take;
            this.bytesParsed += take;
            if (this.have < this.len) break;
            const src = this.body ?? this.scratch;
            this.body = null;
            msg = this.decodeBody(src, 0, this.len, src !== this.scratch && src !== this.pieceBody);
          }
          this.have = 0;
          this.state = ST_LEN;
          if (sink(msg) === false) return this.hold(chunk, off);
          break;
        }
        case ST_SKIP: {
          const take = Math.min(this.skip, n - off);
          this.skip -= take;
          off += take;
          this.bytesParsed += take;
          if (this.skip === 0) this.state = ST_LEN;
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }

  /** Where a straddling body of `this.len` bytes is assembled. */
  private bodyBuffer(): Buffer {
    if (!this.transient || this.id !== MessageId.PIECE) return Buffer.allocUnsafe(this.len);
    if (this.pieceBody === null || this.pieceBody.length < this.len) this.pieceBody = Buffer.allocUnsafe(Math.max(this.len, this.maxBlockLength + 8));
    return this.pieceBody;
  }

  private hold(chunk: Buffer, off: number): boolean {
    if (off < chunk.length) this.held.unshift(this.transient ? Buffer.from(chunk.subarray(off)) : chunk.subarray(off));
    return true;
  }

  private emptyMessage(id: number): WireMessage {
    switch (id) {
      case MessageId.CHOKE: return M_CHOKE;
      case MessageId.UNCHOKE: return M_UNCHOKE;
      case MessageId.INTERESTED: return M_INTERESTED;
      case MessageId.NOT_INTERESTED: return M_NOT_INTERESTED;
      case MessageId.HAVE_ALL: return M_HAVE_ALL;
      case MessageId.HAVE_NONE: return M_HAVE_NONE;
      case MessageId.BITFIELD: return { type: 'bitfield', bitfield: EMPTY };
      default: throw new Error('unreachable');
    }
  }

  /** `owned`: buf is a private allocation (no need to copy to detach it from the stream). */
  private decodeBody(buf: Buffer, off: number, len: number, owned: boolean): WireMessage {
    switch (this.id) {
      case MessageId.HAVE: return { type: 'have', index: buf.readUInt32BE(off) };
      case MessageId.SUGGEST: return { type: 'suggest', index: buf.readUInt32BE(off) };
      case MessageId.ALLOWED_FAST: return { type: 'allowed-fast', index: buf.readUInt32BE(off) };
      case MessageId.REQUEST:
        return { type: 'request', index: buf.readUInt32BE(off), begin: buf.readUInt32BE(off + 4), length: buf.readUInt32BE(off + 8) };
      case MessageId.CANCEL:
        return { type: 'cancel', index: buf.readUInt32BE(off), begin: buf.readUInt32BE(off + 4), length: buf.readUInt32BE(off + 8) };
      case MessageId.REJECT:
        return { type: 'reject', index: buf.readUInt32BE(off), begin: buf.readUInt32BE(off + 4), length: buf.readUInt32BE(off + 8) };
      case MessageId.PORT: return { type: 'port', port: buf.readUInt16BE(off) };
      case MessageId.PIECE:
        return { type: 'piece', index: buf.readUInt32BE(off), begin: buf.readUInt32BE(off + 4), block: this.slice(buf, off + 8, off + len) };
      case MessageId.BITFIELD:
        // Bitfields live for the whole connection: always detach them from the socket chunk.
        return { type: 'bitfield', bitfield: owned ? buf.subarray(off, off + len) : Buffer.from(buf.subarray(off, off + len)) };
      case MessageId.EXTENDED:
        // Extension handlers keep parts of what they decode (a handshake dict, a signature): detach from reused memory.
        return { type: 'extended', extId: buf[off], payload: this.transient && !owned ? Buffer.from(buf.subarray(off + 1, off + len)) : this.slice(buf, off + 1, off + len) };
      default:
        throw new Error('unreachable');
    }
  }

  private slice(buf: Buffer, start: number, end: number): Buffer {
    // The scratch buffer is reused: anything taken from it must be copied.
    return buf === this.scratch ? Buffer.from(buf.subarray(start, end)) : buf.subarray(start, end);
  }
}
