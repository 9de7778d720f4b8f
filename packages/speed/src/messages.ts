/**
 * BitTorrent Speed wire codec (BEP 10 extension "bt_speed", version 1). Sans-I/O: values in, bytes out.
 * The normative description is docs/speed-protocol.md; every limit below is stated there.
 *
 * Every payload is one bencoded dictionary with an integer `msg_type`. Decoding is strict: sorted unique keys,
 * no trailing bytes, exact byte-string lengths, integers within their stated ranges. Unknown keys are ignored
 * (forward compatibility); an unknown `msg_type` is a typed error with code 'unknown_type' that receivers ignore.
 * Any malformed input raises SpeedMessageError and nothing else.
 */
import { encode, decode, BencodeError, isDict, type BencodeValue, type BencodeDict } from '@bitorrent/core';

/** The BEP 10 extension name (key of the `m` dictionary) and the extended-handshake key holding SpeedHandshake. */
export const SPEED_EXTENSION_NAME = 'bt_speed';
export const SPEED_PROTOCOL_VERSION = 1;
/** Largest Speed payload accepted (bytes, after the BEP 10 extended message id). */
export const MAX_SPEED_MESSAGE_BYTES = 1024;

export const LEDGER_ID_BYTES = 32;
export const CHANNEL_ID_BYTES = 32;
export const PUBLIC_KEY_BYTES = 32;
export const NONCE_BYTES = 32;
export const SIGNATURE_BYTES = 64;
export const MAX_ERROR_TEXT_BYTES = 256;

export const U32_MAX = 0xffff_ffffn;
export const U64_MAX = (1n << 64n) - 1n;
export const U128_MAX = (1n << 128n) - 1n;

export const MsgType = {
  AUTH: 0,
  BID: 1,
  BID_RESPONSE: 2,
  CHANNEL: 3,
  PAYMENT: 4,
  ACK: 5,
  REJECT: 6,
  ERROR: 7,
} as const;
export type MsgTypeValue = (typeof MsgType)[keyof typeof MsgType];

/** Error codes carried by the ERROR message (and by SpeedMessageError for local decoding failures). */
export const SpeedErrorCode = {
  MALFORMED: 1,
  UNSUPPORTED_VERSION: 2,
  AUTH_FAILED: 3,
  WRONG_LEDGER: 4,
  BELOW_RESERVE: 5,
  CHANNEL_INVALID: 6,
  PAYMENT_INVALID: 7,
  PAYMENT_OVERDUE: 8,
  BANNED: 9,
  CHANNEL_EXHAUSTED: 10,
  PRICE_ABOVE_BID: 11,
  LEDGER_UNAVAILABLE: 12,
} as const;
export type SpeedErrorCodeValue = (typeof SpeedErrorCode)[keyof typeof SpeedErrorCode];

/** Sent once by each side after it has received the other's handshake: proves ownership of `pk`. */
export interface AuthMessage {
  type: 'auth';
  /** Ed25519 signature over authPayload(...) (64 bytes). */
  sig: Uint8Array;
}
/** Requester → provider: the rate it will pay, base units per byte. 0 withdraws the bid. */
export interface BidMessage {
  type: 'bid';
  /** Strictly increasing per connection, starting at 1. */
  seq: bigint;
  price: bigint;
}
/** Provider → winning requester, before the unchoke: the clearing rate it will be charged (≤ the bid `seq`). */
export interface BidResponseMessage {
  type: 'bid_response';
  /** The `seq` of the bid this answers. */
  seq: bigint;
  /** Base units per byte for every block sent from now on (until the next bid_response or choke). */
  price: bigint;
  /** Most pieces the provider will leave unpaid (K ≥ 1). */
  maxUnpaid: number;
  /** Minimum remaining channel lifetime the provider accepts, seconds. */
  minTtl: number;
}
/** Requester → provider: a channel (requester → provider) is open on the ledger and will carry payments. */
export interface ChannelMessage {
  type: 'channel';
  channel: Uint8Array;
}
/** Requester → provider: the next signed cumulative payment state, paying for `piece`. */
export interface PaymentMessage {
  type: 'payment';
  channel: Uint8Array;
  seq: bigint;
  /** Cumulative base units paid on `channel` so far (including this payment). */
  amount: bigint;
  piece: number;
  /** Ed25519 signature by the requester's key over the ledger's canonical payment-state layout (64 bytes). */
  sig: Uint8Array;
}
/** Provider → requester: the latest state it holds for `channel` (after accepting a payment, and on reconnect). */
export interface AckMessage {
  type: 'ack';
  channel: Uint8Array;
  seq: bigint;
  amount: bigint;
  /** The requester's own signature on that state, so a requester that lost its state can resume from it. */
  sig?: Uint8Array;
}
/** Requester → provider: `piece` failed its hash check; the requester will not pay for the bytes received for it. */
export interface RejectMessage {
  type: 'reject';
  piece: number;
}
export interface ErrorMessage {
  type: 'error';
  code: number;
  text?: string;
}

export type SpeedMessage =
  | AuthMessage
  | BidMessage
  | BidResponseMessage
  | ChannelMessage
  | PaymentMessage
  | AckMessage
  | RejectMessage
  | ErrorMessage;

/** Fields put in the BEP 10 extended handshake under the key "bt_speed". */
export interface SpeedHandshake {
  v: number;
  /** Ledger id (32 bytes): both peers must be on the same ledger. */
  ledger: Uint8Array;
  /** Ed25519 wallet public key (32 bytes). */
  pk: Uint8Array;
  /** Fresh random nonce (32 bytes) that the other side must sign in its AUTH message. */
  nonce: Uint8Array;
  /** Provider's reserve price, base units per byte (absent: 0). */
  reserve?: bigint;
}

export type SpeedMessageErrorKind = 'malformed' | 'unknown_type' | 'too_large' | 'invalid_value';

/** The only error this module throws on bad input. */
export class SpeedMessageError extends Error {
  constructor(
    readonly kind: SpeedMessageErrorKind,
    message: string,
  ) {
    super(`bt_speed: ${message}`);
    this.name = 'SpeedMessageError';
  }
}

// ---------- encoding ----------

function checkBytes(v: Uint8Array, len: number, what: string): Uint8Array {
  if (!(v instanceof Uint8Array)) throw new SpeedMessageError('invalid_value', `${what}: expected bytes`);
  if (v.length !== len) throw new SpeedMessageError('invalid_value', `${what}: expected ${len} bytes, got ${v.length}`);
  return v;
}
function checkInt(v: bigint | number, min: bigint, max: bigint, what: string): bigint {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new SpeedMessageError('invalid_value', `${what}: not an integer`);
    v = BigInt(v);
  }
  if (typeof v !== 'bigint') throw new SpeedMessageError('invalid_value', `${what}: expected an integer`);
  if (v < min || v > max) throw new SpeedMessageError('invalid_value', `${what}: ${v} outside [${min}, ${max}]`);
  return v;
}
/** Encode an integer as bencode would, keeping small values as numbers (identical bytes either way). */
function intVal(v: bigint): number | bigint {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** Encode a Speed message. Throws SpeedMessageError if a field is out of range (never emits an invalid message). */
export function encodeSpeedMessage(m: SpeedMessage): Buffer {
  if (m.type === 'payment' || m.type === 'ack') return encodePaymentOrAck(m);
  return encodeAnyMessage(m);
}

/** The general encoder (a dictionary through core's bencode encoder); also the reference for encodePaymentOrAck. */
export function encodeAnyMessage(m: SpeedMessage): Buffer {
  let d: Record<string, number | bigint | Uint8Array | string>;
  switch (m.type) {
    case 'auth':
      d = { msg_type: MsgType.AUTH, sig: checkBytes(m.sig, SIGNATURE_BYTES, 'sig') };
      break;
    case 'bid':
      d = {
        msg_type: MsgType.BID,
        seq: intVal(checkInt(m.seq, 1n, U64_MAX, 'seq')),
        price: intVal(checkInt(m.price, 0n, U128_MAX, 'price')),
      };
      break;
    case 'bid_response':
      d = {
        msg_type: MsgType.BID_RESPONSE,
        seq: intVal(checkInt(m.seq, 1n, U64_MAX, 'seq')),
        price: intVal(checkInt(m.price, 0n, U128_MAX, 'price')),
        k: intVal(checkInt(m.maxUnpaid, 1n, 1024n, 'maxUnpaid')),
        min_ttl: intVal(checkInt(m.minTtl, 0n, U32_MAX, 'minTtl')),
      };
      break;
    case 'channel':
      d = { msg_type: MsgType.CHANNEL, channel: checkBytes(m.channel, CHANNEL_ID_BYTES, 'channel') };
      break;
    case 'payment':
      d = {
        msg_type: MsgType.PAYMENT,
        channel: checkBytes(m.channel, CHANNEL_ID_BYTES, 'channel'),
        seq: intVal(checkInt(m.seq, 1n, U64_MAX, 'seq')),
        amount: intVal(checkInt(m.amount, 1n, U128_MAX, 'amount')),
        piece: intVal(checkInt(m.piece, 0n, U32_MAX, 'piece')),
        sig: checkBytes(m.sig, SIGNATURE_BYTES, 'sig'),
      };
      break;
    case 'ack':
      d = {
        msg_type: MsgType.ACK,
        channel: checkBytes(m.channel, CHANNEL_ID_BYTES, 'channel'),
        seq: intVal(checkInt(m.seq, 0n, U64_MAX, 'seq')),
        amount: intVal(checkInt(m.amount, 0n, U128_MAX, 'amount')),
      };
      if (m.sig !== undefined) d.sig = checkBytes(m.sig, SIGNATURE_BYTES, 'sig');
      break;
    case 'reject':
      d = { msg_type: MsgType.REJECT, piece: intVal(checkInt(m.piece, 0n, U32_MAX, 'piece')) };
      break;
    case 'error': {
      d = { msg_type: MsgType.ERROR, code: intVal(checkInt(m.code, 1n, 65535n, 'code')) };
      if (m.text !== undefined) {
        const t = Buffer.from(String(m.text), 'utf8');
        // Truncate on a UTF-8 boundary rather than reject: the text is diagnostic only.
        d.msg = t.length <= MAX_ERROR_TEXT_BYTES ? t : Buffer.from(t.subarray(0, MAX_ERROR_TEXT_BYTES).toString('utf8').replace(/\uFFFD+$/, ''), 'utf8');
      }
      break;
    }
    default:
      throw new SpeedMessageError('invalid_value', `unknown message ${(m as { type?: unknown }).type}`);
  }
  const out = encode(d);
  if (out.length > MAX_SPEED_MESSAGE_BYTES) throw new SpeedMessageError('too_large', `message of ${out.length} bytes`);
  return out;
}

// ---------- PAYMENT and ACK: one canonical layout, written and read directly ----------
//
// A paid transfer sends one PAYMENT (and its provider up to one ACK) per few MiB. Through the general path (a
// dictionary object through the bencode encoder; the decoder's dictionary through the field checks) each cost
// 30–110 µs of CPU in a busy 1 GiB transfer's profiles, ~50 ms per GiB across the two peers. These write the
// message's only valid encoding directly and read exactly that layout; anything else (unknown keys, non-canonical
// integers, values out of range) goes to the general decoder, which accepts or rejects it as before. Property tests
// hold both paths to the same bytes and values.

// The layout's fixed parts, in key order (amount, channel, msg_type, [piece], seq, [sig]): written as text by the
// encoder, compared as bytes by the decoder.
const HEAD_TEXT = 'd6:amounti';
const CHANNEL_KEY_TEXT = `7:channel${CHANNEL_ID_BYTES}:`;
const MSG_TYPE_PAYMENT_TEXT = `8:msg_typei${MsgType.PAYMENT}e`;
const MSG_TYPE_ACK_TEXT = `8:msg_typei${MsgType.ACK}e`;
const PIECE_KEY_TEXT = '5:piecei';
const SEQ_KEY_TEXT = '3:seqi';
const SIG_KEY_TEXT = `3:sig${SIGNATURE_BYTES}:`;
const latin1 = (s: string) => Buffer.from(s, 'latin1');
const BYTE_e = 0x65;
const PAYMENT_OR_ACK_HEAD = latin1(HEAD_TEXT);
const CHANNEL_KEY = latin1(CHANNEL_KEY_TEXT);
const MSG_TYPE_PAYMENT = latin1(MSG_TYPE_PAYMENT_TEXT);
const MSG_TYPE_ACK = latin1(MSG_TYPE_ACK_TEXT);
const PIECE_KEY = latin1(PIECE_KEY_TEXT);
const SEQ_KEY = latin1(SEQ_KEY_TEXT);
const SIG_KEY = latin1(SIG_KEY_TEXT);

function encodePaymentOrAck(m: PaymentMessage | AckMessage): Buffer {
  const payment = m.type === 'payment';
  // The checks of the general encoder, in its order (the same error for the same bad field).
  const channel = checkBytes(m.channel, CHANNEL_ID_BYTES, 'channel');
  const seq = checkInt(m.seq, payment ? 1n : 0n, U64_MAX, 'seq');
  const amount = checkInt(m.amount, payment ? 1n : 0n, U128_MAX, 'amount');
  const piece = payment ? checkInt(m.piece, 0n, U32_MAX, 'piece') : undefined;
  const sig = payment || m.sig !== undefined ? checkBytes(m.sig!, SIGNATURE_BYTES, 'sig') : undefined;
  const head = `${HEAD_TEXT}${amount}e${CHANNEL_KEY_TEXT}`;
  const mid = payment ? `${MSG_TYPE_PAYMENT_TEXT}${PIECE_KEY_TEXT}${piece}e${SEQ_KEY_TEXT}${seq}e` : `${MSG_TYPE_ACK_TEXT}${SEQ_KEY_TEXT}${seq}e`;
  const out = Buffer.allocUnsafe(head.length + CHANNEL_ID_BYTES + mid.length + (sig ? SIG_KEY.length + SIGNATURE_BYTES : 0) + 1);
  let o = out.write(head, 0, 'latin1');
  out.set(channel, o);
  o += CHANNEL_ID_BYTES;
  o += out.write(mid, o, 'latin1');
  if (sig) {
    out.set(SIG_KEY, o);
    o += SIG_KEY.length;
    out.set(sig, o);
    o += SIGNATURE_BYTES;
  }
  out[o] = BYTE_e;
  return out;
}

/** Reads `lit` at `pos`: the position after it, or -1. */
function literal(b: Uint8Array, pos: number, lit: Uint8Array): number {
  if (pos < 0 || pos + lit.length > b.length) return -1;
  for (let i = 0; i < lit.length; i++) if (b[pos + i] !== lit[i]) return -1;
  return pos + lit.length;
}

/** A canonical non-negative bencode integer body at `pos` up to its `e` (no sign, no leading zero, ≤ 39 digits). */
function digitsEnd(b: Uint8Array, pos: number): number {
  if (pos < 0) return -1;
  let i = pos;
  while (i < b.length && b[i] >= 0x30 && b[i] <= 0x39) i++;
  const n = i - pos;
  if (n === 0 || n > 39 || i >= b.length || b[i] !== BYTE_e || (b[pos] === 0x30 && n > 1)) return -1;
  return i;
}

function bigintAt(b: Uint8Array, from: number, to: number): bigint {
  if (to - from > 15) return BigInt(Buffer.from(b.buffer, b.byteOffset + from, to - from).toString('latin1'));
  let n = 0; // up to 15 digits: exact in a double
  for (let i = from; i < to; i++) n = n * 10 + (b[i] - 0x30);
  return BigInt(n);
}

/** PAYMENT or ACK in its canonical layout with values in range; undefined for anything else (the general decoder decides). */
function decodePaymentOrAck(b: Uint8Array): PaymentMessage | AckMessage | undefined {
  let p = literal(b, 0, PAYMENT_OR_ACK_HEAD);
  const amountEnd = digitsEnd(b, p);
  if (amountEnd < 0) return undefined;
  const amount = bigintAt(b, p, amountEnd);
  p = literal(b, amountEnd + 1, CHANNEL_KEY);
  if (p < 0 || p + CHANNEL_ID_BYTES > b.length) return undefined;
  const channelAt = p;
  p += CHANNEL_ID_BYTES;
  let piece: bigint | undefined;
  const afterPayment = literal(b, p, MSG_TYPE_PAYMENT);
  if (afterPayment >= 0) {
    p = literal(b, afterPayment, PIECE_KEY);
    const pieceEnd = digitsEnd(b, p);
    if (pieceEnd < 0) return undefined;
    piece = bigintAt(b, p, pieceEnd);
    p = pieceEnd + 1;
  } else p = literal(b, p, MSG_TYPE_ACK);
  p = literal(b, p, SEQ_KEY);
  const seqEnd = digitsEnd(b, p);
  if (seqEnd < 0) return undefined;
  const seq = bigintAt(b, p, seqEnd);
  p = seqEnd + 1;
  let sigAt = -1;
  const afterSigKey = literal(b, p, SIG_KEY);
  if (afterSigKey >= 0 && afterSigKey + SIGNATURE_BYTES <= b.length) {
    sigAt = afterSigKey;
    p = afterSigKey + SIGNATURE_BYTES;
  }
  if (p !== b.length - 1 || b[p] !== BYTE_e) return undefined;
  if (piece !== undefined) {
    if (sigAt < 0 || seq < 1n || seq > U64_MAX || amount < 1n || amount > U128_MAX || piece > U32_MAX) return undefined;
    return { type: 'payment', channel: copyOut(b, channelAt, CHANNEL_ID_BYTES), seq, amount, piece: Number(piece), sig: copyOut(b, sigAt, SIGNATURE_BYTES) };
  }
  if (seq > U64_MAX || amount > U128_MAX) return undefined;
  const m: AckMessage = { type: 'ack', channel: copyOut(b, channelAt, CHANNEL_ID_BYTES), seq, amount };
  if (sigAt >= 0) m.sig = copyOut(b, sigAt, SIGNATURE_BYTES);
  return m;
}

/** A copy of `len` bytes at `at`: decoded fields never alias the receive buffer. */
function copyOut(b: Uint8Array, at: number, len: number): Buffer {
  return Buffer.from(b.subarray(at, at + len));
}

// ---------- decoding ----------

function getBytes(d: BencodeDict, key: string, len: number): Buffer {
  const v = d[key];
  if (!(v instanceof Uint8Array)) throw new SpeedMessageError('malformed', `${key}: expected a byte string`);
  if (v.length !== len) throw new SpeedMessageError('invalid_value', `${key}: expected ${len} bytes, got ${v.length}`);
  return Buffer.from(v); // copy: never alias the caller's receive buffer
}
function getInt(d: BencodeDict, key: string, min: bigint, max: bigint): bigint {
  const v = d[key];
  if (typeof v !== 'number' && typeof v !== 'bigint') throw new SpeedMessageError('malformed', `${key}: expected an integer`);
  const b = BigInt(v);
  if (b < min || b > max) throw new SpeedMessageError('invalid_value', `${key}: ${b} outside [${min}, ${max}]`);
  return b;
}

function decodeDict(buf: Uint8Array, maxBytes: number): BencodeDict {
  if (!(buf instanceof Uint8Array)) throw new SpeedMessageError('malformed', 'expected bytes');
  if (buf.length > maxBytes) throw new SpeedMessageError('too_large', `payload of ${buf.length} bytes exceeds ${maxBytes}`);
  let v: BencodeValue;
  try {
    v = decode(buf, { maxDepth: 4, strictKeyOrder: true });
  } catch (e) {
    if (e instanceof BencodeError) throw new SpeedMessageError('malformed', e.message);
    throw new SpeedMessageError('malformed', String((e as Error)?.message ?? e));
  }
  if (!isDict(v)) throw new SpeedMessageError('malformed', 'payload is not a dictionary');
  return v;
}

/** Decode one Speed payload (the bytes after the BEP 10 extended message id). Throws only SpeedMessageError. */
export function decodeSpeedMessage(buf: Uint8Array): SpeedMessage {
  return (buf instanceof Uint8Array ? decodePaymentOrAck(buf) : undefined) ?? decodeAnyMessage(buf);
}

/** The general decoder (core's bencode decoder, then the field checks); also the reference for decodePaymentOrAck. */
export function decodeAnyMessage(buf: Uint8Array): SpeedMessage {
  const d = decodeDict(buf, MAX_SPEED_MESSAGE_BYTES);
  const t = getInt(d, 'msg_type', 0n, 255n);
  switch (Number(t)) {
    case MsgType.AUTH:
      return { type: 'auth', sig: getBytes(d, 'sig', SIGNATURE_BYTES) };
    case MsgType.BID:
      return { type: 'bid', seq: getInt(d, 'seq', 1n, U64_MAX), price: getInt(d, 'price', 0n, U128_MAX) };
    case MsgType.BID_RESPONSE:
      return {
        type: 'bid_response',
        seq: getInt(d, 'seq', 1n, U64_MAX),
        price: getInt(d, 'price', 0n, U128_MAX),
        maxUnpaid: Number(getInt(d, 'k', 1n, 1024n)),
        minTtl: Number(getInt(d, 'min_ttl', 0n, U32_MAX)),
      };
    case MsgType.CHANNEL:
      return { type: 'channel', channel: getBytes(d, 'channel', CHANNEL_ID_BYTES) };
    case MsgType.PAYMENT:
      return {
        type: 'payment',
        channel: getBytes(d, 'channel', CHANNEL_ID_BYTES),
        seq: getInt(d, 'seq', 1n, U64_MAX),
        amount: getInt(d, 'amount', 1n, U128_MAX),
        piece: Number(getInt(d, 'piece', 0n, U32_MAX)),
        sig: getBytes(d, 'sig', SIGNATURE_BYTES),
      };
    case MsgType.ACK: {
      const m: AckMessage = {
        type: 'ack',
        channel: getBytes(d, 'channel', CHANNEL_ID_BYTES),
        seq: getInt(d, 'seq', 0n, U64_MAX),
        amount: getInt(d, 'amount', 0n, U128_MAX),
      };
      if (d.sig !== undefined) m.sig = getBytes(d, 'sig', SIGNATURE_BYTES);
      return m;
    }
    case MsgType.REJECT:
      return { type: 'reject', piece: Number(getInt(d, 'piece', 0n, U32_MAX)) };
    case MsgType.ERROR: {
      const m: ErrorMessage = { type: 'error', code: Number(getInt(d, 'code', 1n, 65535n)) };
      if (d.msg !== undefined) {
        const b = d.msg;
        if (!(b instanceof Uint8Array)) throw new SpeedMessageError('malformed', 'msg: expected a byte string');
        if (b.length > MAX_ERROR_TEXT_BYTES) throw new SpeedMessageError('invalid_value', `msg: longer than ${MAX_ERROR_TEXT_BYTES} bytes`);
        m.text = Buffer.from(b).toString('utf8');
      }
      return m;
    }
    default:
      throw new SpeedMessageError('unknown_type', `unknown msg_type ${t}`);
  }
}

// ---------- handshake ----------

/** The value to place under `bt_speed` in our BEP 10 extended handshake. */
export function encodeSpeedHandshake(h: SpeedHandshake): Record<string, number | bigint | Uint8Array> {
  const d: Record<string, number | bigint | Uint8Array> = {
    v: intVal(checkInt(h.v, 1n, 65535n, 'v')),
    ledger: checkBytes(h.ledger, LEDGER_ID_BYTES, 'ledger'),
    pk: checkBytes(h.pk, PUBLIC_KEY_BYTES, 'pk'),
    nonce: checkBytes(h.nonce, NONCE_BYTES, 'nonce'),
  };
  if (h.reserve !== undefined && h.reserve !== 0n) d.reserve = intVal(checkInt(h.reserve, 0n, U128_MAX, 'reserve'));
  return d;
}

/**
 * Read the peer's Speed handshake from its decoded BEP 10 extended handshake dictionary.
 * Returns undefined when the peer does not speak Speed (no "bt_speed" in `m` or no handshake dict): a legacy peer.
 * Throws SpeedMessageError when it claims Speed but the fields are malformed.
 */
export function parseSpeedHandshake(extended: BencodeValue | undefined): SpeedHandshake | undefined {
  if (!isDict(extended)) return undefined;
  const m = extended.m;
  if (!isDict(m)) return undefined;
  const id = m[SPEED_EXTENSION_NAME];
  if (typeof id !== 'number' || id === 0) return undefined; // absent or disabled (BEP 10: id 0 disables)
  const raw = extended[SPEED_EXTENSION_NAME];
  if (raw === undefined) throw new SpeedMessageError('malformed', 'bt_speed advertised in m but handshake fields are missing');
  if (!isDict(raw)) throw new SpeedMessageError('malformed', 'bt_speed handshake is not a dictionary');
  const v = Number(getInt(raw, 'v', 1n, 65535n));
  const h: SpeedHandshake = {
    v,
    ledger: getBytes(raw, 'ledger', LEDGER_ID_BYTES),
    pk: getBytes(raw, 'pk', PUBLIC_KEY_BYTES),
    nonce: getBytes(raw, 'nonce', NONCE_BYTES),
  };
  if (raw.reserve !== undefined) h.reserve = getInt(raw, 'reserve', 0n, U128_MAX);
  return h;
}

/** Decode a whole extended handshake payload (bytes) and parse the Speed part of it. Throws only SpeedMessageError. */
export function decodeSpeedHandshakePayload(buf: Uint8Array): SpeedHandshake | undefined {
  if (!(buf instanceof Uint8Array)) throw new SpeedMessageError('malformed', 'expected bytes');
  let v: BencodeValue;
  try {
    v = decode(buf, { maxDepth: 16 });
  } catch (e) {
    throw new SpeedMessageError('malformed', (e as Error).message);
  }
  return parseSpeedHandshake(v);
}

// ---------- key-ownership proof ----------

export const AUTH_TAG = Buffer.from('bitorrent/speed-auth/v1\0', 'latin1');

/**
 * The exact bytes a peer signs in its AUTH message (fixed layout, 24 + 20|32 + 32·5 bytes):
 * AUTH_TAG ‖ infoHash (20 bytes v1 or 32 bytes v2) ‖ ledger[32] ‖ signerPk[32] ‖ verifierPk[32] ‖
 * verifierNonce[32] ‖ signerNonce[32].
 * The verifier's fresh nonce makes the proof single-use; the info-hash, both keys and the signer's own nonce bind
 * it to this one connection, so it cannot be replayed to another peer, torrent or session.
 */
export function authPayload(p: {
  infoHash: Uint8Array;
  ledger: Uint8Array;
  signerPk: Uint8Array;
  verifierPk: Uint8Array;
  verifierNonce: Uint8Array;
  signerNonce: Uint8Array;
}): Buffer {
  if (!(p.infoHash instanceof Uint8Array) || (p.infoHash.length !== 20 && p.infoHash.length !== 32)) {
    throw new SpeedMessageError('invalid_value', 'infoHash: expected 20 or 32 bytes');
  }
  return Buffer.concat([
    AUTH_TAG,
    p.infoHash,
    checkBytes(p.ledger, LEDGER_ID_BYTES, 'ledger'),
    checkBytes(p.signerPk, PUBLIC_KEY_BYTES, 'signerPk'),
    checkBytes(p.verifierPk, PUBLIC_KEY_BYTES, 'verifierPk'),
    checkBytes(p.verifierNonce, NONCE_BYTES, 'verifierNonce'),
    checkBytes(p.signerNonce, NONCE_BYTES, 'signerNonce'),
  ]);
}
