/**
 * Signed ledger operations. Every operation is a fixed binary layout
 *   "bitorrent/ledger-op/v1\0" ‖ kind u8 ‖ ledgerId[32] ‖ opId[16] ‖ signer[32] ‖ body
 * signed (Ed25519, detached) by `signer`. On the wire an operation is `message ‖ signature[64]`.
 * `opId` is chosen by the client; (signer, opId) is applied at most once, so a retry is always safe.
 */
import { randomBytes } from 'node:crypto';
import { Writer, Reader, tag, sha256 } from './codec.js';
import { sign } from './keys.js';

export const OP_TAG = tag('bitorrent/ledger-op/v1');
export const CHANNEL_ID_TAG = tag('bitorrent/channel-id/v1');
export const POW_TAG = tag('bitorrent/faucet-pow/v1');
export const MAX_OP_BYTES = 512;

export const OpKind = { transfer: 1, open: 2, topup: 3, close: 4, faucet: 5 } as const;
export type OpKindName = keyof typeof OpKind;

export type OpBody =
  | { kind: 'transfer'; to: Buffer; amount: bigint }
  | { kind: 'open'; provider: Buffer; deposit: bigint; expiresAt: number }
  /** Adds `amount` (may be 0) to the deposit and moves the expiry to `expiresAt` (must not move it earlier). */
  | { kind: 'topup'; channelId: Buffer; amount: bigint; expiresAt: number }
  /** Provider closes with the requester's signed payment state (sequence, cumulative). */
  | { kind: 'close'; channelId: Buffer; sequence: bigint; cumulative: bigint; requesterSig: Buffer }
  /** Faucet claim with a proof of work `nonce`. */
  | { kind: 'faucet'; nonce: bigint };

export interface Op {
  ledgerId: Buffer;
  opId: Buffer;
  signer: Buffer;
  body: OpBody;
}

export interface SignedOp {
  op: Op;
  /** The signed message. */
  msg: Buffer;
  sig: Buffer;
  /** msg ‖ sig */
  wire: Buffer;
}

function u64Time(n: number, what: string): bigint {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${what} must be a non-negative integer (ms)`);
  return BigInt(n);
}

export function encodeOp(op: Op): Buffer {
  const w = new Writer().bytes(OP_TAG).u8(OpKind[op.body.kind]).bytes(op.ledgerId, 32).bytes(op.opId, 16).bytes(op.signer, 32);
  const b = op.body;
  switch (b.kind) {
    case 'transfer':
      w.bytes(b.to, 32).u128(b.amount);
      break;
    case 'open':
      w.bytes(b.provider, 32).u128(b.deposit).u64(u64Time(b.expiresAt, 'expiresAt'));
      break;
    case 'topup':
      w.bytes(b.channelId, 32).u128(b.amount).u64(u64Time(b.expiresAt, 'expiresAt'));
      break;
    case 'close':
      w.bytes(b.channelId, 32).u64(b.sequence).u128(b.cumulative).bytes(b.requesterSig, 64);
      break;
    case 'faucet':
      w.u64(b.nonce);
      break;
    default:
      throw new RangeError('unknown operation kind');
  }
  return w.done();
}

function time(r: Reader): number {
  const v = r.u64();
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError('time out of range');
  return Number(v);
}

/**
 * Decode a signed-op message. The returned buffers are VIEWS into `msg` (no copies): callers that keep the op must
 * own `msg` (the ledger decodes its own copy of every wire it receives).
 */
export function decodeOp(msg: Buffer): Op {
  const r = new Reader(msg);
  if (msg.length < OP_TAG.length || msg.compare(OP_TAG, 0, OP_TAG.length, 0, OP_TAG.length) !== 0) throw new RangeError('bad domain tag');
  r.pos = OP_TAG.length;
  const kind = r.u8();
  const ledgerId = r.bytes(32);
  const opId = r.bytes(16);
  const signer = r.bytes(32);
  let body: OpBody;
  switch (kind) {
    case OpKind.transfer:
      body = { kind: 'transfer', to: r.bytes(32), amount: r.u128() };
      break;
    case OpKind.open:
      body = { kind: 'open', provider: r.bytes(32), deposit: r.u128(), expiresAt: time(r) };
      break;
    case OpKind.topup:
      body = { kind: 'topup', channelId: r.bytes(32), amount: r.u128(), expiresAt: time(r) };
      break;
    case OpKind.close:
      body = { kind: 'close', channelId: r.bytes(32), sequence: r.u64(), cumulative: r.u128(), requesterSig: r.bytes(64) };
      break;
    case OpKind.faucet:
      body = { kind: 'faucet', nonce: r.u64() };
      break;
    default:
      throw new RangeError(`unknown operation kind ${kind}`);
  }
  r.end();
  return { ledgerId, opId, signer, body };
}

/** Split and decode `msg ‖ sig` (fields are views into `wire`, see decodeOp); throws RangeError on malformed input. */
export function parseSignedOp(wire: Buffer): SignedOp {
  if (wire.length < 64 + OP_TAG.length + 81 || wire.length > MAX_OP_BYTES) throw new RangeError('operation has a bad length');
  const msg = wire.subarray(0, wire.length - 64);
  const sig = wire.subarray(wire.length - 64);
  return { op: decodeOp(msg), msg, sig, wire };
}

/**
 * A fresh op id: creation time in ms (48-bit big-endian) ‖ 10 random bytes. Ledgers with a retry window
 * (Genesis.opIdWindowMs) require this layout; others accept any 16 bytes.
 */
export function newOpId(now: number = Date.now()): Buffer {
  const id = randomBytes(16);
  id.writeUIntBE(Math.max(0, Math.min(now, 2 ** 48 - 1)), 0, 6);
  return id;
}

/** The creation time (ms) in an op id made by newOpId. */
export function opIdTime(opId: Buffer): number {
  return opId.readUIntBE(0, 6);
}

/** Build and sign an operation; returns the wire form (`msg ‖ sig`). */
export function signOp(
  ledgerId: Buffer,
  keys: { publicKey: Buffer; secretKey: Buffer },
  body: OpBody,
  opId: Buffer = newOpId(),
): SignedOp {
  if (opId.length !== 16) throw new RangeError('opId must be 16 bytes');
  const op: Op = { ledgerId, opId, signer: keys.publicKey, body };
  const msg = encodeOp(op);
  const sig = sign(msg, keys.secretKey);
  return { op, msg, sig, wire: Buffer.concat([msg, sig]) };
}

/** Channel ids are derived from the open operation, so the requester knows the id before the ledger answers. */
export function channelIdFor(ledgerId: Buffer, requester: Buffer, opId: Buffer): Buffer {
  return sha256(CHANNEL_ID_TAG, ledgerId, requester, opId);
}

export function powHash(ledgerId: Buffer, account: Buffer, nonce: bigint): Buffer {
  return sha256(POW_TAG, ledgerId, account, new Writer().u64(nonce).done());
}

export function leadingZeroBits(h: Buffer): number {
  let n = 0;
  for (const byte of h) {
    if (byte === 0) {
      n += 8;
      continue;
    }
    return n + Math.clz32(byte) - 24;
  }
  return n;
}

/** Find a faucet proof-of-work nonce with at least `difficulty` leading zero bits (expected 2^difficulty hashes). */
export function solvePow(ledgerId: Buffer, account: Buffer, difficulty: number, start = 0n): bigint {
  for (let n = start; ; n++) if (leadingZeroBits(powHash(ledgerId, account, n)) >= difficulty) return n;
}

/** Accounts an operation touches (for history indexes). */
export function opAccounts(op: Op, extra?: { requester?: Buffer; provider?: Buffer; faucet?: Buffer }): Buffer[] {
  const b = op.body;
  if (b.kind === 'transfer') return [op.signer, b.to];
  if (b.kind === 'open') return [op.signer, b.provider];
  if (b.kind === 'faucet') return extra?.faucet ? [op.signer, extra.faucet] : [op.signer];
  if (b.kind === 'topup') return extra?.provider ? [op.signer, extra.provider] : [op.signer];
  return extra?.requester ? [op.signer, extra.requester] : [op.signer];
}
